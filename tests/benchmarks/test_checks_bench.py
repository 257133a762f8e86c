"""NL2xx speed (natlint.checks.rules): one walk per chain on packet sets.

Default run: a smoke run (benchmarks disabled) on kube_proxy(60, 5). The corpus dump and the
large kube-proxy sizes run with ``-m slow``:
``pytest tests/benchmarks/test_checks_bench.py -m slow --benchmark-enable``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import natlint
from natlint import synth
from natlint.checks.context import CheckContext
from natlint.checks.rules import findings
from natlint.model import Ruleset

CORPUS_BIG = (
    Path(__file__).resolve().parents[3]
    / "shared/corpus/configs_chair_for_Network_Architectures_and_Services/iptables-save-2016-06-27_16-29-01"
)


def rule_checks(ruleset: Ruleset) -> int:
    """The NL2xx findings of a fresh context (rule compilation included), unreadable tables too."""
    return len(list(findings(CheckContext(ruleset), skip_unreadable=False)))


def test_rule_checks_kube_proxy_60(benchmark: pytest.FixtureRequest) -> None:
    ruleset = natlint.load(synth.kube_proxy(60, 5))
    assert benchmark(rule_checks, ruleset) == 0  # type: ignore[operator]


@pytest.mark.slow
def test_rule_checks_largest_corpus_dump(benchmark: pytest.FixtureRequest) -> None:
    if not CORPUS_BIG.is_file():
        pytest.skip("../shared/corpus is not available")
    ruleset = natlint.load(CORPUS_BIG)
    assert benchmark.pedantic(rule_checks, args=(ruleset,), rounds=1, iterations=1) > 0  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.parametrize("services", [250, 1000])
def test_rule_checks_kube_proxy_growth(benchmark: pytest.FixtureRequest, services: int) -> None:
    ruleset = natlint.load(synth.kube_proxy(services, 5))
    assert benchmark.pedantic(rule_checks, args=(ruleset,), rounds=1, iterations=1) == 0  # type: ignore[attr-defined]
