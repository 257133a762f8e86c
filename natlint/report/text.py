"""The terminal formats.

``concise`` (the default) is one line per finding: ``path:line:col: CODE [severity] message (name)``.
``full`` adds the source line with a caret under the column, the related rules (with their
text), the witness packet and whether the finding is approximate.

Everything that comes from the checked file (paths, messages quoting rule text or comments,
source lines) goes through ``clean``: a rule comment must not be able to move the cursor, change
colours or rewrite the line on the reader's terminal. Colour is added only when asked
(``color=True``; the CLI asks on a terminal, honouring ``NO_COLOR`` and ``FORCE_COLOR``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from natlint.findings import Finding

__all__ = ["format_concise", "format_full", "clean", "format_witness", "json_safe", "source_text"]

# C0 controls (but TAB), DEL and the C1 controls (0x9b is a one-byte CSI on some terminals), and
# the bidirectional overrides and isolates that reorder what is shown ("Trojan source").
# The line and paragraph separators too: some terminals and log viewers break lines there.
_INVISIBLE = (*range(127, 160), *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C, 0x2028,
              0x2029)
_CONTROL = {c: "?" for c in (*range(0, 9), *range(10, 32), *_INVISIBLE)}
# For JSON text: json.dumps(ensure_ascii=False) escapes C0 controls but writes these as they are.
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in _INVISIBLE}

_STYLES = {"error": "1;31", "warning": "1;33", "info": "1;36", "code": "1", "path": "1", "dim": "2", "caret": "1;31"}


def clean(text: str) -> str:
    """Replace control characters (from rule comments in untrusted files) by '?' before a
    terminal sees them. TAB is kept."""
    return text.translate(_CONTROL)


def json_safe(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with DEL, the C1 controls, the
    bidirectional controls and the line separators written as ``\\uXXXX`` escapes: the same JSON
    value, but a terminal that shows the file shows what is in it. They only occur inside strings."""
    return text.translate(_JSON_ESCAPES)


def source_text(sources: Mapping[str, Sequence[str]], path: str, line: int) -> str | None:
    """Line ``line`` (1-based) of ``path`` in ``sources`` (path -> lines), if it is there."""
    lines = sources.get(path)
    return lines[line - 1] if lines is not None and 0 < line <= len(lines) else None


def _paint(text: str, style: str, color: bool) -> str:
    return f"\x1b[{_STYLES[style]}m{text}\x1b[0m" if color else text


def format_concise(findings: Iterable[Finding], *, color: bool = False) -> str:
    lines = [
        f"{_paint(clean(f.path), 'path', color)}:{f.line}:{f.column}: {_paint(f.code, 'code', color)}"
        f" [{_paint(f.severity, f.severity, color)}] {clean(f.message)} ({f.name})"
        for f in findings
    ]
    return "\n".join(lines) + ("\n" if lines else "")


def format_witness(witness: Mapping[str, object]) -> str:
    """``{"proto": "tcp", "dport": 22}`` -> ``proto=tcp dport=22``; a nested mapping (the
    packet after NAT) reads ``after NAT: src=... dst=...``."""
    words: list[str] = []
    nested: list[str] = []
    for key, value in witness.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            inner = format_witness(value)
            if inner:
                nested.append(f"{key.replace('_', ' ').replace('nat', 'NAT')}: {inner}")
        else:
            words.append(f"{key}={value}")
    return "; ".join([" ".join(words), *nested]) if nested else " ".join(words)


def _snippet(line: int, column: int, source: str, color: bool, indent: str = "  ") -> list[str]:
    source = clean(source.rstrip("\r\n"))
    if len(source) > 200:
        start = max(0, column - 100)
        source = ("..." if start else "") + source[start : start + 200]
        caret_at = column - start + (3 if start else 0)
    else:
        caret_at = column
    gutter = f"{line} | "
    return [
        f"{indent}{_paint(gutter, 'dim', color)}{source}",
        indent + " " * len(gutter) + " " * max(caret_at - 1, 0) + _paint("^", "caret", color),
    ]


def format_full(findings: Iterable[Finding], *, sources: Mapping[str, Sequence[str]] | None = None,
                color: bool = False) -> str:
    """Each finding with the source line and a caret under the column, then related places.

    ``sources`` maps a path to its lines, for findings without ``source_line`` and for the text
    of related rules.
    """
    sources = sources or {}
    blocks: list[str] = []
    for f in findings:
        head = (f"{_paint(clean(f.path), 'path', color)}:{f.line}:{f.column}: {_paint(f.code, 'code', color)}"
                f" [{_paint(f.severity, f.severity, color)}] {f.name}")
        lines = [head, f"  {clean(f.message)}"]
        source = f.source_line if f.source_line is not None else source_text(sources, f.path, f.line)
        if source is not None:
            lines.extend(_snippet(f.line, f.column, source, color))
        for rel in f.related:
            lines.append(f"  = related: {clean(rel.path)}:{rel.line}: {clean(rel.message)}")
            rel_source = source_text(sources, rel.path, rel.line)
            if rel_source is not None:
                lines.append(f"      {_paint(f'{rel.line} | ', 'dim', color)}{clean(rel_source.rstrip())[:200]}")
        if f.witness:
            lines.append(f"  = e.g.: {clean(format_witness(f.witness))}")
        if f.certainty == "approximate":
            lines.append("  = note: this finding depends on matches natlint cannot decide (approximate)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")
