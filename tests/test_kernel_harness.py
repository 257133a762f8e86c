"""The kernel harness itself: parsers always; a real lab (marker ``kernel``) where root and netns work.

The lab tests load ``fixtures/kernel/docker-basic.rules`` (c1 publishes 80/tcp on host port
8080, MASQUERADE for 172.17.0.0/16, FORWARD and INPUT policy DROP, ssh allowed) into one lab
and probe it many times: one restore, many probes.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import oracle
import pytest
from kernel_harness import (
    DEFAULT_TOPOLOGY,
    ConntrackEntry,
    CounterHit,
    KernelLab,
    Probe,
    Topology,
    TraceStep,
    Tuple4,
    cleanup_stale,
    counter_delta,
    dnat_ports,
    parse_conntrack,
    parse_counters,
    parse_trace,
)

ROOT = Path(__file__).resolve().parents[1]
DOCKER_BASIC = ROOT / "fixtures" / "kernel" / "docker-basic.rules"
HOST = "198.51.100.1"
OUTSIDE = "198.51.100.2"
INTERNET = "198.51.100.3"
C1 = "172.17.0.2"

F = TypeVar("F", bound=Callable[..., object])


def needs_kernel(test: F) -> F:
    """Mark a test ``kernel`` and skip it, with the reason, where the oracle cannot run."""
    reason = oracle.kernel_available()
    skip = pytest.mark.skipif(reason is not None, reason=reason or "")
    return pytest.mark.kernel(skip(test))  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------
# Topology (no kernel needed)
# --------------------------------------------------------------------------------------------

# shared/tools/kernelcheck/default-topology.json, verbatim.
KERNELCHECK_DEFAULT = {
    "disable_ipv6": True,
    "host": {
        "ext_if": "eth0",
        "ext_addr": "198.51.100.1/24",
        "gw": None,
        "extra_addrs": [],
        "routes": [],
        "sysctls": {
            "net.ipv4.ip_forward": "1",
            "net.ipv4.conf.all.rp_filter": "0",
            "net.ipv4.conf.default.rp_filter": "0",
            "net.bridge.bridge-nf-call-iptables": "1",
        },
    },
    "outside": {"addr": "198.51.100.2/24", "gw": "198.51.100.1", "routes": []},
    "internet": {"addr": "198.51.100.3/24", "gw": None, "routes": []},
    "bridges": [
        {
            "name": "docker0",
            "addr": "172.17.0.1/16",
            "containers": [{"name": "c1", "addr": "172.17.0.2"}, {"name": "c2", "addr": "172.17.0.3"}],
        },
        {"name": "br-net1", "addr": "172.18.0.1/16", "containers": [{"name": "c3", "addr": "172.18.0.2"}]},
    ],
}


def test_default_topology_is_kernelchecks() -> None:
    assert DEFAULT_TOPOLOGY == KERNELCHECK_DEFAULT
    assert Topology.default() == Topology.from_dict(KERNELCHECK_DEFAULT) == Topology.from_dict({})
    assert Topology.default().to_dict() == KERNELCHECK_DEFAULT
    assert Topology.default().containers() == {"c1": ["docker0"], "c2": ["docker0"], "c3": ["br-net1"]}


def test_topology_from_dict_merges_host_and_replaces_bridges() -> None:
    topo = Topology.from_dict(
        {
            "host": {
                "ext_if": "ens3",
                "ext_addr": "203.0.113.10/24",
                "extra_addrs": [{"dev": "ens3", "addr": "203.0.113.11/24"}],
                "routes": [{"to": "10.99.0.0/16", "via": "203.0.113.1"}],
                "sysctls": {"net.bridge.bridge-nf-call-iptables": "0"},
            },
            "outside": {"addr": "203.0.113.20/24", "gw": "203.0.113.10"},
            "bridges": [
                {
                    "name": "br-app",
                    "addr": "10.10.0.1/24",
                    "containers": [
                        {"name": "web", "addr": "10.10.0.5"},
                        {"name": "db", "addr": "10.10.0.6", "host_if": "vethdb"},
                    ],
                },
                {"name": "br-back", "addr": "10.20.0.1/24", "containers": [{"name": "db", "addr": "10.20.0.6"}]},
            ],
        }
    )
    assert topo.host.ext_if == "ens3"
    assert dict(topo.host.sysctls)["net.ipv4.ip_forward"] == "1"  # kept from the default
    assert dict(topo.host.sysctls)["net.bridge.bridge-nf-call-iptables"] == "0"
    assert topo.outside.routes == ()
    assert topo.internet.addr == "198.51.100.3/24"
    assert topo.containers() == {"web": ["br-app"], "db": ["br-app", "br-back"]}
    assert Topology.from_dict(topo.to_dict()) == topo


@pytest.mark.parametrize(
    "bad",
    [
        {"bridges": [{"name": "a-very-long-bridge-name", "addr": "10.0.0.1/24"}]},
        {"bridges": [{"name": "br0", "addr": "10.0.0.1/24", "containers": [{"name": "host", "addr": "10.0.0.2"}]}]},
        {"host": {"ext_addr": "not-an-address"}},
        {"hosts": {}},
    ],
)
def test_topology_rejects(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Topology.from_dict(bad)


# --------------------------------------------------------------------------------------------
# Parsers (no kernel needed); the text is what xtables-monitor / conntrack / iptables-save printed
# --------------------------------------------------------------------------------------------

_HDR = "IN=eth0 SRC=198.51.100.2 DST=198.51.100.1 LEN=60 TOS=0x0 TTL=64 ID={id} DF SPORT=41001 DPORT=9999 SYN"
_FWD = "IN=eth0 OUT=docker0 SRC=198.51.100.2 DST=172.17.0.2 LEN=60 TOS=0x0 TTL=63 ID=10815 DF SPORT=41000 DPORT=80 SYN"
_PRE_TRACE = "nlk_trace:pre:rule:0x7:CONTINUE  -4 -t nlk_trace -A pre -p tcp -m tcp --tcp-flags SYN,ACK SYN -j TRACE"
_DNAT = "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80"
_ACCEPT_80 = "-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT"
TRACE_PUBLISHED = f"""\
PACKET: 2 6ad67604 {_HDR.format(id=1).replace("41001", "41000").replace("9999", "8080")}
 TRACE: 2 6ad67604 {_PRE_TRACE}
 TRACE: 2 6ad67604 nlk_trace:pre:policy:ACCEPT
 TRACE: 2 6ad67604 raw:PREROUTING:policy:ACCEPT
 TRACE: 2 6ad67604 mangle:PREROUTING:policy:ACCEPT
 TRACE: 2 6ad67604 nat:PREROUTING:rule:0x6:JUMP:DOCKER  -4 -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
 TRACE: 2 6ad67604 nat:DOCKER:rule:0x9:ACCEPT  -4 -t nat {_DNAT}
