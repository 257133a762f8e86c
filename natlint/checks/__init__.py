"""Checks: each module asks the model (and later the engine) one family of questions.

``run_checks(ruleset)`` returns the reader's findings plus every check's, sorted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from natlint.findings import Finding
from natlint.model.ruleset import Ruleset

__all__ = ["run_checks", "CHECKS"]

Check = Callable[[Ruleset], Iterable[Finding]]


def _checks() -> list[Check]:
    from natlint.checks import structure

    return [structure.check]


CHECKS = _checks


def run_checks(ruleset: Ruleset) -> list[Finding]:
    findings = [f for f in ruleset.diagnostics if isinstance(f, Finding)]
    for check in _checks():
        findings.extend(check(ruleset))
    findings.sort(key=Finding.sort_key)
    return findings
