"""natlint's kernel differential harness: what the real netfilter does with a packet.

A ``KernelLab`` builds a throw-away Docker-like host out of network namespaces, loads an
``iptables-save`` dump into its "host" namespace with ``iptables-restore`` and sends probes
(one TCP connection or one UDP datagram each). For every probe it reports what the kernel did:

* who received it (``delivered_to = "ns:port"``, the port after DNAT), the peer address the
  listener saw (``src_seen``: SNAT/MASQUERADE or not) and the address it arrived on;
* what the client saw (``connected``, ``timeout``, ``refused``, ``reply``, ``no-reply``, ...);
* ``counters``: every rule and policy counter of the host (``iptables-save -c``) that moved
  during the probe. They count *all* packets of the exchange, both directions;
* ``first_packet_path``: the rules and policies the *first* packet (SYN or datagram) hit, in
  order, from the kernel's nf_tables trace (``xtables-monitor --trace``);
* ``conntrack``: the host's conntrack entries of the probe (the NAT mapping is the reply
  tuple), flushed afterwards so probes are independent;
* ``arrived_at``: where the first packet was seen arriving on the wire (any namespace but
  host), also when no listener completed the exchange.

The topology (``Topology.default()``, equal to shared/tools/kernelcheck's default)::

    outside  198.51.100.2/24 (default via .1) --+
    internet 198.51.100.3/24 (no default)     --+-- "sw" namespace: bridge br0 (external L2)
    host eth0 198.51.100.1/24                 --+   ip_forward=1, rp_filter=0, bridge-nf-call-iptables=1
    host docker0 172.17.0.1/16 -- c1 172.17.0.2 (default via .1), c2 172.17.0.3
    host br-net1 172.18.0.1/16 -- c3 172.18.0.2

How it works (all facts measured on iptables 1.8.9 nf_tables, kernel 6.18):

* Namespaces are named ``nlk-<pid>-<n>-<role>``. Every veth pair is created directly between
  two of them; the root namespace is never touched. Bridges get ``mcast_snooping 0`` (no IGMP
  noise in the counters), IPv6 is disabled.
* One agent process per namespace (this file run with ``--agent``) listens on TCP and UDP on
  every port a probe may reach (probe dports, DNAT/REDIRECT target ports of the dump, extra
  ports; added on demand), answers with a banner naming the namespace, sniffs first packets,
  and also acts as the probe client, so a probe costs no process start.
* Tracing needs no change to the dump: the harness adds its own nf_tables table
  ``ip nlk_trace`` (base chains at priority -350, before raw) that sets ``meta nftrace`` on
  every TCP SYN and UDP datagram. ``iptables-save`` does not show that table and it touches no
  counter. The host agent runs ``xtables-monitor --trace`` and relays its lines; rule handles
  are mapped to 1-based positions with ``nft -j list ruleset``. After every probe a marker
  datagram (dropped inside ``nlk_trace``) is traced as a barrier, so the trace is complete.
* Probes use unique source ports (41000 upward) so that every event is attributable.

Caveats:

* No docker-proxy: traffic that is not DNATed to a container reaches the harness's own host
  listener (``host:8080``), read it as "reaches a socket on the host".
* ``addrtype --dst-type LOCAL`` knows only the lab's host addresses (ext_addr, extra_addrs,
  bridge gateways, 127/8); add a real host's other addresses as ``extra_addrs``.
* Counters of ESTABLISHED-path rules can differ by one between identical TCP probes (the
  client's ACK and FIN are sometimes one segment); nat counters are exactly 1 per connection.
  Compare ``first_packet_path``/``first_packet_hits`` for exact, per-packet claims.
* The default client timeout (0.9 s) stays below the 1 s SYN retransmission, so a dropped SYN
  is counted once. With a longer timeout the retransmission shows up in the counters (and in
  nat, since an unconfirmed entry is discarded), but not in ``first_packet_path``.
* Bridged traffic (c1 -> c2 on docker0) passes iptables only with br_netfilter
  (``lab.br_netfilter``); without it such probes show no host counters at all.

IPv6 (``Topology.default_v6()``, or any topology whose addresses are IPv6): one family per
lab, chosen by the host's external address. The lab loads the dump with ``ip6tables-restore``,
sets ``net.ipv6.conf.all.forwarding=1`` and ``bridge-nf-call-ip6tables=1`` on the host, turns
DAD off everywhere (``accept_dad=0`` before any interface exists, ``nodad`` on every address)
so addresses are usable at once, and traces in an ``ip6 nlk_trace`` table. Probes may also be
``icmpv6`` (one echo request; ``dport`` is ignored, the echo identifier plays the source port,
``delivered_to`` is ``ns:0``: the namespace whose stack took the request). A TCP client of
an IPv6 lab also watches a raw ICMPv6 socket while it connects: tcp_v6_err does not treat
some ICMPv6 errors as fatal in SYN_SENT (the connect just times out), and a destination
unreachable that quotes the probe's SYN makes the probe read ``unreachable``. Facts of
iptables 1.8.9: ``xtables-monitor`` aborts when it must print an ip6 rule such as
``tcp flags & (syn|ack) == syn`` ("unsupported layer 4 protocol value"), so the ip6 trace
table matches in base chains ``hook_pre``/``hook_out`` and jumps to ``pre``/``out``, whose only
rule (``meta nftrace set 1``) prints as ``-j TRACE``. Worse, it aborts on every ip6 rule with
``-p tcp -m tcp --dport N`` (rc 3), so an IPv6 lab's host agent relays ``nft -a monitor trace``
instead, turned into xtables-monitor's line format (``_nft_trace_line``: same ids, handles and
verdicts; the rule text is nft's). ICMPv6 PACKET lines carry no identifier, so the ip6 table
traces only echo requests and an icmpv6 probe's path is the one traced packet.

Run as root; ``oracle.kernel_available()`` says why not elsewhere.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import copy
import errno
import fcntl
import ipaddress
import json
import os
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, NamedTuple, Self

from oracle import _SEARCH_PATH, RestoreResult, _pid_alive, _which

__all__ = [
    "Arrival",
    "BridgeSpec",
    "ClientSpec",
    "ConntrackEntry",
    "ContainerSpec",
    "CounterHit",
    "HostSpec",
    "KernelLab",
    "LabError",
    "Probe",
    "ProbeResult",
    "RestoreResult",
    "Topology",
    "TraceStep",
    "cleanup_stale",
    "counter_delta",
    "dnat_ports",
    "parse_conntrack",
    "parse_counters",
    "parse_trace",
]

NETNS_PREFIX = "nlk-"
TRACE_TABLE = "nlk_trace"
# The barrier datagram: host agent -> 127.255.255.254:9, traced and dropped inside TRACE_TABLE.
MARK_ADDR = "127.255.255.254"
MARK_ADDR6 = "::1"  # IPv6 labs: ::1 port 9 (the discard port), dropped inside TRACE_TABLE
MARK_PORT = 9
FIRST_SPORT = 41000
LAST_SPORT = 59999
MAX_PORT_RANGE = 64  # DNAT/REDIRECT port ranges: listen on at most this many ports each
COMMAND_TIMEOUT = 15.0
RESTORE_TIMEOUT = 60.0
XT_TABLES = ("raw", "mangle", "nat", "filter", "security")
_TABLE_RANK = {name: i for i, name in enumerate(XT_TABLES)}
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_RESERVED = {"host", "outside", "internet", "sw"}
_SCRIPT = str(Path(__file__).resolve())


class LabError(RuntimeError):
    """The harness itself failed (setup, a dead agent, a timeout): not a verdict on the rules."""


# ============================================================================================
# Topology
# ============================================================================================

DEFAULT_TOPOLOGY: dict[str, Any] = {
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
    # No default route and no route back to private networks: un-NATed replies go nowhere.
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


# The IPv6 twin of DEFAULT_TOPOLOGY: documentation prefix outside, ULAs on the bridges.
DEFAULT_TOPOLOGY_V6: dict[str, Any] = {
    "disable_ipv6": False,
    "host": {
        "ext_if": "eth0",
        "ext_addr": "2001:db8:100::1/64",
        "gw": None,
        "extra_addrs": [],
        "routes": [],
        "sysctls": {
            "net.ipv6.conf.all.forwarding": "1",
            "net.ipv6.conf.all.accept_dad": "0",
            "net.ipv6.conf.default.accept_dad": "0",
            "net.bridge.bridge-nf-call-ip6tables": "1",
            "net.ipv6.icmp.ratelimit": "0",  # else back-to-back REJECTs lose their ICMPv6 errors
        },
    },
    "outside": {"addr": "2001:db8:100::2/64", "gw": "2001:db8:100::1", "routes": []},
    "internet": {"addr": "2001:db8:100::3/64", "gw": None, "routes": []},
    "bridges": [
        {
            "name": "docker0",
            "addr": "fd00:17::1/64",
            "containers": [{"name": "c1", "addr": "fd00:17::2"}, {"name": "c2", "addr": "fd00:17::3"}],
        },
        {"name": "br-net1", "addr": "fd00:18::1/64", "containers": [{"name": "c3", "addr": "fd00:18::2"}]},
    ],
}


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class Route:
    to: str
    via: str


@dataclass(frozen=True)
class ExtraAddr:
    addr: str  # with prefix length, e.g. "203.0.113.11/24"
    dev: str | None = None  # default: the external interface


@dataclass(frozen=True)
class HostSpec:
    ext_if: str
    ext_addr: str
    gw: str | None
    extra_addrs: tuple[ExtraAddr, ...]
    routes: tuple[Route, ...]
    sysctls: tuple[tuple[str, str], ...]  # in order; applied before any interface exists
    # in order, applied once every interface exists (per-interface keys such as
    # net/ipv4/conf/docker0/route_localnet; slashes keep dotted interface names whole)
    interface_sysctls: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ClientSpec:
    """The outside client or the internet server: one address on the external segment."""

    addr: str
    gw: str | None
    routes: tuple[Route, ...]


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    addr: str  # "a.b.c.d" or with a prefix length (default: the bridge's)
    host_if: str | None = None  # host-side veth name (default veth0, veth1, ...)
    gw: str | None = None  # default route (default: the first bridge's address)


@dataclass(frozen=True)
class BridgeSpec:
    name: str
    addr: str  # the host's address on the bridge, with prefix length
    containers: tuple[ContainerSpec, ...]
    mcast_snooping: int = 0
    hairpin: bool = False  # hairpin_mode on every port (the containers' host-side veths)


@dataclass(frozen=True)
class Topology:
    """A Docker-like host; ``from_dict`` reads shared/tools/kernelcheck's JSON format."""

    host: HostSpec
    outside: ClientSpec
    internet: ClientSpec
    bridges: tuple[BridgeSpec, ...]
    disable_ipv6: bool = True

    @classmethod
    def default(cls) -> Topology:
        return cls.from_dict({})

    @classmethod
    def default_v6(cls) -> Topology:
        """The IPv6 twin of ``default()`` (``DEFAULT_TOPOLOGY_V6``)."""
        return cls.from_dict({"host": {"ext_addr": DEFAULT_TOPOLOGY_V6["host"]["ext_addr"]}})

    @property
    def family(self) -> int:
        """4 or 6: the family of the host's external address (a lab is single-family)."""
        return ipaddress.ip_interface(self.host.ext_addr).version

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Topology:
        """Keys left out of host/outside/internet take their defaults; ``bridges`` replaces."""
        unknown = set(d) - {"disable_ipv6", "host", "outside", "internet", "bridges"}
        if unknown:
            raise ValueError(f"unknown topology keys: {sorted(unknown)}")
        ext_addr = d.get("host", {}).get("ext_addr")
        v6 = ext_addr is not None and ipaddress.ip_interface(str(ext_addr)).version == 6
        defaults = DEFAULT_TOPOLOGY_V6 if v6 else DEFAULT_TOPOLOGY
        host = _deep_merge(defaults["host"], d.get("host", {}))
        peers = {k: _deep_merge(defaults[k], d.get(k, {})) for k in ("outside", "internet")}
        bridges = d.get("bridges", defaults["bridges"])

        def routes(items: Iterable[Mapping[str, str]]) -> tuple[Route, ...]:
            return tuple(Route(str(r["to"]), str(r["via"])) for r in items)

        topo = cls(
            host=HostSpec(
                ext_if=str(host["ext_if"]),
                ext_addr=str(host["ext_addr"]),
                gw=host.get("gw"),
                extra_addrs=tuple(ExtraAddr(str(e["addr"]), e.get("dev")) for e in host.get("extra_addrs", [])),
                routes=routes(host.get("routes", [])),
                sysctls=tuple((str(k), str(v)) for k, v in host.get("sysctls", {}).items()),
                interface_sysctls=tuple((str(k), str(v)) for k, v in host.get("interface_sysctls", {}).items()),
            ),
            outside=ClientSpec(
                str(peers["outside"]["addr"]), peers["outside"].get("gw"), routes(peers["outside"].get("routes", []))
            ),
            internet=ClientSpec(
                str(peers["internet"]["addr"]), peers["internet"].get("gw"), routes(peers["internet"].get("routes", []))
            ),
            bridges=tuple(
                BridgeSpec(
                    name=str(b["name"]),
                    addr=str(b["addr"]),
                    mcast_snooping=int(b.get("mcast_snooping", 0)),
                    hairpin=bool(b.get("hairpin", False)),
                    containers=tuple(
                        ContainerSpec(str(c["name"]), str(c["addr"]), c.get("host_if"), c.get("gw"))
                        for c in b.get("containers", [])
                    ),
                )
                for b in bridges
            ),
            disable_ipv6=bool(d.get("disable_ipv6", not v6)),
        )
        topo.validate()
        return topo

    def to_dict(self) -> dict[str, Any]:
        def routes(rs: Iterable[Route]) -> list[dict[str, str]]:
            return [{"to": r.to, "via": r.via} for r in rs]

        def bridge(b: BridgeSpec) -> dict[str, Any]:
            out: dict[str, Any] = {"name": b.name, "addr": b.addr}
            if b.mcast_snooping:
                out["mcast_snooping"] = b.mcast_snooping
            if b.hairpin:
                out["hairpin"] = True
            cs = []
            for c in b.containers:
                cd: dict[str, Any] = {"name": c.name, "addr": c.addr}
                if c.host_if:
                    cd["host_if"] = c.host_if
                if c.gw:
                    cd["gw"] = c.gw
                cs.append(cd)
            out["containers"] = cs
            return out

        h = self.host
        return {
            "disable_ipv6": self.disable_ipv6,
            "host": {
                "ext_if": h.ext_if,
                "ext_addr": h.ext_addr,
                "gw": h.gw,
                "extra_addrs": [{"dev": e.dev, "addr": e.addr} if e.dev else {"addr": e.addr} for e in h.extra_addrs],
                "routes": routes(h.routes),
                "sysctls": dict(h.sysctls),
                **({"interface_sysctls": dict(h.interface_sysctls)} if h.interface_sysctls else {}),
            },
            "outside": {"addr": self.outside.addr, "gw": self.outside.gw, "routes": routes(self.outside.routes)},
            "internet": {"addr": self.internet.addr, "gw": self.internet.gw, "routes": routes(self.internet.routes)},
            "bridges": [bridge(b) for b in self.bridges],
        }

    def validate(self) -> None:
        ifaces = {self.host.ext_if}
        if len(self.host.ext_if) > 15 or not _NAME_RE.match(self.host.ext_if):
            raise ValueError(f"bad interface name {self.host.ext_if!r}")
        family = self.family
        if family == 6 and self.disable_ipv6:
            raise ValueError("an IPv6 topology cannot have disable_ipv6")

        def same(text: str) -> None:
            if ipaddress.ip_interface(text).version != family:
                raise ValueError(f"{text!r} is not IPv{family} like the host's ext_addr")

        for text in [*(peer.addr for peer in (self.outside, self.internet)), *(e.addr for e in self.host.extra_addrs),
                     *(b.addr for b in self.bridges)]:
            same(text)
        for text in [self.host.gw, self.outside.gw, self.internet.gw]:
            if text is not None and ipaddress.ip_address(text).version != family:
                raise ValueError(f"gateway {text!r} is not IPv{family}")
        for b in self.bridges:
            if len(b.name) > 15 or not _NAME_RE.match(b.name) or b.name in ifaces:
                raise ValueError(f"bad or duplicate bridge name {b.name!r} (at most 15 characters)")
            ifaces.add(b.name)
            ipaddress.ip_interface(b.addr)
            for c in b.containers:
                if not _NAME_RE.match(c.name) or c.name in _RESERVED:
                    raise ValueError(f"bad container name {c.name!r}")
                if c.host_if and (c.host_if in ifaces or len(c.host_if) > 15):
                    raise ValueError(f"bad or duplicate host_if {c.host_if!r}")
                if c.host_if:
                    ifaces.add(c.host_if)
                self.container_interface(b, c)

    @staticmethod
    def container_interface(b: BridgeSpec, c: ContainerSpec) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        net = ipaddress.ip_interface(b.addr).network
        return ipaddress.ip_interface(c.addr if "/" in c.addr else f"{c.addr}/{net.prefixlen}")

    def containers(self) -> dict[str, list[str]]:
        """Container name -> the bridges it is attached to, in order (eth0, eth1, ...)."""
        out: dict[str, list[str]] = {}
        for b in self.bridges:
            for c in b.containers:
                out.setdefault(c.name, []).append(b.name)
        return out


