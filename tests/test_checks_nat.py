"""NL301-NL304, NL309 (natlint.checks.nat) and the DNAT inventory (natlint.checks.dnat)."""

from __future__ import annotations

from pathlib import Path

import pytest

import natlint
from natlint import synth
from natlint.checks import CheckContext, nat
from natlint.checks.dnat import dnat_inventory, full_walk, key_fields_of
from natlint.findings import Finding
from natlint.host.model import HostModel, IfAddress, Interface, Route, cidr
from natlint.model.values import parse_prefix

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "lint" / "nl3xx"
REFERENCE = ROOT.parent / "shared" / "reference-dumps"
CODES = ("NL301", "NL302", "NL303", "NL304", "NL309")


def _findings(text_or_path: str | Path, host: HostModel | None = None) -> list[Finding]:
    ruleset = natlint.load(text_or_path)
    return list(nat.check(CheckContext(ruleset, host)))


def _one(path: str, code: str) -> Finding:
    found = [f for f in _findings(FIXTURES / path) if f.code == code]
    assert len(found) == 1, found
    return found[0]


def test_nl301_forward_tests_the_host_port() -> None:
    f = _one("nl301_forward_tests_host_port.rules", "NL301")
    assert f.severity == "warning" and f.certainty == "exact"
    assert f.witness is not None
    assert f.witness["dport"] == 8080 and f.witness["in"] == "eth0"
    assert f.witness["after_nat"] == {"dst": "172.17.0.2", "dport": 80}
    dropped = f.witness["dropped_by"]
    assert isinstance(dropped, dict) and dropped["chain"] == "FORWARD" and dropped["index"] == "policy"
    assert "policy" in f.message and "--dport 80" in f.message


def test_nl301_docker_user_and_input() -> None:
    f = _one("nl301_docker_user_drops_all.rules", "NL301")
    assert f.witness is not None and f.witness["dropped_by"]["chain"] == "DOCKER-USER"  # type: ignore[index]
    assert f.related and f.related[0].line == 16
    f = _one("nl301_redirect_input_drop.rules", "NL301")
    assert f.witness is not None and f.witness["dropped_by"]["chain"] == "INPUT"  # type: ignore[index]
    assert f.witness["after_nat"] == {"dst": "198.51.100.1", "dport": 8080}


@pytest.mark.parametrize("name", [
    "nl301_ok_port_translated.rules", "nl301_ok_docker_user_allowlist.rules", "nl302_ok_statistic_balance.rules",
    "nl303_ok_masquerade.rules", "nl304_ok_return_exception.rules", "nl309_ok_remote_target.rules",
])
def test_near_misses(name: str) -> None:
    assert [f for f in _findings(FIXTURES / name) if f.severity != "info"] == []


def test_nl302_shadowed_publish() -> None:
    f = _one("nl302_same_host_port.rules", "NL302")
    assert [r.line for r in f.related] == [13]
    assert f.witness is not None and f.witness["dport"] == 8080 and f.witness["taken_by"] == 13
    f = _one("nl302_return_first.rules", "NL302")
    assert [r.line for r in f.related] == [13]


def test_nl303_missing_and_wrong_masquerade() -> None:
    for name, line in (("nl303_no_masquerade.rules", 16), ("nl303_masquerade_wrong_subnet.rules", 17)):
        f = _one(name, "NL303")
        assert f.line == line
        assert f.witness is not None and f.witness["in"] == "br0" and f.witness["out"] == "eth0"
        assert str(f.witness["source_seen"]).startswith("192.168.10.")


def test_nl304_full_shadow() -> None:
    f = _one("nl304_accept_first.rules", "NL304")
    assert f.severity == "warning" and [r.line for r in f.related] == [11]
    f = _one("nl304_general_snat_first.rules", "NL304")
    assert [r.line for r in f.related] == [10]


def test_nl304_partial_is_info() -> None:
    text = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -p udp -j ACCEPT
