"""One run of a nat chain that PREROUTING and OUTPUT both jump to, restricted per caller.

An engine that records no steps (or only some) runs kube-proxy's nat KUBE-SERVICES once for
arriving and local traffic (natlint.netfilter.shared_chains; Docker's nat DOCKER tests an input
interface and is never shared). Whatever it serves must be exactly what running the chain again
gives: the outcomes are compared, set for set and step for step, with those of an engine that
does not share; so are the DNAT inventory's walks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import natlint
from natlint import synth
from natlint.host import infer
from natlint.netfilter import shared_chains as sc
from natlint.netfilter.engine import _NON_TERMINAL_NO_EFFECT, Engine, Outcome, Step
from natlint.netfilter.trace import TraceQuery, query_set
from natlint.syntax.reader import read

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference-dumps"


def _fates(outcomes: list[Outcome]) -> dict[tuple[object, ...], Any]:
    found: dict[tuple[object, ...], Any] = {}
    for o in outcomes:
        key = (o.verdict, o.delivered, o.reasons, o.steps)
        found[key] = o.packets if key not in found else found[key] | o.packets
    return found


def _nat_steps(step: Step) -> bool:
    return step.table == "nat"


def _classify(first: Engine, *, share: bool, steps: Any) -> tuple[Engine, list[dict[tuple[object, ...], Any]]]:
    engine = Engine(first.ruleset, first.host, space=first.space, record_steps=steps, like=first, share_chains=share)
    arriving: Any = query_set(engine, TraceQuery())
    local: Any = query_set(engine, TraceQuery(local=True))
    return engine, [_fates(engine.arriving(arriving)), _fates(engine.local(local))]


def _dumps() -> list[Any]:
    # Docker's nat DOCKER tests the input interface (-i docker0 -j RETURN): never shared
    found: list[Any] = [
        pytest.param(synth.kube_proxy(12, 3), True, id="kube-proxy-12x3"),
        pytest.param(synth.docker_host(4, 2), False, id="docker-4x2"),
    ]
    for name, served in (("kube-proxy-small.rules", True), ("docker-28-2containers.rules", False)):
        path = REFERENCE / name
        marks = [] if path.is_file() else [pytest.mark.skip(reason=f"{path} is absent (../shared)")]
        found.append(pytest.param(path, served, marks=marks, id=name))
    return found


@pytest.mark.parametrize("steps", [False, _nat_steps], ids=["no-steps", "nat-steps"])
@pytest.mark.parametrize(("dump", "served"), _dumps())
def test_a_shared_run_serves_exactly_what_a_second_run_gives(dump: Any, served: bool, steps: Any) -> None:
    # with a step filter, the served steps name the caller's hook (OUTPUT), as a run gives
    ruleset = natlint.load(dump)
    first = Engine(ruleset, infer(ruleset), record_steps=False)  # one packet space for both
    shared, with_memo = _classify(first, share=True, steps=steps)
    _, without = _classify(first, share=False, steps=steps)
    assert (shared.chains_served > 0) is served  # OUTPUT served from PREROUTING's run
    assert not any(shared._chain_runs.values())  # let go of once both hooks were served
    for got, expected in zip(with_memo, without, strict=True):
        assert got.keys() == expected.keys()
        for key, packets in expected.items():
            assert got[key] == packets, key


NAT = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"


@pytest.mark.parametrize(("rules", "shared"), [
    ("-A SVC -p tcp --dport 80 -j DNAT --to-destination 10.0.0.2\n", {"SVC": frozenset({"dst", "dport"})}),
    ("-A SVC -j MARK --set-xmark 0x1/0x1\n-A SVC -j LOG\n", {"SVC": frozenset()}),
    ("-A SVC -i eth0 -j DNAT --to-destination 10.0.0.2\n", {}),  # tests the input interface
    ("-A SVC -p tcp -j REDIRECT --to-ports 8080\n", {}),  # REDIRECT depends on the hook
    ("-A SVC -j MASQUERADE\n", {}),  # uses the output interface
    ("-A SVC -j INNER\n-A INNER -o eth0 -j RETURN\n", {}),  # the closure counts
])
def test_which_chains_are_shared(rules: str, shared: dict[str, frozenset[str]]) -> None:
    dump = (NAT + ":SVC - [0:0]\n:INNER - [0:0]\n-A PREROUTING -j SVC\n-A OUTPUT -j SVC\n" + rules
            + "COMMIT\n")
    table = read(dump, "<test>", 4).tables["nat"]
    assert sc.shareable_chains(table, _NON_TERMINAL_NO_EFFECT) == shared


def test_a_chain_one_hook_jumps_to_is_not_shared() -> None:
    dump = NAT + ":SVC - [0:0]\n-A PREROUTING -j SVC\n-A SVC -j DNAT --to-destination 10.0.0.2\nCOMMIT\n"
    assert sc.shareable_chains(read(dump, "<test>", 4).tables["nat"], _NON_TERMINAL_NO_EFFECT) == {}


def test_an_engine_that_records_every_step_runs_each_hook_itself() -> None:
    # a trace asks once per hook, and its steps are the ground truth against the kernel
    ruleset = natlint.load(synth.kube_proxy(4, 2))
    engine, _ = _classify(Engine(ruleset, infer(ruleset), record_steps=False), share=True, steps=True)
    assert engine.chains_served == 0 and not engine._chain_runs


def test_what_the_run_does_not_hold_runs_as_usual() -> None:
    # the run was made for arriving packets to half the service range; local packets to any
    # address are served for that half, and the rest runs through the chain as usual
    ruleset = natlint.load(synth.kube_proxy(12, 3))
    first = Engine(ruleset, infer(ruleset), record_steps=False)
    sp: Any = first.space
    results = []
    for share in (True, False):
        engine = Engine(ruleset, first.host, space=sp, record_steps=False, like=first, share_chains=share)
        arriving: Any = query_set(engine, TraceQuery(dst="10.96.0.0/13"))
        local: Any = query_set(engine, TraceQuery(local=True))
        results.append((engine, _fates(engine.arriving(arriving)), _fates(engine.local(local))))
    (shared, *with_memo), (_, *without) = results
    assert shared.chains_served > 0
    assert with_memo == without


@pytest.mark.parametrize("took", [False, True])
def test_the_nat_walks_of_both_hooks_share_one_walk_of_kube_services(took: bool) -> None:
    # the DNAT inventory walks nat PREROUTING and OUTPUT; kube-proxy's KUBE-SERVICES is walked
    # once for both: what each hook's walk records must be what its own walk gives
    from natlint.checks import CheckContext
    from natlint.checks.dnat import _STARTS, walk_nat

    ruleset = natlint.load(synth.kube_proxy(12, 3))
    ctx = CheckContext(ruleset, budget_seconds=None)
    shared = {hook: walk_nat(ctx, hook, start(ctx), took=took, exact=took) for hook, start in _STARTS.items()}
    assert ("KUBE-SERVICES", took, took) in vars(ctx)["_natlint_shared_nat_walks"]
    ctx.engine._shareable["nat"] = {}  # no chain is shared: each hook walks it
    alone = {hook: walk_nat(ctx, hook, start(ctx), took=took, exact=took) for hook, start in _STARTS.items()}
    for hook in _STARTS:
        got, expected = shared[hook], alone[hook]
        assert got is not None and expected is not None
        assert got.fires == expected.fires and got.took == expected.took
        assert sorted(got.order, key=got.order.__getitem__) == sorted(expected.order, key=expected.order.__getitem__)
        assert {k: v for k, v in got.approximate.items() if k in got.fires or k in got.took} == \
            {k: v for k, v in expected.approximate.items() if k in expected.fires or k in expected.took}
