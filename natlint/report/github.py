"""GitHub Actions workflow commands: one ``::error``/``::warning``/``::notice`` line per finding.

``::error file=rules.v4,line=12,col=18,title=NL101 undefined-chain::message``

The runner treats every output line that starts with ``::`` as a command, and messages quote rule
comments from the checked (untrusted) file. So every value is escaped as the runner unescapes
it: ``%`` -> ``%25``, CR -> ``%0D``, LF -> ``%0A`` in the message, and also ``:`` -> ``%3A`` and
``,`` -> ``%2C`` in properties. A finding is then always exactly one line, and nothing in it
can start another command. Other control characters are replaced by ``?`` (log hygiene).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from natlint.findings import Finding
from natlint.report.text import clean, format_witness

__all__ = ["format_github", "escape_data", "escape_property"]

_COMMAND = {"error": "error", "warning": "warning", "info": "notice"}


def _scrub(text: str) -> str:
    """Control characters but CR and LF (which are escaped, not lost) become '?'."""
    return "\n".join(clean(part) for part in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))


def escape_data(text: str) -> str:
    return _scrub(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _relative(path: str, cwd: Path) -> str:
    """Annotations need the path relative to the repository (the workspace, the current folder)."""
    try:
        return Path(path).resolve().relative_to(cwd).as_posix()
    except (ValueError, OSError):
        return path


def format_github(findings: Iterable[Finding], *, cwd: Path | None = None) -> str:
    root = (cwd or Path(os.environ.get("GITHUB_WORKSPACE") or Path.cwd())).resolve()
    lines: list[str] = []
    for f in findings:
        props: list[str] = []
        if f.path not in ("-", "<stdin>", "<text>"):
            props += [f"file={escape_property(_relative(f.path, root))}", f"line={f.line}", f"col={f.column}"]
        props.append(f"title={escape_property(f'{f.code} {f.name}'.strip())}")
        message = [f"{f.message} ({f.code} {f.name}, {f.severity})"]
        message += [f"related: {r.path}:{r.line}: {r.message}" for r in f.related]
        if f.witness:
            message.append(f"e.g.: {format_witness(f.witness)}")
        if f.certainty == "approximate":
            message.append("approximate: depends on matches natlint cannot decide")
        lines.append(f"::{_COMMAND.get(f.severity, 'warning')} {','.join(props)}::{escape_data(chr(10).join(message))}")
    return "\n".join(lines) + ("\n" if lines else "")
