"""The netfilter engine on small inline dumps (no kernel needed).

Each test states one kernel behaviour (research 3.1-3.4) and checks natlint's trace of it:
chain traversal (jump, goto, RETURN, policies), nat on the first packet only, what each NAT
target rewrites, marks, NOTRACK, opaque matches, range partitions, loopback delivery and
the JSON contract of ``natlint trace --format json``. ``tests/test_engine_kernel.py`` checks
the same engine against the real kernel.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from natlint.cli import main
from natlint.host import HostModel, parse_host_toml
from natlint.netfilter.engine import Engine, Outcome, uses_conntrack
from natlint.netfilter.nat import masquerade_address
from natlint.netfilter.trace import TraceQuery, outcome_to_dict, trace
from natlint.syntax.reader import read

LAB_HOST = Path(__file__).resolve().parents[1] / "fixtures" / "kernel" / "lab.host.toml"
HOST: HostModel = parse_host_toml(LAB_HOST.read_text(), 4, path=str(LAB_HOST))

FILTER_OPEN = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
NAT_HEAD = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"


def run(dump: str, host: HostModel = HOST, **query: Any) -> list[Outcome]:
    ruleset = read(dump, "<test>", 4)
    errors = [d for d in ruleset.diagnostics if getattr(d, "severity", "") == "error"]
    assert not errors, errors
    return trace(ruleset, host, TraceQuery(**query))


def one(outcomes: list[Outcome]) -> Outcome:
    assert len(outcomes) == 1, [o.packets.describe() for o in outcomes]  # type: ignore[attr-defined]
    return outcomes[0]


def path(outcome: Outcome) -> list[tuple[str, str, int | str | None]]:
    """The traced packet's own steps (not those of a REJECT's answer or of a handshake's replies)."""
    return [(s.table, s.chain, s.index) for s in outcome.steps if s.index is not None and not s.reply]


def pkt(outcome: Outcome) -> Any:
    return outcome.packets.pick()  # type: ignore[attr-defined]


