"""The real-world corpus: natlint says "error" exactly where iptables-restore fails.

``../shared/corpus/README.md`` holds a table of what ``iptables-restore --test`` (1.8.9,
nf_tables) says about each file. For every file: no Python exception; a file it accepts gets
no NL001/NL002/NL003 finding of any severity; a file it rejects gets an error finding at the
line it names ("Error occurred at line: N", "line N failed", ...) or, where it names none, at
least one error finding.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from oracle import CorpusEntry, parse_corpus_table

import natlint
from natlint.checks import run_checks

SHARED = Path(__file__).resolve().parents[2] / "shared"
README = SHARED / "corpus" / "README.md"
SYNTAX_CODES = frozenset({"NL001", "NL002", "NL003"})

# file -> why natlint cannot (or should not) agree with the table there.
XFAIL: dict[str, str] = {
    "configs_serverfault/759927.txt": (
        "rejected only because the ipset 'whitelist' does not exist on the machine that ran"
        " iptables-restore: sets live outside the dump (Docker 28.0.0's reference dump needs one"
        " too and must read clean), so natlint cannot call this an error"
    ),
}


def _entries() -> list[object]:
    if not README.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{README} is absent"), id="no-corpus")]
    params = []
    for entry in parse_corpus_table(README):
        marks = [pytest.mark.xfail(reason=XFAIL[entry.name], strict=True)] if entry.name in XFAIL else []
        params.append(pytest.param(entry, marks=marks, id=entry.name))
    return params


def _show(findings: list[natlint.findings.Finding]) -> str:  # type: ignore[name-defined]
    return "\n".join(f"  {f.line}:{f.column} {f.code} [{f.severity}] {f.message}" for f in findings[:20])


@pytest.mark.parametrize("entry", _entries())
def test_corpus_file(entry: CorpusEntry) -> None:
    ruleset = natlint.load(entry.path, family=entry.family)  # any exception fails the test
    findings = run_checks(ruleset)
    if entry.exit_code == 0:
        syntax = [f for f in findings if f.code in SYNTAX_CODES]
        assert not syntax, f"{entry.tool} accepts {entry.name}, natlint says:\n{_show(syntax)}"
        return
    errors = [f for f in findings if f.severity == "error"]
    if entry.line is not None:
        assert any(f.line == entry.line for f in errors), (
            f"{entry.tool} rejects {entry.name} at line {entry.line} ({entry.message});"
            f" natlint's errors:\n{_show(errors)}"
        )
    else:
        assert errors, f"{entry.tool} rejects {entry.name} ({entry.message}); natlint reports no error"


def test_corpus_table_lists_files_that_exist() -> None:
    if not README.is_file():
        pytest.skip(f"{README} is absent")
    entries = parse_corpus_table(README)
    assert len(entries) > 50
    missing = [e.name for e in entries if not e.path.is_file()]
    assert not missing, missing
