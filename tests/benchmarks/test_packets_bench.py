"""Packet-set speed: a shadowing scan over an enterprise firewall (pytest-benchmark; run with
``pytest tests/benchmarks/test_packets_bench.py --benchmark-enable``).

For each filter chain reached from INPUT/FORWARD: ``remaining = all``; per rule ``hit = rule &
remaining`` (empty: shadowed; smaller than the rule: partially shadowed), then ``remaining -=
rule`` when its target ends the chain (ACCEPT, DROP, REJECT). Rules are compiled inside the
timed part. The default run is a one-shot smoke test (benchmarks disabled); the one-chain worst case
(every rule in one chain: blocklists x services, about 10 s) and the pure-Python autoref
backend are behind the ``slow`` marker.
"""

from __future__ import annotations

from functools import cache

import pytest

import natlint
from natlint import synth
from natlint.model.ruleset import Rule, Ruleset
from natlint.packets import BACKENDS, PacketSpace, compile_interfaces, compile_rule

_ENDS_CHAIN = frozenset({"ACCEPT", "DROP", "REJECT"})


@cache
def _enterprise(rules: int) -> Ruleset:
    return natlint.load(synth.enterprise(rules))


def _chains(ruleset: Ruleset) -> list[str]:
    """INPUT, FORWARD and every user chain they reach, in the order found."""
    table = ruleset.table("filter")
    assert table is not None
    order: list[str] = []
    todo = ["INPUT", "FORWARD"]
    while todo:
        name = todo.pop(0)
        if name in order or name not in table.chains:
            continue
        order.append(name)
        todo.extend(r.target.name for r in table.chains[name].rules if r.target is not None and r.target.is_chain)
    return order


def _catch_all(rule: Rule) -> bool:
    return not rule.matches and not rule.core_options


def shadow_scan(ruleset: Ruleset, backend: str | None = None, *, flat: bool = False) -> tuple[int, int, int]:
    """(rules, shadowed, partially shadowed); ``flat``: all chains as one long chain."""
    space = PacketSpace(ruleset.family, compile_interfaces(ruleset), backend=backend)
    table = ruleset.table("filter")
    assert table is not None
    if flat:  # the worst case: one long chain (blocklists x services), catch-all rules left out
        chains = [[r for name in _chains(ruleset) for r in table.chains[name].rules if not _catch_all(r)]]
    else:
        chains = [list(table.chains[name].rules) for name in _chains(ruleset)]
    total = shadowed = partial = 0
    for rules in chains:
        remaining = space.all()
        for rule in rules:
            matched = compile_rule(space, rule).set
            hit = matched & remaining
            total += 1
            if hit.is_empty():
                shadowed += 1
                continue  # nothing left to take out of remaining
            if hit != matched:
                partial += 1
            if rule.target is not None and rule.target.name in _ENDS_CHAIN:
                remaining -= matched
    return total, shadowed, partial


def test_shadow_scan_enterprise_2000(benchmark: pytest.FixtureRequest) -> None:
    ruleset = _enterprise(2000)
    total, shadowed, partial = benchmark(shadow_scan, ruleset)  # type: ignore[operator]
    assert total > 1900
    assert 0 < shadowed < total and partial > 0


@pytest.mark.slow
def test_shadow_scan_enterprise_2000_one_chain(benchmark: pytest.FixtureRequest) -> None:
    ruleset = _enterprise(2000)
    total, shadowed, partial = benchmark(shadow_scan, ruleset, flat=True)  # type: ignore[operator]
    assert total > 1900 and shadowed > 0 and partial > 0


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_shadow_scan_backends_agree(benchmark: pytest.FixtureRequest, backend: str) -> None:
    ruleset = _enterprise(2000)
    result = benchmark.pedantic(shadow_scan, args=(ruleset, backend), rounds=1, iterations=1)  # type: ignore[attr-defined]
    assert result == shadow_scan(ruleset, BACKENDS[0])