def ip(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


OUTSIDE_TCP: dict[str, Any] = {"in_interface": "eth0", "src": "198.51.100.2", "proto": "tcp", "sport": "41000"}
C1_UDP: dict[str, Any] = {"in_interface": "docker0", "src": "172.17.0.2", "proto": "udp", "sport": "41000"}


# ------------------------------------------------------------------------------ chains

CHAINS = """*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:A - [0:0]
:B - [0:0]
:U - [0:0]
-A INPUT -p tcp -j A
-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT
-A INPUT -p udp -g U
-A INPUT -p udp -j ACCEPT
-A A -p tcp -m tcp --dport 22 -j ACCEPT
-A A -p tcp -m tcp --dport 23 -j RETURN
-A A -g B
-A A -p tcp -j ACCEPT
-A B -p tcp -m tcp --dport 80 -j RETURN
-A B -p tcp -m tcp --dport 443 -j ACCEPT
-A U -p udp -m udp --dport 53 -j ACCEPT
-A U -p udp -m udp --dport 5353 -j RETURN
COMMIT
"""


def test_jump_then_accept_in_the_user_chain() -> None:
    o = one(run(CHAINS, dst="198.51.100.1", dport="22", **OUTSIDE_TCP))
    assert o.verdict == "ACCEPT" and o.delivered is not None and o.delivered.to == "local"
    assert path(o) == [("filter", "INPUT", 1), ("filter", "A", 1)]
    assert o.certainty == "exact"


def test_return_resumes_after_the_jump() -> None:
    o = one(run(CHAINS, dst="198.51.100.1", dport="23", **OUTSIDE_TCP))
    # A's RETURN goes back to INPUT rule 2 (no match), then the policy
    assert path(o) == [("filter", "INPUT", 1), ("filter", "A", 2), ("filter", "INPUT", "policy")]
    assert o.verdict == "DROP" and o.delivered is None


def test_goto_then_return_returns_past_the_caller() -> None:
    o = one(run(CHAINS, dst="198.51.100.1", dport="80", **OUTSIDE_TCP))
    # A -g B; B's RETURN skips A's rule 4 and resumes after INPUT's "-j A"
    assert path(o) == [("filter", "INPUT", 1), ("filter", "A", 3), ("filter", "B", 1), ("filter", "INPUT", 2)]
    assert o.verdict == "ACCEPT"


def test_falling_off_a_goto_chain_returns_past_the_caller() -> None:
    o = one(run(CHAINS, dst="198.51.100.1", dport="8080", **OUTSIDE_TCP))
    assert path(o) == [("filter", "INPUT", 1), ("filter", "A", 3), ("filter", "INPUT", "policy")]
    assert o.verdict == "DROP"


def test_return_from_a_chain_entered_by_goto_from_a_builtin_applies_the_policy() -> None:
    for port in ("5353", "9999"):  # an explicit RETURN, and falling off the end
        o = one(run(CHAINS, dst="198.51.100.1", dport=port, **{**OUTSIDE_TCP, "proto": "udp"}))
        assert path(o)[-1] == ("filter", "INPUT", "policy"), port
        assert ("filter", "INPUT", 4) not in path(o)
        assert o.verdict == "DROP"


def test_return_in_a_builtin_chain_applies_the_policy() -> None:
    dump = "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" \
           "-A INPUT -p tcp -j RETURN\n-A INPUT -j ACCEPT\nCOMMIT\n"
    o = one(run(dump, dst="198.51.100.1", dport="22", **OUTSIDE_TCP))
    assert path(o) == [("filter", "INPUT", 1), ("filter", "INPUT", "policy")]
    assert o.verdict == "DROP"


def test_policy_steps_and_verdicts() -> None:
    dump = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    local = one(run(dump, dst="198.51.100.1", dport="22", **OUTSIDE_TCP))
    assert local.verdict == "ACCEPT" and path(local) == [("filter", "INPUT", "policy")]
    forwarded = one(run(dump, dst="172.17.0.2", dport="80", **OUTSIDE_TCP))
    assert forwarded.verdict == "DROP" and forwarded.delivered is None
    assert path(forwarded) == [("filter", "FORWARD", "policy")]
    assert forwarded.decided_by is not None and forwarded.decided_by.action == "policy DROP"


def test_reject_is_its_own_verdict() -> None:
    dump = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" \
           "-A INPUT -p tcp -m tcp --dport 23 -j REJECT --reject-with tcp-reset\nCOMMIT\n"
    o = one(run(dump, dst="198.51.100.1", dport="23", **OUTSIDE_TCP))
    assert o.verdict == "REJECT" and o.delivered is None and path(o) == [("filter", "INPUT", 1)]


# ------------------------------------------------------------------------------ NAT

DNAT = NAT_HEAD + """-A PREROUTING -i eth0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
-A PREROUTING -i eth0 -p tcp -m tcp --dport 7000:7010 -j DNAT --to-destination 172.17.0.3:7000-7003
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p tcp -m tcp --dport 8080 -j ACCEPT
-A FORWARD -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j ACCEPT
-A FORWARD -d 172.17.0.3/32 -j ACCEPT
-A FORWARD -m conntrack --ctstate ESTABLISHED -j ACCEPT
COMMIT
"""


def test_dnat_rewrites_destination_and_port_before_filter() -> None:
    o = one(run(DNAT, dst="198.51.100.1", dport="8080", **OUTSIDE_TCP))
    p = pkt(o)
    assert (p.dst, p.dport) == (ip("172.17.0.2"), 80)
    assert (p.orig_dst, p.orig_dport) == (ip("198.51.100.1"), 8080)
    assert p.ct_dnat
    assert o.delivered is not None and (o.delivered.to, o.delivered.interface) == ("out", "docker0")
    # filter FORWARD sees the post-DNAT port: its "--dport 8080" rule is not on the path
    assert path(o) == [("nat", "PREROUTING", 1), ("filter", "FORWARD", 2), ("nat", "POSTROUTING", "policy")]
    assert [s.hook for s in o.steps] == ["PREROUTING", "FORWARD", "POSTROUTING"]


def test_dnat_port_range_keeps_a_port_inside_and_moves_one_outside() -> None:
    inside = one(run(DNAT, dst="198.51.100.1", dport="7001", **OUTSIDE_TCP))
    assert pkt(inside).dport == 7001 and inside.certainty == "exact"
    outside = one(run(DNAT, dst="198.51.100.1", dport="7005", **OUTSIDE_TCP))
    assert outside.packets.values("dport") == [(7000, 7003)]  # type: ignore[attr-defined]
    assert outside.certainty == "approximate"


def test_nat_runs_only_for_new_connections() -> None:
    o = one(run(DNAT, dst="198.51.100.1", dport="8080", state="established", **OUTSIDE_TCP))
    # an ESTABLISHED packet is not NATed by the rules (conntrack applies the stored mapping)
    assert not any(s.table == "nat" for s in o.steps)
    assert pkt(o).dst == ip("198.51.100.1") and o.delivered is not None and o.delivered.to == "local"


def test_snat_and_masquerade_rewrite_the_source() -> None:
    dump = NAT_HEAD + "-A POSTROUTING -s 172.17.0.0/16 -o eth0 -p udp -j SNAT --to-source 198.51.100.1:2000-2100\n" \
        "-A POSTROUTING -s 172.17.0.0/16 -o eth0 -j MASQUERADE\n-A POSTROUTING -s 172.18.0.0/16 -o docker0 " \
        "-j MASQUERADE\nCOMMIT\n" + FILTER_OPEN
    snat = one(run(dump, dst="198.51.100.3", dport="53", **C1_UDP))
    assert pkt(snat).src == ip("198.51.100.1") and snat.packets.values("sport") == [(2000, 2100)]  # type: ignore[attr-defined]
    tcp = one(run(dump, dst="198.51.100.3", dport="80", **{**C1_UDP, "proto": "tcp"}))
    assert (pkt(tcp).src, pkt(tcp).sport) == (ip("198.51.100.1"), 41000)  # the source port is kept
    across = one(run(dump, in_interface="br-net1", src="172.18.0.2", dst="172.17.0.2", proto="tcp", dport="80"))
    assert pkt(across).src == ip("172.17.0.1") and pkt(across).ct_snat  # docker0's address


def test_random_port_mapping_always_picks_a_port() -> None:
    dump = NAT_HEAD + "-A POSTROUTING -s 172.17.0.0/16 -o eth0 -j MASQUERADE --random-fully\n" \
        "-A POSTROUTING -s 172.18.0.0/16 -o eth0 -p udp -j SNAT --to-source 198.51.100.1:2000-2100 --random\n" \
        "COMMIT\n" + FILTER_OPEN
    masq = one(run(dump, dst="198.51.100.3", dport="53", **C1_UDP))
    assert masq.packets.values("sport") == [(1024, 65535)] and masq.certainty == "approximate"  # type: ignore[attr-defined]
    low = one(run(dump, dst="198.51.100.3", dport="53", **{**C1_UDP, "sport": "123"}))
    assert low.packets.values("sport") == [(1, 511)]  # type: ignore[attr-defined]
    ranged = one(run(dump, in_interface="br-net1", src="172.18.0.2", sport="2050", dst="198.51.100.3",
                     proto="udp", dport="53"))
    assert ranged.packets.values("sport") == [(2000, 2100)]  # type: ignore[attr-defined]


def test_masquerade_out_of_lo_takes_the_first_global_address() -> None:
    # inet_select_addr: lo has only 127.0.0.1 (scope host): the first global address of the host
    assert masquerade_address(HOST, "lo") == int(ip("198.51.100.1"))
    assert masquerade_address(HOST, "docker0") == int(ip("172.17.0.1"))
    dump = NAT_HEAD + "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\nCOMMIT\n" + FILTER_OPEN
    o = one(run(dump, local=True, src="172.17.0.1", dst="172.17.0.1", proto="udp", sport="41000", dport="53"))
    assert o.delivered is not None and o.delivered.to == "local"
    assert pkt(o).src == ip("198.51.100.1")


def test_redirect_goes_to_the_incoming_interface_or_loopback() -> None:
    dump = NAT_HEAD + "-A PREROUTING -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 8081\n" \
        "-A OUTPUT -d 198.51.100.3/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 5353\nCOMMIT\n" + FILTER_OPEN
    from_outside = one(run(dump, dst="172.17.0.2", dport="80", **OUTSIDE_TCP))
    assert (pkt(from_outside).dst, pkt(from_outside).dport) == (ip("198.51.100.1"), 8081)
    assert from_outside.delivered is not None and from_outside.delivered.to == "local"
    from_c1 = one(run(dump, in_interface="docker0", src="172.17.0.2", dst="198.51.100.3", proto="tcp", dport="80"))
    assert pkt(from_c1).dst == ip("172.17.0.1")
    local = one(run(dump, local=True, src="198.51.100.1", dst="198.51.100.3", proto="udp", sport="41000", dport="53"))
    assert (pkt(local).dst, pkt(local).dport) == (ip("127.0.0.1"), 5353)
    assert local.delivered is not None and (local.delivered.to, local.delivered.interface) == ("local", "lo")


def test_netmap_maps_the_prefix_and_keeps_the_host_part() -> None:
    dump = NAT_HEAD + "-A PREROUTING -d 10.9.0.0/24 -i eth0 -j NETMAP --to 172.17.0.0/24\n" \
        "-A POSTROUTING -s 172.18.0.0/24 -o eth0 -j NETMAP --to 198.51.100.64/28\nCOMMIT\n" + FILTER_OPEN
    dst = one(run(dump, dst="10.9.0.3", dport="80", **OUTSIDE_TCP))
    assert pkt(dst).dst == ip("172.17.0.3") and dst.delivered is not None and dst.delivered.interface == "docker0"
    src = one(run(dump, in_interface="br-net1", src="172.18.0.2", dst="198.51.100.3", proto="udp", dport="53"))
    assert pkt(src).src == ip("198.51.100.66")


def test_notrack_skips_nat() -> None:
    dump = "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" \
        "-A PREROUTING -p udp -m udp --dport 5000 -j CT --notrack\nCOMMIT\n" + NAT_HEAD + \
        "-A PREROUTING -p udp -j DNAT --to-destination 172.17.0.2\nCOMMIT\n" \
        "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" \
        "-A INPUT -m conntrack --ctstate UNTRACKED -j ACCEPT\nCOMMIT\n"
    untracked = one(run(dump, dst="198.51.100.1", dport="5000", **{**OUTSIDE_TCP, "proto": "udp"}))
    assert pkt(untracked).ctstate == "UNTRACKED" and pkt(untracked).dst == ip("198.51.100.1")
    assert path(untracked) == [("raw", "PREROUTING", 1), ("raw", "PREROUTING", "policy"), ("filter", "INPUT", 1)]
    tracked = one(run(dump, dst="198.51.100.1", dport="5001", **{**OUTSIDE_TCP, "proto": "udp"}))
    assert pkt(tracked).dst == ip("172.17.0.2")


# ------------------------------------------------------------------------------ marks

MARKS = """*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i eth0 -p tcp -m tcp --dport 8080 -j MARK --set-xmark 0x1/0xffffffff
-A PREROUTING -i docker0 -j CONNMARK --set-xmark 0x20/0xffffffff
-A PREROUTING -i docker0 -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff
-A FORWARD -m mark --mark 0x1 -j MARK --set-xmark 0x100/0x100
COMMIT
""" + NAT_HEAD + """-A PREROUTING -p tcp -m mark --mark 0x1 -j DNAT --to-destination 172.17.0.2:80
COMMIT
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m mark --mark 0x20 -j ACCEPT
-A FORWARD -m mark --mark 0x101 -j ACCEPT
COMMIT
"""


def test_mark_set_then_matched_by_nat_and_filter() -> None:
    o = one(run(MARKS, dst="198.51.100.1", dport="8080", **OUTSIDE_TCP))
    assert o.verdict == "ACCEPT" and pkt(o).mark == 0x101 and pkt(o).dst == ip("172.17.0.2")
    assert path(o) == [
        ("mangle", "PREROUTING", 1), ("mangle", "PREROUTING", "policy"), ("nat", "PREROUTING", 1),
        ("mangle", "FORWARD", 1), ("mangle", "FORWARD", "policy"), ("filter", "FORWARD", 1),
        ("mangle", "POSTROUTING", "policy"), ("nat", "POSTROUTING", "policy"),
    ]
    # c1's SYN-ACK comes in on docker0, gets connmark 0x20 restored as its mark, and FORWARD
    # accepts only mark 0x101: the connection never completes
    assert o.connection == "fails" and [s.chain for s in o.steps if s.reply][-1] == "FORWARD"
    unmarked = one(run(MARKS, dst="198.51.100.1", dport="8081", **OUTSIDE_TCP))
    assert unmarked.verdict == "DROP" and pkt(unmarked).mark == 0


def test_connmark_set_and_restored() -> None:
    o = one(run(MARKS, dst="172.17.0.1", dport="53", **C1_UDP))
    assert (pkt(o).connmark, pkt(o).mark) == (0x20, 0x20)
    assert o.verdict == "ACCEPT" and ("filter", "INPUT", 1) in path(o)


# ------------------------------------------------------------------------------ sets of packets


def test_opaque_match_gives_both_outcomes_approximately() -> None:
    dump = "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" \
        "-A INPUT -m set --match-set allowed src -j ACCEPT\nCOMMIT\n"
    outcomes = run(dump, dst="198.51.100.1", dport="22", **OUTSIDE_TCP)
    assert sorted(o.verdict for o in outcomes) == ["ACCEPT", "DROP"]
    accepted = next(o for o in outcomes if o.verdict == "ACCEPT")
    assert accepted.certainty == "approximate" and accepted.reasons
    assert all(o.certainty == "approximate" for o in outcomes) or len(outcomes) == 2


def test_a_range_query_is_partitioned() -> None:
    outcomes = run(DNAT, dst="198.51.100.1", dport="7990:8100", **OUTSIDE_TCP)
    assert len(outcomes) >= 2
    dnated = [o for o in outcomes if o.delivered is not None and o.delivered.to == "out"]
    assert len(dnated) == 1 and dnated[0].packets.values("orig_dport") == [(8080, 8080)]  # type: ignore[attr-defined]
    local = [o for o in outcomes if o.delivered is not None and o.delivered.to == "local"]
    assert local and local[0].packets.values("dport") == [(7990, 8079), (8081, 8100)]  # type: ignore[attr-defined]
    # the parts are disjoint and, by their original destination port, cover the query
    for i, a in enumerate(outcomes):
        for b in outcomes[i + 1:]:
            assert (a.packets & b.packets).is_empty()  # type: ignore[operator]
    covered = sorted(r for o in outcomes for r in (o.packets.values("orig_dport") or []))  # type: ignore[attr-defined]
    assert covered == [(7990, 8079), (8080, 8080), (8081, 8100)]


def test_local_traffic_to_a_local_address_reenters_on_lo() -> None:
    dump = "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n" + NAT_HEAD + "COMMIT\n" \
        "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\n" \
        "-A INPUT -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n"
    o = one(run(dump, local=True, src="198.51.100.1", dst="198.51.100.1", proto="tcp", sport="41000", dport="22"))
    assert o.delivered is not None and (o.delivered.to, o.delivered.interface) == ("local", "lo")
    assert [(s.hook, s.table, s.chain, s.index) for s in o.steps] == [
        ("OUTPUT", "raw", "OUTPUT", "policy"),
        ("OUTPUT", "nat", "OUTPUT", "policy"),
        ("OUTPUT", "filter", "OUTPUT", "policy"),
        ("POSTROUTING", "nat", "POSTROUTING", "policy"),
        ("PREROUTING", "raw", "PREROUTING", "policy"),  # back in on lo: nat is already decided
        ("INPUT", "filter", "INPUT", 1),
    ]


def test_without_a_conntrack_user_nat_never_runs() -> None:
    dump = NAT_HEAD.replace(":POSTROUTING ACCEPT", ":POSTROUTING DROP") + "-A PREROUTING -p tcp\nCOMMIT\n" + FILTER_OPEN
    o = one(run(dump, dst="172.17.0.2", dport="80", **OUTSIDE_TCP))
    assert o.verdict == "ACCEPT" and not any(s.table == "nat" for s in o.steps)
    assert uses_conntrack(read(dump, "<test>", 4)) is False
    with_ct = dump.replace("-A PREROUTING -p tcp\n", "-A PREROUTING -p tcp -m conntrack --ctstate NEW\n")
    assert uses_conntrack(read(with_ct, "<test>", 4)) is True
    dropped = one(run(with_ct, dst="172.17.0.2", dport="80", **OUTSIDE_TCP))
    assert dropped.verdict == "DROP" and path(dropped)[-1] == ("nat", "POSTROUTING", "policy")


BRIDGED = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n" \
    "-A FORWARD -i docker0 -o docker0 -p udp -j ACCEPT\nCOMMIT\n"


def test_bridged_traffic_crosses_forward_only_with_br_netfilter() -> None:
    with_brnf = one(run(BRIDGED, dst="172.17.0.3", dport="53", **C1_UDP))
    assert path(with_brnf) == [("filter", "FORWARD", 1)] and with_brnf.delivered is not None
    no_brnf = replace(HOST, br_netfilter=False)
    bypass = one(run(BRIDGED, no_brnf, dst="172.17.0.3", dport="80", **{**C1_UDP, "proto": "tcp"}))
    assert bypass.verdict == "ACCEPT" and path(bypass) == []  # iptables never sees it
    assert bypass.delivered is not None and bypass.delivered.interface == "docker0"
    assert bypass.steps[0].hook == "BRIDGE"
    routed = one(run(BRIDGED, no_brnf, dst="172.18.0.2", dport="53", **C1_UDP))  # another bridge: routed
    assert routed.verdict == "DROP" and path(routed) == [("filter", "FORWARD", "policy")]


def test_ip_forward_off_drops_routed_traffic_but_not_bridged() -> None:
    no_fwd = replace(HOST, ip_forward=False)
    routed = one(run(FILTER_OPEN, no_fwd, dst="172.17.0.2", dport="80", **OUTSIDE_TCP))
    assert routed.verdict == "DROP" and routed.steps[-1].hook == "ROUTING" and path(routed) == []
    bridged = one(run(BRIDGED, no_fwd, dst="172.17.0.3", dport="53", **C1_UDP))
    assert bridged.verdict == "ACCEPT" and path(bridged) == [("filter", "FORWARD", 1)]
    local = one(run(FILTER_OPEN, no_fwd, dst="198.51.100.1", dport="22", **OUTSIDE_TCP))
    assert local.verdict == "ACCEPT" and local.delivered is not None and local.delivered.to == "local"


def test_engine_is_reusable_across_queries() -> None:
    ruleset = read(DNAT, "<test>", 4)
    engine = Engine(ruleset, HOST)
    a = one(trace(ruleset, HOST, TraceQuery(dst="198.51.100.1", dport="8080", **OUTSIDE_TCP), engine=engine))
    b = one(trace(ruleset, HOST, TraceQuery(dst="198.51.100.1", dport="22", **OUTSIDE_TCP), engine=engine))
    assert pkt(a).dst == ip("172.17.0.2") and pkt(b).dst == ip("198.51.100.1")


# ------------------------------------------------------------------------------ the JSON contract


def _check_contract(doc: dict[str, Any]) -> None:
    assert set(doc) >= {"outcomes"}
    assert doc["outcomes"]
    for o in doc["outcomes"]:
        assert {"verdict", "delivered", "packet", "steps", "certainty"} <= set(o)
        assert o["verdict"] in ("ACCEPT", "DROP", "REJECT", "QUEUE", "UNKNOWN")
        assert o["certainty"] in ("exact", "approximate")
        assert o["delivered"] is None or set(o["delivered"]) == {"to", "interface"}
        assert set(o["packet"]) >= {"src", "dst", "proto", "sport", "dport"}
        for step in o["steps"]:
            assert {"hook", "table", "chain", "line", "rule", "action"} <= set(step)


def test_outcome_to_dict_contract() -> None:
    outcomes = run(DNAT, dst="198.51.100.1", dport="8080", **OUTSIDE_TCP)
    doc = json.loads(json.dumps({"outcomes": [outcome_to_dict(o) for o in outcomes]}))
    _check_contract(doc)
    first = doc["outcomes"][0]
    assert first["packet"] == {"src": "198.51.100.2", "dst": "172.17.0.2", "proto": 6, "sport": 41000, "dport": 80}
    dnat_step = next(s for s in first["steps"] if s["table"] == "nat" and s["chain"] == "PREROUTING")
    assert dnat_step["index"] == 1 and dnat_step["line"] == 6 and dnat_step["rule"].startswith("-A PREROUTING")
    assert dnat_step["action"].startswith("DNAT")


def test_cli_trace_json(tmp_path: Path) -> None:
    rules = tmp_path / "rules.v4"
    rules.write_text(DNAT)
    result = CliRunner().invoke(main, [
        "trace", str(rules), "--host", str(LAB_HOST), "--in", "eth0", "--src", "198.51.100.2",
        "--dst", "198.51.100.1", "--proto", "tcp", "--dport", "8080", "--format", "json",
    ])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    _check_contract(doc)
    assert doc["outcomes"][0]["delivered"] == {"to": "out", "interface": "docker0"}


@pytest.mark.parametrize("state", ["established", "related"])
def test_tracked_non_new_states_skip_nat(state: str) -> None:
    o = one(run(DNAT, dst="198.51.100.1", dport="8080", state=state, **OUTSIDE_TCP))
    assert not any(s.table == "nat" for s in o.steps)


# ---------------------------------------------------------------- route_localnet and hairpin mode


def _with(host: HostModel, name: str, **changes: Any) -> HostModel:
    return replace(host, interfaces=tuple(replace(i, **changes) if i.name == name else i for i in host.interfaces))


LOCALNET = NAT_HEAD + """\
-A PREROUTING -d 198.51.100.1/32 -p tcp -m tcp --dport 8090 -j DNAT --to-destination 127.0.0.1:22
-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
-A POSTROUTING -o docker0 -m addrtype --src-type LOCAL -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -p tcp -m tcp --dport 80
COMMIT
"""


def test_martian_destination_without_route_localnet() -> None:
    o = one(run(FILTER_OPEN, dst="127.0.0.1", dport="22", **OUTSIDE_TCP))
    assert o.verdict == "DROP" and o.delivered is None
    assert o.steps[-1].hook == "ROUTING"
    assert o.steps[-1].action == "martian destination 127.0.0.0/8 on eth0: dropped by routing (route_localnet is off)"
    on = one(run(FILTER_OPEN, _with(HOST, "eth0", route_localnet=True), dst="127.0.0.1", dport="22", **OUTSIDE_TCP))
    assert on.verdict == "ACCEPT" and on.delivered is not None and on.delivered.to == "local"


def test_martian_destination_after_dnat_and_source() -> None:
    o = one(run(LOCALNET, dst="198.51.100.1", dport="8090", **OUTSIDE_TCP))
    assert o.verdict == "DROP" and path(o) == [("nat", "PREROUTING", 1)] and "martian destination" in o.steps[-1].action
    src = one(run(FILTER_OPEN, **{**C1_UDP, "src": "127.0.0.5"}, dst="198.51.100.1", dport="22"))
    assert src.verdict == "DROP" and src.steps[-1].action.startswith("martian source 127.0.0.0/8 on docker0")
    host = _with(HOST, "docker0", route_localnet=True)
    ok = one(run(FILTER_OPEN, host, **{**C1_UDP, "src": "127.0.0.5"}, dst="198.51.100.1", dport="22"))
    assert ok.verdict == "ACCEPT"
    own = one(run(FILTER_OPEN, host, **{**C1_UDP, "src": "127.0.0.1"}, dst="198.51.100.1", dport="22"))
    assert own.verdict == "DROP" and "host's own loopback address" in own.steps[-1].action


def test_martians_per_interface_in_the_shared_run() -> None:
    # no rule tests the input interface: one run serves every interface, then is restricted
    ruleset = read(FILTER_OPEN, "<test>", 4)
    host = _with(HOST, "docker0", route_localnet=True)
    engine = Engine(ruleset, host)
    results = {}
    for iface in ("eth0", "docker0", "br-net1", "eth0"):
        query = TraceQuery(iface, src="198.51.100.9", dst="127.0.0.1", proto="tcp", dport="22")
        results[iface] = [o.verdict for o in trace(ruleset, host, query, engine=engine)]
    assert results == {"eth0": ["DROP"], "docker0": ["ACCEPT"], "br-net1": ["DROP"]}


def test_local_loopback_source_needs_route_localnet_on_the_way_out() -> None:
    query = {"local": True, "src": "127.0.0.1", "dst": "127.0.0.1", "proto": "tcp", "sport": "41000", "dport": "8080"}
    o = one(run(LOCALNET, **query))
    assert o.verdict == "DROP" and path(o) == [("nat", "OUTPUT", 1)]  # before filter OUTPUT
    assert "rerouted after nat OUTPUT" in o.steps[-1].action and "docker0" in o.steps[-1].action
    on = one(run(LOCALNET, _with(HOST, "docker0", route_localnet=True), **query))
    assert on.verdict == "ACCEPT" and on.delivered is not None and on.delivered.interface == "docker0"
    assert path(on) == [("nat", "OUTPUT", 1), ("filter", "OUTPUT", 1), ("filter", "OUTPUT", "policy"),
                        ("nat", "POSTROUTING", 1)]
    assert pkt(on).src == ip("172.17.0.1")
    bound = one(run(FILTER_OPEN, local=True, src="127.0.0.1", dst="198.51.100.2", proto="udp", dport="53"))
    assert bound.verdict == "DROP" and path(bound) == [] and "the socket's route" in bound.steps[-1].action


HAIRPIN = NAT_HEAD + """\
-A PREROUTING -d 198.51.100.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
-A PREROUTING -d 172.17.0.3/32 -p tcp -m tcp --dport 9000 -j DNAT --to-destination 172.17.0.2:80
-A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE
COMMIT
""" + FILTER_OPEN

C1_TCP: dict[str, Any] = {**C1_UDP, "proto": "tcp"}


@pytest.mark.parametrize("dst,dport", [("198.51.100.1", "8080"), ("172.17.0.3", "9000")])
def test_hairpin_needs_hairpin_mode_with_br_netfilter(dst: str, dport: str) -> None:
    o = one(run(HAIRPIN, dst=dst, dport=dport, **C1_TCP))
    assert o.verdict == "DROP" and o.steps[-1].hook == "BRIDGE" and "hairpin mode is off" in o.steps[-1].action
    assert path(o) == [("nat", "PREROUTING", 1 if dport == "8080" else 2)]  # no FORWARD
    on = one(run(HAIRPIN, _with(HOST, "docker0", hairpin=True), dst=dst, dport=dport, **C1_TCP))
    assert on.verdict == "ACCEPT" and pkt(on).src == ip("172.17.0.1") and pkt(on).dst == ip("172.17.0.2")
    other = one(run(HAIRPIN, dst=dst, dport=dport, **{**C1_TCP, "src": "172.17.0.3"}))
    assert other.verdict == "ACCEPT"  # c2 -> c1: another port, no hairpin


def test_hairpin_without_br_netfilter_is_routed() -> None:
    o = one(run(HAIRPIN, replace(HOST, br_netfilter=False), dst="198.51.100.1", dport="8080", **C1_TCP))
    assert o.verdict == "ACCEPT" and ("filter", "FORWARD", "policy") in path(o)


def test_ipv6_loopback_off_lo_is_dropped() -> None:
    host6 = parse_host_toml(LAB_HOST.read_text().replace("127.0.0.1/8", "::1/128").replace(
        "198.51.100.1/24", "2001:db8:100::1/64").replace("172.17.0.1/16", "fd00:17::1/64").replace(
        "172.18.0.1/16", "fd00:18::1/64").replace("172.17.0.2", "fd00:17::2").replace(
        "172.17.0.3", "fd00:17::3").replace("172.18.0.2", "fd00:18::2"), 6)
    dump = """*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -p udp
COMMIT
"""
    ruleset = read(dump, "<test>", 6)
    outside = one(trace(ruleset, host6, TraceQuery("eth0", src="2001:db8:100::2", dst="::1", proto="udp", dport="22")))
    assert outside.verdict == "DROP" and path(outside) == [] and "dropped on receipt" in outside.steps[-1].action
    bridged = one(trace(ruleset, host6, TraceQuery("docker0", src="::1", dst="2001:db8:100::1", proto="udp",
                                                   dport="22")))
    assert bridged.verdict == "DROP" and path(bridged) == [("raw", "PREROUTING", 1), ("raw", "PREROUTING", "policy")]


def test_an_engine_like_another_shares_its_compiled_rules() -> None:
    ruleset = read(NAT_HEAD + "-A PREROUTING -p tcp --dport 80 -j DNAT --to-destination 10.0.0.2\nCOMMIT\n"
                   + FILTER_OPEN, "<test>", 4)
    first = Engine(ruleset, HOST, record_steps=True)
    rule = next(iter(ruleset.rules()))
    compiled = first.compiled(rule)
    second = Engine(ruleset, HOST, space=first.space, record_steps=False, like=first)
    assert second.compiled(rule) is compiled
    with pytest.raises(ValueError, match="same ruleset, host and space"):
        Engine(ruleset, HOST, like=first)  # a space of its own: its sets are not first's


def test_space_memo_builds_a_set_once() -> None:
    from natlint.packets.space import PacketSpace

    sp = PacketSpace(4)
    calls: list[int] = []

    def build() -> object:
        calls.append(1)
        return sp.value("dport", 80)

    assert sp.memo(("test", 1), build) is sp.memo(("test", 1), build)  # type: ignore[arg-type]
    assert len(calls) == 1 and sp.memo(("test", 1), build) == sp.value("dport", 80)  # type: ignore[arg-type]


def test_a_trace_compiles_only_the_rules_on_its_way() -> None:
    # whether some rule tests the input interface (one run then serves every interface) is
    # read from the -i rules alone: a trace on a 100k-rule kube-proxy dump compiled them all
    chains = "".join(f":C{i} - [0:0]\n" for i in range(50))
    rules = "".join(f"-A C{i} -p udp --dport {1000 + i} -j DROP\n" for i in range(50))
    dump = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" + chains
            + "-A INPUT -p udp -j C0\n-A FORWARD -i eth0 -p tcp --dport 25 -j DROP\n" + rules + "COMMIT\n")
    ruleset = read(dump, "<test>", 4)
    engine = Engine(ruleset, HOST)
    out = one(trace(ruleset, HOST, TraceQuery(dst="198.51.100.1", dport="22", **OUTSIDE_TCP), engine=engine))
    assert out.verdict == "ACCEPT" and out.delivered is not None and out.delivered.to == "local"
    total = sum(1 for _ in ruleset.rules())
    assert len(engine._compiled) <= 3 < total  # INPUT's jump, the -i rule, maybe C0's rule
    assert engine._no_iif_dependence() is False  # the -i rule was compiled and read