PACKET: 2 6ad67604 {_FWD}
 TRACE: 2 6ad67604 mangle:FORWARD:policy:ACCEPT
 TRACE: 2 6ad67604 filter:FORWARD:rule:0x9:JUMP:DOCKER  -4 -t filter -A FORWARD -o docker0 -j DOCKER
 TRACE: 2 6ad67604 filter:DOCKER:rule:0xc:ACCEPT  -4 -t filter {_ACCEPT_80}
 TRACE: 2 6ad67604 mangle:POSTROUTING:policy:ACCEPT
 TRACE: 2 6ad67604 nat:POSTROUTING:policy:ACCEPT
"""
PUBLISHED_PATH = [
    ("raw", "PREROUTING", "policy", "ACCEPT"),
    ("mangle", "PREROUTING", "policy", "ACCEPT"),
    ("nat", "PREROUTING", 1, "JUMP:DOCKER"),
    ("nat", "DOCKER", 1, "ACCEPT"),
    ("mangle", "FORWARD", "policy", "ACCEPT"),
    ("filter", "FORWARD", 2, "JUMP:DOCKER"),
    ("filter", "DOCKER", 1, "ACCEPT"),
    ("mangle", "POSTROUTING", "policy", "ACCEPT"),
    ("nat", "POSTROUTING", "policy", "ACCEPT"),
]
# A dropped SYN and its retransmission (another trace id), plus an unrelated packet.
TRACE_DROPPED = "".join(
    f"""\