# ============================================================================================
# Results
# ============================================================================================


@dataclass(frozen=True)
class Probe:
    """One TCP connection attempt, one UDP datagram or (IPv6 labs) one ICMPv6 echo request.

    ``src_ns``: ``outside``, ``internet``, ``host`` or ``container:NAME`` (a bare container
    name works too). ``timeout`` defaults to the lab's; ``src_addr`` binds a local address.
    ``icmpv6``: ``dport`` is ignored (give 0), ``sport`` is the echo identifier.
    """

    src_ns: str
    proto: Literal["tcp", "udp", "icmpv6"]
    dst: str
    dport: int
    sport: int | None = None
    timeout: float | None = None
    src_addr: str | None = None


@dataclass(frozen=True)
class CounterHit:
    """A counter that moved: ``index`` is the 1-based rule number, 0 for the chain policy."""

    table: str
    chain: str
    index: int
    packets: int
    bytes: int = field(default=0, compare=False)
    rule: str = field(default="", compare=False)  # "-A CHAIN ..." or "policy DROP"

    def __str__(self) -> str:
        where = "policy" if self.index == 0 else f"#{self.index}"
        return f"{self.packets:4d}  {self.table}/{self.chain} {where}: {self.rule}"


class TraceStep(NamedTuple):
    """One trace event of the first packet: a rule whose target ran, or a policy.

    ``rule`` is the 1-based position in the chain (as in ``iptables-save``), ``"policy"``, or
    for an event the harness cannot place, the raw handle (``"0x1a"``). ``verdict`` is as the
    kernel reports it: ACCEPT, DROP, CONTINUE (non-terminating targets), JUMP:CHAIN, GOTO:CHAIN,
    RETURN. NAT targets report ACCEPT.
    """

    table: str
    chain: str
    rule: int | str
    verdict: str


class Tuple4(NamedTuple):
    src: str
    dst: str
    sport: int
    dport: int


@dataclass(frozen=True)
class ConntrackEntry:
    proto: str
    state: str | None  # TCP state (TIME_WAIT, SYN_SENT, ...); None for UDP
    orig: Tuple4
    reply: Tuple4
    flags: tuple[str, ...]  # UNREPLIED, ASSURED
    line: str

    @property
    def dnat(self) -> bool:
        return (self.reply.src, self.reply.sport) != (self.orig.dst, self.orig.dport)

    @property
    def snat(self) -> bool:
        return (self.reply.dst, self.reply.dport) != (self.orig.src, self.orig.sport)


