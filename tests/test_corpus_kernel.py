"""natlint's trace against the real kernel on the real-world corpus (``../shared/corpus``).

The same comparison as tests/test_engine_kernel.py (read its docstring: what is compared and
what is left aside), on every IPv4 corpus file that ``iptables-restore --test`` accepts: one
lab built from the host model natlint infers from the file, the file loaded with
``iptables-restore``, and per file the targeted probes (every interface's neighbours to every
port the rules name, the host's own connections) plus RANDOM_PROBES hypothesis-generated
ones. These are firewalls written by people (Shorewall, ferm, ufw, fwbuilder, Tails, home
routers, company gateways), not Docker or kube-proxy: REJECTs whose answers the host's own
OUTPUT drops, OUTPUT policies that let no SYN-ACK out, NOTRACK in raw, owner and limit
matches, old nat tables without INPUT. The corpus is not copied into this repository (its
licence): the test skips when ``../shared`` is absent.

Left out: files that name ipsets (their members live outside the dump, the lab has none).
A file whose own rules use the TRACE target is compared without the kernel's path (the
harness cannot tell the probe's first packet from the later ones that TRACE also traces).

Marker ``kernel``; skipped where the oracle cannot run (``oracle.kernel_available()``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import oracle
import pytest
from oracle import parse_corpus_table
from test_engine_kernel import Case, Tally, check_case, summary_line

SHARED = Path(__file__).resolve().parents[2] / "shared"
README = SHARED / "corpus" / "README.md"
REASON = oracle.kernel_available()
RANDOM_PROBES = 30  # per file, on top of the targeted ones
MIN_PROBES = 1200  # over the whole corpus (about 33 per file)

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

_SETS = re.compile(r"(-m set\b|--match-set\b|-j SET\b)")
_TRACE = re.compile(r"-j TRACE\b")
SUMMARY: dict[str, Tally] = {}


def corpus_cases(family: int, prefix: str, aside: Mapping[str, str] | None = None) -> list[Any]:
    """The corpus files of one family that ``iptables-restore --test`` accepts and that name
    no ipset, as cases named PREFIX:FILE (``aside``: file -> why it is skipped)."""
    if not README.is_file():
        return [pytest.param(None, id=f"{prefix}:absent", marks=pytest.mark.skip(reason=f"{README} is absent"))]
    params = []
    for entry in parse_corpus_table(README):
        if entry.exit_code != 0 or entry.family != family:
            continue
        text = entry.path.read_text(errors="replace")
        if _SETS.search(text):
            continue
        case = Case(f"{prefix}:{entry.name}", entry.path, paths=_TRACE.search(text) is None)
        why = (aside or {}).get(entry.name)
        params.append(pytest.param(case, id=case.name, marks=[pytest.mark.skip(reason=why)] if why else []))
    return params


def _cases() -> list[Any]:
    return corpus_cases(4, "corpus")


@pytest.fixture(scope="module", autouse=True)
def _summary() -> Iterator[None]:
    yield
    line = summary_line(SUMMARY, " (corpus)")
    if line:
        print(f"\n{line} files")


@pytest.mark.parametrize("case", _cases())
def test_corpus_file_agrees_with_kernel(case: Case) -> None:
    check_case(case, SUMMARY, RANDOM_PROBES)


def test_enough_corpus_probes() -> None:
    """Runs last (file order): the files above sent at least MIN_PROBES probes."""
    if len(SUMMARY) < len([p for p in _cases() if not p.marks]):
        pytest.skip("not every corpus file ran (a -k selection?)")
    total = sum(t.probes for t in SUMMARY.values())
    assert total >= MIN_PROBES, f"only {total} probes ran over the corpus (want {MIN_PROBES})"