def test_union_all_lets_go_of_each_part_once_paired() -> None:
    # Merging the 32,000 translated branches of a big kube-proxy dump held every part and
    # every level of the union at once (the peak of the nat checks at 98.5k rules): with
    # consume=True the caller's list is emptied, no reference to a part is left behind.
    from natlint.netfilter.engine import union_all
    from natlint.packets.space import PacketSpace

    sp = PacketSpace(4, ())
    parts = [sp.value("dport", p) for p in range(1, 8)]
    expected = sp.range("dport", 1, 7)
    assert union_all(list(parts)) == expected and len(parts) == 7  # the caller's list is kept
    union = union_all(parts, consume=True)
    assert union == expected and parts == []
    assert union_all([sp.value("dport", 9)]) == sp.value("dport", 9)


def test_a_pile_of_accepted_branches_is_unioned_as_it_grows() -> None:
    # An engine that records no steps unions the branches a chain ACCEPTs as they come (a
    # binary counter), so that the 32,000 translated branches of a big kube-proxy dump are
    # never alive all at once; other verdicts stay apart.
    from natlint.netfilter.engine import _Branch, _Pile
    from natlint.packets.space import PacketSpace

    sp = PacketSpace(4, ())
    pile = _Pile(merge=True)
    for port in range(1, 8):
        pile.append((_Branch(sp.value("dport", port)), "ACCEPT"))
    pile.append((_Branch(sp.value("dport", 99)), "DROP"))
    other = _Pile(merge=True)
    other.append((_Branch(sp.value("dport", 8)), "ACCEPT"))
    other.append((_Branch(sp.value("dport", 9), reasons=("approximate",)), "ACCEPT"))
    pile.extend(other)
    items = list(pile)
    accepted = [b for b, v in items if v == "ACCEPT" and not b.reasons]
    assert len(accepted) <= 2  # 8 branches: partial unions of 8, or of 4, 2, 1, 1 merged as they meet
    union = accepted[0].packets
    for b in accepted[1:]:
        union = union | b.packets
    assert union == sp.range("dport", 1, 8)
    assert [b.packets for b, v in items if v == "DROP"] == [sp.value("dport", 99)]
    assert [b.packets for b, v in items if b.reasons] == [sp.value("dport", 9)]  # its own group
    assert list(other) == []  # taken over
    kept = _Pile(merge=False)
    kept.append((_Branch(sp.value("dport", 1)), "ACCEPT"))
    kept.append((_Branch(sp.value("dport", 2)), "ACCEPT"))
    assert len(list(kept)) == 2  # an engine that records steps keeps every history apart


