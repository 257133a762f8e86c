"""Every fixture states the findings it must produce, and the kernel agrees on its errors.

A fixture under ``fixtures/`` carries ``# expect: CODE LINE[, CODE LINE...]`` comment lines
(or ``# expect: (none)``): the error and warning findings natlint reports must be exactly those.
Info findings (NL004 while a module is not modelled) are not part of the contract.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from oracle import kernel_available, restore
from test_engine_kernel import _fixture_case, _host_model

import natlint
from natlint.checks import run_checks

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
_EXPECT = re.compile(r"^# expect: (.*)$", re.M)


def _fixtures() -> list[Path]:
    return sorted(p for p in FIXTURES.rglob("*.rules") if _EXPECT.search(p.read_text()))


def _expected(path: Path) -> set[tuple[str, int]]:
    found: set[tuple[str, int]] = set()
    for spec in _EXPECT.findall(path.read_text()):
        if spec.strip() == "(none)":
            continue
        for item in spec.split(","):  # "NL201 25, NL201 28": several on one line
            code, line = item.split()
            found.add((code, int(line)))
    return found


def _reported(path: Path) -> list[natlint.findings.Finding]:  # type: ignore[name-defined]
    """The findings, under the host model the kernel tests build their lab from (the one the
    fixture names with ``# host: FILE``, else the inferred one)."""
    ruleset = natlint.load(path)
    host = _host_model(_fixture_case(path), ruleset)
    return [f for f in run_checks(ruleset, host) if f.severity in ("error", "warning")]


@pytest.mark.parametrize("path", _fixtures(), ids=lambda p: str(p.relative_to(FIXTURES)))
def test_fixture_findings(path: Path) -> None:
    reported = _reported(path)
    got = {(f.code, f.line) for f in reported}
    assert got == _expected(path), "\n".join(f"{f.line}:{f.column} {f.code} {f.message}" for f in reported)


@pytest.mark.kernel
@pytest.mark.parametrize("path", _fixtures(), ids=lambda p: str(p.relative_to(FIXTURES)))
def test_kernel_rejects_exactly_the_fixtures_with_errors(path: Path) -> None:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    has_error = any(f.severity == "error" for f in _reported(path))
    result = restore(path.read_text(), natlint.load(path).family)
    assert result.ok != has_error, f"natlint error={has_error}, kernel: {result.message}"
