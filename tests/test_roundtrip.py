"""natlint prints a dump back so that the kernel ends up with the same ruleset.

For every accepted fixture and reference dump: restore the original into a fresh network
namespace and save it; restore natlint's canonical output and save it; the two saves match.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from oracle import kernel_available, restore_and_save

import natlint
from natlint.printer import to_save

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# docker-28.0.0 needs an ipset created before restore (its set is not in the dump).
NEEDS_IPSET = {"docker-28.0.0-2containers.rules"}


def _dumps() -> list[Path]:
    files = sorted((ROOT / "fixtures").glob("*.rules"))
    ref = SHARED / "reference-dumps"
    if ref.is_dir():
        files += sorted(p for p in ref.glob("*.rules") if p.name not in NEEDS_IPSET)
    return files


def _family(path: Path) -> int:
    return natlint.load(path).family


@pytest.mark.kernel
@pytest.mark.parametrize("path", _dumps(), ids=lambda p: p.name)
def test_kernel_sees_the_same_ruleset(path: Path) -> None:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    family = _family(path)
    original, saved_original = restore_and_save(path.read_text(), family)
    if not original.ok:
        pytest.skip(f"the kernel rejects this file itself: {original.reason}")
    printed = to_save(natlint.load(path))
    ours, saved_ours = restore_and_save(printed, family)
    assert ours.ok, f"iptables-restore rejects natlint's output: {ours.message}\n{printed}"
    assert saved_ours == saved_original


def test_printing_is_stable() -> None:
    """Printing, reading the output and printing again changes nothing."""
    for path in _dumps():
        once = to_save(natlint.load(path))
        twice = to_save(natlint.load(once, family=natlint.load(path).family))
        assert once == twice, path.name
