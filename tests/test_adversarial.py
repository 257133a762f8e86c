"""Adversarial inputs: each completes or stops at a documented budget with NL007 (analysis
incomplete), never a hang, a traceback or an out-of-memory kill. And natlint's output cannot be
used against the terminal that shows it, and natlint never changes the system it runs on.

The heavy cases (a 50 MB dump, the BDD blow-up at the default budget, 10,000 nested chains in
the nat table) run with ``pytest -m slow tests/test_adversarial.py``; they measure the peak
memory of a fresh ``natlint check`` process (``resource.getrusage``) and print it. The default
run has a small version of each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from natlint import synth
from natlint.checks import CheckContext, run_checks
from natlint.cli import main
from natlint.findings import Finding, Related
from natlint.host.live import READ_ONLY_COMMANDS
from natlint.report.github import format_github
from natlint.report.text import format_concise, format_full
from natlint.syntax.reader import read

FILTER = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
GIB = 2**30


def _check(*args: str, stdin: str | None = None) -> Result:
    result = CliRunner().invoke(main, ["check", "--isolated", *args], input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def _codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


# ---------------------------------------------------------------- generators


def jump_loop() -> str:
    return (FILTER + ":A - [0:0]\n:B - [0:0]\n"
            "-A INPUT -j A\n-A A -p tcp -j B\n-A B -j A\nCOMMIT\n")


def nested_chains(count: int, table: str = "filter") -> str:
    """``count`` user chains, each jumping to the next: INPUT -> C00000 -> ... -> C<count-1>."""
    names = [f"C{i:05d}" for i in range(count)]
    if table == "filter":
        head = FILTER + "".join(f":{n} - [0:0]\n" for n in names) + f"-A INPUT -j {names[0]}\n"
        body = [f"-A {names[i]} -p tcp -m tcp --dport {i % 65535 + 1} -j {names[i + 1]}\n" for i in range(count - 1)]
        return head + "".join(body) + f"-A {names[-1]} -j DROP\nCOMMIT\n"
    head = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
            + "".join(f":{n} - [0:0]\n" for n in names) + f"-A PREROUTING -j {names[0]}\n-A OUTPUT -j {names[0]}\n")
    body = [f"-A {names[i]} -p tcp -m tcp --dport {i % 65535 + 1} -j DNAT --to-destination 10.0.0.{i % 250 + 1}:80\n"
            f"-A {names[i]} -j {names[i + 1]}\n" for i in range(count - 1)]
    return head + "".join(body) + f"-A {names[-1]} -j RETURN\nCOMMIT\n" + FILTER + "COMMIT\n"


def _bit(i: int) -> str:
    value = 1 << i
    return ".".join(str(value >> shift & 255) for shift in (24, 16, 8, 0))


def bdd_blowup(bits: int = 32) -> str:
    """Rule i drops packets with source bit i and destination bit i set (non-contiguous masks,
    which iptables accepts). What passes them all is AND_i not(s_i and d_i): with the source
    bits ordered before the destination bits (natlint's fixed order), a BDD needs 2**bits nodes."""
    rules = [f"-A FORWARD -s {_bit(i)}/{_bit(i)} -d {_bit(i)}/{_bit(i)} -j DROP\n" for i in range(bits)]
    return FILTER + "".join(rules) + "-A FORWARD -j ACCEPT\nCOMMIT\n"


# ---------------------------------------------------------------- structure and the budget


def test_jump_loop() -> None:
    result = _check("-", stdin=jump_loop())
    assert result.exit_code == 1 and "NL103" in result.stdout


def test_ten_thousand_nested_chains() -> None:
    ruleset = read(nested_chains(10_000), "nested.rules")
    findings = run_checks(ruleset)
    assert "NL105" in _codes(findings)  # nf_tables refuses more than 15 nested user chains
    assert "NL007" not in _codes(findings)


def test_bdd_blowup_stops_at_the_budget() -> None:
    ruleset = read(bdd_blowup(), "blowup.rules")
    findings = run_checks(ruleset, ctx=CheckContext(ruleset, budget_seconds=1.0))
    incomplete = [f for f in findings if f.code == "NL007"]
    assert incomplete, findings
    first = incomplete[0]
    assert "the rules checks stopped at their budget" in first.message
    assert "none of their codes is reported for this file" in first.message
    assert "--budget SECONDS" in first.message


def test_budget_option_reaches_the_checks(tmp_path: Path) -> None:
    path = tmp_path / "blowup.rules"
    path.write_text(bdd_blowup())
    result = _check("--budget", "0.5", str(path))
    assert "NL007" in result.stdout and "now 0.5 s" in result.stdout
    (tmp_path / "natlint.toml").write_text("budget = 0.5\n")
    configured = CliRunner().invoke(main, ["check", str(path)])
    assert "now 0.5 s" in configured.stdout
    (tmp_path / "natlint.toml").write_text("budget = 'long'\n")
    assert CliRunner().invoke(main, ["check", str(path)]).exit_code == 2
    assert _check("--budget", "-1", str(path)).exit_code == 2


def test_small_kube_proxy_dump_completes_or_stops() -> None:
    text = synth.kube_proxy(60, 5)
    ruleset = read(text, "kube.rules")
    findings = run_checks(ruleset, ctx=CheckContext(ruleset, budget_seconds=5.0))
    assert all(f.code == "NL007" or f.severity != "error" for f in findings), findings


# ---------------------------------------------------------------- bytes and lines


def test_one_megabyte_comment() -> None:
    text = FILTER + f'-A INPUT -p tcp -m tcp --dport 22 -m comment --comment "{"x" * 2**20}" -j ACCEPT\nCOMMIT\n'
    for fmt in ("concise", "full", "json", "sarif", "github"):
        result = _check("--format", fmt, "-", stdin=text)
        assert result.exit_code == 1
        assert len(result.stdout) < 3 * 2**20  # the line is not repeated per finding
    assert "longer than 10239 bytes" in _check("-", stdin=text).stdout


def test_one_megabyte_garbage_line(tmp_path: Path) -> None:
    path = tmp_path / "garbage.rules"
    garbage = b"\x01\xff\x1b[2J garbage " * 2**16
    path.write_bytes(FILTER.encode() + b"-A INPUT " + garbage + b"\n-A INPUT -j DROP\nCOMMIT\n")
    for fmt in ("concise", "full"):
        result = _check("--format", fmt, str(path))
        assert result.exit_code == 1 and "NL001" in result.stdout
        assert "\x1b" not in result.stdout


def test_nul_bytes() -> None:
    data = (FILTER + "-A INPUT -p tcp\x00 --dport 22 -j ACCEPT\n\x00\x00\n-A INPUT -j DROP\n\x00COMMIT\n").encode()
    findings = run_checks(read(data, "nul.rules"))
    assert {"NL006", "NL001"} <= set(_codes(findings))
    assert _check("-", stdin=data.decode()).exit_code == 1


def test_crlf_line_ends() -> None:
    data = (FILTER + "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n-A INPUT -j DROP\nCOMMIT\n").replace("\n", "\r\n")
    findings = run_checks(read(data.encode(), "crlf.rules"))
    assert "NL003" in _codes(findings)
    assert any("CRLF" in f.message for f in findings)


def test_empty_and_binary_inputs() -> None:
    for data in (b"", b"\xff\xfe\x00\x01" * 4096, bytes(range(256)) * 64, b"\n" * 100_000):
        findings = run_checks(read(data, "odd.rules"))
        assert all(f.line >= 1 for f in findings)


# ---------------------------------------------------------------- output safety

EVIL = "a\x1b[2J\x1b]0;pwn\x07 \r b \x00 c \u202e rtl \u2066 iso \x9b31m \x7f \u2028 end"
BAD = ["\x1b", "\r", "\x00", "\x07", "\u202e", "\u2066", "\x9b", "\x7f", "\u2028"]


def _evil_finding() -> Finding:
    return Finding("NL201", "warning", f"shadowed: {EVIL}\nsecond line", f"dir/{EVIL}.rules", 3, 2,
                   table="filter", chain=f"IN{EVIL}",
                   related=(Related(f"{EVIL}.rules", 1, f"the rule before {EVIL}"),),
                   witness={"iif": EVIL, "dport": 22, "comment": EVIL}, certainty="approximate",
                   source_line=f'-A INPUT -m comment --comment "{EVIL}" -j ACCEPT')


def test_terminal_formats_strip_control_characters() -> None:
    finding = _evil_finding()
    sources = {f"{EVIL}.rules": [f"-A INPUT -j {EVIL}"]}
    for text in (format_concise([finding]), format_full([finding], sources=sources)):
        for bad in BAD:
            assert bad not in text, (bad, text)
    full = format_full([finding], sources=sources)
    assert "related:" in full and "e.g.:" in full and "iif=a?[2J" in full
    github = format_github([finding])
    assert github.count("\n") == 1 and "%0A" in github
    for bad in [b for b in BAD if b not in "\r"]:
        assert bad not in github


def _evil_dump() -> bytes:
    evil = EVIL.replace("\x00", "")  # a NUL ends the line for iptables-restore (test_nul_bytes)
    return ("*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            f'-A INPUT -p tcp -m comment --comment "x{evil}" --bogus{evil} -j ACCEPT\n'
            f'-A INPUT -s "1.2.3.4{evil}" -j ACCEPT\n'
            f'-A INPUT -j "LOG\x1b[5m\u202e\x7f"\n'
            "COMMIT\n").encode("utf-8", "surrogatepass")


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@pytest.mark.parametrize("fmt", ["concise", "full", "json", "sarif", "github"])
def test_every_format_is_safe(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "evil.rules"
    path.write_bytes(_evil_dump())
    result = _check("--format", fmt, str(path))
    assert result.exit_code == 1
    out = result.stdout
    for bad in BAD:  # not even JSON has them raw: a terminal that shows the report shows them as escapes
        assert bad not in out, (fmt, bad)
    if fmt in ("json", "sarif"):
        doc = json.loads(out)
        values = list(_strings(doc))
        for kept in ("\x1b", "\u202e", "\x7f"):  # the values themselves are kept, escaped
            assert any(kept in v for v in values), (fmt, kept)
        if fmt == "json":
            assert any("\u202e" in f["message"] for f in doc["findings"])
        else:
            snippets = [r["locations"][0]["physicalLocation"]["region"].get("snippet", {}).get("text", "")
                        for r in doc["runs"][0]["results"]]
            assert any("\x1b" in s for s in snippets)


# ---------------------------------------------------------------- natlint never changes the system


class _Recorder:
    """Every process natlint starts: through subprocess (run, Popen, check_output...) or os."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, ...]] = []
        real = subprocess.Popen
        recorder = self

        class Recording(real):  # type: ignore[misc, valid-type]
            def __init__(self, args: Any, *a: Any, **k: Any) -> None:
                argv = (args,) if isinstance(args, str | bytes) else tuple(str(x) for x in args)
                recorder.calls.append(argv)
                assert k.get("shell") is not True, argv
                assert argv in READ_ONLY_COMMANDS, f"natlint ran {argv}: not a listed read-only command"
                super().__init__(args, *a, **k)

        monkeypatch.setattr(subprocess, "Popen", Recording)

        def refuse(name: str) -> Any:
            def run(*args: Any, **kwargs: Any) -> Any:
                recorder.calls.append((name, *map(str, args)))
                raise AssertionError(f"natlint called os.{name}{args}")
            return run

        for name in ("system", "popen", "posix_spawn", "posix_spawnp", "execv", "execve", "execvp", "execvpe",
                     "spawnv", "spawnve", "spawnvp", "spawnvpe"):
            if hasattr(os, name):
                monkeypatch.setattr(os, name, refuse(name))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Recorder]:
    yield _Recorder(monkeypatch)


@pytest.mark.parametrize("command", [["check", "--isolated", "--format", "json"], ["host"]])
def test_live_host_runs_only_read_only_commands(recorder: _Recorder, tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "docker.rules"
    path.write_text(synth.docker_host(2))
    result = CliRunner().invoke(main, [*command, "--host", "live", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert recorder.calls, "natlint read nothing of this machine"
    assert all(call in READ_ONLY_COMMANDS for call in recorder.calls), recorder.calls
    assert result.exit_code in (0, 1, 2)  # 2: this machine has no usable 'ip' (the test still holds)


def test_no_process_without_live_host(recorder: _Recorder, tmp_path: Path) -> None:
    path = tmp_path / "docker.rules"
    path.write_text(synth.docker_host(2))
    for command in (["check", "--isolated"], ["host"], ["trace", "--in", "eth0", "--dport", "80"]):
        CliRunner().invoke(main, [*command, str(path)])
    assert recorder.calls == []


# ---------------------------------------------------------------- heavy cases (-m slow)


def _measured(args: list[str], timeout: float) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run ``natlint check ARGS`` in a fresh process: its result, wall seconds, peak RSS (bytes, in KiB
    from the kernel)."""
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child of
    # this (large) pytest process would report at least pytest's own peak.
    code = ("import atexit, re, resource, sys\n"
            "def peak():\n"
            "    try:\n"
            "        return int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
            "    except (OSError, AttributeError):\n"
            "        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "atexit.register(lambda: print('PEAK', peak(), file=sys.stderr))\n"
            "from natlint.cli import main\n"
            f"main({['check', '--isolated', *args]!r})\n")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.perf_counter() - started
    peak = next(int(line.split()[1]) * 1024 for line in proc.stderr.splitlines() if line.startswith("PEAK"))
    print(f"\nnatlint check {' '.join(a for a in args if not a.startswith('/'))}: exit {proc.returncode},"
          f" {wall:.1f} s, peak {peak / 2**20:.0f} MiB")
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    return proc, wall, peak


@pytest.mark.slow
def test_fifty_megabyte_dump(tmp_path: Path) -> None:
    path = tmp_path / "big.rules"
    text = synth.kube_proxy(26_000, 5)  # 48 MB, 450k rules
    path.write_text(text)
    assert path.stat().st_size > 45 * 10**6
    del text
    proc, _, peak = _measured([str(path)], timeout=900)
    assert peak < 1.5 * GIB
    assert "NL007" in proc.stdout or "All checks passed" in proc.stderr


@pytest.mark.slow
def test_bdd_blowup_at_the_default_budget(tmp_path: Path) -> None:
    path = tmp_path / "blowup.rules"
    path.write_text(bdd_blowup())
    proc, _, peak = _measured([str(path)], timeout=600)
    assert "NL007" in proc.stdout
    assert peak < 1.5 * GIB


@pytest.mark.slow
@pytest.mark.parametrize("table", ["filter", "nat"])
def test_ten_thousand_nested_chains_in_a_process(tmp_path: Path, table: str) -> None:
    path = tmp_path / f"nested-{table}.rules"
    path.write_text(nested_chains(10_000, table))
    proc, _, peak = _measured(["--budget", "20", str(path)], timeout=600)
    assert "NL105" in proc.stdout
    assert peak < 1.5 * GIB


@pytest.mark.slow
def test_one_megabyte_lines_in_a_process(tmp_path: Path) -> None:
    path = tmp_path / "long.rules"
    comment = "y" * 2**20
    path.write_text(FILTER + f'-A INPUT -m comment --comment "{comment}" -j ACCEPT\n-A INPUT {"z " * 2**19}\nCOMMIT\n')
    _, _, peak = _measured(["--format", "full", str(path)], timeout=120)
    assert peak < 0.5 * GIB
