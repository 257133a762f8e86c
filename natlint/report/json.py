"""The JSON format: ``{"version": 1, "findings": [...], "summary": {...}}`` (a public contract)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

from natlint.findings import Finding
from natlint.report.text import json_safe

__all__ = ["format_json", "summary"]


def summary(findings: Sequence[Finding], files: int) -> dict[str, object]:
    by_severity = Counter(f.severity for f in findings)
    return {
        "files": files,
        "findings": len(findings),
        "errors": by_severity.get("error", 0),
        "warnings": by_severity.get("warning", 0),
        "infos": by_severity.get("info", 0),
        "by_code": dict(sorted(Counter(f.code for f in findings).items())),
    }


def format_json(findings: Sequence[Finding], files: int) -> str:
    doc = {"version": 1, "findings": [f.to_dict() for f in findings], "summary": summary(findings, files)}
    return json_safe(json.dumps(doc, indent=2, ensure_ascii=False)) + "\n"
