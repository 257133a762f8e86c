"""Engine speed: classify all new traffic entering PREROUTING from every interface.

The default run is a smoke run (benchmarks disabled) on small dumps; the issue's sizes
(the ~85k-rule kube-proxy dump, the largest corpus dump) run with ``-m slow``:
``pytest tests/benchmarks/test_engine_bench.py -m slow --benchmark-enable``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import natlint
from natlint import synth
from natlint.host import infer
from natlint.model import Ruleset
from natlint.netfilter.engine import Engine
from natlint.netfilter.nat import real_interfaces
from natlint.packets.compile import compile_interfaces
from natlint.packets.space import PacketSpace

CORPUS_BIG = (
    Path(__file__).resolve().parents[3]
    / "shared/corpus/configs_chair_for_Network_Architectures_and_Services/iptables-save-2016-06-27_16-29-01"
)


def classify_all(ruleset: Ruleset, max_nodes: int = 10_000_000) -> int:
    """Every new connection arriving on every interface of the inferred host: the outcomes.

    ``max_nodes``: the BDD budget (the default is the one ``natlint check`` uses).
    """
    host = infer(ruleset)
    space = PacketSpace(ruleset.family, compile_interfaces(ruleset, host), max_nodes=max_nodes)
    engine = Engine(ruleset, host, space=space, record_steps=False, max_branches=50_000_000)
    sp = engine.space
    outcomes = 0
    for name in real_interfaces(sp):
        if name == "lo":
            continue
        arriving = (
            sp.iface("iif", name) & sp.iface("oif", None) & sp.ctstate(["NEW"]) & sp.value("mark", 0)
            & sp.value("connmark", 0) & sp.value("ct_dnat", False) & sp.value("ct_snat", False)
        )
        outcomes += len(engine.arriving(arriving))
    return outcomes


def _kube(services: int) -> Ruleset:
    return natlint.load(synth.kube_proxy(services, 5))


def test_classify_small_kube_proxy(benchmark: pytest.FixtureRequest) -> None:
    ruleset = _kube(10)
    assert benchmark(classify_all, ruleset) > 0  # type: ignore[operator]


def test_classify_docker_host(benchmark: pytest.FixtureRequest) -> None:
    ruleset = natlint.load(synth.docker_host(20, 3))
    assert benchmark(classify_all, ruleset) > 0  # type: ignore[operator]


@pytest.mark.slow
def test_classify_largest_corpus_dump(benchmark: pytest.FixtureRequest) -> None:
    if not CORPUS_BIG.is_file():
        pytest.skip("../shared/corpus is not available")
    ruleset = natlint.load(CORPUS_BIG)
    assert benchmark.pedantic(classify_all, args=(ruleset,), rounds=1, iterations=1) > 0  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.parametrize("services", [60, 250, 500, 1000, 2000])
def test_classify_kube_proxy_growth(benchmark: pytest.FixtureRequest, services: int) -> None:
    ruleset = _kube(services)
    assert benchmark.pedantic(classify_all, args=(ruleset,), rounds=1, iterations=1) > 0  # type: ignore[attr-defined]


@pytest.mark.slow
def test_classify_full_size_kube_proxy(benchmark: pytest.FixtureRequest) -> None:
    """The issue's dump: 5000 service ports x 5 endpoints, 89,537 rules (about 1 minute,
    within the default 10 M-node budget)."""
    ruleset = _kube(5000)
    result = benchmark.pedantic(classify_all, args=(ruleset,), rounds=1, iterations=1)  # type: ignore[attr-defined]
    assert result > 0
