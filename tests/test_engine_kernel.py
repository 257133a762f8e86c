"""natlint's trace against the real kernel: the engine's acceptance proof (DESIGN.md section 5).

For every IPv4 Docker dump of ``../shared/reference-dumps/`` (and kube-proxy-small) and every
fixture under ``fixtures/kernel/``, one :class:`KernelLab` is built from the host model
natlint uses (``natlint.host.infer(ruleset)``, or the host file a fixture names) with
``to_kernelcheck_topology``, the dump is loaded with ``iptables-restore`` and probes are sent:
every published port from outside, from the host itself and from every container (its own
port: hairpin), container egress to the internet server, container to container, unpublished
ports, direct container access from outside and from the host, the probes a dump or fixture
lists, and hypothesis-generated random probes. For each probe natlint traces the same packet
(arriving on the interface the source namespace's packets come in on, or sent by the host;
the probe's real source address and port; state NEW) and must agree with the kernel on

* the verdict: delivered (or seen arriving on the receiver's wire), rejected, or dropped;
* the endpoint: natlint's "local" is the host, "out of X" is the namespace that owns the
  post-NAT destination address on X's network;
* the post-NAT source address and port the receiver saw, and the post-NAT destination
  address and port;
* the rules and policies the first packet hit: natlint's steps as (table, chain, rule index
  or "policy") equal the kernel's nf_tables trace (``ProbeResult.first_packet_path``).

A probe whose packet natlint splits into several outcomes (an opaque match, a NAT range, a
random port) agrees when one of them equals the kernel's; it counts as "approximate".

Fixture header lines: ``# host: FILE`` (a host TOML beside the fixture), ``# probe: SRC
tcp|udp DST PORT``, ``# lab: {JSON}`` merged into the topology (plus ``"hairpin": true`` for
hairpin mode on every bridge port, ``"sysctls": {...}`` for the host namespace).

What the comparison leaves aside, on purpose:

* the lab has no docker-proxy: what is not DNATed reaches the harness's own listener on the
  host, which natlint reports as local delivery, so the two still agree;
* the lab builds no default route and no route through devices it does not create (see
  ``to_kernelcheck_topology``'s notes): natlint traces with its host model less those routes;
* host settings the dumps imply but do not contain (route_localnet, hairpin mode: Docker
  without the userland proxy, kube-proxy and its bridge CNI) come from natlint's host model
  (``natlint.host.infer`` reads them out of the rules) and ``to_kernelcheck_topology`` makes
  them in the lab, so both see the same setting; a fixture's ``"hairpin": true`` turns
  hairpin mode on in the host model it names;
* a packet that reaches the receiver's wire but is refused there (a hairpin without
  MASQUERADE arrives with the receiver's own address as source, a martian) counts as
  delivered: netfilter on the host let it through;
* when routing finds no route, the kernel answers with an ICMP error (the client sees
  "unreachable") where natlint says DROP at ROUTING: either counts.

Marker ``kernel``; skipped where the oracle cannot run (``oracle.kernel_available()``).
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import oracle
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kernel_harness import KernelLab, Probe, ProbeResult, Topology

from natlint.host import HostModel, infer, read_host_file, to_kernelcheck_topology
from natlint.host.model import IfAddress
from natlint.model.ruleset import Ruleset
from natlint.model.values import PortRange
from natlint.netfilter.engine import Engine, Outcome
from natlint.netfilter.trace import TraceQuery, trace
from natlint.report.trace_text import format_trace
from natlint.syntax.reader import read

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DUMPS = ROOT.parent / "shared" / "reference-dumps"
KERNEL_FIXTURES = ROOT / "fixtures" / "kernel"
REASON = oracle.kernel_available()

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

# A client waits this long for a dropped probe (delivery on veths takes well under 1 ms); a
# probe that disagrees after a timeout is sent again with SLOW_TIMEOUT before it counts.
PROBE_TIMEOUT = 0.2
SLOW_TIMEOUT = 0.9
RANDOM_PROBES = 10  # per dump, on top of the targeted ones
EXTRA_PORTS = (22, 53, 9999)  # unpublished ports worth a probe on every dump

# Setup a reference dump needs in the lab's host namespace before iptables-restore
# (../shared/reference-dumps/README.md): the set's contents are not part of the dump.
DUMP_SETUP: Mapping[str, tuple[tuple[str, ...], ...]] = {
    "docker-28.0.0-2containers.rules": (
        ("ipset", "create", "docker-ext-bridges-v4", "hash:net"),
        ("ipset", "add", "docker-ext-bridges-v4", "172.17.0.0/16"),
    ),
}
# Host settings a dump implies but does not show (route_localnet, hairpin mode) are natlint's
# host model's (natlint.host.infer: Docker without the userland proxy, kube-proxy): the lab
# is built from that model. Extra host-namespace sysctls per dump, when a dump needs one:
DUMP_SYSCTLS: Mapping[str, Mapping[str, str]] = {}
# Probes a dump's published ports do not give (kube-proxy's DNATs match no port): NodePorts
# and the LoadBalancer IP from outside, ClusterIPs from a pod. Not from the host: the lab's
# host has no default route, so its own packets to a ClusterIP never leave the socket.
DUMP_PROBES: Mapping[str, tuple[Probe, ...]] = {
    "kube-proxy-small.rules": (
        Probe("outside", "tcp", "192.0.2.1", 30080),
        Probe("outside", "tcp", "192.0.2.1", 31443),
        Probe("outside", "tcp", "192.0.2.1", 32150),
        Probe("outside", "tcp", "203.0.113.50", 443),
        Probe("c1", "tcp", "10.96.120.7", 80),
        Probe("c1", "tcp", "10.96.45.12", 6379),
        Probe("c2", "tcp", "10.96.200.33", 443),
        Probe("c3", "tcp", "10.96.77.77", 8080),
        Probe("c3", "tcp", "192.0.2.1", 30080),
    ),
}


# ------------------------------------------------------------------------------------------
# The cases
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    host_file: Path | None = None  # None: natlint.host.infer(ruleset)
    lab: Mapping[str, Any] = field(default_factory=dict)  # merged into the topology
    probes: tuple[Probe, ...] = ()  # listed by the fixture (# probe: SRC PROTO DST PORT)
    setup: tuple[tuple[str, ...], ...] = ()
    sysctls: Mapping[str, str] = field(default_factory=dict)
    hairpin: bool = False  # hairpin mode on every bridge port (in natlint's host model, hence the lab)
    skip: str | None = None
    # False: the kernel's trace of the first packet is not compared, nor required (a dump whose
    # own TRACE target traces the connection's later packets too: the harness cannot tell them
    # apart, and the flood can make the trace monitor quit)
    paths: bool = True


_HOST_LINE = re.compile(r"^# host: (\S+)\s*$", re.M)
_LAB_LINE = re.compile(r"^# lab: (\{.*\})\s*$", re.M)
_PROBE_LINE = re.compile(r"^# probe: (\S+) (tcp|udp|icmpv6) (\S+) (\d+)\s*$", re.M)


def _fixture_case(path: Path) -> Case:
    text = path.read_text()
    host = _HOST_LINE.search(text)
    lab: dict[str, Any] = {}
    for spec in _LAB_LINE.findall(text):
        lab.update(json.loads(spec))
    probes = tuple(Probe(s, p, d, int(port)) for s, p, d, port in _PROBE_LINE.findall(text))
    hairpin = bool(lab.pop("hairpin", False))
    sysctls = lab.pop("sysctls", {})
    return Case(f"fixture:{path.stem}", path, path.parent / host.group(1) if host else None, lab, probes,
                sysctls=sysctls, hairpin=hairpin)


def _dump_case(path: Path) -> Case:
    name = path.name
    skip = None
    setup = DUMP_SETUP.get(name, ())
    if "ip6tables" in name or read(path.read_bytes(), str(path), None).family == 6:
        skip = "IPv6 dump: tests/test_engine_kernel_v6.py runs it in an IPv6 lab"
    elif setup and shutil.which(setup[0][0]) is None:
        skip = f"{name} needs `{' '.join(setup[0])}` before restore and {setup[0][0]} is not installed"
    return Case(f"dump:{path.stem}", path, probes=DUMP_PROBES.get(name, ()), setup=setup,
                sysctls=DUMP_SYSCTLS.get(name, {}), skip=skip)


def _cases() -> list[Any]:
    cases: list[Any] = []
    if REFERENCE_DUMPS.is_dir():
        for path in sorted([*REFERENCE_DUMPS.glob("docker-*.rules"), *REFERENCE_DUMPS.glob("kube-proxy-*.rules")]):
            case = _dump_case(path)
            marks = [pytest.mark.skip(reason=case.skip)] if case.skip else []
            cases.append(pytest.param(case, id=case.name, marks=marks))
    else:
        cases.append(pytest.param(None, id="dump:absent", marks=pytest.mark.skip(
            reason=f"{REFERENCE_DUMPS} is absent (the shared folder is not beside this checkout)")))
    for path in sorted(KERNEL_FIXTURES.glob("*.rules")):
        case = _fixture_case(path)
        cases.append(pytest.param(case, id=case.name))
    return cases


# ------------------------------------------------------------------------------------------
# The lab's namespaces, as natlint sees them
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabMap:
    """Which namespace owns which address, and where each one's packets enter the host."""

    topology: Topology
    owners: Mapping[str, str]  # address -> role (host addresses: "host")
    networks: Mapping[str, tuple[ipaddress.IPv4Network, ...]]  # host interface -> its subnets
    entry: Mapping[str, str]  # role -> host interface its packets arrive on
    host_addresses: tuple[str, ...]
    bridged_ok: bool

    @classmethod
    def build(cls, topo: Topology, lab: KernelLab, host: HostModel) -> LabMap:
        owners: dict[str, str] = {}
        networks: dict[str, list[ipaddress.IPv4Network]] = {}
        ext = ipaddress.ip_interface(topo.host.ext_addr)
        networks.setdefault(topo.host.ext_if, []).append(ext.network)  # type: ignore[arg-type]
        for extra in topo.host.extra_addrs:
            iface = ipaddress.ip_interface(extra.addr)
            if iface.network.prefixlen < 32:
                networks.setdefault(extra.dev or topo.host.ext_if, []).append(iface.network)  # type: ignore[arg-type]
        entry = {"outside": topo.host.ext_if, "internet": topo.host.ext_if}
        for role in ("outside", "internet"):
            for addr in lab.addresses[role]:
                owners[addr] = role
        for b in topo.bridges:
            networks.setdefault(b.name, []).append(ipaddress.ip_interface(b.addr).network)  # type: ignore[arg-type]
            for c in b.containers:
                owners[str(topo.container_interface(b, c).ip)] = c.name
                entry.setdefault(c.name, b.name)
        for addr in lab.addresses["host"]:
            owners[addr] = "host"
        return cls(topo, owners, {k: tuple(v) for k, v in networks.items()}, entry,
                   tuple(lab.addresses["host"]), lab.br_netfilter == host.br_netfilter)

    def on_network(self, iface: str, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip in net for net in self.networks.get(iface, ()))

    def reachable(self, src: str, dst: str) -> bool:
        """Whether a probe ``src`` -> ``dst`` passes through the host's netfilter at all."""
        owner = self.owners.get(dst)
        if src == "host":
            return True
        if dst.startswith("127.") or dst == "::1" or owner == src:
            return False  # stays inside the sender's namespace
        if src in ("outside", "internet"):
            if owner in ("outside", "internet"):
                return False  # the peers share the external segment: the host never sees it
            if src == "internet":  # no default route: only the external subnet
                return self.on_network(self.topology.host.ext_if, dst)
            return True
        # a container: traffic to another container of its bridge is bridged, and crosses
        # iptables only with br_netfilter: skipped when the lab cannot do what the model says
        same_bridge = owner not in (None, "host", "outside", "internet") and self.entry.get(owner) == self.entry[src]
        return self.bridged_ok or not same_bridge