-A POSTROUTING -s 10.0.0.0/8 -o eth0 -j MASQUERADE
COMMIT
"""
    found = [f for f in _findings(text) if f.code == "NL304"]
    assert [(f.line, f.severity) for f in found] == [(7, "info")]


def test_nl309_inferred_and_given_host() -> None:
    f = _one("nl309_multicast_target.rules", "NL309")
    assert f.witness == {"target": "239.1.2.3"}
    text = (FIXTURES / "nl309_ok_remote_target.rules").read_text()
    host = HostModel(
        family=4,
        interfaces=(
            Interface("lo", (IfAddress.parse("127.0.0.1/8"),)),
            Interface("eth0", (IfAddress.parse("203.0.113.5/24"),), external=True),
        ),
        routes=(Route(cidr(4, 0, 0), "eth0", 0xCB007101),),
        source="file",
    )
    found = [f for f in _findings(text, host) if f.code == "NL309"]
    assert len(found) == 1 and "default" in found[0].message
    routed = HostModel(family=4, interfaces=host.interfaces,
                       routes=host.routes + (Route(cidr(4, 0x0A000000, 8), "eth0", 0xCB007102),), source="file")
    assert [f for f in _findings(text, routed) if f.code == "NL309"] == []


def test_inventory_lists_every_fired_dnat() -> None:
    ruleset = natlint.load(FIXTURES / "nl302_ok_statistic_balance.rules")
    ctx = CheckContext(ruleset)
    inv = dnat_inventory(ctx)
    assert [e.rule.pos.line for e in inv] == [10, 11, 12]
    assert all(e.hooks == ("PREROUTING",) for e in inv)
    assert inv.entries[0].addresses == (0xAC110002, 0xAC110002)
    assert not inv.silent
    # what each DNAT makes of its connections (translated when asked for)
    first = inv.entries[0]
    after = first.rewritten["PREROUTING"].pick()
    assert after is not None and str(after.dst) == "172.17.0.2" and after.dport == 80
    assert str(after.orig_dst) == "198.51.100.1" and after.orig_dport == 8080 and after.iif == "eth0"
    assert list(first.rewritten) == ["PREROUTING"] and len(first.rewritten) == 1
    # fires are recorded for NAT rules only (the walk of a kube-proxy dump reaches tens of
    # thousands of jumps)
    walk = inv.walks["PREROUTING"]
    assert {walk.rules[k].target.name for k in walk.fires} == {"DNAT"}  # type: ignore[union-attr]
    # ... without what the rules took: the shadowing analysis walks again when it needs that
    assert walk.took == {}
    full = full_walk(ctx, inv, "PREROUTING")
    assert full is not None and len(full.took) == 3 and full_walk(ctx, inv, "PREROUTING") is full
    output = full_walk(ctx, inv, "OUTPUT")
    assert output is not None and output.took == {}  # an empty OUTPUT chain
    # fires are what may reach the DNAT: the statistic predicates on the way are forgotten
    # (each endpoint's set was its own copy of the service's), so are the marks
    assert all(e.fires["PREROUTING"] == e.fires["PREROUTING"].may() for e in inv)
    assert inv.entries[0].fires["PREROUTING"] == inv.entries[1].fires["PREROUTING"]
    # a DNAT to one address and port reports nothing when translated: its keys are made
    # when asked for, not kept
    key = first.key["PREROUTING"]
    assert not isinstance(first.key, dict) and list(first.key) == ["PREROUTING"]
    sp = ctx.engine.space
    assert key == key_fields_of(sp, first.rewritten["PREROUTING"]).may()  # type: ignore[arg-type]


def test_inventory_keeps_the_keys_of_a_range_dnat_with_its_reasons() -> None:
    ruleset = natlint.load(
        "*nat\n:PREROUTING ACCEPT [0:0]\n"
        "-A PREROUTING -i eth0 -p tcp --dport 8080 -j DNAT --to-destination 172.17.0.2-172.17.0.4:80\nCOMMIT\n")
    inv = dnat_inventory(CheckContext(ruleset))
    entry = inv.entries[0]
    assert isinstance(entry.key, dict) and entry.reasons  # translated once, for its reasons
    after = entry.key["PREROUTING"].pick()
    assert after is not None and after.dport == 80 and after.orig_dport == 8080


@pytest.mark.parametrize("dump", [synth.kube_proxy(6, 2), synth.docker_host(3, 2)], ids=["kube-proxy", "docker"])
def test_an_entrys_probe_meets_what_its_key_meets(dump: str) -> None:
    # NL301 tests each DNAT's rewritten connections, not its key, against the fates (sets of
    # the key fields without opaque predicates): two ∃ fewer per DNAT, the same answers
    ctx = CheckContext(natlint.load(dump))
    inv = dnat_inventory(ctx)
    sp = ctx.engine.space
    pairs = [(e, hook) for e in inv for hook in e.key]
    keys = [e.key[hook] for e, hook in pairs]
    others = [key_fields_of(sp, sp.prefix("orig_dst", parse_prefix("10.96.0.0/13", 4))),  # type: ignore[attr-defined]
              key_fields_of(sp, sp.value("dport", 80))]  # type: ignore[attr-defined]
    for fate in keys + others:
        assert fate.may() == fate
        for (entry, hook), key in zip(pairs, keys, strict=True):
            assert entry.probe(hook).intersects(fate) == key.intersects(fate)
    assert any(not isinstance(e.key, dict) for e in inv)  # some keys are made on demand: probed


@pytest.mark.parametrize("path", sorted(REFERENCE.glob("*.rules")) if REFERENCE.is_dir() else [],
                         ids=lambda p: p.name)
def test_reference_dumps_have_no_nat_findings(path: Path) -> None:
    assert [f for f in _findings(path) if f.code in CODES] == []


@pytest.mark.parametrize("name,dump", [
    ("kube_proxy(60,5)", lambda: synth.kube_proxy(60, 5)),
    ("docker_host(20,3)", lambda: synth.docker_host(20, 3)),
])
def test_synthetic_hosts_are_clean_and_fast(name: str, dump: object) -> None:
    ruleset = natlint.load(dump(), path=name)  # type: ignore[operator]
    found = [f for f in nat.check(CheckContext(ruleset)) if f.code in CODES]
    assert found == []
