"""Every reference dump (real iptables-save output of Docker and kube-proxy hosts) reads clean.

The dumps live in ``../shared/reference-dumps/`` (see its README); each one round-trips
through iptables-restore, so natlint must report no error and no warning for it. A warning that
is right after all goes in ALLOWED with the reason; infos are not part of this contract.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import natlint
from natlint.checks import run_checks

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "reference-dumps"

# (file name, code) -> why this warning is right for that dump. Empty: none is expected.
ALLOWED: dict[tuple[str, str], str] = {
    ("docker-legacy-2containers.rules", "NL307"):
        "Docker up to 27 publishes 127.0.0.1:3306 with no raw '! -i lo' guard: a neighbour sending to"
        " 127.0.0.1:3306 through the host's MAC reaches the container (moby#45610); true.",
}


def _dumps() -> list[object]:
    if not REFERENCE.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{REFERENCE} is absent"), id="no-reference-dumps")]
    return [pytest.param(p, id=p.name) for p in sorted(REFERENCE.iterdir()) if p.is_file() and p.suffix == ".rules"]


@pytest.mark.parametrize("path", _dumps())
def test_reference_dump_reads_clean(path: Path) -> None:
    ruleset = natlint.load(path)
    findings = run_checks(ruleset)
    unexpected = [
        f for f in findings
        if f.severity == "error" or (f.severity == "warning" and (path.name, f.code) not in ALLOWED)
    ]
    assert not unexpected, "\n".join(f"{f.line}:{f.column} {f.code} [{f.severity}] {f.message}" for f in unexpected)
    assert ruleset.rule_count > 0


def test_reference_dumps_are_all_checked() -> None:
    if not REFERENCE.is_dir():
        pytest.skip(f"{REFERENCE} is absent")
    others = [p.name for p in REFERENCE.iterdir() if p.is_file() and p.suffix not in (".rules", ".md")]
    assert not others, f"reference dumps this test does not read: {others}"