def _ports(ruleset: Ruleset) -> list[tuple[str, int]]:
    """(proto, port) of every published / matched / NAT target port of the dump."""
    found: set[tuple[str, int]] = set()

    def ranges(values: Iterable[object]) -> Iterable[PortRange]:
        for v in values:
            if isinstance(v, PortRange):
                yield v
            elif isinstance(v, tuple | list):
                yield from ranges(v)
            elif getattr(v, "ports", None) is not None:
                yield v.ports  # type: ignore[attr-defined]

    for rule in ruleset.rules():
        proto = rule.protocol.value if rule.protocol is not None else None
        name = getattr(proto, "name", None) or (str(proto) if proto is not None else "")
        protos = [name] if name in ("tcp", "udp") else ["tcp", "udp"]
        options = [o for m in rule.matches for o in m.options if o.name in ("dport", "dports", "ports")]
        if rule.target is not None:
            options += [o for o in rule.target.options if o.name in ("to_destination", "to_ports", "to")]
        for opt in options:
            if opt.invert:
                continue
            for r in ranges(opt.values):
                for port in {r.first, r.last, (r.first + r.last) // 2}:
                    if 0 < port < 65536:
                        found.update((p, port) for p in protos)
    return sorted(found)


def _published(ruleset: Ruleset) -> list[tuple[str, int, str | None]]:
    """(proto, port, address or None) that nat PREROUTING/OUTPUT rewrites: the published ports."""
    out: set[tuple[str, int, str | None]] = set()
    nat = ruleset.tables.get("nat")
    if nat is None:
        return []
    for chain in nat:
        for rule in chain.rules:
            if rule.target is None or rule.target.name not in ("DNAT", "REDIRECT"):
                continue
            proto = rule.protocol.value if rule.protocol is not None else None
            name = getattr(proto, "name", None) or (str(proto) if proto is not None else "tcp")
            if name not in ("tcp", "udp"):
                continue
            dst = None
            if rule.destination is not None and not rule.destination.invert:
                prefix = rule.destination.value
                bits = 128 if getattr(prefix, "version", 4) == 6 else 32
                if getattr(prefix, "mask", 0) == (1 << bits) - 1:
                    addr = prefix.address  # type: ignore[attr-defined]
                    dst = str(ipaddress.IPv4Address(addr) if bits == 32 else ipaddress.IPv6Address(addr))
            for m in rule.matches:
                for o in m.options:
                    if o.name in ("dport", "dports") and not o.invert:
                        for v in o.values:
                            items = v if isinstance(v, tuple) else (v,)
                            for r in items:
                                if isinstance(r, PortRange):
                                    out.add((name, r.first, dst))
    return sorted(out, key=lambda t: (t[0], t[1], t[2] or ""))


def _targeted(case: Case, ruleset: Ruleset, lm: LabMap) -> list[Probe]:
    topo = lm.topology
    host_ext = str(ipaddress.ip_interface(topo.host.ext_addr).ip)
    containers = [(c.name, str(topo.container_interface(b, c).ip)) for b in topo.bridges for c in b.containers]
    internet = str(ipaddress.ip_interface(topo.internet.addr).ip)
    probes: list[Probe] = []
    for proto, port, dst in _published(ruleset):
        where = dst or host_ext
        if not where.startswith("127."):
            probes.append(Probe("outside", proto, where, port))  # type: ignore[arg-type]
        probes.append(Probe("host", proto, where, port))  # type: ignore[arg-type]
        if containers and not where.startswith("127."):
            for name, _ in containers:  # from every container (its own published port: hairpin)
                probes.append(Probe(name, proto, where, port))  # type: ignore[arg-type]
    for name, _ in containers:  # egress: UDP needs no return route to be delivered
        probes.append(Probe(name, "udp", internet, 53))
        probes.append(Probe(name, "tcp", internet, 80))
    for port in (9999, 22):  # unpublished ports
        probes.append(Probe("outside", "tcp", host_ext, port))
        probes.append(Probe("outside", "udp", host_ext, port))
    ports = sorted({p for _, p in _ports(ruleset)} | {80})
    for _name, addr in containers:  # direct access to containers from outside, and from the host
        for port in ports[:2]:
            probes.append(Probe("outside", "tcp", addr, port))
        probes.append(Probe("host", "tcp", addr, ports[0]))
    for b in topo.bridges:  # container to container: bridged (iptables sees it with br_netfilter)
        members = [str(topo.container_interface(b, c).ip) for c in b.containers]
        for c, peer in zip(b.containers, members[1:] + members[:1], strict=True):
            if peer != str(topo.container_interface(b, c).ip):
                probes.append(Probe(c.name, "tcp", peer, ports[0]))
                probes.append(Probe(c.name, "udp", peer, 53))
    probes.extend(case.probes)
    return probes


def _random(lm: LabMap, ports: Sequence[tuple[str, int]], n: int) -> list[Probe]:
    """Hypothesis-generated probes (derandomized: the same list on every run)."""
    roles = ["outside", "internet", "host", *lm.topology.containers()]
    dsts = sorted(set(lm.owners))
    pairs = [(s, d) for s in roles for d in dsts if lm.reachable(s, d)]
    port_choices = sorted({p for _, p in ports} | set(EXTRA_PORTS))
    found: list[Probe] = []

    @settings(max_examples=n, derandomize=True, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(pairs), st.sampled_from(["tcp", "udp"]), st.sampled_from(port_choices))
    def draw(pair: tuple[str, str], proto: str, port: int) -> None:
        found.append(Probe(pair[0], proto, pair[1], port))  # type: ignore[arg-type]

    draw()
    return found


# ------------------------------------------------------------------------------------------
# Comparing
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelView:
    verdict: str  # ACCEPT (delivered or arrived on the receiver's wire), REJECT, DROP
    endpoint: str | None
    how: str  # "delivered", "arrived", "-"
    src: str | None = None
    sport: int | None = None
    dst: str | None = None
    dport: int | None = None
    path: tuple[tuple[str, str, int | str], ...] | None = None


_REJECTED = frozenset({"refused", "unreachable", "reset"})
_STOPPED_LOCALLY = "DROP or REJECT"  # the kernel view of a host's datagram that send() refused


def kernel_view(res: ProbeResult, lm: LabMap) -> KernelView:
    path = None
    if res.first_packet_path is not None:
        path = tuple((s.table, s.chain, s.rule) for s in res.first_packet_path if s.rule != "return")
    ports = res.probe.proto in ("tcp", "udp")  # an ICMPv6 echo has an identifier, no ports
    if res.delivered_to is not None:
        ns, _, port = res.delivered_to.rpartition(":")
        return KernelView("ACCEPT", ns, "delivered", res.src_seen, res.src_port_seen if ports else None,
                          res.local_addr, int(port) if ports else None, path)
    # a bridge floods frames for an unknown MAC: count only what arrived for its owner
    arrivals = [a for a in res.arrived_at if lm.owners.get(a.dst) == a.ns]
    if arrivals:
        a = arrivals[0]
        return KernelView("ACCEPT", a.ns, "arrived", a.src, a.sport if ports else None, a.dst,
                          a.dport if ports else None, path)
    # EACCES for a probe from outside the host: an ICMPv6 administratively-prohibited error.
    # A datagram the host sends and its own OUTPUT (or POSTROUTING) drops or rejects fails
    # with EPERM, also "denied", before any answer could arrive: either verdict fits.
    if res.client == "denied" and res.probe.src_ns == "host":
        return KernelView(_STOPPED_LOCALLY, None, "-", path=path)
    verdict = "REJECT" if res.client in _REJECTED or res.client == "denied" else "DROP"
    return KernelView(verdict, None, "-", path=path)


def natlint_path(outcome: Outcome) -> tuple[tuple[str, str, int | str], ...]:
    """The first packet's steps (not the reply steps of another packet: a REJECT's answer, a
    handshake's SYN-ACK or ACK)."""
    return tuple((s.table, s.chain, s.index) for s in outcome.steps if s.index is not None and not s.reply)


def _endpoints(outcome: Outcome, engine: Engine, lm: LabMap) -> set[str | None]:
    """The namespaces natlint's outcome reaches (None: nobody receives it)."""
    if outcome.verdict != "ACCEPT" or outcome.delivered is None:
        return {None}
    if outcome.delivered.to == "local":
        # the host's listener counts a TCP connection once the handshake completes
        return {None} if outcome.connection == "fails" else {"host"}
    sp: Any = engine.space
    iface = outcome.delivered.interface or ""
    found: set[str | None] = set()
    for addr, owner in lm.owners.items():
        if owner != "host" and lm.on_network(iface, addr) and not (outcome.packets & sp.value("dst", addr)).is_empty():
            found.add(owner)
    rest: Any = outcome.packets
    for addr in lm.owners:
        rest = rest - sp.value("dst", addr)
    if not found or not rest.is_empty():
        found.add(None)
    return found


def problems(outcome: Outcome, kv: KernelView, engine: Engine, lm: LabMap) -> list[str]:
    out: list[str] = []
    sp: Any = engine.space
    if kv.path is not None and natlint_path(outcome) != kv.path:
        out.append(f"path: natlint {list(natlint_path(outcome))} != kernel {list(kv.path)}")
    endpoints = _endpoints(outcome, engine, lm)
    if kv.endpoint not in endpoints:
        out.append(f"endpoint: natlint {sorted(endpoints, key=str)} != kernel {kv.endpoint} ({kv.how})")
    elif kv.endpoint is None:
        expected = {"REJECT": "REJECT"}.get(outcome.verdict, "DROP")
        by_routing = outcome.steps and outcome.steps[-1].hook == "ROUTING"
        # routing answers "no route" with an ICMP error, a blackhole route silently: either
        either = kv.verdict == _STOPPED_LOCALLY and outcome.verdict in ("DROP", "REJECT")
        if expected != kv.verdict and not by_routing and not either:
            out.append(f"verdict: natlint {outcome.verdict} != kernel {kv.verdict}")
    else:
        for name, value in (("src", kv.src), ("sport", kv.sport), ("dst", kv.dst), ("dport", kv.dport)):
            if value is not None and (outcome.packets & sp.value(name, value)).is_empty():
                out.append(f"{name}: kernel saw {value}, natlint: {outcome.packets.describe()}")  # type: ignore[attr-defined]
        # a receiver's listener counts a TCP connection once its handshake completes
        if outcome.connection == "fails" and kv.how == "delivered":
            out.append("handshake: natlint says the connection never completes, the kernel's receiver accepted it")
        if outcome.connection == "completes" and kv.how == "arrived":
            out.append("handshake: natlint says the connection completes, the kernel's SYN arrived but no"
                       " connection was accepted")
    return out


@dataclass
class Tally:
    probes: int = 0
    exact: int = 0
    approximate: int = 0
    disagreements: list[str] = field(default_factory=list)


def _query(probe: Probe, res: ProbeResult, lm: LabMap) -> TraceQuery:
    role = probe.src_ns.removeprefix("container:")
    src = res.client_addr if res.client_addr and res.client_addr not in ("0.0.0.0", "::") else None
    if src is None:
        src = lm.topology.host.ext_addr.split("/")[0] if role == "host" else next(
            a for a, o in lm.owners.items() if o == role)
    sport, dport = (str(res.sport), str(probe.dport)) if probe.proto in ("tcp", "udp") else (None, None)
    if role == "host":
        return TraceQuery(local=True, src=src, dst=probe.dst, proto=probe.proto, sport=sport, dport=dport)
    return TraceQuery(lm.entry[role], src=src, dst=probe.dst, proto=probe.proto, sport=sport, dport=dport)


def compare(probe: Probe, res: ProbeResult, ruleset: Ruleset, host: HostModel, engine: Engine, lm: LabMap,
            *, paths: bool = True) -> tuple[str, str | None]:
    """("exact" | "approximate" | "disagree", the report of a disagreement)."""
    query = _query(probe, res, lm)
    outcomes = trace(ruleset, host, query, engine=engine)
    kv = kernel_view(res, lm)
    if not paths:
        kv = replace(kv, path=None)
    if not outcomes:
        return "disagree", _report(probe, query, outcomes, res, kv, ["natlint: no packet matches the query"])
    best = min((problems(o, kv, engine, lm) for o in outcomes), key=len)
    if best:
        return "disagree", _report(probe, query, outcomes, res, kv, best)
    if len(outcomes) > 1 or any(o.certainty == "approximate" for o in outcomes):
        return "approximate", None
    return "exact", None


def probe_and_compare(lab: KernelLab, probe: Probe, ruleset: Ruleset, host: HostModel, engine: Engine, lm: LabMap,
                      *, paths: bool = True) -> tuple[str, str | None, ProbeResult]:
    """Send the probe and :func:`compare`; a disagreement after a client timeout is asked
    again with SLOW_TIMEOUT first (a slow machine, not a verdict?)."""
    res = lab.probe(probe)
    verdict, report = compare(probe, res, ruleset, host, engine, lm, paths=paths)
    if verdict == "disagree" and res.client in ("timeout", "no-reply"):
        retry = replace(probe, timeout=SLOW_TIMEOUT)
        res = lab.probe(retry)
        verdict, report = compare(retry, res, ruleset, host, engine, lm, paths=paths)
    return verdict, report, res


def _report(probe: Probe, query: TraceQuery, outcomes: list[Outcome], res: ProbeResult, kv: KernelView,
            why: list[str]) -> str:
    where = "--local" if query.local else f"--in {query.in_interface}"
    return "\n".join([
        f"PROBE {probe.src_ns} -> {probe.dst}:{probe.dport}/{probe.proto} (sport {res.sport})",
        *(f"  ! {w}" for w in why),
        f"  natlint trace {where} --src {query.src} --dst {query.dst} --proto {query.proto}"
        f" --sport {query.sport} --dport {query.dport}",
        "    " + format_trace(outcomes).replace("\n", "\n    ").rstrip(),
        f"  kernel ({kv.how}, {kv.verdict}):",
        "    " + res.describe().replace("\n", "\n    "),
    ])


# ------------------------------------------------------------------------------------------
# The test
# ------------------------------------------------------------------------------------------

SUMMARY: dict[str, Tally] = {}


def summary_line(summary: Mapping[str, Tally], what: str) -> str | None:
    """The summary line, 'natlint vs kernel: A/N probes agree over K' (None when nothing ran)."""
    if not summary:
        return None
    total = sum(t.probes for t in summary.values())
    agree = sum(t.exact + t.approximate for t in summary.values())
    return f"natlint vs kernel{what}: {agree}/{total} probes agree over {len(summary)}"


@pytest.fixture(scope="module", autouse=True)
def _summary() -> Iterator[None]:
    yield
    line = summary_line(SUMMARY, "")
    if line:
        print(f"\n{line} dumps")


def _host_model(case: Case, ruleset: Ruleset) -> HostModel:
    host = read_host_file(case.host_file, ruleset.family) if case.host_file is not None else infer(ruleset)
    if case.hairpin:  # the fixture's lab option: hairpin mode on every bridge, for natlint too
        host = replace(host, interfaces=tuple(replace(i, hairpin=True) if i.bridge else i for i in host.interfaces))
    return host


def _as_built(host: HostModel, topo: Mapping[str, Any]) -> HostModel:
    """natlint's host as the lab builds it: less the routes the lab cannot build
    (to_kernelcheck_topology leaves out the default route and routes through devices it does
    not create: see its notes), plus the addresses a fixture's ``# lab:`` line adds to the
    host (``extra_addrs``: the kernel delivers to them locally, so natlint must know them)."""
    kept = {(r["to"], r["via"]) for r in topo["host"]["routes"]}
    routes = tuple(r for r in host.routes
                   if r.via is not None and (str(r.dst), str(ipaddress.ip_address(r.via))) in kept)
    added: dict[str, list[IfAddress]] = {}
    for extra in topo["host"].get("extra_addrs", ()):
        added.setdefault(extra.get("dev") or topo["host"]["ext_if"], []).append(IfAddress.parse(extra["addr"]))
    interfaces = tuple(
        replace(i, addresses=i.addresses + tuple(
            a for a in added.get(i.name, ()) if a.address not in {b.address for b in i.addresses}))
        for i in host.interfaces)
    return replace(host, routes=routes, interfaces=interfaces)


def _topology(case: Case, host: HostModel) -> Topology:
    topo = to_kernelcheck_topology(host)
    topo.pop("notes", None)
    for key, value in case.lab.items():
        if isinstance(value, dict) and isinstance(topo.get(key), dict):
            topo[key] = {**topo[key], **value}  # type: ignore[dict-item]
        else:
            topo[key] = value
    if case.sysctls:
        host_part: dict[str, Any] = topo["host"]  # type: ignore[assignment]
        host_part["sysctls"] = {**host_part["sysctls"], **case.sysctls}
    return Topology.from_dict(topo)


def _setup_commands(case: Case, lab: KernelLab) -> list[tuple[str, ...]]:
    """Commands for the lab's host namespace before the dump is loaded (hairpin mode and
    route_localnet come with the topology, from the host model)."""
    del lab
    return list(case.setup)


def run_probes(case: Case, text: str, ruleset: Ruleset, host: HostModel, topo: Topology, engine: Engine,
               tally: Tally, probes_for: Callable[[LabMap], list[Probe]],
               known: Mapping[tuple[object, ...], str] | None = None) -> list[str]:
    """Build the lab, load the dump, send each distinct reachable probe of ``probes_for`` and
    tally whether natlint agrees with the kernel. A disagreement whose (case, probe) key is in
    ``known`` is returned (with its reason) instead of being counted as one."""
    found: list[str] = []
    tool = "ip6tables-restore" if ruleset.family == 6 else "iptables-restore"
    with KernelLab(topo, timeout=PROBE_TIMEOUT) as lab:
        for cmd in _setup_commands(case, lab):
            p = subprocess.run(["ip", "netns", "exec", lab.namespaces["host"], *cmd], capture_output=True, check=False)
            assert p.returncode == 0, f"{' '.join(cmd)}: {p.stderr.decode(errors='replace')}"
        loaded = lab.load(text)
        assert loaded.ok, f"{tool} refused {case.path}: {loaded.reason}"
        lm = LabMap.build(topo, lab, host)
        seen: set[tuple[str, str, str, int]] = set()
        for probe in probes_for(lm):
            key = (probe.src_ns, probe.proto, probe.dst, probe.dport)
            role = probe.src_ns.removeprefix("container:")
            if key in seen or not lm.reachable(role, probe.dst):
                continue
            seen.add(key)
            verdict, report, _res = probe_and_compare(lab, probe, ruleset, host, engine, lm, paths=case.paths)
            tally.probes += 1
            if verdict == "exact":
                tally.exact += 1
            elif verdict == "approximate":
                tally.approximate += 1
            elif known is not None and (case.name, *key) in known:
                found.append(f"{known[(case.name, *key)]}\n{report}")
            else:
                tally.disagreements.append(report or "")
        # a dump that TRACEs every packet itself can flood the trace monitor until it quits;
        # its paths are not compared (Case.paths), so it does not need the trace
        assert lab.trace_available or not case.paths, f"the kernel trace was unavailable: {lab.warnings}"
    return found


def check_case(case: Case, summary: dict[str, Tally], random_probes: int) -> None:
    """Build the case's lab, send its targeted probes and ``random_probes`` random ones,
    tally them in ``summary`` and fail on any disagreement (tests/test_corpus_kernel.py runs
    the corpus through here too)."""
    text = case.path.read_text(errors="replace")
    ruleset = read(text.encode(), str(case.path), None)
    host = _host_model(case, ruleset)
    topo = _topology(case, host)
    host = _as_built(host, topo.to_dict())
    engine = Engine(ruleset, host)
    tally = summary.setdefault(case.name, Tally())
    t0 = time.monotonic()
    run_probes(case, text, ruleset, host, topo, engine, tally,
               lambda lm: _targeted(case, ruleset, lm) + _random(lm, _ports(ruleset), random_probes))
    print(f"\n{case.name}: {tally.probes} probes, {tally.exact} exact + {tally.approximate} approximate agree,"
          f" {len(tally.disagreements)} disagree ({time.monotonic() - t0:.1f} s)")
    assert not tally.disagreements, (
        f"{len(tally.disagreements)} of {tally.probes} probes: natlint and the kernel disagree\n\n"
        + "\n\n".join(tally.disagreements)
    )


@pytest.mark.parametrize("case", _cases())
def test_engine_agrees_with_kernel(case: Case) -> None:
    check_case(case, SUMMARY, RANDOM_PROBES)