@dataclass(frozen=True)
class Arrival:
    """The first packet, as seen arriving on an interface of a namespace other than host."""

    ns: str
    ifname: str
    src: str
    dst: str
    sport: int
    dport: int


@dataclass
class ProbeResult:
    probe: Probe
    sport: int
    client: str  # connected/timeout/refused/reset/reply/no-reply/unreachable/denied/error:...
    delivered_to: str | None = None  # "ns:port" (port after DNAT)
    src_seen: str | None = None  # the peer address the listener saw
    src_port_seen: int | None = None
    local_addr: str | None = None  # the address it arrived on
    banner: str | None = None
    client_addr: str | None = None  # the client's own address (getsockname)
    counters: list[CounterHit] = field(default_factory=list)
    first_packet_path: list[TraceStep] | None = None  # None: tracing unavailable
    conntrack: list[ConntrackEntry] = field(default_factory=list)
    arrived_at: list[Arrival] = field(default_factory=list)
    also_delivered_to: list[str] = field(default_factory=list)
    match_mode: str = "sport"  # "time-window" if the source port was remapped
    trace_lines: list[str] = field(default_factory=list, repr=False)
    elapsed: float = 0.0

    @property
    def delivered(self) -> bool:
        return self.delivered_to is not None

    @property
    def first_packet_hits(self) -> list[tuple[str, str, int]] | None:
        """(table, chain, index) of every counter the first packet moved (0 = policy), in order.

        The trace lists every rule that matched (non-terminating targets and rules without a
        target as CONTINUE), so this is the first packet's share of ``counters``.
        """
        if self.first_packet_path is None:
            return None
        hits = []
        for s in self.first_packet_path:
            if isinstance(s.rule, int):
                hits.append((s.table, s.chain, s.rule))
            elif s.rule == "policy":
                hits.append((s.table, s.chain, 0))
        return hits

    def hit(self, table: str, chain: str, index: int) -> int:
        """Packets counted on rule ``index`` (0 = policy) during the probe."""
        return sum(c.packets for c in self.counters if (c.table, c.chain, c.index) == (table, chain, index))

    def describe(self) -> str:
        p = self.probe
        lines = [
            f"{p.src_ns} -> {p.dst}:{p.dport}/{p.proto} (sport {self.sport}): client {self.client}"
            + (f' "{self.banner}"' if self.banner else ""),
            f"  delivered_to={self.delivered_to} src_seen={self.src_seen} local_addr={self.local_addr}"
            f" match={self.match_mode}",
        ]
        if self.arrived_at:
            lines.append(
                "  arrived: " + "; ".join(f"{a.ns}/{a.ifname} {a.src}>{a.dst}:{a.dport}" for a in self.arrived_at)
            )
        if self.first_packet_path is not None:
            lines.append(
                "  path: " + " -> ".join(f"{s.table}:{s.chain}:{s.rule}:{s.verdict}" for s in self.first_packet_path)
            )
        lines += [f"  {c}" for c in self.counters]
        lines += [f"  ct: {e.line}" for e in self.conntrack]
        lines.append(f"  time {self.elapsed:.3f} s")
        return "\n".join(lines)


# ============================================================================================
# Parsers (no kernel needed)
# ============================================================================================


@dataclass(frozen=True)
class _Counter:
    packets: int
    bytes: int
    rule: str
    order: tuple[int, int, int]


def parse_counters(text: str) -> dict[tuple[str, str, int], _Counter]:
    """``iptables-save -c`` output -> {(table, chain, index): counter}; index 0 = policy."""
    res: dict[tuple[str, str, int], _Counter] = {}
    table = ""
    chains: dict[str, int] = {}
    idx: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            chains, idx = {}, {}
        elif line.startswith(":") and table:
            m = re.match(r"^:(\S+) (\S+) \[(\d+):(\d+)\]", line)
            if m:
                chains.setdefault(m.group(1), len(chains))
                if m.group(2) != "-":
                    res[(table, m.group(1), 0)] = _Counter(
                        int(m.group(3)),
                        int(m.group(4)),
                        f"policy {m.group(2)}",
                        (_TABLE_RANK.get(table, 9), chains[m.group(1)], 1 << 30),
                    )
        elif line.startswith("[") and table:
            m = re.match(r"^\[(\d+):(\d+)\] (-A (\S+).*)$", line)
            if m:
                chain = m.group(4)
                chains.setdefault(chain, len(chains))
                idx[chain] = idx.get(chain, 0) + 1
                res[(table, chain, idx[chain])] = _Counter(
                    int(m.group(1)), int(m.group(2)), m.group(3), (_TABLE_RANK.get(table, 9), chains[chain], idx[chain])
                )
    return res


def counter_delta(
    before: Mapping[tuple[str, str, int], _Counter], after: Mapping[tuple[str, str, int], _Counter]
) -> list[CounterHit]:
    """The counters that moved, in packet-path table order (raw, mangle, nat, filter)."""
    out = []
    for key, a in sorted(after.items(), key=lambda kv: kv[1].order):
        b = before.get(key)
        dp = a.packets - (b.packets if b else 0)
        db = a.bytes - (b.bytes if b else 0)
        if dp or db:
            out.append(CounterHit(key[0], key[1], key[2], dp, db, a.rule))
    return out


def _rules_by_chain(save_text: str) -> dict[tuple[str, str], list[str]]:
    """(table, chain) -> rule lines ``-A CHAIN ...`` in order (counters stripped)."""
    out: dict[tuple[str, str], list[str]] = {}
    table = ""
    for line in save_text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif table:
            m = re.match(r"^(?:\[\d+:\d+\] )?(-A (\S+).*)$", line)
            if m:
                out.setdefault((table, m.group(2)), []).append(m.group(1).rstrip())
    return out


_PACKET_RE = re.compile(r"^PACKET: \d+ ([0-9a-f]+) (.*)$")
_TRACE_RE = re.compile(
    r"^TRACE: \d+ (?P<id>[0-9a-f]+) (?P<table>[^:\s]+):(?P<chain>\S+?):(?P<type>rule|policy|return):(?P<rest>\S*)"
    r"(?:\s+(?P<text>.*))?$"
)
_VERDICTS = {"0xfffffffb": "RETURN", "0xfffffffd": "RETURN", "0xffffffff": "CONTINUE"}


def _kv(header: str) -> dict[str, str]:
    return dict(tok.split("=", 1) for tok in header.split() if "=" in tok)


def parse_trace(
    lines: Sequence[str],
    sport: int | None,
    *,
    entry_chain: str = "pre",
    handles: Mapping[tuple[str, int], tuple[str, int]] | None = None,
    rules: Mapping[tuple[str, str], list[str]] | None = None,
) -> list[TraceStep]:
    """The path of the first packet with source port ``sport`` in ``xtables-monitor --trace`` output.

    A new packet starts at the harness's own trace chain ``entry_chain`` (``pre`` for packets
    that enter the host, ``out`` for packets the host sends), so a retransmitted SYN is cut
    off, while a locally sent packet's loopback re-entry (PREROUTING after OUTPUT) is kept.
    ``handles`` maps (table, nft rule handle) to (chain, 1-based position); without it (or
    for an unknown handle) the printed rule text is looked up in ``rules`` (from
    ``iptables-save``); else the raw handle is kept. ``sport=None`` follows packets whose
    header has no source port (an ICMPv6 echo request: the lab traces no other ICMPv6).
    """
    header: dict[str, dict[str, str]] = {}
    packets: list[list[TraceStep]] = []
    for raw in lines:
        line = raw.strip()
        m = _PACKET_RE.match(line)
        if m:
            header[m.group(1)] = _kv(m.group(2))
            continue
        t = _TRACE_RE.match(line)
        if t is None:
            continue
        if header.get(t.group("id"), {}).get("SPORT") != (None if sport is None else str(sport)):
            continue
        table, chain, kind, rest = t.group("table"), t.group("chain"), t.group("type"), t.group("rest")
        if table == TRACE_TABLE:
            if chain == entry_chain and kind == "rule":
                packets.append([])
            continue
        if not packets:
            packets.append([])
        if kind == "policy":
            packets[-1].append(TraceStep(table, chain, "policy", rest))
            continue
        handle_s, _, verdict = rest.partition(":")
        verdict = _VERDICTS.get(verdict, verdict)
        pos: int | str = handle_s
        try:
            handle = int(handle_s, 16)
        except ValueError:
            handle = -1
        if handles and (table, handle) in handles and handles[(table, handle)][0] == chain:
            pos = handles[(table, handle)][1]
        elif rules is not None and t.group("text"):
            text = re.sub(r"^-[46] -t \S+ ", "", t.group("text").strip())
            chain_rules = rules.get((table, chain), [])
            if chain_rules.count(text) == 1:
                pos = chain_rules.index(text) + 1
        if kind == "return":
            packets[-1].append(TraceStep(table, chain, "return", verdict or handle_s))
        else:
            packets[-1].append(TraceStep(table, chain, pos, verdict))
    return packets[0] if packets else []


_CT_TUPLE_RE = re.compile(r"src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)")


def parse_conntrack(text: str) -> list[ConntrackEntry]:
    """``conntrack -L`` lines (tcp/udp) -> entries with original and reply tuples."""
    out = []
    for raw in text.splitlines():
        line = " ".join(raw.split())
        tuples = _CT_TUPLE_RE.findall(line)
        if len(tuples) < 2:
            continue
        words = line.split()
        head = line.split(" src=", 1)[0].split()
        state = head[3] if len(head) > 3 and head[3].isupper() else None
        flags = tuple(w.strip("[]") for w in words if w.startswith("[") and w.endswith("]"))
        orig, reply = (Tuple4(a, b, int(c), int(d)) for a, b, c, d in tuples[:2])
        out.append(ConntrackEntry(words[0], state, orig, reply, flags, line))
    return out


