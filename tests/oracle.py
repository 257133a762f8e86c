"""The kernel's word, for tests: run iptables-restore / iptables-save in throwaway namespaces.

Every network action happens inside a network namespace this module creates:

* ``restore(text)`` with no namespace runs ``unshare --net iptables-restore``: the kernel gives
  the process a brand-new, nameless namespace and destroys it when the process exits, so
  nothing can be left behind, not even after a SIGKILL of the test run.
* ``Netns`` is a named namespace (``nlt-<pid>-<n>``) for work that needs more than one
  command in the same namespace (restore, then save). It is deleted by name on exit, and the
  processes it started are killed by PID.

The root namespace's firewall is never read or written. Every subprocess call has a timeout.

Facts this module relies on (iptables 1.8.9 nf_tables, kernel 6.18; see
shared/research/iptables-save-format-and-netfilter-semantics.md sections 1.2, 3.8 and 4):

* ``--test`` on the nft backend is a syntax/option oracle only: DNAT in filter, jumps to
  undefined chains, loops and ``tcp-reset`` without ``-p tcp`` all pass. Only a real commit
  asks the kernel, so ``restore`` commits unless ``test_only`` is set.
* Each ``COMMIT`` is its own transaction: a file whose second table fails leaves the first
  committed.
* Exit status: 2 for a parse error ("Error occurred at line: N"), 4 for a kernel rejection
  at commit ("line N: RULE_APPEND failed (...)", N = the rule's line), 1 for
  "line N failed" / "COMMIT expected at line N".
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "CorpusEntry",
    "Netns",
    "OracleError",
    "RestoreResult",
    "cleanup_stale_namespaces",
    "error_line",
    "kernel_available",
    "normalise_save",
    "parse_corpus_table",
    "restore",
    "restore_and_save",
    "restore_many",
    "save",
    "wrap_rule",
]

NETNS_PREFIX = "nlt-"
# Generous: a 50k-rule commit takes about 1.5 s on the reference VM.
RESTORE_TIMEOUT = 60.0
# ip netns add/del/exec of tiny commands; normally a few ms.
COMMAND_TIMEOUT = 15.0

_counter = itertools.count()
_stale_cleaned = False


class OracleError(RuntimeError):
    """The oracle itself failed (a timeout, a missing tool): not a verdict on the rules."""


# --------------------------------------------------------------------------------------------
# Results and parsing of iptables-restore messages (no kernel needed)
# --------------------------------------------------------------------------------------------

# "Error occurred at line: N" is printed after every parse error and names the line that
# iptables-restore was processing; it wins over any other "line N" in the text (which can
# quote the user's own rule text).
_ERROR_OCCURRED_RE = re.compile(r"Error occurred at line: (\d+)")
# Everything else: "iptables-restore: line N failed[: reason]", "line N: RULE_APPEND failed
# (...)", "COMMIT expected at line N", "Bad line N: need ]", "line N table name 'x' invalid".
_ANY_LINE_RE = re.compile(r"\bline:? (\d+)\b")
# Noise around the reason: the program/version prefix and the usage hint.
_PROG_PREFIX_RE = re.compile(r"^(?:ip6?tables-restore(?: v[\d.]+(?: \([^)]*\))?)?:(?: |$))+")
_HINT_RE = re.compile(r"^Try `ip6?tables-restore -h'")


def error_line(message: str) -> int | None:
    """The input line number iptables-restore names in ``message`` (1-based), or None."""
    m = _ERROR_OCCURRED_RE.search(message)
    if m is None:
        m = _ANY_LINE_RE.search(message)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class RestoreResult:
    """What one ``iptables-restore`` run said."""

    ok: bool
    exit_code: int
    line: int | None
    message: str  # stderr, verbatim
    stdout: str = ""  # only non-empty for -S/-L lines or -v

    @property
    def reason(self) -> str:
        """The error in plain words: stderr minus program prefix, line trailer and usage hint."""
        parts = []
        for raw in self.message.splitlines():
            text = _PROG_PREFIX_RE.sub("", raw.strip()).strip()
            if not text or _HINT_RE.match(text) or _ERROR_OCCURRED_RE.fullmatch(text):
                continue
            parts.append(text)
        return " ".join(parts)

    @classmethod
    def from_process(cls, exit_code: int, stderr: str, stdout: str = "") -> RestoreResult:
        return cls(
            ok=exit_code == 0,
            exit_code=exit_code,
            line=error_line(stderr) if exit_code != 0 else None,
            message=stderr,
            stdout=stdout,
        )


@dataclass(frozen=True)
class CorpusEntry:
    """One row of the table in shared/corpus/README.md."""

    path: Path  # absolute: the README's directory / the file column
    tool: str  # "iptables-restore" or "ip6tables-restore"
    exit_code: int
    message: str  # may be cut short in the README (at a CR or a blank line)
    line: int | None  # the line the message names
    name: str = ""  # the file column as written, for test ids

    @property
    def family(self) -> int:
        return 6 if self.tool.startswith("ip6") else 4


def _split_md_row(row: str) -> list[str]:
    body = row.strip().removeprefix("|")
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    cells = re.split(r"(?<!\\)\|", body)
    return [c.strip().replace("\\|", "|") for c in cells]


def parse_corpus_table(readme_path: str | os.PathLike[str]) -> list[CorpusEntry]:
    """Read the "file | tool | exit | iptables-restore says" table of the corpus README."""
    readme = Path(readme_path)
    root = readme.resolve().parent
    entries: list[CorpusEntry] = []
    columns: dict[str, int] | None = None
    for raw in readme.read_text(encoding="utf-8").splitlines():
        if not raw.lstrip().startswith("|"):
            columns = None  # a table ends at the first non-table line
            continue
        cells = _split_md_row(raw)
        if columns is None:
            names = [c.lower() for c in cells]
            if "file" in names and "tool" in names and "exit" in names:
                columns = {n: i for i, n in enumerate(names)}
            continue
        if all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
            continue  # the |---|---| separator
        says = next((i for n, i in columns.items() if n not in ("file", "tool", "exit")), None)
        message = cells[says] if says is not None and says < len(cells) else ""
        name = cells[columns["file"]]
        entries.append(
            CorpusEntry(
                path=root / name,
                tool=cells[columns["tool"]],
                exit_code=int(cells[columns["exit"]]),
                message=message,
                line=error_line(message),
                name=name,
            )
        )
    return entries


def normalise_save(text: str) -> str:
    """iptables-save output without ``#`` lines and with table blocks sorted by name.

    iptables-nft prints tables in enum order (mangle, security, raw, filter, nat), legacy in
    registration order; sorting makes the order irrelevant. Chain and rule order inside a
    table is kept: it is meaningful.
    """
    loose: list[str] = []
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if current is None and line.startswith("*"):
            name = line[1:].split()[0] if line[1:].split() else ""
            current = blocks.setdefault(name, [])
            current.append(line)
        elif current is not None:
            current.append(line)
            if line == "COMMIT":
                current = None
        else:
            loose.append(line)
    out = loose + [line for name in sorted(blocks) for line in blocks[name]]
    return "".join(line + "\n" for line in out)


def wrap_rule(rule: str, table: str = "filter", prelude: str | Sequence[str] = "") -> str:
    """A complete restore file holding one rule line: ``*table``, prelude lines, rule, COMMIT.

    The rule is on line ``2 + len(prelude lines)``.
    """
    pre = prelude.splitlines() if isinstance(prelude, str) else [p.rstrip("\n") for p in prelude]
    return "".join(line + "\n" for line in [f"*{table}", *pre, rule.rstrip("\n"), "COMMIT"])


# --------------------------------------------------------------------------------------------
# Processes and namespaces
# --------------------------------------------------------------------------------------------


# Root's PATH lacks the sbin directories in some non-login shells; iptables and ip live there.
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
)


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=_SEARCH_PATH)


def _tool(tool: str) -> str:
    """The absolute path of a required tool."""
    found = _which(tool)
    if found is None:
        raise OracleError(f"{tool} not found (searched {_SEARCH_PATH})")
    return found


def _restore_prog(family: int) -> str:
    if family == 4:
        return "iptables-restore"
    if family == 6:
        return "ip6tables-restore"
    raise ValueError(f"family must be 4 or 6, not {family!r}")


def _save_prog(family: int) -> str:
    return _restore_prog(family).replace("-restore", "-save")


def _to_bytes(text: str | bytes) -> bytes:
    # surrogateescape: a str decoded from a non-UTF-8 dump with that handler round-trips.
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")


def _decode(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", "replace")


def _kill_pid(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL one child we started, by its PID, and reap it (bounded)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _run(
    argv: Sequence[str],
    stdin: bytes | None = None,
    timeout: float = COMMAND_TIMEOUT,
    track: list[subprocess.Popen[bytes]] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv with a timeout; on timeout kill the child by PID and raise OracleError."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C of the test run reaches us, not the child
        )
    except OSError as exc:
        raise OracleError(f"cannot run {argv[0]}: {exc}") from exc
    if track is not None:
        track.append(proc)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _kill_pid(proc)
        raise OracleError(f"timeout after {timeout}s: {' '.join(argv)}") from exc
    finally:
        if proc.poll() is None:
            _kill_pid(proc)
        if track is not None and proc in track:
            track.remove(proc)
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)


def _list_netns() -> set[str]:
    p = _run([_tool("ip"), "netns", "list"])
    return {line.split()[0] for line in _decode(p.stdout).splitlines() if line.strip()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _netns_pids(name: str) -> list[int]:
    try:
        p = _run([_tool("ip"), "netns", "pids", name])
    except OracleError:
        return []
    return [int(x) for x in _decode(p.stdout).split() if x.isdigit()]


def _delete_netns(name: str) -> None:
    """Kill what runs inside our namespace (by PID), then delete it by name."""
    for pid in _netns_pids(name):
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    _run([_tool("ip"), "netns", "del", name])


def cleanup_stale_namespaces() -> list[str]:
    """Delete ``nlt-<pid>-<n>`` namespaces whose creating process is gone (a SIGKILLed run)."""
    removed = []
    for name in sorted(_list_netns()):
        m = re.fullmatch(re.escape(NETNS_PREFIX) + r"(\d+)-\d+", name)
        if m is None or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        _delete_netns(name)
        removed.append(name)
    return removed


class Netns:
    """A named network namespace for the duration of a ``with`` block.

    >>> with Netns() as ns:
    ...     ns.run(["iptables-save"])
    """

    def __init__(self) -> None:
        self.name = f"{NETNS_PREFIX}{os.getpid()}-{next(_counter)}"
        self.created = False
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Self:
        global _stale_cleaned
        if not _stale_cleaned:
            _stale_cleaned = True
            cleanup_stale_namespaces()
        p = _run([_tool("ip"), "netns", "add", self.name])
        if p.returncode != 0:
            # Never adopt (and later delete) a namespace we did not create.
            raise OracleError(f"ip netns add {self.name} failed: {_decode(p.stderr).strip()}")
        self.created = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for proc in list(self._procs):
            _kill_pid(proc)
        self._procs.clear()
        if self.created:
            self.created = False
            _delete_netns(self.name)

    def argv(self, cmd: Sequence[str]) -> list[str]:
        """``cmd`` prefixed so that it runs inside this namespace."""
        if not self.created:
            raise OracleError(f"namespace {self.name} is not open")
        return [_tool("ip"), "netns", "exec", self.name, *cmd]

    def run(
        self, cmd: Sequence[str], stdin: str | bytes | None = None, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``cmd`` inside the namespace and wait (killed by PID after ``timeout``)."""
        data = None if stdin is None else _to_bytes(stdin)
        return _run(self.argv(cmd), data, timeout, track=self._procs)

    def popen(
        self,
        cmd: Sequence[str],
        *,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running ``cmd`` inside the namespace; it is killed by PID on exit."""
        proc = subprocess.Popen(self.argv(cmd), stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True)
        self._procs.append(proc)
        return proc


@lru_cache(maxsize=1)
def kernel_available() -> str | None:
    """None when the kernel oracle works here, else why not (for ``pytest.skip``)."""
    if os.geteuid() != 0:
        return "kernel oracle needs root (network namespaces, iptables-restore commits)"
    for tool in ("ip", "iptables-restore", "ip6tables-restore", "iptables-save", "ip6tables-save"):
        if _which(tool) is None:
            return f"kernel oracle needs {tool} (not found in {_SEARCH_PATH})"
    try:
        with Netns() as ns:
            for family in (4, 6):
                r = restore("*filter\nCOMMIT\n", family, ns=ns)
                if not r.ok:
                    return f"{_restore_prog(family)} fails in a namespace: {r.message.strip()}"
        # The anonymous-namespace path too: a failing unshare(1) must not pass for a verdict.
        r = restore("*filter\nCOMMIT\n", 4)
        if not r.ok:
            return f"iptables-restore in a fresh namespace fails: {r.message.strip()}"
    except OracleError as exc:
        return f"cannot create a network namespace: {exc}"
    return None


def _fresh_ns_argv(cmd: Sequence[str]) -> list[str]:
    # unshare(1) execs cmd in place (same PID) inside a new anonymous namespace that the kernel
    # frees when cmd exits. util-linux is Essential on Debian; fall back to Netns without it.
    return [_tool("unshare"), "--net", "--", *cmd]


def restore(
    text: str | bytes,
    family: int = 4,
    *,
    test_only: bool = False,
    ns: Netns | None = None,
    timeout: float = RESTORE_TIMEOUT,
) -> RestoreResult:
    """Run ``iptables-restore`` (``ip6tables-restore`` for family 6) with ``text`` on stdin.

    Without ``ns`` it runs in a fresh namespace of its own. It commits for real unless
    ``test_only`` (``--test``), so kernel-checked errors (DNAT in filter, loops, missing
    chains) are reported. Raises OracleError on timeout.
    """
    cmd = [_tool(_restore_prog(family))] + (["--test"] if test_only else [])
    data = _to_bytes(text)
    if ns is not None:
        p = ns.run(cmd, data, timeout)
    elif _which("unshare") is not None:
        p = _run(_fresh_ns_argv(cmd), data, timeout)
    else:
        with Netns() as fresh:
            p = fresh.run(cmd, data, timeout)
    return RestoreResult.from_process(p.returncode, _decode(p.stderr), _decode(p.stdout))


def save(ns: Netns, family: int = 4, *, counters: bool = False) -> str:
    """``iptables-save`` inside ``ns``, with ``#`` lines dropped (table order as printed)."""
    cmd = [_tool(_save_prog(family))] + (["-c"] if counters else [])
    p = ns.run(cmd, timeout=RESTORE_TIMEOUT)
    if p.returncode != 0:
        raise OracleError(f"{_save_prog(family)} in {ns.name} failed: {_decode(p.stderr).strip()}")
    return "".join(line + "\n" for line in _decode(p.stdout).splitlines() if not line.startswith("#"))


def restore_and_save(text: str | bytes, family: int = 4) -> tuple[RestoreResult, str | None]:
    """Restore into a fresh namespace, then ``normalise_save`` of what the kernel holds.

    The save output is None when the restore failed (a failed file may still have committed
    earlier tables; use ``Netns``, ``restore`` and ``save`` to look at that).
    """
    with Netns() as ns:
        result = restore(text, family, ns=ns)
        if not result.ok:
            return result, None
        return result, normalise_save(save(ns, family))


def _is_full_text(item: str | bytes) -> bool:
    if isinstance(item, bytes):
        return b"\n" in item.rstrip(b"\n")
    return "\n" in item.rstrip("\n")


def restore_many(
    lines_or_texts: Iterable[str | bytes],
    family: int = 4,
    *,
    table: str = "filter",
    prelude: str | Sequence[str] = "",
    wrap: bool | None = None,
    test_only: bool = False,
    jobs: int | None = None,
    timeout: float = RESTORE_TIMEOUT,
) -> list[RestoreResult]:
    """``restore`` of many candidates; result i is exactly what a standalone run of item i says.

    With ``wrap=True`` every item is a rule line, restored as ``wrap_rule(item, table,
    prelude)``, so the line numbers in the results refer to that wrapped text (the rule is on
    line 2 + prelude lines). With ``wrap=False`` every item is a complete restore file. The
    default decides per item: more than one line is a file, one line is a rule.

    Each candidate gets its own fresh namespace. Reusing one is not equivalent: with
    --noflush earlier candidates' rules and chains stay (a later ``-A FOO`` or ``-j FOO`` would
    find FOO, a loop could span two candidates, the nft depth check sees all rules); flush
    mode still keeps every table the candidate does not name. A fresh namespace costs about
    4 ms (measured: 300 one-rule candidates in about 0.6 s with 4 jobs on 2 vCPUs), so
    equivalence is cheap. ``jobs`` (default: 2 per CPU, at most 8) runs several at once.
    """
    texts = [
        wrap_rule(_decode_item(item), table, prelude)
        if (wrap if wrap is not None else not _is_full_text(item))
        else item
        for item in lines_or_texts
    ]
    if jobs is None:
        jobs = min(8, 2 * (os.cpu_count() or 1))
    if jobs <= 1 or len(texts) <= 1:
        return [restore(t, family, test_only=test_only, timeout=timeout) for t in texts]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda t: restore(t, family, test_only=test_only, timeout=timeout), texts))


def _decode_item(item: str | bytes) -> str:
    return item if isinstance(item, str) else item.decode("utf-8", "surrogateescape")