PACKET: 2 {tid} {_HDR.format(id=ipid)}
 TRACE: 2 {tid} {_PRE_TRACE}
 TRACE: 2 {tid} nlk_trace:pre:policy:ACCEPT
 TRACE: 2 {tid} nat:PREROUTING:rule:0x6:JUMP:DOCKER  -4 -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
 TRACE: 2 {tid} nat:DOCKER:rule:0xa:0xfffffffb  -4 -t nat -A DOCKER -i docker0 -j RETURN
 TRACE: 2 {tid} nat:PREROUTING:policy:ACCEPT
 TRACE: 2 {tid} filter:INPUT:policy:DROP
PACKET: 2 0000beef {_HDR.format(id=1).replace("41001", "41999")}
 TRACE: 2 0000beef filter:INPUT:policy:DROP
"""
    for tid, ipid in (("a517cdc5", 43319), ("8d09ea2f", 43320))
)
HANDLES = {
    ("nat", 6): ("PREROUTING", 1),
    ("nat", 9): ("DOCKER", 1),
    ("nat", 10): ("DOCKER", 2),
    ("filter", 9): ("FORWARD", 2),
    ("filter", 12): ("DOCKER", 1),
}


def test_parse_trace_maps_handles_to_positions() -> None:
    path = parse_trace(TRACE_PUBLISHED.splitlines(), 41000, handles=HANDLES)
    assert path == PUBLISHED_PATH
    assert all(isinstance(step, TraceStep) for step in path)


def test_parse_trace_first_packet_only_and_return_verdict() -> None:
    path = parse_trace(TRACE_DROPPED.splitlines(), 41001, handles=HANDLES)
    assert path == [
        ("nat", "PREROUTING", 1, "JUMP:DOCKER"),
        ("nat", "DOCKER", 2, "RETURN"),
        ("nat", "PREROUTING", "policy", "ACCEPT"),
        ("filter", "INPUT", "policy", "DROP"),
    ]
    assert parse_trace(TRACE_DROPPED.splitlines(), 40000) == []


def test_parse_trace_falls_back_to_rule_text() -> None:
    rules = {
        ("nat", "PREROUTING"): ["-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER"],
        ("nat", "DOCKER"): [
            _DNAT,
            "-A DOCKER -i docker0 -j RETURN",
        ],
    }
    path = parse_trace(TRACE_DROPPED.splitlines(), 41001, rules=rules)
    assert path[:2] == [("nat", "PREROUTING", 1, "JUMP:DOCKER"), ("nat", "DOCKER", 2, "RETURN")]
    # filter/FORWARD is in neither map: the raw handle is kept
    assert parse_trace(TRACE_PUBLISHED.splitlines(), 41000, rules=rules)[5] == (
        "filter",
        "FORWARD",
        "0x9",
        "JUMP:DOCKER",
    )


def test_parse_trace_keeps_loopback_reentry_of_a_local_packet() -> None:
    hdr = "OUT=lo SRC=127.0.0.1 DST=127.0.0.1 LEN=60 SPORT=45001 DPORT=22 SYN"
    lines = f"""\
