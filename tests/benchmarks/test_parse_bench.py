"""Parsing speed (pytest-benchmark; run with ``pytest tests/benchmarks --benchmark-enable``).

The default suite runs the 1k- and 10k-rule kube-proxy dumps and the largest corpus file
once each (benchmarks disabled: a smoke run that also checks the result); the ~90k-rule
kube-proxy dump is behind the ``slow`` marker (``-m slow``). The target is 50,000 rules/s on a
2-core machine, no more than 3x ``iptables-restore --test`` on the same file (see
docs/performance.md for the numbers and how they were measured).

Every round starts from empty caches (plans, parsed values, shapes: ``clear_caches``), as a
new ``natlint check`` process would (it reads the shapes file in ~/.cache/natlint again), so
the numbers are not flattered by an earlier round having seen the same addresses; the lark
parser is loaded before the first round. ``extra_info`` records the rule count, so rules/s =
rules / time.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from natlint import synth
from natlint.model.ruleset import Ruleset
from natlint.syntax.binder import clear_caches
from natlint.syntax.grammar import _parser
from natlint.syntax.reader import read

ROOT = Path(__file__).resolve().parents[2]
CORPUS_FILE = (
    ROOT.parent / "shared" / "corpus" / "configs_chair_for_Network_Architectures_and_Services"
    / "iptables-save-2016-06-27_16-29-01"
)


@cache
def _dump(services: int, endpoints: int) -> bytes:
    return synth.kube_proxy(services, endpoints).encode()


def _run(benchmark: pytest.FixtureRequest, data: bytes, rounds: int, *, clean: bool = True) -> int:
    """Benchmark read(data): every round from empty caches; the ruleset of a round is freed in
    the next round's (untimed) setup, as a CLI run frees it at exit."""
    _parser()  # built (or loaded from ~/.cache/natlint) once per process: not part of a parse
    kept: list[Ruleset] = []

    def setup() -> None:
        kept.clear()
        clear_caches()

    def parse() -> None:
        kept.append(read(data, "bench.rules"))

    benchmark.pedantic(parse, setup=setup, rounds=rounds, iterations=1)  # type: ignore[attr-defined]
    ruleset = kept[-1]
    if clean:
        assert not [f for f in ruleset.diagnostics if getattr(f, "severity", "") == "error"]
    benchmark.extra_info["rules"] = ruleset.rule_count  # type: ignore[attr-defined]
    return ruleset.rule_count


def test_parse_kube_proxy_1k(benchmark: pytest.FixtureRequest) -> None:
    data = _dump(60, 5)
    rules = _run(benchmark, data, rounds=20)
    assert rules == synth.rule_count(data.decode()) > 1000


def test_parse_kube_proxy_10k(benchmark: pytest.FixtureRequest) -> None:
    data = _dump(600, 5)
    rules = _run(benchmark, data, rounds=5)
    assert rules == synth.rule_count(data.decode()) > 10_000


def test_parse_largest_corpus_file(benchmark: pytest.FixtureRequest) -> None:
    """A real dump (3.6k rules, anonymised MAC addresses that natlint rightly rejects)."""
    if not CORPUS_FILE.is_file():
        pytest.skip(f"{CORPUS_FILE} is not here (the shared corpus sits beside the checkout)")
    rules = _run(benchmark, CORPUS_FILE.read_bytes(), rounds=10, clean=False)
    assert rules > 3000


@pytest.mark.slow
def test_parse_kube_proxy_85k(benchmark: pytest.FixtureRequest) -> None:
    data = _dump(5000, 5)
    rules = _run(benchmark, data, rounds=3)
    assert rules == synth.rule_count(data.decode()) > 80_000