def dnat_ports(rules_text: str) -> set[int]:
    """Ports a probe can be rewritten to: DNAT ``--to-destination`` and REDIRECT ``--to-ports``."""
    ports: set[int] = set()
    for line in rules_text.splitlines():
        for m in re.finditer(r"--to-destination\s+(\S+)", line):
            for part in m.group(1).split(","):
                pm = re.search(r":(\d+)(?:-(\d+))?(?:/\d+)?$", part)
                if pm:
                    lo = int(pm.group(1))
                    hi = min(int(pm.group(2) or lo), lo + MAX_PORT_RANGE - 1)
                    ports.update(range(lo, hi + 1))
        if re.search(r"-j\s+REDIRECT\b", line):
            for m in re.finditer(r"--to-ports\s+(\d+)(?:-(\d+))?", line):
                lo = int(m.group(1))
                ports.update(range(lo, min(int(m.group(2) or lo), lo + MAX_PORT_RANGE - 1) + 1))
    return {p for p in ports if 0 < p < 65536}


# ============================================================================================
# Agent: runs inside one namespace (this file with --agent)
# ============================================================================================

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_ETH_P_ALL = 0x0003
_ETH_P_IP = 0x0800
_ETH_P_IPV6 = 0x86DD
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
ICMP6_FILTER = 1  # <netinet/icmp6.h>, level IPPROTO_ICMPV6
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129
ICMP6_DST_UNREACH = 1
_PACKET_OUTGOING = 4
_ERRNAMES = {
    errno.ECONNREFUSED: "refused",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
    errno.ETIMEDOUT: "timeout",
    errno.ECONNRESET: "reset",
    errno.EPERM: "denied",
    errno.EACCES: "denied",
}


