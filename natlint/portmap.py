"""``natlint ports``: the exposure table of a host, like ``docker port`` for the whole machine.

:func:`ports` answers, for one dump and one host model:

* **services**: every published or forwarded service, one row per front end (protocol, the
  host address(es) and port(s) a client connects to) with the DNAT/REDIRECT rules that serve
  it and where they send the connection. For each *origin* (``outside``: new connections
  arriving on the external interfaces; ``host``: connections the host itself opens; one
  ``bridge`` origin per bridge: its containers or pods) the engine classifies the front end's
  connections with its steps recorded, and the row says whether they reach the destination,
  from which source ranges when rules restrict them (DOCKER-USER, ``-s`` tests, kube-proxy's
  loadBalancerSourceRanges), whether they are source-NATed on the way (MASQUERADE/SNAT, e.g.
  hairpin), and which rule or policy accepts or drops them.
* **input**: what the host itself accepts from outside on INPUT (connections not DNATed and
  delivered to a local socket): protocols, ports, sources and the deciding rule or policy.
* **notes**: what the rules cannot show: Docker's userland proxy (docker-proxy) carrying a
  path instead of iptables, ``--iptables=false``, the host model's assumptions, approximations.

How a service's packets are found: :func:`natlint.checks.dnat.dnat_inventory` gives, per
DNAT/REDIRECT rule, the new connections it rewrites (before NAT). Their projection on
(protocol, destination, destination port) is split into boxes (exact: values of one field that
share the same remaining set), and each box's addresses into front ends: all of the host's
addresses ("0.0.0.0"), one host address, or one routed prefix (a ClusterIP, a load-balancer IP).
Rules with the same front end are one service (kube-proxy's endpoints). Then one engine run per
origin on the union of the front ends (new connections, TCP SYN) gives outcomes; each outcome's
DNAT step names its rule, its conntrack original tuple its front end.

Userland proxy (research 1.6): with Docker's proxy on (nat ``DOCKER`` has ``-i BR -j RETURN``,
or the OUTPUT jump has ``! -d 127.0.0.0/8``), what a Docker front end does *not* DNAT but
delivers to the host (a container calling the host's address, the host calling 127.0.0.1) is
carried by docker-proxy: those connections end on the host and traverse INPUT, which decides.
With ``--iptables=false`` (rules name Docker bridges or 172.17.0.0/16 but there is no DOCKER
chain) every published port is a docker-proxy socket behind INPUT: natlint cannot see which.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from natlint.model.ruleset import Rule, Ruleset
from natlint.model.values import PROTOCOL_NAMES, Prefix

if TYPE_CHECKING:
    from natlint.checks.context import CheckContext
    from natlint.checks.dnat import DnatEntry
    from natlint.host.model import HostModel
    from natlint.netfilter.engine import Outcome, Step
    from natlint.packets.space import PacketSet, PacketSpace

__all__ = ["InputRule", "PortsReport", "Reach", "RuleRef", "Service", "ports"]

Status = Literal["yes", "restricted", "no", "unknown"]
OriginKind = Literal["outside", "host", "bridge"]

_PORT_PROTOCOLS = frozenset({6, 17, 33, 132, 136})
_MAX_BOXES = 256
_MAX_ATOMS = 16
_MAX_LIST = 8
_BRIDGE_NAME = re.compile(r"^(docker0|br-[0-9a-f]{12}|docker_gwbridge)$")
_DOCKER_DEFAULT_NET = ipaddress.ip_network("172.17.0.0/16")


# ------------------------------------------------------------------------------ the report


@dataclass(frozen=True)
class RuleRef:
    """A rule (``index`` its 1-based position in the chain) or a chain policy (``index="policy"``)."""

    table: str
    chain: str
    line: int | None
    index: int | Literal["policy"] | None
    action: str
    text: str | None = None

    @classmethod
    def of_step(cls, step: Step) -> RuleRef:
        return cls(step.table, step.chain, step.line, step.index, step.action, step.rule)

    @classmethod
    def of_rule(cls, rule: Rule) -> RuleRef:
        action = rule.target.name if rule.target is not None else "continue"
        return cls(rule.table, rule.chain, rule.pos.line, rule.index, action, rule.text)

    @property
    def is_policy(self) -> bool:
        return self.index == "policy"

    def short(self) -> str:
        """``filter/DOCKER line 16 ACCEPT``, ``filter/FORWARD policy DROP``."""
        if self.is_policy:
            return f"{self.table}/{self.chain} {self.action}"
        word = self.action.split()[0] if self.action else "?"
        where = f" line {self.line}" if self.line is not None else ""
        return f"{self.table}/{self.chain}{where} {word}"

    def to_dict(self) -> dict[str, object]:
        return {"table": self.table, "chain": self.chain, "line": self.line, "index": self.index,
                "action": self.action, "rule": self.text}


@dataclass(frozen=True)
class Reach:
    """Whether one origin reaches a service, and how.

    ``status``: ``yes`` (every connection of the origin to the front end is delivered),
    ``restricted`` (some sources are, rules stop the others: ``sources`` lists those let
    through), ``no``, ``unknown`` (the analysis was cut short). ``via``: ``iptables`` (DNAT
    and forwarding) and/or ``docker-proxy`` (the userland proxy, behind INPUT), or ``host``
    (delivered to the host itself, not forwarded). ``condition``: when only some clients can
    send such packets at all (a routed ClusterIP, 127.0.0.1 from the local link).
    """

    origin: OriginKind
    interfaces: tuple[str, ...]
    status: Status
    via: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()  # ("any",), prefixes, or ("all but", prefixes...)
    masquerade: Literal["yes", "no", "partly"] = "no"
    snat_rules: tuple[RuleRef, ...] = ()
    accepted_by: tuple[RuleRef, ...] = ()
    blocked_by: tuple[RuleRef, ...] = ()
    destinations: tuple[str, ...] = ()  # the destinations reached, when not all of them
    condition: str | None = None
    note: str | None = None
    approximate: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        if self.origin == "host":
            return "host"
        if self.origin == "outside":
            return f"outside ({','.join(self.interfaces)})" if self.interfaces else "outside"
        return self.interfaces[0] if self.interfaces else "bridge"

    def to_dict(self) -> dict[str, object]:
        return {
            "origin": self.origin, "interfaces": list(self.interfaces), "status": self.status,
            "via": list(self.via), "sources": list(self.sources), "masquerade": self.masquerade,
            "snat_rules": [r.to_dict() for r in self.snat_rules],
            "accepted_by": [r.to_dict() for r in self.accepted_by],
            "blocked_by": [r.to_dict() for r in self.blocked_by],
            "destinations": list(self.destinations), "condition": self.condition, "note": self.note,
            "certainty": "approximate" if self.approximate else "exact", "reasons": list(self.approximate),
        }


@dataclass(frozen=True)
class Service:
    """One front end (what a client connects to) and where the DNAT/REDIRECT rules send it.

    ``address``: ``0.0.0.0`` / ``::`` (every address of the host), one address or prefix, or
    ``*`` (any destination, forwarded traffic included); ``addresses`` the exact prefixes.
    ``port``: ``8080``, a range ``8000-8100``, or ``any``. ``scope``: ``host`` (the host's
    own addresses), ``loopback``, ``routed`` (an address the host does not own: packets reach
    it only when routed through the host, e.g. a Kubernetes ClusterIP), ``any``.
    """

    proto: str
    address: str
    port: str
    destinations: tuple[str, ...]
    kind: Literal["dnat", "redirect"]
    scope: Literal["host", "loopback", "routed", "any"]
    addresses: tuple[str, ...]
    rules: tuple[RuleRef, ...]
    reach: tuple[Reach, ...]
    label: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def front(self) -> str:
        return _join_endpoint(self.address, self.port)

    def to_dict(self) -> dict[str, object]:
        return {
            "proto": self.proto, "address": self.address, "port": self.port, "front_end": self.front,
            "addresses": list(self.addresses), "scope": self.scope, "kind": self.kind,
            "destinations": list(self.destinations), "label": self.label,
            "rules": [r.to_dict() for r in self.rules], "reach": [r.to_dict() for r in self.reach],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class InputRule:
    """New connections from outside that the host delivers to its own sockets (filter INPUT)."""

    proto: str
    ports: str
    sources: tuple[str, ...]
    addresses: tuple[str, ...]
    interfaces: tuple[str, ...]
    accepted_by: RuleRef | None
    approximate: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "proto": self.proto, "ports": self.ports, "sources": list(self.sources),
            "addresses": list(self.addresses), "interfaces": list(self.interfaces),
            "accepted_by": self.accepted_by.to_dict() if self.accepted_by is not None else None,
            "certainty": "approximate" if self.approximate else "exact", "reasons": list(self.approximate),
        }


@dataclass
class PortsReport:
    """What :func:`ports` found. ``to_dict()`` is the stable JSON form of ``natlint ports
    --format json``: ``{"services": [...], "input": [...], "notes": [...]}``."""

    path: str
    family: int
    services: list[Service] = field(default_factory=list)
    input: list[InputRule] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    docker_proxy: bool | None = None  # None: no Docker nat layout
    docker_iptables_false: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "services": [s.to_dict() for s in self.services],
            "input": [i.to_dict() for i in self.input],
            "notes": list(self.notes),
        }


# ------------------------------------------------------------------------------ formatting helpers


def _join_endpoint(address: str, port: str) -> str:
    if port in ("", "-"):
        return address
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"
    return f"{address}:{port}"


def _proto_name(number: int) -> str:
    return PROTOCOL_NAMES.get(number, str(number))


def _ports_text(intervals: Sequence[tuple[int, int]] | None) -> str:
    if intervals is None:
        return "many"
    if list(intervals) == [(0, 65535)]:
        return "any"
    full = _complement(intervals, 16)
    if not full:
        return "any"

    def one(lo: int, hi: int) -> str:
        return str(lo) if lo == hi else f"{lo}-{hi}"

    # "any but 8080" reads better than 0-8079,8081-65535
    shown = [(lo, hi) for lo, hi in full if not (lo == 0 and hi == 0)]
    if len(intervals) > 1 and len(shown) < len(intervals) and intervals[0][0] <= 1 and intervals[-1][1] == 65535:
        return "any but " + ",".join(one(lo, hi) for lo, hi in shown)
    return ",".join(one(lo, hi) for lo, hi in intervals)


def _complement(intervals: Sequence[tuple[int, int]], bits: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    nxt = 0
    for lo, hi in intervals:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = max(nxt, hi + 1)
    if nxt <= (1 << bits) - 1:
        out.append((nxt, (1 << bits) - 1))
    return out


def _prefixes(intervals: Iterable[tuple[int, int]], family: int) -> list[str]:
    cls: Any = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    out: list[str] = []
    for lo, hi in intervals:
        for net in ipaddress.summarize_address_range(cls(lo), cls(hi)):
            out.append(str(net.network_address) if net.num_addresses == 1 else str(net))
    return out


def _proto_text(intervals: Sequence[tuple[int, int]] | None) -> str:
    if intervals is None:
        return "many"
    if list(intervals) == [(0, 255)]:
        return "all"
    values = [v for lo, hi in intervals for v in range(lo, hi + 1)]
    if len(values) > 128:
        missing = [v for lo, hi in _complement(intervals, 8) for v in range(lo, hi + 1)]
        return "all but " + ",".join(_proto_name(v) for v in missing)
    return ",".join(_proto_name(v) for v in values)


# ------------------------------------------------------------------------------ set algebra


def _others(sp: PacketSpace, keep: Iterable[str]) -> list[str]:
    kept = set(keep)
    return [f for f in sp.fields if f not in kept]


def _project(sp: PacketSpace, s: PacketSet, keep: Iterable[str]) -> PacketSet:
    return sp.forget(s.may(), *_others(sp, keep))


def _intervals_set(sp: PacketSpace, name: str, intervals: Iterable[tuple[int, int]]) -> PacketSet:
    found = sp.none()
    for lo, hi in intervals:
        found = found | sp.range(name, lo, hi)
    return found


def _boxes(sp: PacketSpace, s: PacketSet, fields: Sequence[str], budget: list[int]
           ) -> list[dict[str, list[tuple[int, int]] | None]]:
    """``s`` (constraining only ``fields``) as disjoint products of per-field value sets.

    Exact: the values of the first field that share one remaining set form one box (by
    recursion on the others). ``budget`` (a one-element list) caps the boxes made in all."""
    if not fields:
        return [{}]
    name, rest = fields[0], fields[1:]
    others = _others(sp, [name])
    out: list[dict[str, list[tuple[int, int]] | None]] = []
    remaining = s
    while not remaining.is_empty() and budget[0] > 0:
        present = sp.forget(remaining, *others)
        first = present.values(name, limit=1 << 16)
        if not first:
            break
        value = first[0][0]
        cofactor = sp.forget(remaining & sp.value(name, value), name)
        differs = sp.forget(remaining ^ cofactor, *others)
        same = present - differs
        if same.is_empty():  # cannot happen (value is in same): stop rather than loop
            break
        values = same.values(name, limit=4096)
        for sub in _boxes(sp, cofactor, rest, budget):
            out.append({name: values, **sub})
            budget[0] -= 1
        remaining = remaining - same
    return out


# ------------------------------------------------------------------------------ docker signatures


def _docker_layout(ruleset: Ruleset) -> tuple[bool | None, bool]:
    """(docker-proxy on? None without Docker's nat layout, --iptables=false signature)."""
    nat = ruleset.tables.get("nat")
    has_chain = any("DOCKER" in t.chains for t in ruleset.tables.values())
    if nat is not None and "DOCKER" in nat.chains:
        ret = any(r.target is not None and r.target.name == "RETURN" and r.in_interface is not None
                  and not r.in_interface.invert for r in nat.chains["DOCKER"].rules)
        output = nat.chains.get("OUTPUT")
        skips_loopback = False
        jumps = False
        for r in output.rules if output is not None else ():
            if r.target is not None and r.target.name == "DOCKER":
                jumps = True
                d = r.destination
                if d is not None and d.invert and str(d.value) in ("127.0.0.0/8", "::1/128", "::1"):
                    skips_loopback = True
        proxy = ret or skips_loopback or not jumps
        return proxy, False
    if has_chain:
        return None, False
    for rule in ruleset.rules():
        for opt in (rule.in_interface, rule.out_interface):
            if opt is not None and _BRIDGE_NAME.match(str(getattr(opt.value, "name", opt.value))):
                return None, True
        for opt in (rule.source, rule.destination):
            if opt is None:
                continue
            try:
                net = ipaddress.ip_network(str(opt.value), strict=False)
            except ValueError:
                continue
            if net.version == 4 and net.subnet_of(_DOCKER_DEFAULT_NET) and net.prefixlen <= 16:  # type: ignore[arg-type]
                return None, True
    return None, False


# ------------------------------------------------------------------------------ the analysis


@dataclass
class _Front:
    """One front end: its packets (before NAT, on proto/dst/dport) and the rules serving it."""

    proto: tuple[tuple[int, int], ...]
    dst: tuple[tuple[int, int], ...]
    dport: tuple[tuple[int, int], ...] | None
    address: str
    scope: Literal["host", "loopback", "routed", "any"]
    pre: PacketSet
    orig: PacketSet  # the same on orig_dst/orig_dport (as outcomes record it)
    entries: list[DnatEntry] = field(default_factory=list)


@dataclass
class _Origin:
    kind: OriginKind
    interfaces: tuple[str, ...]
    start: PacketSet
    outcomes: list[Outcome] | None = None
    error: str | None = None
    _by_rule: dict[int | None, list[Outcome]] | None = None

    def by_rule(self, a: _Analysis) -> dict[int | None, list[Outcome]]:
        """The outcomes by the id of the DNAT/REDIRECT rule on their way (None: none)."""
        if self._by_rule is None:
            found: dict[int | None, list[Outcome]] = {}
            for o in self.outcomes or ():
                rule = a.dnat_rule(o)
                found.setdefault(id(rule) if rule is not None else None, []).append(o)
            self._by_rule = found
        return self._by_rule


def _fresh(engine: Any) -> PacketSet:
    """A connection's first packet, from anywhere: NEW, no NAT or mark yet, no fragment (what
    ``natlint trace`` starts from), and a SYN for TCP."""
    from natlint.netfilter.trace import TraceQuery, query_set

    sp: PacketSpace = engine.space
    s: PacketSet = query_set(engine, TraceQuery()) | query_set(engine, TraceQuery(local=True))  # type: ignore[operator]
    tcp = sp.value("proto", 6)
    return s & ((tcp & sp.value("tcp_flags", 0x02)) | (sp.all() - tcp))


class _Analysis:
    def __init__(self, ctx: CheckContext) -> None:
        self.ctx = ctx
        self.ruleset = ctx.ruleset
        self.family = ctx.ruleset.family
        self.host: HostModel = ctx.host
        self.engine = ctx.engine
        self.sp: PacketSpace = ctx.engine.space  # type: ignore[assignment]
        self.bits = 32 if self.family == 4 else 128
        self.rules = {(r.table, r.chain, r.index): r for r in self.ruleset.rules()}
        self.notes: list[str] = []
        loop = "127.0.0.0/8" if self.family == 4 else "::1/128"
        self.loopback_net = ipaddress.ip_network(loop)
        self.loopback_iv = [(int(self.loopback_net.network_address), int(self.loopback_net.broadcast_address))]
        local = [p for p in self.host.addresses_of_type("LOCAL")]
        self.local_iv = _merge(_prefix_iv(p, self.bits) for p in local)
        self.local_set = _intervals_set(self.sp, "dst", self.local_iv) if self.local_iv else self.sp.none()
        self.own_iv = _subtract(self.local_iv, self.loopback_iv)
        self.external = self._external()
        # sources no client outside can have (rp_filter): the host's own addresses and the
        # networks routed through its other interfaces (bridges, tunnels)
        inside: list[tuple[int, int]] = list(self.local_iv)
        for prefixes, decision in self.host.route_partition():
            if decision.kind == "local" or (decision.oif is not None and decision.oif not in self.external):
                inside.extend(_prefix_iv(p, self.bits) for p in prefixes)
        self.inside_iv = _merge(inside)

    # ---- front ends -----------------------------------------------------------------------
    def fronts(self, entries: Sequence[DnatEntry]) -> list[_Front]:
        sp = self.sp
        fronts: dict[tuple[object, ...], _Front] = {}
        budget = [_MAX_BOXES]
        for entry in entries:
            fired = _union(sp, list(entry.fires.values()))
            projected = _project(sp, fired, ("proto", "dst", "dport"))
            for box in _boxes(sp, projected, ("proto", "dst", "dport"), budget):
                proto = tuple(box["proto"] or [(0, 255)])
                dport = box["dport"]
                ports = tuple(dport) if dport is not None else None
                has_ports = any(lo <= p <= hi for lo, hi in proto for p in _PORT_PROTOCOLS)
                for address, scope, dst in self._atoms(box["dst"]):
                    key = (proto, dst, ports if has_ports else None)
                    front = fronts.get(key)
                    if front is None:
                        pre = _intervals_set(sp, "proto", proto) & _intervals_set(sp, "dst", dst)
                        orig = _intervals_set(sp, "proto", proto) & _intervals_set(sp, "orig_dst", dst)
                        if ports is not None and has_ports:
                            pre = pre & _intervals_set(sp, "dport", ports)
                            orig = orig & _intervals_set(sp, "orig_dport", ports)
                        front = _Front(proto, dst, ports if has_ports else None, address, scope, pre, orig)
                        fronts[key] = front
                    if entry not in front.entries:
                        front.entries.append(entry)
        if budget[0] <= 0:
            self.notes.append(f"more than {_MAX_BOXES} front ends: the table is cut short")
        return sorted(fronts.values(), key=_front_order)

    def _atoms(self, dst: list[tuple[int, int]] | None
               ) -> Iterator[tuple[str, Literal["host", "loopback", "routed", "any"], tuple[tuple[int, int], ...]]]:
        """The box's destinations as front ends: every host address, single host addresses,
        loopback, routed prefixes (each its own), or any address."""
        if dst is None:
            dst = [(0, (1 << self.bits) - 1)]
        every = "0.0.0.0" if self.family == 4 else "::"
        size = sum(hi - lo + 1 for lo, hi in dst)
        if size >= 1 << (self.bits - 1):  # most of the address space: "any destination"
            yield "*", "any", tuple(dst)
            return
        local = _intersect(dst, self.local_iv)
        rest = _subtract(dst, self.local_iv)
        own = _subtract(local, self.loopback_iv)
        if local and self.own_iv and _covers(own, self.own_iv):
            yield every, "host", tuple(local)
        else:
            for lo, hi in own:
                for text in _prefixes([(lo, hi)], self.family):
                    net = ipaddress.ip_network(text, strict=False)
                    yield text, "host", ((int(net.network_address), int(net.broadcast_address)),)
            loop = _intersect(local, self.loopback_iv)
            if loop:
                names = _prefixes(loop, self.family)
                yield (names[0] if len(names) == 1 else ",".join(names)), "loopback", tuple(loop)
        if rest:
            names = _prefixes(rest, self.family)
            if len(names) > _MAX_ATOMS:
                yield f"{len(names)} prefixes", "routed", tuple(rest)
                return
            for text in names:
                net = ipaddress.ip_network(text, strict=False)
                yield text, "routed", ((int(net.network_address), int(net.broadcast_address)),)

    # ---- origins --------------------------------------------------------------------------
    def _external(self) -> list[str]:
        names = set(self.sp.interfaces)
        ext = [i.name for i in self.host.external_interfaces() if i.name in names]
        if not ext:
            ext = [i.name for i in self.host.interfaces if not i.loopback and not i.bridge and i.name in names]
        return ext

    def origins(self) -> list[_Origin]:
        sp = self.sp
        ext = self.external
        names = set(sp.interfaces)
        found: list[_Origin] = []
        if ext:
            outside = _union(sp, [sp.iface("iif", n) for n in ext])
            if self.inside_iv:
                outside = outside - _intervals_set(sp, "src", self.inside_iv)
            found.append(_Origin("outside", tuple(ext), outside))
        own = _intervals_set(sp, "src", self.own_iv) if self.own_iv else sp.none()
        loop_src = sp.value("src", "127.0.0.1" if self.family == 4 else "::1")
        found.append(_Origin("host", (), sp.iface("iif", None) & (own | loop_src)))
        for bridge in self.host.bridges():
            if bridge.name not in names:
                continue
            subnets = _union(sp, [sp.prefix("src", p) for p in bridge.subnets]) if bridge.subnets else sp.all()
            found.append(_Origin("bridge", (bridge.name,), sp.iface("iif", bridge.name) & subnets))
        return found

    def run(self, origins: Sequence[_Origin], packets: Mapping[int, PacketSet]) -> None:
        """Classify each origin's new connections to ``packets[id(origin)]``: one engine run for
        the host's own, one for every arriving origin at once (rules that do not test the input
        interface then split the classes once, not once per origin)."""
        from natlint.netfilter.engine import BranchBudgetExceeded, Outcome
        from natlint.packets.space import BudgetExceeded

        sp = self.sp
        fresh = _fresh(self.engine)
        arriving = [o for o in origins if o.kind != "host" and not packets[id(o)].is_empty()]
        for origin in origins:
            if origin.kind != "host" or packets[id(origin)].is_empty():
                continue
            try:
                origin.outcomes = self.engine.local(fresh & origin.start & packets[id(origin)])
            except (BudgetExceeded, BranchBudgetExceeded) as exc:
                origin.error = str(exc)
        if not arriving:
            return
        cls = _union(sp, [o.start & packets[id(o)] for o in arriving])
        try:
            outcomes = self.engine.arriving(fresh & cls)
        except (BudgetExceeded, BranchBudgetExceeded) as exc:
            for origin in arriving:
                origin.error = str(exc)
            return
        for origin in arriving:
            where = sp.forget(origin.start, *_others(sp, ["iif"]))
            mine: list[Outcome] = []
            for o in outcomes:
                part = o.packets & where  # type: ignore[operator]
                if not part.is_empty():
                    mine.append(Outcome(part, o.verdict, o.delivered, o.steps, o.reasons, o.note))
            origin.outcomes = mine

    # ---- what the outcomes say ------------------------------------------------------------
    def dnat_rule(self, o: Outcome) -> Rule | None:
        found = None
        for step in o.steps:
            if (step.table == "nat" and step.hook in ("PREROUTING", "OUTPUT") and isinstance(step.index, int)
                    and step.action.split()[0] in ("DNAT", "REDIRECT")):
                found = self.rules.get(("nat", step.chain, step.index))
        return found


def _front_order(f: _Front) -> tuple[object, ...]:
    scope = {"host": 0, "loopback": 1, "any": 2, "routed": 3}[f.scope]
    return (scope, f.dport or ((0, 0),), f.proto, f.dst)


def _union(sp: PacketSpace, sets: Sequence[PacketSet]) -> PacketSet:
    from natlint.netfilter.engine import union_all

    return union_all(list(sets)) if sets else sp.none()  # type: ignore[return-value]


def _prefix_iv(p: Prefix, bits: int) -> tuple[int, int]:
    address = int(p.address)
    mask = int(p.mask)
    lo = address & mask
    return lo, lo | ((~mask) & ((1 << bits) - 1))


def _merge(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _intersect(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for lo, hi in a:
        for lo2, hi2 in b:
            x, y = max(lo, lo2), min(hi, hi2)
            if x <= y:
                out.append((x, y))
    return _merge(out)


def _subtract(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out = list(a)
    for lo2, hi2 in b:
        nxt = []
        for lo, hi in out:
            if hi < lo2 or lo > hi2:
                nxt.append((lo, hi))
                continue
            if lo < lo2:
                nxt.append((lo, lo2 - 1))
            if hi > hi2:
                nxt.append((hi2 + 1, hi))
        out = nxt
    return _merge(out)


def _covers(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> bool:
    return not _subtract(b, a)


# ------------------------------------------------------------------------------ per service


_ROUTING = ("ROUTING", "BRIDGE")


def _accept_step(o: Outcome) -> Step | None:
    for step in reversed(o.steps):
        if step.table == "filter" and step.hook in ("FORWARD", "INPUT", "OUTPUT") and (
                step.action == "ACCEPT" or step.index == "policy"):
            return step
    return None


def _snat_step(o: Outcome) -> Step | None:
    for step in o.steps:
        if step.table == "nat" and step.hook in ("POSTROUTING", "INPUT") and step.action.split()[0] in (
                "MASQUERADE", "SNAT", "NETMAP"):
            return step
    return None


def _refs(steps: Iterable[Step | None]) -> tuple[RuleRef, ...]:
    seen: dict[tuple[object, ...], RuleRef] = {}
    for step in steps:
        if step is None:
            continue
        ref = RuleRef.of_step(step)
        seen.setdefault((ref.table, ref.chain, ref.index), ref)
    return tuple(seen.values())


def _destination(entry: DnatEntry, front: _Front) -> str:
    rule = entry.rule
    assert rule.target is not None
    if rule.target.name == "REDIRECT":
        port = f"{entry.ports.first}" if entry.ports is not None else None
        if entry.ports is not None and entry.ports.last != entry.ports.first:
            port = f"{entry.ports.first}-{entry.ports.last}"
        return _join_endpoint("host", port or _ports_text(front.dport) if front.dport is not None else "")
    text = entry.target_text.split(" ", 1)[1] if " " in entry.target_text else ""
    if entry.ports is None and front.dport is not None and text:
        return _join_endpoint(text, _ports_text(front.dport))
    return text or "?"


def _endpoint_key(text: str) -> tuple[int, str]:
    address = text.rsplit(":", 1)[0].strip("[]") if text.count(":") == 1 or text.startswith("[") else text
    try:
        return int(ipaddress.ip_address(address)), text
    except ValueError:
        return -1, text


def _label(entries: Sequence[DnatEntry]) -> str | None:
    for entry in entries:
        comment = entry.rule.match("comment")
        if comment is not None:
            opt = comment.option("comment")
            if opt is not None and opt.value:
                text = str(opt.value).strip('"')
                return text.split(" -> ")[0].removesuffix(" cluster IP")
    return None


class _Judge:
    """One front end seen from one origin."""

    def __init__(self, a: _Analysis, front: _Front, origin: _Origin, docker: bool, proxy: bool) -> None:
        self.a = a
        self.front = front
        self.origin = origin
        self.docker = docker
        self.proxy = proxy

    def reach(self) -> Reach:
        a, front, origin = self.a, self.front, self.origin
        sp = a.sp
        if origin.outcomes is None:
            return Reach(origin.kind, origin.interfaces, "unknown", note=f"analysis incomplete: {origin.error}")
        mine = {id(e.rule) for e in front.entries}
        reached: list[tuple[Outcome, PacketSet]] = []
        stopped: list[tuple[Outcome, PacketSet]] = []
        local: list[tuple[Outcome, PacketSet]] = []  # not DNATed, delivered to the host
        routing: list[tuple[Outcome, PacketSet]] = []
        reasons: list[str] = [r for e in front.entries for r in e.reasons]
        by_rule = origin.by_rule(a)
        candidates = [o for key in (*mine, None) for o in by_rule.get(key, ())]
        for o in candidates:
            part: PacketSet = o.packets & front.orig  # type: ignore[operator]
            if part.is_empty():
                continue
            rule = a.dnat_rule(o)
            ours = rule is not None and id(rule) in mine
            decided = o.decided_by
            if o.verdict == "ACCEPT":
                if ours:
                    reached.append((o, part))
                elif rule is None and o.delivered is not None and o.delivered.to == "local":
                    local.append((o, part))
                else:
                    continue  # another rule's DNAT, or routed elsewhere untouched
            elif decided is not None and decided.hook in _ROUTING:
                routing.append((o, part))
                continue
            elif rule is None or ours:
                stopped.append((o, part))
            else:
                continue
            reasons.extend(r for r in o.reasons if r not in reasons)
        via: list[str] = []
        note: str | None = None
        proxied = self.docker and self.proxy and bool(local)
        if reached:
            via.append("iptables")
        if local:
            via.append("docker-proxy" if proxied else "host")
        through = reached + (local if proxied else [])
        if through:
            status: Status = "restricted" if stopped else "yes"
        else:
            status = "no"
        sources = self._sources(through, stopped) if through else ()
        if origin.kind == "host":
            sources = ()
        accepted = _refs(_accept_step(o) for o, _ in through)
        blocked = _refs(o.decided_by for o, _ in stopped)
        masq: Literal["yes", "no", "partly"] = "no"
        snat = _refs(_snat_step(o) for o, _ in reached)
        if reached:
            natted = [p for o, p in reached if _snat_step(o) is not None]
            if natted:
                whole = _union(sp, [p for _, p in reached])
                masq = "yes" if _union(sp, natted) == whole else "partly"
        destinations: tuple[str, ...] = ()
        if reached and len(front.entries) > 1:
            got = {id(a.dnat_rule(o)) for o, _ in reached}
            hit = [e for e in front.entries if id(e.rule) in got]
            if len(hit) < len(front.entries):
                destinations = tuple(_destination(e, front) for e in hit)
        if proxied:
            note = "through docker-proxy: the connection ends on the host and crosses filter INPUT"
        elif local and not reached:
            note = "not forwarded: delivered to the host itself (whatever listens on the port answers)"
        elif not through and routing and not stopped:
            note = "dropped by routing (" + routing[0][0].steps[-1].action + ")"
        condition = self._condition(status, proxied)
        return Reach(origin.kind, origin.interfaces, status, tuple(via), sources, masq, snat, accepted, blocked,
                     destinations, condition, note, tuple(reasons))

    def _condition(self, status: Status, proxied: bool) -> str | None:
        if status not in ("yes", "restricted") or self.origin.kind == "host":
            return None
        front = self.front
        if front.scope == "loopback" and self.origin.kind == "outside" and self.a.family == 4:
            return (f"only packets sent to {front.address} by a neighbour on the local link (through this host's"
                    " MAC address): DNAT runs before routing drops them (moby#45610)")
        if front.scope == "routed" and self.origin.kind == "outside":
            return f"only clients that route {front.address} through this host (e.g. a ClusterIP, a load-balancer IP)"
        return None

    def _sources(self, through: Sequence[tuple[Outcome, PacketSet]], stopped: Sequence[tuple[Outcome, PacketSet]]
                 ) -> tuple[str, ...]:
        """``("any",)`` when rules stop none of the origin's sources, else the sources let
        through (or ``("all but", ...)`` the ones stopped, when that is shorter)."""
        a = self.a
        sp = a.sp
        if not stopped:
            return ("any",)
        ok = _project(sp, _union(sp, [p for _, p in through]), ("orig_src",))
        bad = _project(sp, _union(sp, [p for _, p in stopped]), ("orig_src",)) - ok
        # what the origin cannot send (martians, the host's own networks for outside) is no news
        hidden = _merge(a.loopback_iv + a.inside_iv) if self.origin.kind == "outside" else []
        good_iv = ok.values("orig_src", limit=256)
        bad_iv = bad.values("orig_src", limit=256)
        good = _prefixes(_subtract(good_iv, hidden), a.family) if good_iv is not None else None
        worse = _prefixes(_subtract(bad_iv, hidden), a.family) if bad_iv is not None else None
        if good is None and worse is None:
            return ("some",)
        if worse == [] or (good_iv is not None and not _subtract(_complement(good_iv, a.bits), hidden)):
            return ("any",)  # what stops the rest does not depend on the source
        if worse is not None and worse and (good is None or len(worse) < len(good)):
            return ("all but", *worse[:_MAX_LIST]) + (("...",) if len(worse) > _MAX_LIST else ())
        assert good is not None
        return tuple(good[:_MAX_LIST]) + (("...",) if len(good) > _MAX_LIST else ())


# ------------------------------------------------------------------------------ INPUT


def _input_rows(a: _Analysis, outside: _Origin) -> list[InputRule]:
    sp = a.sp
    if outside.outcomes is None:
        return []
    groups: dict[tuple[object, ...], tuple[Step | None, list[PacketSet], list[str]]] = {}
    for o in outside.outcomes:
        if o.verdict != "ACCEPT" or o.delivered is None or o.delivered.to != "local" or a.dnat_rule(o) is not None:
            continue
        if any(s.table == "nat" and s.action.split()[0] in ("DNAT", "REDIRECT", "NETMAP") for s in o.steps):
            continue
        step = _accept_step(o)
        key = (step.table, step.chain, step.index) if step is not None else ("", "", None)
        entry = groups.setdefault(key, (step, [], []))
        entry[1].append(o.packets)  # type: ignore[arg-type]
        entry[2].extend(r for r in o.reasons if r not in entry[2])
    rows: list[InputRule] = []
    every_if = set(outside.interfaces)
    budget = [_MAX_BOXES]
    for step, parts, reasons in groups.values():
        packets = _project(sp, _union(sp, parts), ("proto", "dport", "src", "dst", "iif"))
        # sources the outside origin leaves out (martians, the host's own networks) count as
        # accepted, so that "any" reads as any
        hidden = _merge(a.loopback_iv + a.inside_iv)
        packets = packets | (sp.forget(packets, "src") & _intervals_set(sp, "src", hidden))
        for box in _boxes(sp, packets, ("proto", "dport", "src", "dst", "iif"), budget):
            proto = box["proto"]
            has_ports = proto is None or any(lo <= p <= hi for lo, hi in proto for p in _PORT_PROTOCOLS)
            src = box["src"]
            full = (0, (1 << a.bits) - 1)
            sources = ("any",) if src is None or src == [full] else _src_text(a, src)
            dst = box["dst"] or []
            addresses = ("*",) if _covers(dst, a.own_iv) else tuple(_prefixes(_subtract(dst, a.loopback_iv), a.family))
            iif = box["iif"]
            names = tuple(sorted({str(sp.decode("iif", v)) for lo, hi in (iif or []) for v in range(lo, hi + 1)}))
            interfaces = () if set(names) >= every_if else names
            rows.append(InputRule(_proto_text(proto), _ports_text(box["dport"]) if has_ports else "-", sources,
                                  addresses, interfaces, RuleRef.of_step(step) if step is not None else None,
                                  tuple(reasons)))
    rows.sort(key=lambda r: (r.accepted_by is not None and r.accepted_by.is_policy, _port_key(r.ports), r.proto))
    return rows


def _src_text(a: _Analysis, src: Sequence[tuple[int, int]]) -> tuple[str, ...]:
    hidden = _merge(a.loopback_iv + a.inside_iv)
    good = _prefixes(_subtract(src, hidden), a.family)
    bad = _prefixes(_subtract(_complement(src, a.bits), hidden), a.family)
    if bad and len(bad) < len(good):
        return ("all but", *bad[:_MAX_LIST])
    return tuple(good[:_MAX_LIST]) + (("...",) if len(good) > _MAX_LIST else ())


def _port_key(text: str) -> tuple[int, str]:
    head = text.split(",")[0].split("-")[0]
    return (int(head), text) if head.isdigit() else (70000, text)


# ------------------------------------------------------------------------------ entry point


def ports(ruleset: Ruleset, host: HostModel | None = None) -> PortsReport:
    """The exposure table of ``ruleset`` on ``host`` (inferred from the dump when None)."""
    from natlint.checks.context import CheckContext
    from natlint.checks.dnat import dnat_inventory

    ctx = CheckContext(ruleset, host)
    report = PortsReport(ruleset.path, ruleset.family)
    proxy, no_iptables = _docker_layout(ruleset)
    report.docker_proxy = proxy
    report.docker_iptables_false = no_iptables
    a = _Analysis(ctx)
    inventory = dnat_inventory(ctx)
    fronts = a.fronts(inventory.entries)
    origins = a.origins()
    sp = a.sp
    wanted = _union(sp, [f.pre for f in fronts])
    outside = next((o for o in origins if o.kind == "outside"), None)
    own = _intervals_set(sp, "dst", a.own_iv) if a.own_iv else sp.none()
    a.run(origins, {id(o): wanted | own if o is outside else wanted for o in origins})
    for front in fronts:
        docker = any(e.rule.chain == "DOCKER" or any("DOCKER" in p for p in e.paths) for e in front.entries)
        reach = tuple(_Judge(a, front, o, docker, bool(proxy)).reach() for o in origins)
        kinds = {e.rule.target.name for e in front.entries if e.rule.target is not None}
        kind: Literal["dnat", "redirect"] = "redirect" if kinds == {"REDIRECT"} else "dnat"
        notes: list[str] = []
        report.services.append(Service(
            _proto_text(list(front.proto)), front.address,
            _ports_text(list(front.dport)) if front.dport is not None else "-",
            tuple(sorted(dict.fromkeys(_destination(e, front) for e in front.entries), key=_endpoint_key)), kind,
            front.scope,
            _addresses(a, front), tuple(RuleRef.of_rule(e.rule) for e in front.entries), reach,
            _label(front.entries), tuple(notes)))
    if outside is not None:
        report.input = _input_rows(a, outside)
    report.notes.extend(_notes(a, ctx, inventory, proxy, no_iptables, origins))
    return report


def _addresses(a: _Analysis, front: _Front) -> tuple[str, ...]:
    """The front end's addresses as prefixes; for every host address, the loopback part as its
    network (127.0.0.0/8 less its broadcast reads worse than what it means)."""
    if front.scope != "host" or front.address not in ("0.0.0.0", "::"):
        return tuple(_prefixes(front.dst, a.family))
    own = _prefixes(_subtract(front.dst, a.loopback_iv), a.family)
    loop = [str(a.loopback_net)] if _intersect(front.dst, a.loopback_iv) else []
    return tuple(loop + own)


def _notes(a: _Analysis, ctx: CheckContext, inventory: Any, proxy: bool | None, no_iptables: bool,
           origins: Sequence[_Origin]) -> Iterator[str]:
    if proxy:
        yield ("Docker's userland proxy is on (nat DOCKER returns bridge traffic / the OUTPUT jump skips"
               " 127.0.0.0/8): a container or the host reaching a published port through a host address"
               " (the host: through 127.0.0.1) is carried by docker-proxy, not by the DNAT; such connections end"
               " on the host and traverse filter INPUT.")
    elif proxy is False:
        yield "Docker's userland proxy is off (hairpin NAT): every path to a published port goes through iptables."
    if no_iptables:
        yield ("Docker seems to run with --iptables=false (rules name Docker bridges or 172.17.0.0/16, but there"
               " is no DOCKER chain), or with the nftables firewall backend: published ports then work only"
               " through docker-proxy, as connections to the host that pass INPUT. natlint cannot see which"
               " ports are published; the INPUT table below is what reaches them.")
    for rule, _paths in inventory.silent:
        yield (f"the {rule.target.name if rule.target else 'NAT'} at line {rule.pos.line} ({rule.chain}) never"
               " applies: earlier nat rules take its packets (natlint check: NL302)")
    for o in origins:
        if o.error:
            yield f"analysis incomplete for {o.kind} {' '.join(o.interfaces)}: {o.error}"
    host = ctx.host
    if host.source == "inferred":
        placeholders = [line for line in host.inferred if "placeholder" in line]
        yield ("the host model is inferred from the rules (natlint host FILE shows it; pass --host FILE or"
               " --host live for the real one)" + (": " + "; ".join(placeholders) if placeholders else ""))
    if not any(o.kind == "outside" for o in origins):
        yield "the host model names no external interface: the 'outside' origin and the INPUT table are left out"


# ------------------------------------------------------------------------------ text


_STYLES = {"yes": "\033[32m", "restricted": "\033[33m", "no": "\033[2m", "unknown": "\033[35m",
           "head": "\033[1m", "dim": "\033[2m"}
_RESET = "\033[0m"


def _table(rows: Sequence[Sequence[str]], styles: Sequence[Sequence[str | None]] | None, color: bool,
           indent: str = "") -> list[str]:
    """Aligned columns (the last one unpadded); ``styles`` per cell (ANSI, only with color)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
    out: list[str] = []
    for n, row in enumerate(rows):
        cells = []
        for i, cell in enumerate(row):
            text = cell if i == len(row) - 1 else cell.ljust(widths[i])
            style = styles[n][i] if styles is not None else None
            if color and style:
                text = f"{style}{text}{_RESET}"
            cells.append(text)
        out.append((indent + "  ".join(cells)).rstrip())
    return out


def _sources_text(sources: Sequence[str]) -> str:
    if not sources:
        return "-"
    if sources[0] == "all but":
        return "all but " + ",".join(sources[1:])
    return ",".join(sources)


def _decided_text(r: Reach) -> str:
    accepted = "; ".join(x.short() for x in r.accepted_by)
    blocked = "; ".join(x.short() for x in r.blocked_by)
    if accepted and blocked:
        return f"{accepted} | stopped: {blocked}"
    return accepted or blocked or ("routing" if r.note and r.note.startswith("dropped by routing") else "-")


def _snat_text(r: Reach) -> str:
    if r.masquerade == "no" or not r.snat_rules:
        return "-"
    rules = ",".join(f"{x.action.split()[0]} {x.line}" for x in r.snat_rules)
    return rules if r.masquerade == "yes" else f"partly: {rules}"


def format_text(report: PortsReport, *, color: bool = False, width: int = 100) -> str:
    """The report as a terminal table (``natlint ports``)."""
    import textwrap

    def head(text: str) -> str:
        return f"{_STYLES['head']}{text}{_RESET}" if color else text

    lines: list[str] = [head(f"natlint ports: {report.path} (IPv{report.family})"), ""]
    if report.services:
        lines.append(head("Published and forwarded services (DNAT/REDIRECT)"))
        rows: list[list[str]] = [["FROM", "REACH", "SOURCES", "VIA", "SNAT", "DECIDED BY"]]
        styles: list[list[str | None]] = [[_STYLES["head"]] * 6]
        owner: list[int] = [-1]
        for n, svc in enumerate(report.services):
            for r in svc.reach:
                status = r.status + ("~" if r.approximate and r.status != "yes" else "")
                status += "*" if r.condition else ""
                rows.append([r.label, status, _sources_text(r.sources) if r.origin != "host" else "-",
                             ",".join(r.via) or "-", _snat_text(r), _decided_text(r)])
                styles.append([None, _STYLES.get(r.status), None, None, None, None])
                owner.append(n)
        table = _table(rows, styles, color, indent="    ")
        lines.append(table[0])
        row = 1
        for n, svc in enumerate(report.services):
            dests = ", ".join(svc.destinations)
            if len(svc.rules) == 1:
                where = f"{svc.rules[0].table}/{svc.rules[0].chain} line {svc.rules[0].line}"
            else:
                where = "nat lines " + ",".join(str(x.line) for x in sorted(svc.rules, key=lambda x: x.line or 0))
            label = f"  {svc.label}" if svc.label else ""
            arrow = "->" if svc.kind == "dnat" else "-> (redirect)"
            lines.append(head(f"{svc.proto} {svc.front} {arrow} {dests}") + f"  [{where}]{label}")
            while row < len(rows) and owner[row] == n:
                lines.append(table[row])
                row += 1
            said: dict[str, list[str]] = {}
            for r in svc.reach:
                for text in (r.condition and f"* {r.condition}", r.note,
                             r.destinations and f"reaches only {', '.join(r.destinations)}"):
                    if text and r.label not in said.setdefault(text, []):
                        said[text].append(r.label)
            seen = [f"{', '.join(who)}: {text}" for text, who in said.items()]
            seen.extend(svc.notes)
            for text in seen:
                lines.extend(textwrap.wrap(text, width, initial_indent="      ", subsequent_indent="        "))
        lines.append("")
    else:
        lines.extend(["No published or forwarded service (no DNAT/REDIRECT rule applies).", ""])
    if report.input:
        lines.append(head("Accepted on INPUT from outside (new connections to the host itself)"))
        rows = [["PROTO", "PORTS", "SOURCES", "TO", "DECIDED BY"]]
        styles = [[_STYLES["head"]] * 5]
        for i in report.input:
            to = ",".join(i.addresses) if i.addresses else "*"
            if i.interfaces:
                to += f" (in {','.join(i.interfaces)})"
            rows.append([i.proto, i.ports, _sources_text(i.sources), to,
                         (i.accepted_by.short() if i.accepted_by is not None else "no filter rule")
                         + (" ~" if i.approximate else "")])
            styles.append([None] * 5)
        lines.extend(_table(rows, styles, color, indent="    "))
        lines.append("")
    legend = ("yes: every connection from that origin is delivered; restricted: only SOURCES are; ~: depends on"
              " matches natlint cannot decide (see --format json); *: see the line below the service")
    if report.services:
        lines.extend(textwrap.wrap(legend, width))
        lines.append("")
    if report.notes:
        lines.append(head("Notes"))
        for note in report.notes:
            lines.extend(textwrap.wrap(note, width, initial_indent="  - ", subsequent_indent="    "))
    return "\n".join(lines).rstrip() + "\n"
