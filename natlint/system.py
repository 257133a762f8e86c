"""``natlint-system``: check the firewall this machine runs now (the ``natlint-system`` pre-commit hook).

Runs ``iptables-save`` and ``ip6tables-save`` (read-only: they print the loaded rules and change
nothing; without ``-c``, so no counters) and checks each output as ``natlint check`` checks
standard input, named ``iptables-save`` and ``ip6tables-save`` in the report. Every argument is
passed on to ``natlint check`` (``natlint-system --fail-on warning``); the configuration is the
nearest one above the current folder. One report is printed per family.

Exit codes as ``natlint check``: the highest of the two runs. 2 when ``iptables-save`` is
missing, not permitted (not root) or fails: natlint says which and why. A missing
``ip6tables-save``, or a kernel without IPv6, is a note and IPv6 is not checked.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Sequence

import click

__all__ = ["SAVE_COMMANDS", "SystemDumpError", "read_dump", "main", "run"]

# Every command natlint-system runs, exactly as run.
SAVE_COMMANDS: tuple[tuple[str, ...], ...] = (("iptables-save",), ("ip6tables-save",))
_TIMEOUT = 60.0
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


class SystemDumpError(RuntimeError):
    """The live ruleset could not be read; ``missing`` when the command is not installed."""

    def __init__(self, message: str, *, missing: bool = False, unsupported: bool = False) -> None:
        super().__init__(message)
        self.missing = missing
        self.unsupported = unsupported


def _path() -> str:
    """The caller's PATH, with the sbin folders (where iptables-save lives) added at the end."""
    parts = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    return os.pathsep.join(parts + [d for d in _SBIN if d not in parts])


def read_dump(argv: tuple[str, ...]) -> bytes:
    """The output of one of :data:`SAVE_COMMANDS`; raises :class:`SystemDumpError`."""
    if argv not in SAVE_COMMANDS:  # a programming error: keep the read-only promise above
        raise SystemDumpError(f"refusing to run {' '.join(argv)}: not a listed read-only command")
    name = argv[0]
    env = {**os.environ, "PATH": _path(), "LC_ALL": "C"}
    try:
        proc = subprocess.run(list(argv), capture_output=True, timeout=_TIMEOUT, check=False, env=env)
    except FileNotFoundError:
        raise SystemDumpError(f"{name} is not installed (looked in PATH and {', '.join(_SBIN)}): install iptables,"
                              " or check dumps with 'natlint check FILE'", missing=True) from None
    except subprocess.TimeoutExpired:
        raise SystemDumpError(f"{name} did not answer within {_TIMEOUT:g} s") from None
    except PermissionError as exc:
        raise SystemDumpError(f"{name} may not be run by this user: {exc}") from None
    except OSError as exc:
        raise SystemDumpError(f"cannot run {name}: {exc}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip() or f"exit code {proc.returncode}"
        low = err.lower()
        if "permission denied" in low or "must be root" in low or "operation not permitted" in low:
            raise SystemDumpError(f"{name} is not permitted for this user (reading the firewall needs root or"
                                  f" CAP_NET_ADMIN; try sudo): {err}")
        unsupported = "address family not supported" in low or "protocol not supported" in low
        raise SystemDumpError(f"{name} failed: {err}", unsupported=unsupported)
    return proc.stdout


def _check(data: bytes, name: str, args: Sequence[str]) -> int:
    """``natlint check ARGS --stdin-filename NAME -`` with ``data`` as standard input."""
    from natlint.cli import main as cli

    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace")
    try:
        cli.main(["check", *args, "--stdin-filename", name, "-"], prog_name="natlint-system", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    finally:
        sys.stdin = saved
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Check both families' live rules; returns the exit code (``run`` exits with it)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        click.echo(__doc__)
        return 0
    worst = 0
    for command in SAVE_COMMANDS:
        name = command[0]
        try:
            data = read_dump(command)
        except SystemDumpError as exc:
            if name == "ip6tables-save" and (exc.missing or exc.unsupported):
                click.echo(f"natlint-system: note: IPv6 not checked: {exc}", err=True)
                continue
            click.echo(f"natlint-system: error: {exc}", err=True)
            return 2
        worst = max(worst, _check(data, name, args))
    return worst


def run() -> None:
    """The ``natlint-system`` console script."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