def _err_status(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    return _ERRNAMES.get(exc.errno or 0, "error:" + errno.errorcode.get(exc.errno or 0, str(exc)))


def _set_pdeathsig() -> None:
    """In a child: die with SIGKILL when the parent (the agent) dies."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class _AgentServer:
    def __init__(self, name: str, sniff: bool, monitor: str | None, family: int = 4) -> None:
        self.name = name
        self.family = family
        self.af = socket.AF_INET6 if family == 6 else socket.AF_INET
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.socks: dict[tuple[str, int], socket.socket] = {}
        self.inbuf = b""
        self.tbuf = b""
        self.monitor: subprocess.Popen[bytes] | None = None
        if sniff:
            try:
                ps = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(_ETH_P_ALL))
                ps.setblocking(False)
                self.sel.register(ps, selectors.EVENT_READ, ("sniff", 0))
            except OSError as exc:
                self.emit({"ev": "warning", "msg": f"sniffer: {exc}"})
        if monitor:
            argv = [monitor, "-a", "monitor", "trace"] if family == 6 else [monitor, "--trace"]
            self.monitor = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                preexec_fn=_set_pdeathsig,  # no threads exist yet
            )
            assert self.monitor.stdout is not None
            os.set_blocking(self.monitor.stdout.fileno(), False)
            self.sel.register(self.monitor.stdout.fileno(), selectors.EVENT_READ, ("trace", 0))
        self.sel.register(0, selectors.EVENT_READ, ("stdin", 0))
        if family == 6:  # the ICMPv6 "listener": every echo request this namespace's stack takes
            try:
                ic = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
                ic.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, _icmp6_filter(ICMP6_ECHO_REQUEST))
                ic.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
                ic.setblocking(False)
                self.sel.register(ic, selectors.EVENT_READ, ("icmpv6", 0))
            except OSError as exc:
                self.emit({"ev": "warning", "msg": f"icmpv6 listener: {exc}"})

    def emit(self, obj: dict[str, Any]) -> None:
        data = (json.dumps(obj) + "\n").encode()
        with self.lock:
            view = memoryview(data)
            while view:
                try:
                    n = os.write(1, view)
                except BrokenPipeError:
                    raise SystemExit(0) from None
                view = view[n:]

    def listen(self, ports: Iterable[int]) -> list[str]:
        errors = []
        for port in ports:
            for proto in ("tcp", "udp"):
                if (proto, port) in self.socks:
                    continue
                s = socket.socket(self.af, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if self.family == 6:
                        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                        if proto == "udp":
                            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
                    elif proto == "udp":
                        s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                    s.bind(("::" if self.family == 6 else "0.0.0.0", port))
                    if proto == "tcp":
                        s.listen(128)
                    s.setblocking(False)
                except OSError as exc:
                    s.close()
                    errors.append(f"{proto}/{port}: {exc}")
                    continue
                self.socks[(proto, port)] = s
                self.sel.register(s, selectors.EVENT_READ, (proto, port))
        return errors

    def run(self) -> int:
        self.emit({"op": "ready", "ns": self.name})
        try:
            while True:
                for key, _ in self.sel.select(timeout=5.0):
                    kind, port = key.data
                    if kind == "stdin":
                        if not self.on_stdin():
                            return 0
                    elif kind == "tcp":
                        self.on_tcp(key.fileobj, port)  # type: ignore[arg-type]
                    elif kind == "udp":
                        self.on_udp(key.fileobj, port)  # type: ignore[arg-type]
                    elif kind == "icmpv6":
                        self.on_icmpv6(key.fileobj)  # type: ignore[arg-type]
                    elif kind == "sniff":
                        self.on_sniff(key.fileobj)  # type: ignore[arg-type]
                    elif kind == "trace":
                        self.on_trace()
        finally:
            if self.monitor is not None and self.monitor.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.monitor.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.monitor.wait(timeout=2)

    def on_stdin(self) -> bool:
        try:
            data = os.read(0, 65536)
        except OSError:
            data = b""
        if not data:
            return False  # the controller closed us (or died): exit
        self.inbuf += data
        while b"\n" in self.inbuf:
            raw, self.inbuf = self.inbuf.split(b"\n", 1)
            cmd = json.loads(raw)
            op = cmd.get("op")
            if op == "quit":
                return False
            if op == "listen":
                self.emit({"op": "ok", "id": cmd["id"], "errors": self.listen(cmd["ports"])})
            elif op == "probe":
                threading.Thread(target=self.client, args=(cmd,), daemon=True).start()
            elif op == "mark":
                with socket.socket(self.af, socket.SOCK_DGRAM) as s, contextlib.suppress(OSError):
                    # dropped in nlk_trace: EPERM
                    s.sendto(b"nlk-mark", (MARK_ADDR6 if self.family == 6 else MARK_ADDR, MARK_PORT))
                self.emit({"op": "ok", "id": cmd["id"]})
        return True

    def on_tcp(self, s: socket.socket, port: int) -> None:
        try:
            conn, peer = s.accept()
        except OSError:
            return
        with conn:
            try:
                local = conn.getsockname()
                # Logged before the banner goes out: once the client has the banner, the
                # controller is guaranteed to find this event in our pipe.
                self.emit(
                    {"ev": "tcp", "ns": self.name, "port": port, "local": local[0], "peer": peer[0], "pport": peer[1]}
                )
                conn.settimeout(0.3)
                conn.sendall(f"NLK {self.name} tcp/{port} peer={peer[0]}:{peer[1]}\n".encode())
            except OSError:
                pass

    def on_udp(self, s: socket.socket, port: int) -> None:
        try:
            _data, anc, _flags, peer = s.recvmsg(4096, socket.CMSG_SPACE(20))
        except OSError:
            return
        local = _pktinfo_local(anc)
        self.emit({"ev": "udp", "ns": self.name, "port": port, "local": local, "peer": peer[0], "pport": peer[1]})
        reply = f"NLK {self.name} udp/{port} peer={peer[0]}:{peer[1]}\n".encode()
        try:
            if local and self.family == 6:
                pk6 = socket.inet_pton(socket.AF_INET6, local) + struct.pack("=I", 0)
                s.sendmsg([reply], [(socket.IPPROTO_IPV6, IPV6_PKTINFO, pk6)], 0, peer)
            elif local:  # answer from the address it arrived on (what conntrack expects)
                pk = struct.pack("=I4s4s", 0, socket.inet_aton(local), b"\0" * 4)
                s.sendmsg([reply], [(socket.IPPROTO_IP, IP_PKTINFO, pk)], 0, peer)
            else:
                s.sendto(reply, peer)
        except OSError:
            pass

    def on_sniff(self, s: socket.socket) -> None:
        for _ in range(64):
            try:
                data, addr = s.recvfrom(65535)
            except OSError:
                return
            if addr[2] == _PACKET_OUTGOING:
                continue
            if addr[1] == _ETH_P_IPV6 and len(data) >= 48 and data[0] >> 4 == 6:
                self._sniff6(addr[0], data)
                continue
            if addr[1] != _ETH_P_IP or len(data) < 20 or data[0] >> 4 != 4:
                continue
            ihl = (data[0] & 0x0F) * 4
            proto = data[9]
            if proto not in (6, 17) or struct.unpack("!H", data[6:8])[0] & 0x1FFF:
                continue
            l4 = data[ihl:]
            if len(l4) < 14 if proto == 6 else len(l4) < 8:
                continue
            if proto == 6 and not (l4[13] & 0x02 and not l4[13] & 0x10):
                continue  # TCP: only the SYN (the first packet)
            sp, dp = struct.unpack("!HH", l4[:4])
            self.emit(
                {
                    "ev": "wire",
                    "ns": self.name,
                    "if": addr[0],
                    "proto": "tcp" if proto == 6 else "udp",
                    "src": socket.inet_ntoa(data[12:16]),
                    "dst": socket.inet_ntoa(data[16:20]),
                    "sport": sp,
                    "dport": dp,
                }
            )

    def _sniff6(self, ifname: str, data: bytes) -> None:
        """An IPv6 first packet (no extension headers): TCP SYN, UDP, ICMPv6 echo request."""
        nh, l4 = data[6], data[40:]
        if nh == 6:
            if len(l4) < 14 or not (l4[13] & 0x02 and not l4[13] & 0x10):
                return
            proto = "tcp"
            sp, dp = struct.unpack("!HH", l4[:4])
        elif nh == 17:
            proto = "udp"
            sp, dp = struct.unpack("!HH", l4[:4])
        elif nh == 58 and l4[0] == ICMP6_ECHO_REQUEST:
            proto = "icmpv6"
            sp, dp = struct.unpack("!H", l4[4:6])[0], 0
        else:
            return
        self.emit(
            {
                "ev": "wire",
                "ns": self.name,
                "if": ifname,
                "proto": proto,
                "src": socket.inet_ntop(socket.AF_INET6, data[8:24]),
                "dst": socket.inet_ntop(socket.AF_INET6, data[24:40]),
                "sport": sp,
                "dport": dp,
            }
        )

    def on_icmpv6(self, s: socket.socket) -> None:
        for _ in range(64):
            try:
                data, anc, _flags, peer = s.recvmsg(4096, socket.CMSG_SPACE(20))
            except OSError:
                return
            if len(data) < 8 or data[0] != ICMP6_ECHO_REQUEST:
                continue
            ident = struct.unpack("!H", data[4:6])[0]
            self.emit(
                {"ev": "icmpv6", "ns": self.name, "port": 0, "local": _pktinfo_local(anc),
                 "peer": peer[0].split("%")[0], "pport": ident}
            )

    def on_trace(self) -> None:
        assert self.monitor is not None and self.monitor.stdout is not None
        fd = self.monitor.stdout.fileno()
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.sel.unregister(fd)
            self.emit({"ev": "trace_eof", "rc": self.monitor.poll()})
            return
        self.tbuf += data
        cut = self.tbuf.rfind(b"\n") + 1
        if cut:
            lines = self.tbuf[:cut].decode(errors="replace").splitlines()
            self.tbuf = self.tbuf[cut:]
            if self.family == 6:
                lines = [x for x in map(_nft_trace_line, lines) if x is not None]
            self.emit({"ev": "trace", "lines": lines})

    def client(self, cmd: dict[str, Any]) -> None:
        res: dict[str, Any] = {"op": "result", "id": cmd["id"]}
        timeout = float(cmd["timeout"])
        dst, dport, sport = cmd["dst"], int(cmd["dport"]), int(cmd["sport"])
        t0 = time.monotonic()
        if cmd["proto"] == "icmpv6":
            self.emit({**self.ping6(dst, sport, cmd.get("src"), timeout), **res, "elapsed": time.monotonic() - t0})
            return
        tcp = cmd["proto"] == "tcp"
        # IPv6: a connecting socket ignores some ICMPv6 errors about its SYN (not fatal in
        # SYN_SENT for tcp_v6_err: they only time the connect out). A raw socket sees them.
        errors = self.icmp6_errors() if tcp and self.family == 6 else None
        s = socket.socket(self.af, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((cmd.get("src") or ("::" if self.family == 6 else "0.0.0.0"), sport))
            s.settimeout(timeout)
            s.connect((dst, dport))
            res["local"] = s.getsockname()[0]
            if tcp:
                res["status"] = "connected"
                with contextlib.suppress(OSError):
                    s.settimeout(max(0.2, timeout - (time.monotonic() - t0)))
                    res["banner"] = s.recv(256).decode(errors="replace").strip() or None
            else:
                s.send(f"NLKPROBE sport={sport}\n".encode())
                res["status"] = "reply"
                res["banner"] = s.recv(512).decode(errors="replace").strip() or None
        except OSError as exc:  # socket.timeout is TimeoutError, an OSError
            res["status"] = (
                ("no-reply" if not tcp else "timeout") if isinstance(exc, TimeoutError) else _err_status(exc)
            )
            with contextlib.suppress(OSError):
                res.setdefault("local", s.getsockname()[0])
            if res["status"] == "timeout" and errors is not None:
                error = self.quoted_error(errors, sport, dport)
                if error is not None:
                    res["status"], res["banner"] = "unreachable", error
        finally:
            s.close()
            if errors is not None:
                errors.close()
        res["elapsed"] = time.monotonic() - t0
        self.emit(res)

    @staticmethod
    def icmp6_errors() -> socket.socket | None:
        """A raw socket that receives ICMPv6 destination-unreachable errors (None: not allowed)."""
        try:
            r = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        except OSError:
            return None
        r.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, _icmp6_filter(ICMP6_DST_UNREACH))
        r.setblocking(False)
        return r

    @staticmethod
    def quoted_error(r: socket.socket, sport: int, dport: int) -> str | None:
        """The ICMPv6 error received on ``r`` that quotes a TCP segment from ``sport`` to
        ``dport`` (8 bytes ICMPv6, 40 bytes IPv6 with next header TCP, then the TCP ports)."""
        for _ in range(256):
            try:
                data, peer = r.recvfrom(4096)
            except OSError:
                return None
            if len(data) >= 52 and data[0] == ICMP6_DST_UNREACH and data[8 + 6] == 6 \
                    and struct.unpack("!HH", data[48:52]) == (sport, dport):
                return f"icmpv6 type {data[0]} code {data[1]} from {peer[0]}"
        return None


    @staticmethod
    def ping6(dst: str, ident: int, src: str | None, timeout: float) -> dict[str, Any]:
        """One ICMPv6 echo request (identifier ``ident``): reply, unreachable (an ICMPv6
        error quoting it) or no-reply."""
        res: dict[str, Any] = {}
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        try:
            s.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, _icmp6_filter(ICMP6_ECHO_REPLY, ICMP6_DST_UNREACH, 3))
            if src:
                s.bind((src, 0))
            s.sendto(struct.pack("!BBHHH", ICMP6_ECHO_REQUEST, 0, 0, ident, 1) + b"NLKPROBE", (dst, 0))
            with contextlib.suppress(OSError):
                s.connect((dst, 0))
                res["local"] = s.getsockname()[0]
            deadline = time.monotonic() + timeout
            res["status"] = "no-reply"
            while (left := deadline - time.monotonic()) > 0:
                s.settimeout(left)
                try:
                    data, peer = s.recvfrom(4096)
                except TimeoutError:
                    break
                if len(data) >= 8 and data[0] == ICMP6_ECHO_REPLY and struct.unpack("!H", data[4:6])[0] == ident:
                    res["status"], res["banner"] = "reply", f"echo reply from {peer[0]}"
                    break
                # an error quotes the request: 8 bytes ICMPv6 + 40 bytes IPv6 + our echo header
                quoted = len(data) >= 56 and data[0] != ICMP6_ECHO_REPLY and data[48] == ICMP6_ECHO_REQUEST
                if quoted and struct.unpack("!H", data[52:54])[0] == ident:
                    res["status"] = "unreachable"
                    res["banner"] = f"icmpv6 type {data[0]} code {data[1]} from {peer[0]}"
                    break
        except OSError as exc:
            res["status"] = _err_status(exc)
        finally:
            s.close()
        return res


_NFT_TRACE_RE = re.compile(r"^trace id (?P<id>[0-9a-f]+) (?P<fam>\S+) (?P<table>\S+) (?P<chain>\S+) (?P<rest>.*)$")
_NFT_VERDICT_RE = re.compile(r"\(verdict (\S+)(?: (\S+))?\)\s*$")


def _nft_trace_line(line: str) -> str | None:
    """An ``nft -a monitor trace`` line in ``xtables-monitor --trace`` format (None: skip)."""
    m = _NFT_TRACE_RE.match(line.strip())
    if m is None:
        return None
    tid, table, chain, rest = m.group("id"), m.group("table"), m.group("chain"), m.group("rest")
    if rest.startswith("packet:"):
        words = rest.split()
        fields: dict[str, str] = {}
        for i, w in enumerate(words[:-1]):
            nxt = words[i + 1]
            if w == "iif":
                fields["IN"] = nxt.strip('"')
            elif w == "oif":
                fields["OUT"] = nxt.strip('"')
            elif w in ("saddr", "daddr") and words[i - 1] == "ip6":
                fields["SRC" if w == "saddr" else "DST"] = nxt
            elif w in ("sport", "dport") and words[i - 1] in ("tcp", "udp"):
                fields["SPORT" if w == "sport" else "DPORT"] = nxt
        return f"PACKET: 10 {tid} " + " ".join(f"{k}={v}" for k, v in fields.items()) + " "
    if rest.startswith("policy "):
        return f" TRACE: 10 {tid} {table}:{chain}:policy:{rest.split()[1].upper()} "
    if rest.startswith("return"):
        return f" TRACE: 10 {tid} {table}:{chain}:return: "
    if rest.startswith("unknown rule handle "):  # a rule added after nft monitor started
        rest = "rule # handle " + rest.removeprefix("unknown rule handle ")
    if rest.startswith("rule "):
        hm = re.search(r"# handle (\d+)", rest)
        vm = _NFT_VERDICT_RE.search(rest)
        verdict = "CONTINUE"
        if vm:
            verdict = vm.group(1).upper() + (f":{vm.group(2)}" if vm.group(2) else "")
        text = re.sub(r"\s*# handle \d+.*$", "", rest[5:])
        return f" TRACE: 10 {tid} {table}:{chain}:rule:{hex(int(hm.group(1))) if hm else '0x0'}:{verdict}  {text}"
    return None


def _icmp6_filter(*passed: int) -> bytes:
    """A struct icmp6_filter that blocks every ICMPv6 type but ``passed``."""
    words = [0xFFFFFFFF] * 8
    for t in passed:
        words[t >> 5] &= ~(1 << (t & 31))
    return struct.pack("=8I", *words)


def _pktinfo_local(anc: Iterable[tuple[int, int, bytes]]) -> str | None:
    """The local address from an IP_PKTINFO / IPV6_PKTINFO control message."""
    for level, typ, cdata in anc:
        if level == socket.IPPROTO_IP and typ == IP_PKTINFO and len(cdata) >= 12:
            return socket.inet_ntoa(cdata[8:12])
        if level == socket.IPPROTO_IPV6 and typ == IPV6_PKTINFO and len(cdata) >= 16:
            return socket.inet_ntop(socket.AF_INET6, cdata[:16])
    return None


def _agent_main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(description="kernel harness agent (internal)")
    ap.add_argument("--agent", required=True, help="namespace role name")
    ap.add_argument("--sniff", action="store_true")
    ap.add_argument("--monitor", default="", help="path of xtables-monitor to relay --trace from")
    ap.add_argument("--ports", default="", help="initial listener ports, comma separated")
    ap.add_argument("--family", type=int, choices=(4, 6), default=4)
    a = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    srv = _AgentServer(a.agent, a.sniff, a.monitor or None, a.family)
    errors = srv.listen(int(p) for p in a.ports.split(",") if p)
    if errors:
        srv.emit({"ev": "warning", "msg": "; ".join(errors)})
    return srv.run()


# ============================================================================================
# Controller helpers
# ============================================================================================


def _tool(tool: str) -> str:
    found = _which(tool)
    if found is None:
        raise LabError(f"{tool} not found (searched {_SEARCH_PATH})")
    return found


def _sh(
    argv: Sequence[str], *, input: bytes | None = None, timeout: float = COMMAND_TIMEOUT, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run argv with a timeout (subprocess.run kills the child by PID on expiry)."""
    try:
        p = subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timeout after {timeout}s: {' '.join(argv)}") from exc
    except OSError as exc:
        raise LabError(f"cannot run {argv[0]}: {exc}") from exc
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(argv)} -> rc={p.returncode}: {p.stderr.decode(errors='replace').strip()}")
    return p