PACKET: 2 dd8f83b3 {hdr}
 TRACE: 2 dd8f83b3 nlk_trace:out:rule:0x4:CONTINUE  -4 -t nlk_trace -A out -p tcp -j TRACE
 TRACE: 2 dd8f83b3 raw:OUTPUT:policy:ACCEPT
 TRACE: 2 dd8f83b3 filter:OUTPUT:policy:ACCEPT
PACKET: 2 3d4954f1 IN=lo {hdr}
 TRACE: 2 3d4954f1 nlk_trace:pre:rule:0x3:CONTINUE  -4 -t nlk_trace -A pre -p tcp -j TRACE
 TRACE: 2 3d4954f1 raw:PREROUTING:policy:ACCEPT
 TRACE: 2 3d4954f1 filter:INPUT:rule:0x5:ACCEPT  -4 -t filter -A INPUT -i lo -j ACCEPT
""".splitlines()
    path = parse_trace(lines, 45001, entry_chain="out", handles={("filter", 5): ("INPUT", 1)})
    assert path == [
        ("raw", "OUTPUT", "policy", "ACCEPT"),
        ("filter", "OUTPUT", "policy", "ACCEPT"),
        ("raw", "PREROUTING", "policy", "ACCEPT"),
        ("filter", "INPUT", 1, "ACCEPT"),
    ]


def test_parse_conntrack() -> None:
    text = (
        "tcp      6 119 TIME_WAIT src=198.51.100.2 dst=198.51.100.1 sport=41000 dport=8080 src=172.17.0.2 "
        "dst=198.51.100.2 sport=80 dport=41000 [ASSURED] mark=0 use=1\n"
        "udp      17 29 src=172.17.0.2 dst=198.51.100.3 sport=41001 dport=53 [UNREPLIED] src=198.51.100.3 "
        "dst=198.51.100.1 sport=53 dport=41001 mark=0 use=1\n"
        "conntrack v1.4.7 (conntrack-tools): 2 flow entries have been shown.\n"
    )
    tcp, udp = parse_conntrack(text)
    assert isinstance(tcp, ConntrackEntry)
    assert (tcp.proto, tcp.state, tcp.flags) == ("tcp", "TIME_WAIT", ("ASSURED",))
    assert tcp.orig == Tuple4("198.51.100.2", "198.51.100.1", 41000, 8080)
    assert tcp.reply == Tuple4("172.17.0.2", "198.51.100.2", 80, 41000)
    assert tcp.dnat and not tcp.snat
    assert (udp.proto, udp.state, udp.flags) == ("udp", None, ("UNREPLIED",))
    assert udp.snat and not udp.dnat


def test_parse_counters_and_delta() -> None:
    before = parse_counters(
        "*nat\n:PREROUTING ACCEPT [5:300]\n:DOCKER - [0:0]\n[0:0] -A PREROUTING -j DOCKER\nCOMMIT\n"
        "*filter\n:INPUT DROP [0:0]\n[1:60] -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n"
    )
    after = parse_counters(
        "*filter\n:INPUT DROP [2:120]\n[1:60] -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n"
        "*nat\n:PREROUTING ACCEPT [6:360]\n:DOCKER - [0:0]\n[1:60] -A PREROUTING -j DOCKER\nCOMMIT\n"
    )
    delta = counter_delta(before, after)
    assert delta == [
        CounterHit("nat", "PREROUTING", 1, 1),
        CounterHit("nat", "PREROUTING", 0, 1),
        CounterHit("filter", "INPUT", 0, 2),
    ]
    assert delta[0].rule == "-A PREROUTING -j DOCKER" and delta[2].rule == "policy DROP" and delta[2].bytes == 120


def test_dnat_ports() -> None:
    text = (
        "-A DOCKER -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80\n"
        "-A X -p udp -j DNAT --to-destination 10.0.0.1-10.0.0.3:5000-5002\n"
        "-A Y -p tcp -j REDIRECT --to-ports 3128\n"
        "-A Z -j MASQUERADE --to-ports 1024-65535\n"
        "-A W -j DNAT --to-destination 10.0.0.9\n"
    )
    assert dnat_ports(text) == {80, 5000, 5001, 5002, 3128}


# --------------------------------------------------------------------------------------------
# The lab (root, netns, iptables-nft, xtables-monitor)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab() -> Iterator[KernelLab]:
    reason = oracle.kernel_available()
    if reason:
        pytest.skip(reason)
    with KernelLab() as lab:
        result = lab.load(DOCKER_BASIC.read_text())
        assert result.ok, result.message
        yield lab


@needs_kernel
def test_published_port_reaches_the_container(lab: KernelLab) -> None:
    r = lab.probe(Probe("outside", "tcp", HOST, 8080))
    assert r.client == "connected", r.describe()
    assert r.delivered_to == "c1:80", r.describe()
    assert r.src_seen == OUTSIDE and r.local_addr == C1 and r.client_addr == OUTSIDE
    assert r.banner is not None and r.banner.startswith("NLK c1 tcp/80")
    assert r.hit("nat", "DOCKER", 1) == 1  # nat sees the first packet only
    assert r.hit("filter", "DOCKER", 1) == 1
    assert r.hit("filter", "FORWARD", 0) == 0
    [ct] = r.conntrack
    assert ct.orig == Tuple4(OUTSIDE, HOST, r.sport, 8080)
    assert ct.reply == Tuple4(C1, OUTSIDE, 80, r.sport)
    assert any(a.ns == "c1" and a.dst == C1 and a.dport == 80 for a in r.arrived_at)


@needs_kernel
def test_published_port_first_packet_path(lab: KernelLab) -> None:
    if not lab.trace_available:
        pytest.skip("; ".join(lab.warnings) or "no nf_tables trace")
    r = lab.probe(Probe("outside", "tcp", HOST, 8080))
    assert r.first_packet_path == PUBLISHED_PATH, r.describe()
    hits = r.first_packet_hits
    assert hits is not None and ("nat", "DOCKER", 1) in hits and ("nat", "POSTROUTING", 0) in hits
    assert all(r.hit(*h) >= 1 for h in hits)  # the first packet's share of the counters


@needs_kernel
def test_container_egress_is_masqueraded(lab: KernelLab) -> None:
    r = lab.probe(Probe("container:c1", "udp", INTERNET, 53))
    assert (r.delivered_to, r.src_seen, r.client) == ("internet:53", HOST, "reply"), r.describe()
    assert r.hit("nat", "POSTROUTING", 1) == 1
    [ct] = r.conntrack
    assert ct.snat and ct.reply.dst == HOST
    if r.first_packet_path is not None:
        assert r.first_packet_path[-1] == ("nat", "POSTROUTING", 1, "ACCEPT")
        assert ("filter", "FORWARD", 3, "ACCEPT") in r.first_packet_path


@needs_kernel
def test_input_policy_drop(lab: KernelLab) -> None:
    r = lab.probe(Probe("outside", "tcp", HOST, 9999))
    assert r.delivered_to is None and r.client == "timeout", r.describe()
    assert r.hit("filter", "INPUT", 0) == 1  # one SYN: the timeout stays under the 1 s retransmission
    assert r.conntrack == []  # a dropped first packet leaves no confirmed entry
    if r.first_packet_path is not None:
        assert r.first_packet_path[-1] == ("filter", "INPUT", "policy", "DROP")


@needs_kernel
def test_ssh_to_the_host_and_local_traffic(lab: KernelLab) -> None:
    r = lab.probe(Probe("outside", "tcp", HOST, 22))
    assert (r.delivered_to, r.src_seen, r.local_addr) == ("host:22", OUTSIDE, HOST), r.describe()
    local = lab.probe(Probe("host", "tcp", "127.0.0.1", 22))
    assert local.delivered_to == "host:22", local.describe()
    if local.first_packet_path is not None:  # OUTPUT, then the loopback re-entry
        tables = [(s.table, s.chain) for s in local.first_packet_path]
        assert tables.index(("raw", "OUTPUT")) < tables.index(("raw", "PREROUTING"))
        assert local.first_packet_path[-1] == ("filter", "INPUT", 1, "ACCEPT")


@needs_kernel
def test_host_output_dnat_skips_forward(lab: KernelLab) -> None:
    r = lab.probe(Probe("host", "tcp", HOST, 8080))
    assert r.delivered_to == "c1:80", r.describe()
    assert r.hit("nat", "OUTPUT", 1) == 1 and r.hit("nat", "DOCKER", 1) == 1
    assert not any(c.chain == "FORWARD" for c in r.counters)


@needs_kernel
def test_intra_bridge_traffic_through_br_netfilter(lab: KernelLab) -> None:
    if not lab.br_netfilter:
        pytest.skip("br_netfilter (bridge-nf-call-iptables) is not available here")
    r = lab.probe(Probe("c1", "tcp", "172.17.0.3", 80))
    assert (r.delivered_to, r.src_seen) == ("c2:80", C1), r.describe()
    assert r.hit("filter", "FORWARD", 4) >= 1  # -i docker0 -o docker0 -j ACCEPT


@needs_kernel
def test_hairpin_from_docker0_is_not_dnated(lab: KernelLab) -> None:
    # nat DOCKER returns for -i docker0; no docker-proxy here, and INPUT drops it.
    r = lab.probe(Probe("c2", "tcp", HOST, 8080))
    assert r.delivered_to is None, r.describe()
    assert r.hit("nat", "DOCKER", 2) == 1 and r.hit("filter", "INPUT", 0) == 1


@needs_kernel
def test_many_probes_on_one_restore(lab: KernelLab) -> None:
    """One restore, many probes, each attributable (timings are printed, not asserted)."""
    times = []
    for i in range(20):
        p = Probe("outside", "tcp", HOST, 8080) if i % 2 else Probe("c1", "udp", INTERNET, 53)
        r = lab.probe(p)
        assert r.delivered, r.describe()
        times.append(r.elapsed)
    print(f"delivered probe: mean {statistics.mean(times):.3f} s, max {max(times):.3f} s")


@needs_kernel
def test_load_replaces_the_dump_and_reports_restore_errors() -> None:
    with KernelLab(Topology.from_dict({"bridges": []})) as lab:
        bad = lab.load("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j NOPE\nCOMMIT\n")
        assert not bad.ok and bad.exit_code != 0 and "NOPE" in bad.message
        good = lab.load("*filter\n:INPUT DROP [0:0]\n-A INPUT -p udp -m udp --dport 53 -j ACCEPT\nCOMMIT\n")
        assert good.ok, good.message
        assert "*nat" not in lab.save()
        assert lab.probe(Probe("outside", "udp", HOST, 53)).delivered_to == "host:53"
        r = lab.probe(Probe("outside", "udp", HOST, 54))
        assert (r.delivered_to, r.client, r.hit("filter", "INPUT", 0)) == (None, "no-reply", 1)
        names = list(lab.namespaces.values())
    assert not set(names) & _netns()


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@needs_kernel
def test_cleanup_stale_removes_the_namespaces_of_a_killed_run() -> None:
    code = (
        "import os, signal, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import kernel_harness as k\n"
        "lab = k.KernelLab(k.Topology.from_dict({'bridges': []}), trace=False).__enter__()\n"
        "print(lab.prefix, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr
    prefix = p.stdout.strip()
    left = {n for n in _netns() if n.startswith(prefix)}
    assert left, "the killed run should have left its namespaces behind"
    time.sleep(0.2)  # its agents see EOF on stdin and exit
    removed = cleanup_stale()
    assert left <= set(removed)
    assert not {n for n in _netns() if n.startswith(prefix)}
