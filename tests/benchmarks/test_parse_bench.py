"""Parsing speed (pytest-benchmark; run with ``pytest tests/benchmarks --benchmark-enable``).

The default suite runs the 5k-rule case once (benchmarks disabled: a smoke run); the
~85k-rule kube-proxy dump is behind the ``slow`` marker. The target is 50,000 rules/s on a
2-core machine (no more than 3x ``iptables-restore --test``).
"""

from __future__ import annotations

from functools import cache

import pytest

from natlint import synth
from natlint.syntax.reader import read


@cache
def _dump(services: int, endpoints: int) -> bytes:
    return synth.kube_proxy(services, endpoints).encode()


def _parse(data: bytes) -> int:
    ruleset = read(data, "bench.rules")
    assert not [f for f in ruleset.diagnostics if getattr(f, "severity", "") == "error"]
    return ruleset.rule_count


def test_parse_kube_proxy_5k(benchmark: pytest.FixtureRequest) -> None:
    data = _dump(300, 5)
    rules = benchmark(_parse, data)  # type: ignore[operator]
    assert rules == synth.rule_count(data.decode())


@pytest.mark.slow
def test_parse_kube_proxy_85k(benchmark: pytest.FixtureRequest) -> None:
    data = _dump(5000, 5)
    rules = benchmark.pedantic(_parse, args=(data,), rounds=3, iterations=1)  # type: ignore[attr-defined]
    assert rules > 80_000
