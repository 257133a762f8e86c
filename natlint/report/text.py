"""The default one-line-per-finding format: ``path:line:col: CODE [severity] message (name)``."""

from __future__ import annotations

from collections.abc import Iterable

from natlint.findings import Finding

__all__ = ["format_concise", "format_full", "clean"]

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


def format_full(findings: Iterable[Finding]) -> str:
    """Each finding with the source line and a caret under the column, then related places."""
    blocks: list[str] = []
    for f in findings:
        lines = [f"{clean(f.path)}:{f.line}:{f.column}: {f.code} [{f.severity}] {f.name}", f"  {clean(f.message)}"]
        if f.source_line is not None:
            source = clean(f.source_line.rstrip("\r\n"))
            if len(source) > 200:
                start = max(0, f.column - 100)
                source = ("..." if start else "") + source[start : start + 200]
                caret_at = f.column - start + (3 if start else 0)
            else:
                caret_at = f.column
            gutter = f"{f.line} | "
            lines.append(f"  {gutter}{source}")
            lines.append("  " + " " * len(gutter) + " " * max(caret_at - 1, 0) + "^")
        for rel in f.related:
            lines.append(f"  = related: {clean(rel.path)}:{rel.line}: {clean(rel.message)}")
        if f.certainty == "approximate":
            lines.append("  = note: this finding depends on matches natlint cannot decide (approximate)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")