def test_a_step_filter_records_only_the_steps_it_keeps() -> None:
    # Three paths reach one DNAT (a MARK on the way for some sources, as kube-proxy's
    # KUBE-MARK-MASQ): recording every step keeps three outcomes, each crossing FORWARD and
    # POSTROUTING on its own; recording only DNAT steps leaves one outcome per DNAT rule, with
    # the same packets and fates.
    dump = (NAT_HEAD + ":SVC - [0:0]\n:MARKIT - [0:0]\n"
            "-A PREROUTING -p tcp --dport 8080 -j SVC\n"
            "-A SVC -s 198.51.100.0/25 -j MARKIT\n"
            "-A SVC -s 198.51.100.128/26 -j MARKIT\n"
            "-A SVC -p tcp -j DNAT --to-destination 172.17.0.2:80\n"
            "-A MARKIT -j MARK --set-xmark 0x4000/0x4000\n"
            "-A PREROUTING -p tcp --dport 9090 -j DNAT --to-destination 172.17.0.3:90\nCOMMIT\n" + FILTER_OPEN)
    ruleset = read(dump, "<test>", 4)
    full = Engine(ruleset, HOST)
    sp: Any = full.space
    start = (sp.iface("iif", "eth0") & sp.iface("oif", None) & sp.ctstate(["NEW"]) & sp.value("mark", 0)
             & sp.value("connmark", 0) & sp.value("ct_dnat", False) & sp.value("ct_snat", False)
             & sp.value("proto", 6) & sp.value("dst", "198.51.100.1"))

    def dnat(step: Any) -> bool:
        return step.table == "nat" and step.action.startswith("DNAT")

    kept = Engine(ruleset, HOST, space=sp, record_steps=dnat, like=full)
    every, some = full.arriving(start), kept.arriving(start)
    forwarded = [o for o in every if o.delivered is not None and o.delivered.to == "out"]
    assert len(forwarded) == 4  # three paths to the first DNAT, one to the second
    merged = [o for o in some if o.delivered is not None and o.delivered.to == "out"]
    assert len(merged) == 2
    assert all(len(o.steps) == 1 and dnat(o.steps[0]) for o in merged)
    by_rule = {o.steps[0].line: o.packets for o in merged}
    for line, packets in by_rule.items():
        paths = [o.packets for o in forwarded if any(s.line == line and dnat(s) for s in o.steps)]
        union = paths[0]
        for p in paths[1:]:
            union = union | p
        assert packets == union
    rest = {(o.verdict, o.delivered) for o in every if o not in forwarded}
    assert rest == {(o.verdict, o.delivered) for o in some if o not in merged}


