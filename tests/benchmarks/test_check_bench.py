"""Chain-graph build and full ``natlint check`` speed (pytest-benchmark).

``pytest tests/benchmarks/test_check_bench.py --benchmark-enable`` measures the graph build at
1k, 10k and 100k rules (kube_proxy(55, 5), (550, 5), (5500, 5)) and the full check (every
check, as ``natlint check`` runs them, with a fresh context) at 1k. The full check at 10k and
100k, and the 100k graph build, are behind ``-m slow``: the semantic checks of a 10k-rule
kube-proxy dump run into their 60 s budget on the 2-core project machine (NL007), so the
number measured there is the budget. Without ``--benchmark-enable`` each body runs once.
"""

from __future__ import annotations

from functools import cache

import pytest

from natlint import synth
from natlint.checks import CheckContext, run_checks
from natlint.graph.chains import build_graphs
from natlint.model.ruleset import Ruleset
from natlint.syntax.reader import read

SIZES = {"1k": (55, 5), "10k": (550, 5), "100k": (5500, 5)}


@cache
def _ruleset(size: str) -> Ruleset:
    return read(synth.kube_proxy(*SIZES[size]), f"kube-{size}.rules")


def _graphs(ruleset: Ruleset) -> int:
    graphs = build_graphs(ruleset)
    # what the structural checks ask of every graph
    return sum(len(g.hooks) + len(g.reachable_cycles()) + g.max_depth()[0] for g in graphs.values())


def _check(ruleset: Ruleset) -> int:
    return len(run_checks(ruleset, ctx=CheckContext(ruleset)))


@pytest.mark.parametrize("size", ["1k", "10k", pytest.param("100k", marks=pytest.mark.slow)])
def test_graph_build(benchmark: pytest.FixtureRequest, size: str) -> None:
    ruleset = _ruleset(size)
    benchmark.extra_info["rules"] = ruleset.rule_count  # type: ignore[attr-defined]
    assert benchmark(_graphs, ruleset) > 0  # type: ignore[operator]


@pytest.mark.parametrize("size", ["1k", pytest.param("10k", marks=pytest.mark.slow),
                                  pytest.param("100k", marks=pytest.mark.slow)])
def test_full_check(benchmark: pytest.FixtureRequest, size: str) -> None:
    ruleset = _ruleset(size)
    benchmark.extra_info["rules"] = ruleset.rule_count  # type: ignore[attr-defined]
    found = benchmark.pedantic(_check, args=(ruleset,), rounds=1 if size != "1k" else 3,  # type: ignore[attr-defined]
                               iterations=1)
    assert found >= 0
