"""SARIF 2.1.0 (for GitHub code scanning and other SARIF viewers).

One run; ``tool.driver.rules`` lists every registered code with its documentation (name,
summary, why it matters, a flagged and a fixed example), so results refer to rules by ``ruleId``
and ``ruleIndex``. Each result has its location (a relative ``uri`` under ``%SRCROOT%``, the
current folder, when the file is below it), the table/chain as a logical location, the related
rules as ``relatedLocations``, the witness packet and certainty in ``properties``, and
``partialFingerprints["natlint/v1"]``: a hash of the path, code, table, chain, the rule's text
(counters and spacing normalised) and the occurrence index of that combination, so an alert
keeps its identity when lines are inserted above it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

from natlint import __version__
from natlint.findings import CODES, Code, Finding
from natlint.report.text import json_safe, source_text

__all__ = ["format_sarif", "SARIF_SCHEMA", "fingerprint_text"]

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
_LEVEL = {"error": "error", "warning": "warning", "info": "note"}
_COUNTERS = re.compile(r"^\s*\[\d+:\d+\]\s*")
_SRCROOT = "%SRCROOT%"


def fingerprint_text(line: str) -> str:
    """A rule line as it is compared between runs: no ``[pkts:bytes]`` counters, single spaces."""
    return " ".join(_COUNTERS.sub("", line).split())


def _artifact(path: str, cwd: Path) -> dict[str, object]:
    if path in ("-", "<stdin>", "<text>"):
        return {"uri": quote(path.strip("<>"))}
    candidate = Path(path)
    try:
        absolute = candidate.resolve()
        relative = absolute.relative_to(cwd)
        return {"uri": quote(relative.as_posix()), "uriBaseId": _SRCROOT}
    except (ValueError, OSError):
        pass
    if candidate.is_absolute():
        return {"uri": candidate.as_uri()}
    return {"uri": quote(candidate.as_posix())}


def _help(entry: Code) -> dict[str, str]:
    text = [entry.summary]
    markdown = [f"**{entry.code} {entry.name}** ({entry.severity})", "", entry.summary]
    if entry.why:
        text += ["", "Why it matters: " + entry.why]
        markdown += ["", "### Why it matters", "", entry.why]
    if entry.example:
        text += ["", "Example (flagged):", entry.example]
        markdown += ["", "### Example (flagged)", "", "```", entry.example, "```"]
    if entry.fixed:
        text += ["", "Fixed:", entry.fixed]
        markdown += ["", "### Fixed", "", "```", entry.fixed, "```"]
    return {"text": "\n".join(text), "markdown": "\n".join(markdown)}


def _rule(entry: Code) -> dict[str, object]:
    return {
        "id": entry.code,
        "name": entry.name,
        "shortDescription": {"text": entry.summary},
        "fullDescription": {"text": f"{entry.summary} {entry.why}".strip()},
        "help": _help(entry),
        "defaultConfiguration": {"level": _LEVEL[entry.severity]},
        "properties": {"tags": ["iptables", "firewall"]},
    }


def _region(line: int, column: int, source: str | None) -> dict[str, object]:
    region: dict[str, object] = {"startLine": max(line, 1), "startColumn": max(column, 1)}
    if source is not None:
        region["snippet"] = {"text": source.rstrip("\r\n")}
    return region


def format_sarif(findings: Sequence[Finding], *, sources: Mapping[str, Sequence[str]] | None = None,
                 failures: Sequence[str] = (), cwd: Path | None = None) -> str:
    """The SARIF log of one natlint run. ``sources`` maps a path to its lines (snippets and
    fingerprints); ``failures`` are messages about files that could not be read."""
    sources = sources or {}
    root = (cwd or Path.cwd()).resolve()
    codes = dict(CODES)
    for f in findings:  # a code a check forgot to register still gets a rule entry
        codes.setdefault(f.code, Code(f.code, f.name or f.code.lower(), f.severity, f.code))
    ordered = sorted(codes)
    index = {c: i for i, c in enumerate(ordered)}

    occurrences: Counter[tuple[str, ...]] = Counter()
    results: list[dict[str, object]] = []
    for f in findings:
        source = f.source_line if f.source_line is not None else source_text(sources, f.path, f.line)
        identity = (f.path, f.code, f.table or "", f.chain or "", fingerprint_text(source or ""))
        occurrence = occurrences[identity]
        occurrences[identity] += 1
        digest = hashlib.sha256("\x00".join((*identity, str(occurrence))).encode("utf-8", "surrogateescape"))
        physical = {"artifactLocation": _artifact(f.path, root), "region": _region(f.line, f.column, source)}
        location: dict[str, object] = {"physicalLocation": physical}
        if f.table or f.chain:
            location["logicalLocations"] = [{
                "name": f.chain or f.table,
                "fullyQualifiedName": "/".join(x for x in (f.table, f.chain) if x),
                "kind": "module" if f.chain is None else "function",
            }]
        result: dict[str, object] = {
            "ruleId": f.code,
            "ruleIndex": index[f.code],
            "level": _LEVEL.get(f.severity, "warning"),
            "message": {"text": f.message},
            "locations": [location],
            "partialFingerprints": {"natlint/v1": digest.hexdigest()},
        }
        if f.related:
            result["relatedLocations"] = [
                {
                    "id": n,
                    "message": {"text": rel.message},
                    "physicalLocation": {
                        "artifactLocation": _artifact(rel.path, root),
                        "region": _region(rel.line, rel.column, source_text(sources, rel.path, rel.line)),
                    },
                }
                for n, rel in enumerate(f.related, 1)
            ]
        properties: dict[str, object] = {"certainty": f.certainty, "name": f.name}
        if f.table:
            properties["table"] = f.table
        if f.chain:
            properties["chain"] = f.chain
        if f.witness is not None:
            properties["witness"] = f.witness
        result["properties"] = properties
        results.append(result)
    invocation: dict[str, object] = {"executionSuccessful": not failures}
    if failures:
        invocation["toolExecutionNotifications"] = [{"level": "error", "message": {"text": m}} for m in failures]
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "natlint",
                "version": __version__,
                "semanticVersion": __version__,
                "rules": [_rule(codes[c]) for c in ordered],
            }},
            "invocations": [invocation],
            "originalUriBaseIds": {_SRCROOT: {"uri": root.as_uri() + "/"}},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    }
    return json_safe(json.dumps(log, indent=2, ensure_ascii=False, default=str)) + "\n"
