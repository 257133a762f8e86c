"""The default one-line-per-finding format: ``path:line:col: CODE [severity] message (name)``."""

from __future__ import annotations

from collections.abc import Iterable

from natlint.findings import Finding

__all__ = ["format_concise", "clean"]

_CONTROL = {c: "?" for c in range(32) if c not in (9,)}
_CONTROL[127] = "?"


def clean(text: str) -> str:
    """Strip control characters (from rule comments in untrusted files) before a terminal sees them."""
    return text.translate(_CONTROL)


def format_concise(findings: Iterable[Finding]) -> str:
    lines = [
        f"{clean(f.path)}:{f.line}:{f.column}: {f.code} [{f.severity}] {clean(f.message)} ({f.name})"
        for f in findings
    ]
    return "\n".join(lines) + ("\n" if lines else "")