def test_union_stream_unions_sets_as_they_come() -> None:
    # exposure unions the views of thousands of published ports of a kube-proxy dump; made
    # one by one from a generator, no list of them is alive at once
    from natlint.netfilter.engine import union_stream
    from natlint.packets.space import PacketSpace

    sp = PacketSpace(4, ())
    made: list[int] = []

    def parts() -> Any:
        for port in range(1, 12):
            made.append(port)
            yield sp.value("dport", port)

    assert union_stream(parts(), sp.none()) == sp.range("dport", 1, 11) and made == list(range(1, 12))
    assert union_stream(iter(()), sp.none()) == sp.none()
    assert union_stream([sp.value("dport", 5)], sp.none()) == sp.value("dport", 5)


def test_hmark_sets_a_mark_natlint_does_not_compute() -> None:
    # HMARK writes a hash of the packet into its mark: a later mark test may match or not,
    # and the outcomes say why they are approximate (it was treated as a no-op)
    dump = ("*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            ":POSTROUTING ACCEPT [0:0]\n"
            "-A PREROUTING -j HMARK --hmark-tuple src,dst --hmark-mod 10 --hmark-offset 100 --hmark-rnd 0x1\n"
            "COMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -m mark --mark 0x65 -j DROP\nCOMMIT\n")
    outcomes = run(dump, dst="198.51.100.1", dport="22", **OUTSIDE_TCP)
    assert {o.verdict for o in outcomes} == {"ACCEPT", "DROP"}
    assert all(any("HMARK" in r for r in o.reasons) and o.certainty == "approximate" for o in outcomes)