def _list_netns() -> set[str]:
    p = _sh([_tool("ip"), "netns", "list"], check=False)
    return {line.split()[0] for line in p.stdout.decode(errors="replace").splitlines() if line.strip()}


def _delete_netns(names: Iterable[str]) -> None:
    """SIGKILL what still runs inside our namespaces (by PID), then delete them by name."""
    ip = _tool("ip")
    existing = _list_netns()
    for name in names:
        if name not in existing:
            continue
        with contextlib.suppress(LabError):
            p = _sh([ip, "netns", "pids", name], check=False)
            for tok in p.stdout.split():
                if tok.isdigit() and int(tok) != os.getpid():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(tok), signal.SIGKILL)
        with contextlib.suppress(LabError):
            _sh([ip, "netns", "del", name], check=False)


def cleanup_stale() -> list[str]:
    """Delete ``nlk-<pid>-...`` namespaces whose creating process is dead (a killed run)."""
    stale = []
    for name in sorted(_list_netns()):
        m = re.match(re.escape(NETNS_PREFIX) + r"(\d+)-", name)
        if m is None:
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and not _pid_alive(pid):
            stale.append(name)
    _delete_netns(stale)
    return stale


_open_labs: weakref.WeakSet[KernelLab] = weakref.WeakSet()
_lab_counter = iter(range(1 << 30))
_stale_done = False


@atexit.register
def _close_open_labs() -> None:
    for lab in list(_open_labs):
        with contextlib.suppress(Exception):
            lab.close()


@dataclass
class _AgentProc:
    role: str
    proc: subprocess.Popen[bytes]
    stderr: IO[bytes]
    buf: bytes = b""
    replies: dict[int, dict[str, Any]] = field(default_factory=dict)
    ready: bool = False


# ============================================================================================
# The lab
# ============================================================================================


