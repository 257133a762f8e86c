#!/bin/sh
# natlint's parse time next to `iptables-restore --test` on the same generated kube-proxy dumps.
#
#   benchmarks/compare.sh            # 1k, 10k and 100k rules (kube_proxy(55|550|5500, 5))
#   RUNS=5 benchmarks/compare.sh     # best of 5 runs each (default 3)
#
# iptables-restore runs in a new network namespace (`unshare --net`, so root or user
# namespaces are needed) and never touches this host's firewall. natlint's time is `read()` of
# the file's bytes in a fresh Python process, after the imports (what `natlint check` spends
# parsing), the best of RUNS. The ratio is natlint / iptables-restore (the goal: at most 3).
set -eu
RUNS=${RUNS:-3}
PYTHON=${PYTHON:-python3}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/natlint-compare.XXXXXX")
trap 'rm -rf "$DIR"' EXIT INT TERM

command -v iptables-restore >/dev/null || { echo "compare.sh: iptables-restore is missing" >&2; exit 2; }
unshare --net true 2>/dev/null || { echo "compare.sh: 'unshare --net' is not allowed here (run as root)" >&2; exit 2; }

printf '%-6s %8s %8s %18s %10s %7s\n' size rules lines "iptables-restore" natlint ratio
for spec in 1k:55 10k:550 100k:5500; do
    size=${spec%%:*}
    services=${spec#*:}
    file="$DIR/kube-$size.rules"
    "$PYTHON" -c "import sys; from natlint import synth; sys.stdout.write(synth.kube_proxy($services, 5))" > "$file"
    "$PYTHON" - "$file" "$RUNS" "$size" <<'PY'
import subprocess, sys, time
path, runs, size = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = open(path, "rb").read()

def restore() -> float:
    with open(path, "rb") as handle:
        started = time.perf_counter()
        subprocess.run(["unshare", "--net", "iptables-restore", "--test"], stdin=handle, check=True)
        return time.perf_counter() - started

PARSE = ("import sys, time; from natlint.syntax.reader import read; data = open(sys.argv[1], 'rb').read();"
         " t = time.perf_counter(); rs = read(data, sys.argv[1]); print(time.perf_counter() - t, rs.rule_count)")

def natlint() -> tuple[float, int]:
    out = subprocess.run([sys.executable, "-c", PARSE, path], capture_output=True, text=True, check=True).stdout
    seconds, rules = out.split()
    return float(seconds), int(rules)

kernel = min(restore() for _ in range(runs))
ours = [natlint() for _ in range(runs)]
best, rules = min(ours)
lines = data.count(b"\n")
print(f"{size:<6} {rules:>8} {lines:>8} {kernel:>16.3f} s {best:>8.3f} s {best / kernel:>6.1f}x")
PY
done