class KernelLab:
    """Namespaces + one loaded dump + listeners; ``probe()`` as often as you like::

        with KernelLab() as lab:
            assert lab.load(Path("fixtures/kernel/docker-basic.rules").read_text()).ok
            r = lab.probe(Probe("outside", "tcp", "198.51.100.1", 8080))
            r.delivered_to  # "c1:80"

    ``timeout`` is the client's wait (connect / reply); the default 0.9 s stays under the
    kernel's 1 s initial SYN retransmission timeout, so a dropped SYN is counted once.
    ``settle`` is the wait after the client has finished before the counters are read (the
    FIN exchange on veths takes well under a millisecond). ``keep_conntrack`` skips the flush
    of the host's conntrack table after each probe.
    """

    def __init__(
        self,
        topology: Topology | None = None,
        *,
        timeout: float = 0.9,
        settle: float = 0.03,
        keep_conntrack: bool = False,
        extra_ports: Iterable[int] = (),
        trace: bool = True,
    ) -> None:
        self.topology = topology or Topology.default()
        self.family = self.topology.family
        self._mark_addr = MARK_ADDR6 if self.family == 6 else MARK_ADDR
        self.timeout = timeout
        self.settle = settle
        self.keep_conntrack = keep_conntrack
        self.want_trace = trace
        self.prefix = f"{NETNS_PREFIX}{os.getpid()}-{next(_lab_counter)}-"
        self.namespaces: dict[str, str] = {}  # role -> netns name (host, sw, outside, internet, containers)
        self.addresses: dict[str, list[str]] = {}  # role -> addresses (of the lab's family)
        self.warnings: list[str] = []
        self.timing: dict[str, float] = {}
        self.br_netfilter = False
        self.trace_available = False
        self.restore_result: RestoreResult | None = None
        self._created: list[str] = []
        self._agents: dict[str, _AgentProc] = {}
        self._sel = selectors.DefaultSelector()
        self._fd_role: dict[int, str] = {}
        self._next_id = 1
        self._events: list[dict[str, Any]] = []
        self._trace: list[str] = []
        self._marks = 0
        self._mark_id: str | None = None
        self._ports: set[int] = {int(p) for p in extra_ports}
        self._next_sport = FIRST_SPORT
        self._handles: dict[tuple[str, int], tuple[str, int]] = {}
        self._rules: dict[tuple[str, str], list[str]] = {}
        self._loaded = False
        self._closed = False
        self._ip = _tool("ip")

    # ---- context -----------------------------------------------------------------------
    def __enter__(self) -> Self:
        global _stale_done
        t0 = time.monotonic()
        _open_labs.add(self)
        try:
            if not _stale_done:
                _stale_done = True
                cleanup_stale()
            self._build()
            self._start_agents()
        except BaseException:
            self.close()
            raise
        self.timing["setup_s"] = round(time.monotonic() - t0, 3)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        t0 = time.monotonic()
        for ag in self._agents.values():
            with contextlib.suppress(OSError):
                if ag.proc.stdin:
                    ag.proc.stdin.close()
        deadline = time.monotonic() + 1.0
        for ag in self._agents.values():
            try:
                ag.proc.wait(timeout=max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(ag.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    ag.proc.wait(timeout=2)
            for f in (ag.proc.stdout, ag.stderr):
                with contextlib.suppress(OSError):
                    if f:
                        f.close()
        self._sel.close()
        _delete_netns(reversed(self._created))
        self._created.clear()
        _open_labs.discard(self)
        self.timing["cleanup_s"] = round(time.monotonic() - t0, 3)

    # ---- building ----------------------------------------------------------------------
    def _exec(self, role: str, *cmd: str) -> list[str]:
        return [self._ip, "netns", "exec", self.namespaces[role], *cmd]

    def _ipn(self, role: str, *args: str) -> None:
        _sh([self._ip, "-n", self.namespaces[role], *args])

    def _add_ns(self, role: str, suffix: str) -> None:
        name = self.prefix + suffix
        p = _sh([self._ip, "netns", "add", name], check=False)
        if p.returncode != 0:  # never adopt (and later delete) a namespace we did not create
            raise LabError(f"ip netns add {name} failed: {p.stderr.decode(errors='replace').strip()}")
        self._created.append(name)
        self.namespaces[role] = name
        if self.family == 6:
            keys = ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"]
            if role == "sw":  # the external segment's switch is pure L2
                keys = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
            _sh(self._exec(role, "sysctl", "-q", "-w", *keys))
        elif self.topology.disable_ipv6:
            _sh(
                self._exec(
                    role,
                    "sysctl",
                    "-q",
                    "-w",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                )
            )
        self._ipn(role, "link", "set", "lo", "up")

    def _addr_add(self, role: str, addr: str, dev: str) -> None:
        """``ip addr add`` (IPv6: ``nodad``, usable at once)."""
        self._ipn(role, "addr", "add", addr, "dev", dev, *(["nodad"] if self.family == 6 else []))

    def _route_add(self, role: str, to: str, via: str) -> None:
        self._ipn(role, *(["-6"] if self.family == 6 else []), "route", "add", to, "via", via)

    def _sysctl(self, role: str, key: str, value: str) -> bool:
        p = _sh(self._exec(role, "sysctl", "-q", "-w", f"{key}={value}"), check=False)
        return p.returncode == 0

    def _build(self) -> None:
        t = self.topology
        containers = t.containers()
        self._add_ns("host", "host")
        self._add_ns("sw", "sw")
        self._add_ns("outside", "outside")
        self._add_ns("internet", "internet")
        for cname in containers:
            self._add_ns(cname, "c-" + cname)
        # host sysctls first, so that the interfaces created afterwards inherit "default"
        for key, value in t.host.sysctls:
            ok = self._sysctl("host", key, value)
            if not ok and key.startswith("net.bridge."):
                modprobe = _which("modprobe")
                if modprobe:
                    _sh([modprobe, "br_netfilter"], check=False)
                    ok = self._sysctl("host", key, value)
                if not ok:
                    self.warnings.append(f"{key} unavailable (br_netfilter not loaded): bridged traffic skips iptables")
                    continue
            if not ok:
                raise LabError(f"sysctl {key}={value} failed in the host namespace")
        bnf = "net.bridge.bridge-nf-call-ip6tables" if self.family == 6 else "net.bridge.bridge-nf-call-iptables"
        self.br_netfilter = Path("/proc/sys/net/bridge").is_dir() and (
            _sh(self._exec("host", "sysctl", "-n", bnf), check=False).stdout.strip() == b"1"
        )
        # the external L2 segment: bridge br0 in the private "sw" namespace
        self._ipn("sw", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        self._ipn("sw", "link", "set", "br0", "up")
        for role, ifname, port in (
            ("host", t.host.ext_if, "p-host"),
            ("outside", "eth0", "p-outside"),
            ("internet", "eth0", "p-internet"),
        ):
            self._ipn(role, "link", "add", ifname, "type", "veth", "peer", "name", port, "netns", self.namespaces["sw"])
            self._ipn("sw", "link", "set", port, "master", "br0", "up")
            self._ipn(role, "link", "set", ifname, "up")
        self._addr_add("host", t.host.ext_addr, t.host.ext_if)
        self.addresses["host"] = [str(ipaddress.ip_interface(t.host.ext_addr).ip)]
        for ea in t.host.extra_addrs:
            self._addr_add("host", ea.addr, ea.dev or t.host.ext_if)
            self.addresses["host"].append(str(ipaddress.ip_interface(ea.addr).ip))
        for role, spec in (("outside", t.outside), ("internet", t.internet)):
            self._addr_add(role, spec.addr, "eth0")
            self.addresses[role] = [str(ipaddress.ip_interface(spec.addr).ip)]
            if spec.gw:
                self._route_add(role, "default", spec.gw)
            for r in spec.routes:
                self._route_add(role, r.to, r.via)
        vidx = 0
        nif: dict[str, int] = {}
        for b in t.bridges:
            self._ipn("host", "link", "add", b.name, "type", "bridge", "mcast_snooping", str(b.mcast_snooping))
            self._addr_add("host", b.addr, b.name)
            self._ipn("host", "link", "set", b.name, "up")
            gw = str(ipaddress.ip_interface(b.addr).ip)
            self.addresses["host"].append(gw)
            for c in b.containers:
                n = nif.get(c.name, 0)
                nif[c.name] = n + 1
                hif = c.host_if or f"veth{vidx}"
                vidx += 1
                self._ipn(
                    c.name,
                    "link",
                    "add",
                    f"eth{n}",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    hif,
                    "netns",
                    self.namespaces["host"],
                )
                self._ipn("host", "link", "set", hif, "master", b.name, "up")
                if b.hairpin:
                    self._ipn("host", "link", "set", "dev", hif, "type", "bridge_slave", "hairpin", "on")
                iface = t.container_interface(b, c)
                self._addr_add(c.name, str(iface), f"eth{n}")
                self._ipn(c.name, "link", "set", f"eth{n}", "up")
                self.addresses.setdefault(c.name, []).append(str(iface.ip))
                if n == 0:
                    self._route_add(c.name, "default", c.gw or gw)
        if t.host.gw:
            self._route_add("host", "default", t.host.gw)
        for r in t.host.routes:
            self._route_add("host", r.to, r.via)
        for key, value in t.host.interface_sysctls:
            if not self._sysctl("host", key, value):
                raise LabError(f"sysctl {key}={value} failed in the host namespace")
        self.addresses["host"].append("::1" if self.family == 6 else "127.0.0.1")
        if self.want_trace:
            self._install_trace_table()

    def _install_trace_table(self) -> None:
        nft, monitor = _which("nft"), _which("xtables-monitor")
        if nft is None or monitor is None:
            self.warnings.append("nft or xtables-monitor missing: no first_packet_path")
            return
        if self.family == 6:
            # xtables-monitor aborts printing an ip6 "tcp flags" rule: match in the base
            # chains, set nftrace in chains whose one rule it can print (module docstring)
            first6 = ("tcp flags & (syn | ack) == syn jump {0}; meta l4proto udp jump {0};"
                      " icmpv6 type echo-request jump {0};")
            ruleset = (
                f"table ip6 {TRACE_TABLE} {{\n"
                "  chain pre { meta nftrace set 1; }\n"
                "  chain out { meta nftrace set 1; }\n"
                "  chain barrier { meta nftrace set 1; drop; }\n"
                f"  chain hook_out {{ type filter hook output priority -350; policy accept;\n"
                f"    ip6 daddr {MARK_ADDR6} udp dport {MARK_PORT} jump barrier; {first6.format('out')} }}\n"
                "  chain hook_pre { type filter hook prerouting priority -350; policy accept; "
                f"{first6.format('pre')} }}\n"
                "}\n"
            )
            p = _sh(self._exec("host", nft, "-f", "-"), input=ruleset.encode(), check=False)
            if p.returncode != 0:
                self.warnings.append(f"cannot add the trace table: {p.stderr.decode(errors='replace').strip()}")
                return
            self.trace_available = True
            return
        first = "tcp flags & (syn | ack) == syn meta nftrace set 1; meta l4proto udp meta nftrace set 1;"
        ruleset = (
            f"table ip {TRACE_TABLE} {{\n"
            f"  chain out {{ type filter hook output priority -350; policy accept;\n"
            f"    ip daddr {MARK_ADDR} udp dport {MARK_PORT} meta nftrace set 1;\n"
            f"    ip daddr {MARK_ADDR} udp dport {MARK_PORT} drop; {first} }}\n"
            f"  chain pre {{ type filter hook prerouting priority -350; policy accept; {first} }}\n"
            "}\n"
        )
        p = _sh(self._exec("host", nft, "-f", "-"), input=ruleset.encode(), check=False)
        if p.returncode != 0:
            self.warnings.append(f"cannot add the trace table: {p.stderr.decode(errors='replace').strip()}")
            return
        self.trace_available = True

    def _start_agents(self) -> None:
        t0 = time.monotonic()
        roles = ["host", "outside", "internet", *self.topology.containers()]
        monitor = _which("nft" if self.family == 6 else "xtables-monitor") if self.trace_available else None
        for role in roles:
            cmd = self._exec(role, sys.executable, "-S", _SCRIPT, "--agent", role)
            cmd += ["--ports", ",".join(map(str, sorted(self._ports)))]
            if self.family == 6:
                cmd += ["--family", "6"]
            cmd += ["--monitor", monitor] if role == "host" and monitor else ["--sniff"]
            errf = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
            try:
                proc = subprocess.Popen(
                    cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errf, start_new_session=True
                )
            except OSError as exc:
                errf.close()
                raise LabError(f"cannot start the agent in {role}: {exc}") from exc
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
            os.set_blocking(fd, False)
            self._agents[role] = _AgentProc(role, proc, errf)
            self._fd_role[fd] = role
            self._sel.register(fd, selectors.EVENT_READ, role)
        deadline = time.monotonic() + 15
        while not all(a.ready for a in self._agents.values()):
            if time.monotonic() > deadline:
                raise LabError("agents did not start: " + self._agent_errors())
            self._check_agents()
            self._pump(0.05)
        self.timing["agents_s"] = round(time.monotonic() - t0, 3)
        # xtables-monitor subscribes asynchronously: wait until a marker comes through.
        if self.trace_available and not self._barrier(limit=3.0):
            self.trace_available = False
            self.warnings.append("xtables-monitor --trace shows nothing: no first_packet_path")

    # ---- agent I/O ------------------------------------------------------------------------
    def _agent_errors(self) -> str:
        out = []
        for ag in self._agents.values():
            with contextlib.suppress(OSError):
                ag.stderr.seek(0)
                text = ag.stderr.read()[-1500:].decode(errors="replace").strip()
                if text or ag.proc.poll() is not None:
                    out.append(f"{ag.role} (rc={ag.proc.poll()}): {text}")
        return "; ".join(out) or "(no output)"

    def _check_agents(self) -> None:
        """Abort rather than report wrong answers when a listener or the tracer died."""
        for ag in self._agents.values():
            if ag.proc.poll() is not None:
                raise LabError(f"agent {ag.role} exited: {self._agent_errors()}")

    def _pump(self, wait: float) -> None:
        """Read what the agents wrote: wait up to ``wait`` s for something, then drain."""
        first = True
        while True:
            ready = self._sel.select(timeout=max(0.0, wait) if first else 0)
            first = False
            if not ready:
                return
            for key, _ in ready:
                fd = int(key.fd)
                ag = self._agents[self._fd_role[fd]]
                try:
                    data = os.read(fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not data:
                    self._sel.unregister(fd)
                    continue
                ag.buf += data
                while b"\n" in ag.buf:
                    raw, ag.buf = ag.buf.split(b"\n", 1)
                    self._dispatch(ag, json.loads(raw))

    def _dispatch(self, ag: _AgentProc, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "ready":
            ag.ready = True
        elif op in ("ok", "result"):
            ag.replies[int(msg["id"])] = msg
        elif msg.get("ev") == "trace":
            for line in msg["lines"]:
                words = line.split(None, 3)
                if line.startswith("PACKET:") and f"DST={self._mark_addr} " in line and f"DPORT={MARK_PORT} " in line:
                    self._marks += 1
                    self._mark_id = words[2] if len(words) > 2 else None
                elif not (len(words) > 2 and words[0] == "TRACE:" and words[2] == self._mark_id):
                    self._trace.append(line)
        elif msg.get("ev") == "trace_eof":
            if self.trace_available:
                self.warnings.append(f"xtables-monitor exited (rc={msg.get('rc')}): no more first_packet_path")
            self.trace_available = False
        elif msg.get("ev") == "warning":
            self.warnings.append(f"{ag.role}: {msg.get('msg')}")
        else:
            self._events.append(msg)

    def _send(self, role: str, **cmd: Any) -> int:
        ag = self._agents[role]
        rid = self._next_id
        self._next_id += 1
        assert ag.proc.stdin is not None
        try:
            ag.proc.stdin.write((json.dumps({**cmd, "id": rid}) + "\n").encode())
            ag.proc.stdin.flush()
        except OSError as exc:
            raise LabError(f"agent {role} is gone: {exc}; {self._agent_errors()}") from exc
        return rid

    def _wait(self, role: str, rid: int, limit: float) -> dict[str, Any]:
        deadline = time.monotonic() + limit
        ag = self._agents[role]
        while rid not in ag.replies:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabError(f"agent {role} did not answer within {limit}s")
            self._check_agents()
            self._pump(min(remaining, 0.1))
        return ag.replies.pop(rid)

    def _barrier(self, limit: float = 1.0) -> bool:
        """Send a traced marker through the host; True once xtables-monitor has printed it."""
        seen = self._marks
        deadline = time.monotonic() + limit
        while True:
            self._wait("host", self._send("host", op="mark"), limit)
            end = min(deadline, time.monotonic() + 0.25)
            while self._marks == seen and time.monotonic() < end:
                self._pump(0.01)
            if self._marks > seen:
                return True
            if time.monotonic() >= deadline:
                return False

    def ensure_listening(self, ports: Iterable[int]) -> None:
        """Make every agent listen on ``ports`` (TCP and UDP)."""
        new = sorted({int(p) for p in ports} - self._ports)
        if not new:
            return
        ids = {role: self._send(role, op="listen", ports=new) for role in self._agents}
        for role, rid in ids.items():
            errors = self._wait(role, rid, 5.0).get("errors")
            if errors:
                self.warnings.append(f"{role}: cannot listen on {'; '.join(errors)}")
        self._ports.update(new)

    # ---- the dump ------------------------------------------------------------------------------
    def _host(
        self, *cmd: str, input: bytes | None = None, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[bytes]:
        return _sh(self._exec("host", *cmd), input=input, timeout=timeout, check=False)

    def load(self, rules_text: str) -> RestoreResult:
        """Replace the host's iptables tables with ``rules_text`` (iptables-restore)."""
        t0 = time.monotonic()
        if self._loaded:
            nft = _which("nft")
            for table in XT_TABLES:  # tables the new dump does not name must not survive
                if nft:
                    self._host(nft, "delete", "table", self._nft_family, table)
        self._loaded = True
        data = rules_text.encode("utf-8", "surrogateescape")
        p = self._host(_tool(self._xt("iptables-restore")), input=data, timeout=RESTORE_TIMEOUT)
        result = RestoreResult.from_process(
            p.returncode, p.stderr.decode(errors="replace"), p.stdout.decode(errors="replace")
        )
        self.restore_result = result
        self._conntrack_flush()
        self._map_rules()
        self.ensure_listening(dnat_ports(rules_text))
        self.timing["load_s"] = round(time.monotonic() - t0, 3)
        return result

    @property
    def _nft_family(self) -> str:
        return "ip6" if self.family == 6 else "ip"

    def _xt(self, tool: str) -> str:
        """``iptables-*`` -> ``ip6tables-*`` in an IPv6 lab."""
        return tool.replace("iptables", "ip6tables") if self.family == 6 else tool

    def save(self, counters: bool = False) -> str:
        """``iptables-save`` (IPv6 lab: ``ip6tables-save``) of the host namespace (``#`` lines dropped)."""
        p = self._host(_tool(self._xt("iptables-save")), *(["-c"] if counters else []), timeout=RESTORE_TIMEOUT)
        if p.returncode != 0:
            raise LabError(f"iptables-save failed: {p.stderr.decode(errors='replace').strip()}")
        return "".join(
            line + "\n" for line in p.stdout.decode(errors="replace").splitlines() if not line.startswith("#")
        )

    def _map_rules(self) -> None:
        """nft rule handle -> (chain, position), and the rule texts as a fallback."""
        self._rules = _rules_by_chain(self.save())
        self._handles = {}
        nft = _which("nft")
        if nft is None:
            return
        p = self._host(nft, "-j", "list", "ruleset")
        if p.returncode != 0:
            self.warnings.append(f"nft -j list ruleset failed: {p.stderr.decode(errors='replace').strip()}")
            return
        pos: dict[tuple[str, str], int] = {}
        for item in json.loads(p.stdout or b"{}").get("nftables", []):
            rule = item.get("rule")
            if not rule or rule.get("family") != self._nft_family or rule.get("table") not in XT_TABLES:
                continue
            key = (rule["table"], rule["chain"])
            pos[key] = pos.get(key, 0) + 1
            self._handles[(rule["table"], int(rule["handle"]))] = (rule["chain"], pos[key])

    # ---- probes --------------------------------------------------------------------------------
    def role(self, src_ns: str) -> str:
        """``outside``/``internet``/``host``/``container:NAME``/``NAME`` -> agent role."""
        s = src_ns.strip()
        name = re.sub(r"^container[:\s]+", "", s)
        if name in self._agents:
            return name
        raise ValueError(f"unknown probe source {src_ns!r} (outside|internet|host|container:NAME)")

    def addr(self, role: str) -> str:
        """The first address of ``role`` (host: the external address)."""
        return self.addresses[self.role(role)][0]

    def _alloc_sport(self) -> int:
        while True:
            port = self._next_sport
            self._next_sport = FIRST_SPORT if port >= LAST_SPORT else port + 1
            if port not in self._ports:
                return port

    def _counters(self) -> dict[tuple[str, str, int], _Counter]:
        p = self._host(_tool(self._xt("iptables-save")), "-c", timeout=RESTORE_TIMEOUT)
        return parse_counters(p.stdout.decode(errors="replace"))

    def _conntrack_entries(self, proto: str, src: str | None, dst: str, sport: int, dport: int) -> list[ConntrackEntry]:
        """The host's entries whose original tuple starts at the probe's (proto, sport).

        With the client's address known, ``conntrack -G`` fetches the one entry by its
        original tuple (about 3 ms); otherwise the whole table is listed (about 13 ms).
        """
        conntrack = _which("conntrack")
        if conntrack is None or proto not in ("tcp", "udp"):
            return []
        if src and src not in ("0.0.0.0", "::"):
            cmd = ["-G", "-p", proto, "-s", src, "-d", dst, "--sport", str(sport), "--dport", str(dport)]
        else:
            cmd = ["-L", *(["-f", "ipv6"] if self.family == 6 else []), "-p", proto, "--sport", str(sport)]
        entries = parse_conntrack(self._host(conntrack, *cmd).stdout.decode(errors="replace"))
        return [e for e in entries if e.proto == proto and e.orig.sport == sport]

    def _conntrack_flush(self) -> None:
        conntrack = _which("conntrack")
        if conntrack is not None:
            self._host(conntrack, "-F")

    def probe(self, probe: Probe) -> ProbeResult:
        """Send one probe and report what the kernel did (see the module docstring)."""
        if self._closed or not self._agents:
            raise LabError("the lab is not open")
        t0 = time.monotonic()
        src = self.role(probe.src_ns)
        icmp = probe.proto == "icmpv6"
        if probe.proto not in ("tcp", "udp") and not (icmp and self.family == 6):
            raise ValueError(f"proto must be tcp or udp (or icmpv6 in an IPv6 lab), not {probe.proto!r}")
        dst_ip = ipaddress.ip_address(probe.dst)
        if dst_ip.version != self.family:
            raise ValueError(f"{probe.dst} is not an IPv{self.family} address (the lab's family)")
        dst = str(dst_ip)
        self._check_agents()
        if not icmp:
            self.ensure_listening([probe.dport])
        sport = probe.sport or self._alloc_sport()
        timeout = probe.timeout or self.timeout
        self._pump(0)
        self._events.clear()
        self._trace.clear()
        before = self._counters()
        rid = self._send(
            src,
            op="probe",
            proto=probe.proto,
            dst=dst,
            dport=probe.dport,
            sport=sport,
            timeout=timeout,
            src=probe.src_addr,
        )
        client = self._wait(src, rid, timeout + 5.0)
        end = time.monotonic() + self.settle
        while (left := end - time.monotonic()) > 0:
            self._pump(left)
        after = self._counters()
        entries = self._conntrack_entries(probe.proto, client.get("local"), dst, sport, probe.dport)
        if not self.keep_conntrack:
            self._conntrack_flush()
        traced = self.trace_available and self._barrier()
        self._pump(0)

        res = ProbeResult(
            probe=probe,
            sport=sport,
            client=str(client.get("status")),
            banner=client.get("banner"),
            client_addr=client.get("local"),
            counters=counter_delta(before, after),
            conntrack=entries,
        )
        deliveries = [e for e in self._events if e.get("ev") == probe.proto]
        matched = [e for e in deliveries if e.get("pport") == sport]
        if not matched and deliveries:
            matched, res.match_mode = deliveries, "time-window"
        if matched:
            d = matched[0]
            res.delivered_to = f"{d['ns']}:{d['port']}"
            res.src_seen, res.src_port_seen, res.local_addr = d.get("peer"), d.get("pport"), d.get("local")
            res.also_delivered_to = [f"{e['ns']}:{e['port']}" for e in matched[1:]]
        seen = set()
        for e in self._events:
            if e.get("ev") == "wire" and e["proto"] == probe.proto and e["sport"] == sport:
                arr = Arrival(e["ns"], e["if"], e["src"], e["dst"], e["sport"], e["dport"])
                if arr not in seen:
                    seen.add(arr)
                    res.arrived_at.append(arr)
        if traced:
            res.trace_lines = list(self._trace)
            res.first_packet_path = parse_trace(
                self._trace,
                None if icmp else sport,
                entry_chain="out" if src == "host" else "pre",
                handles=self._handles,
                rules=self._rules,
            )
        res.elapsed = round(time.monotonic() - t0, 4)
        return res

    def probes(self, probes: Iterable[Probe]) -> list[ProbeResult]:
        return [self.probe(p) for p in probes]

    def __iter__(self) -> Iterator[str]:  # the roles, for convenience
        return iter(self._agents)


if __name__ == "__main__" and "--agent" in sys.argv:
    sys.exit(_agent_main(sys.argv[1:]))
