"""NL305-NL308: what published ports (nat DNAT) expose, and what they break.

One classification does the work for every check: the engine runs the arriving packets
addressed to the host itself (every LOCAL address, 127.0.0.0/8 included) on every interface
but ``lo``, state NEW, with its recorded steps; host-originated connections to 127.0.0.0/8 run
through the local path. From the outcomes that a nat DNAT rewrote and that routing then
forwarded out of an interface (the published path), with conntrack's original tuple recorded:

* NL305 hairpin-missing: from a bridge back out of the same bridge with the source unchanged,
  to the sender itself (it sees its own address as source) or, without br_netfilter, to a
  sibling (whose reply is bridged past the host's conntrack); host connections to 127.0.0.1
  DNATed out of an interface with their loopback source.
* NL306 published-port-bypasses-input: from outside (not a bridge, not lo), to a host address
  other than loopback; the same packets before DNAT run through the INPUT hook (mangle,
  filter, security) alone: what INPUT drops or rejects there reaches the container anyway.
* NL307 loopback-publish-exposed: the original destination is in 127.0.0.0/8 and the packet
  came in on an interface other than lo: no raw/mangle ``! -i lo`` guard stops it.
* NL308 pre-dnat-match: a rule of a filter chain that only FORWARD reaches tests dport or
  dst narrowly, matches the published traffic as it was *before* DNAT and none of it as
  filter sees it (after DNAT): it never matches what it was written for.

Approximations are reported, never hidden: a finding whose packets depend on an opaque match
or an approximate NAT has ``certainty="approximate"`` and says why.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from natlint.checks.context import CheckContext
from natlint.checks.dnat import first_packet
from natlint.findings import Code, Finding, Related, register
from natlint.model.ruleset import Rule, Ruleset
from natlint.model.values import PROTOCOL_NAMES, Interface, Prefix, parse_prefix
from natlint.netfilter.engine import Engine, Outcome, Step, _Branch, union_all, union_stream

__all__ = ["check"]

register(Code(
    "NL305", "hairpin-missing", "warning",
    "A container reaching its own (or, without br_netfilter, a sibling's) published port through a"
    " host address is DNATed back onto its bridge but not masqueraded; or the host's connections to"
    " 127.0.0.1 are DNATed to a container with their loopback source address.",
    why="The packet arrives with an address the receiver answers directly: its own address (the"
    " kernel drops it as a martian), a sibling's (the reply is bridged past the host and never"
    " un-NATed: the client gets an answer from an address it did not call), or 127.0.0.1 (the"
    " container answers its own loopback). The connection hangs. Docker without the userland proxy"
    " adds a MASQUERADE per published port (`-s C -d C --dport P`) and one for LOCAL sources.",
    example="*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
    "-A PREROUTING -m addrtype --dst-type LOCAL -p tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80\n"
    "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\nCOMMIT",
    fixed="*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
    "-A PREROUTING -m addrtype --dst-type LOCAL -p tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80\n"
    "-A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp --dport 80 -j MASQUERADE\n"
    "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\nCOMMIT",
))
register(Code(
    "NL306", "published-port-bypasses-input", "warning",
    "A published port (DNAT to a container or another host) is reachable from outside although the"
    " INPUT chain drops or rejects the same packets: DNAT happens before the routing decision, so"
    " the connection is forwarded and never crosses INPUT (\"Docker bypasses UFW\").",
    why="Host firewalls (ufw, firewalld, hand-written INPUT rules) only see traffic for the host"
    " itself. A port that INPUT blocks is still open to the world once it is published; this is how"
    " databases published with `-p 3306:3306` end up on the Internet.",
    example="*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:DOCKER-USER - [0:0]\n"
    "-A FORWARD -j DOCKER-USER\n-A FORWARD -o docker0 -j ACCEPT\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n"
    "-A PREROUTING -m addrtype --dst-type LOCAL -p tcp --dport 3306 -j DNAT --to-destination 172.17.0.3:3306\nCOMMIT",
    fixed="# publish on loopback only (-p 127.0.0.1:3306:3306), or filter the original port:\n"
    "-A DOCKER-USER -i eth0 -p tcp -m conntrack --ctorigdstport 3306 --ctdir ORIGINAL -j DROP",
))
register(Code(
    "NL307", "loopback-publish-exposed", "warning",
    "A DNAT for a 127.0.0.0/8 host address (a port published on 127.0.0.1) also applies to packets"
    " arriving on other interfaces: no raw/mangle PREROUTING `! -i lo` DROP guards it.",
    why="DNAT runs before the routing decision that would drop a packet for 127.0.0.1 arriving from"
    " the network, so a neighbour on the same link (or a container on a bridge) that sends to"
    " 127.0.0.1 through this host's MAC address reaches the \"localhost-only\" service (moby#45610)."
    " Docker 28+ adds the guard; Docker up to 27 does not.",
    example="*nat\n:PREROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n"
    "-A DOCKER -d 127.0.0.1/32 ! -i docker0 -p tcp --dport 3306 -j DNAT --to-destination 172.17.0.3:3306\nCOMMIT",
    fixed="*raw\n:PREROUTING ACCEPT [0:0]\n"
    "-A PREROUTING -d 127.0.0.1/32 ! -i lo -p tcp -m tcp --dport 3306 -j DROP\nCOMMIT",
))
register(Code(
    "NL308", "pre-dnat-match", "warning",
    "A rule in FORWARD (or a chain only FORWARD reaches, like DOCKER-USER) matches a published host"
    " port or host address, but DNAT has already rewritten those packets to the container's address"
    " and port: the rule never matches the traffic it was written for.",
    why="filter FORWARD sees packets after nat PREROUTING: `--dport 8080` for a port published as"
    " 8080:80 sees dport 80, and `-d <host address>` sees the container address. The DROP (or"
    " ACCEPT) silently does nothing for the published port.",
    example="*filter\n:FORWARD DROP [0:0]\n:DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n"
    "-A DOCKER-USER -p tcp --dport 8080 -j DROP\nCOMMIT",
    fixed="*filter\n:FORWARD DROP [0:0]\n:DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n"
    "-A DOCKER-USER -p tcp -m conntrack --ctorigdstport 8080 --ctdir ORIGINAL -j DROP\nCOMMIT",
))

_LOOPBACK = {4: "127.0.0.0/8", 6: "::1/128"}
_TUPLE = ("src", "dst", "sport", "dport")
_MAX_RELATED = 4


# ------------------------------------------------------------------------------ helpers


def _prefixes(sp: Any, name: str, prefixes: Iterable[Prefix]) -> Any:
    found = [sp.prefix(name, p) for p in prefixes]
    return union_all(found) if found else sp.none()


def _iif(sp: Any, name: str | None) -> Any:
    return sp.iface("iif", Interface(name) if name is not None else None)


def _before_nat(sp: Any, packets: Any, fields: Sequence[str] = _TUPLE) -> Any:
    """The packets with these tuple fields put back to their conntrack original values."""
    return sp.copy_fields(packets, [(name, f"orig_{name}") for name in fields])


def _proto_name(number: int) -> str:
    return PROTOCOL_NAMES.get(number, str(number))


def _endpoint(address: object, port: int, proto: int) -> str:
    text = f"[{address}]" if ":" in str(address) else str(address)
    return f"{text}:{port}" if proto in (6, 17, 132, 33, 136) else text


def _witness(packets: Any, *, in_interface: str | None = None, after: Any | None = None,
             prefer: Sequence[Any] = ()) -> dict[str, object] | None:
    """A concrete packet (the original, pre-NAT one) and, when given, how it looks after NAT;
    ``prefer``: subsets to pick from when the set meets them (the most telling example)."""
    pkt = packets.pick()
    if pkt is None:
        return None
    for preferred in prefer:
        better = packets & preferred
        if not better.is_empty():
            packets = better
    pkt = packets.pick()
    found: dict[str, object] = {"src": str(pkt.src), "dst": str(pkt.dst), "proto": pkt.proto, "sport": pkt.sport,
                                "dport": pkt.dport, "in_interface": in_interface or pkt.iif}
    if after is not None:
        sp = packets.space
        same = after
        for name in _TUPLE:
            same = same & sp.value(f"orig_{name}", getattr(pkt, name))
        same = same & sp.value("proto", pkt.proto)
        post = (same if not same.is_empty() else after).pick()
        if post is not None:
            found["after_nat"] = {"src": str(post.src), "dst": str(post.dst), "sport": post.sport,
                                  "dport": post.dport, "out_interface": post.oif}
    return found


@dataclass
class _Published:
    """Forwarded packets that one DNAT rule rewrote (one or more outcomes)."""

    dnat: Rule
    outcomes: list[Outcome] = field(default_factory=list)
    _union: Any = field(default=None, repr=False, compare=False)

    def packets(self) -> Any:
        """The union of the outcomes' packets (made once: every check asks for it)."""
        if self._union is None:
            self._union = union_all([o.packets for o in self.outcomes])
        return self._union

    def reasons(self) -> tuple[str, ...]:
        seen: list[str] = []
        for o in self.outcomes:
            seen.extend(r for r in o.reasons if r not in seen)
        return tuple(seen)


def _read_steps(step: Step) -> bool:
    """The steps this check reads from an outcome: the DNAT that published it, FORWARD's
    verdict (the rule or policy that accepted it) and what routing or a bridge decided.
    Recording only these, the paths through one DNAT rule merge into one outcome (kube-proxy
    reaches each endpoint's DNAT on three paths, all of which then crossed FORWARD and
    POSTROUTING one by one)."""
    if step.hook in ("ROUTING", "BRIDGE"):
        return True
    if step.table == "nat" and step.action.startswith("DNAT"):
        return True
    return step.hook == "FORWARD" and (step.action == "ACCEPT" or step.index == "policy")


class _Analysis:
    def __init__(self, ctx: CheckContext) -> None:
        self.ctx = ctx
        self.ruleset: Ruleset = ctx.ruleset
        self.engine: Engine = ctx.engine
        # the classification records only the steps the findings read (see _read_steps)
        self.classifier = Engine(ctx.ruleset, ctx.host, space=ctx.engine.space, record_steps=_read_steps,
                                 max_branches=ctx.max_branches, like=ctx.engine)
        sp: Any = self.engine.space
        self.sp: Any = sp
        self.host: Any = ctx.host
        self.path = ctx.path
        family = self.ruleset.family
        self.loopback: Any = sp.prefix("dst", parse_prefix(_LOOPBACK[family], family))
        self.orig_loopback: Any = sp.prefix("orig_dst", parse_prefix(_LOOPBACK[family], family))
        self.local_prefixes: list[Prefix] = list(self.host.addresses_of_type("LOCAL"))
        self.bridges = [i.name for i in self.host.bridges()]
        self.rules = {(r.table, r.chain, r.index): r for r in self.ruleset.rules()}

    def outside(self) -> Any:
        """Packets arriving from outside: on the host's named interfaces that are neither
        loopback nor bridges (every other interface when the model names none), minus what
        the configuration trusts (``trusted-interfaces``, sources in ``trusted-networks``)."""
        sp = self.sp
        trusted = set(self.ctx.trusted_interfaces)
        named = [i.name for i in self.host.interfaces if not i.loopback and not i.bridge]
        names = [n for n in named if n not in trusted]
        if names:
            found = union_all([_iif(sp, n) for n in names])
        elif named:  # every outside interface of the model is trusted
            found = sp.none()
        else:
            found = sp.all() - _iif(sp, None) - _iif(sp, "lo")
            for name in [*self.bridges, *(t for t in trusted if t in sp.interfaces)]:
                found = found - _iif(sp, name)
        for network in self.ctx.trusted_networks:
            if network.version == self.ruleset.family:
                found = found - sp.prefix("src", parse_prefix(str(network), network.version))
        return found

    def telling(self) -> list[Any]:
        """Witness preferences: the external address, then any host address but loopback."""
        sp = self.sp
        ext = [a.host for i in self.host.external_interfaces() for a in i.addresses]
        found = [_prefixes(sp, "dst", ext)] if ext else []
        return [*found, sp.all() - self.loopback]

    # ---- the classification ---------------------------------------------------------------
    def published(self, outcomes: Iterable[Outcome], hook: str, *, routing_drops: bool = False
                  ) -> dict[int, _Published]:
        """Forwarded outcomes grouped by the (last) DNAT rule on their way (with
        ``routing_drops``, also what routing drops after the DNAT: a loopback source
        leaving through another interface without route_localnet)."""
        groups: dict[int, _Published] = {}
        for o in outcomes:
            dropped = routing_drops and o.verdict == "DROP" and bool(o.steps) and o.steps[-1].hook == "ROUTING"
            if dropped:
                rule = self._dnat_of(o.steps, hook)
                if rule is not None and not o.packets.is_empty():  # type: ignore[attr-defined]
                    groups.setdefault(id(rule), _Published(rule)).outcomes.append(o)
                continue
            if o.verdict != "ACCEPT" or o.delivered is None or o.delivered.to != "out":
                continue
            if o.delivered.interface == "lo" or o.packets.is_empty():  # type: ignore[attr-defined]
                continue
            rule = self._dnat_of(o.steps, hook)
            if rule is None:
                continue
            groups.setdefault(id(rule), _Published(rule)).outcomes.append(o)
        return groups

    def _dnat_of(self, steps: Sequence[Step], hook: str) -> Rule | None:
        found = None
        for step in steps:
            if (step.hook == hook and step.table == "nat" and step.action.startswith("DNAT")
                    and isinstance(step.index, int)):
                found = self.rules.get(("nat", step.chain, step.index))
        return found

    def arriving(self) -> dict[int, _Published]:
        sp = self.sp
        cls = first_packet(sp) & _prefixes(sp, "dst", self.local_prefixes)
        cls = cls - _iif(sp, None) - _iif(sp, "lo")
        try:
            return self.published(self.classifier.arriving(cls), "PREROUTING")
        finally:
            self.classifier.release(runs=False)  # a shared nat chain's run serves local()

    def local(self) -> dict[int, _Published]:
        sp = self.sp
        family = self.ruleset.family
        # routing gives connections to 127.0.0.0/8 (via 'local 127.0.0.0/8 dev lo src 127.0.0.1')
        # and to ::1 the loopback source; fixed here rather than with choose_source (src = dst
        # over a whole /8 is a BDD of 2**24 nodes: src and dst are apart in the variable order)
        source = parse_prefix("127.0.0.1" if family == 4 else "::1", family)
        cls = first_packet(sp) & _iif(sp, None) & self.loopback & sp.prefix("src", source)
        try:
            return self.published(self.classifier.local(cls), "OUTPUT", routing_drops=True)
        finally:
            self.classifier.release()

    # ---- findings ---------------------------------------------------------------------------
    def finding(self, code: str, message: str, rule: Rule, related: Sequence[Related],
                witness: dict[str, object] | None, reasons: Sequence[str]) -> Finding:
        if reasons:
            message += " Approximate: " + "; ".join(reasons[:3]) + "."
        return Finding(code, "warning", message, rule.pos.path, rule.pos.line, rule.pos.column, rule.table,
                       rule.chain, tuple(related[:_MAX_RELATED]), witness, "approximate" if reasons else "exact",
                       source_line=rule.text)

    def related(self, rule: Rule, why: str) -> Related:
        return Related(rule.pos.path, rule.pos.line, why, rule.pos.column)

    def step_related(self, step: Step, why: str) -> Related | None:
        if step.line is None:
            return None
        return Related(self.path, step.line, f"{why}: {step.rule or step.action}")


def _example(a: _Analysis, post: Any, *, in_interface: str | None = None, prefer: Sequence[Any] | None = None
             ) -> tuple[dict[str, object], dict[str, Any]]:
    """A witness of post-NAT packets: the packet before NAT, and (``after_nat``) after."""
    w = _witness(_before_nat(a.sp, post), in_interface=in_interface, after=post,
                 prefer=a.telling() if prefer is None else prefer)
    assert w is not None
    return w, _after(w)


def _after(w: dict[str, object]) -> dict[str, Any]:
    found = w.get("after_nat")
    return found if isinstance(found, dict) else {}


def _describe_port(pkt: dict[str, object]) -> str:
    proto = int(str(pkt["proto"]))
    return f"{_proto_name(proto)} {_endpoint(pkt['dst'], int(str(pkt['dport'])), proto)}"


# ------------------------------------------------------------------------------ NL305


def _hairpin(a: _Analysis, arriving: dict[int, _Published], local: dict[int, _Published]) -> Iterator[Finding]:
    sp = a.sp
    local_src = _prefixes(sp, "src", a.local_prefixes)
    for pub in arriving.values():
        for bridge in a.bridges:
            on_bridge = [o for o in pub.outcomes if o.delivered is not None and o.delivered.interface == bridge]
            if not on_bridge:
                continue
            packets = union_all([o.packets for o in on_bridge]) & _iif(sp, bridge)
            packets = packets - local_src - sp.value("ct_snat", True)
            if packets.is_empty():
                continue
            own = sp.equate(packets, "dst", "src")
            reasons = tuple(r for o in on_bridge for r in o.reasons)
            if not own.is_empty():
                w, after = _example(a, own, in_interface=bridge, prefer=a.telling())
                msg = (f"a container on {bridge} that connects to its own published port through the host"
                       f" ({_describe_port(w)}) is DNATed back to itself ({after.get('dst')}:{after.get('dport')})"
                       f" without MASQUERADE: it receives the packet with its own address {w['src']} as source and"
                       f" drops it, so the connection hangs. Add the hairpin MASQUERADE"
                       f" (-A POSTROUTING -s {after.get('dst')}/32 -d {after.get('dst')}/32"
                       f" -p {_proto_name(int(str(w['proto'])))}"
                       f" --dport {after.get('dport')} -j MASQUERADE), as Docker does without the userland proxy.")
                yield a.finding("NL305", msg, pub.dnat, [], w, reasons)
                continue
            if getattr(a.host, "br_netfilter", True):
                continue  # with br_netfilter the sibling's bridged reply still meets conntrack
            # only when sender and receiver are both on the bridge's subnet is the reply
            # certainly bridged straight back (a routed target answers through its gateway)
            iface = a.host.interface(bridge)
            subnets = list(iface.subnets) if iface is not None else []
            sibling = (packets - own) & _prefixes(sp, "dst", subnets) & _prefixes(sp, "src", subnets)
            if sibling.is_empty():
                continue
            w, after = _example(a, sibling, in_interface=bridge, prefer=a.telling())
            msg = (f"a container on {bridge} that connects to a sibling's published port through the host"
                   f" ({_describe_port(w)} -> {after.get('dst')}:{after.get('dport')}) is not masqueraded and"
                   f" br_netfilter is off: the sibling's reply is bridged straight back, never un-NATed, and the"
                   f" connection fails. Masquerade bridge-to-bridge hairpin traffic (-A POSTROUTING -s <subnet>"
                   f" -o {bridge} -d <subnet> -j MASQUERADE) or load br_netfilter.")
            yield a.finding("NL305", msg, pub.dnat, [], w, reasons)
    for pub in local.values():
        packets = pub.packets() & _prefixes(sp, "src", [parse_prefix(_LOOPBACK[a.ruleset.family], a.ruleset.family)])
        packets = packets - a.loopback  # DNATed away from loopback, source kept
        if packets.is_empty():
            continue
        w, after = _example(a, packets)
        decision = a.host.route(int(ipaddress.ip_address(str(after.get("dst")))))
        after["out_interface"] = decision.oif or after.get("out_interface")
        msg = (f"the host's own connections to {_describe_port(w)} are DNATed to"
               f" {after.get('dst')}:{after.get('dport')} (out of {after.get('out_interface')}) but keep their"
               f" loopback source {w['src']}: the kernel refuses to route it or the receiver answers its own"
               f" loopback. Masquerade LOCAL sources leaving that way (-A POSTROUTING -o {after.get('out_interface')}"
               f" -m addrtype --src-type LOCAL -j MASQUERADE).")
        yield a.finding("NL305", msg, pub.dnat, [], w, pub.reasons())


# ------------------------------------------------------------------------------ NL306


_MANAGED_PREFIXES = ("DOCKER", "KUBE-", "CNI-", "cali-", "WEAVE", "LIBVIRT")


def _bypass(a: _Analysis, arriving: dict[int, _Published]) -> Iterator[Finding]:
    sp = a.sp
    outside = a.outside()

    def seen(pub: _Published) -> tuple[Any, Any] | None:
        """(the published packets from outside, the same as INPUT would see them)"""
        post = (pub.packets() & outside) - a.orig_loopback
        if post.is_empty():
            return None
        pre = _before_nat(sp, post)
        pre = sp.assign(pre, "oif", None)
        for name, value in (("ct_dnat", False), ("ct_snat", False), ("mark", 0), ("connmark", 0)):
            if name in sp.widths:
                pre = sp.assign(pre, name, value)
        return post, pre

    # the union first, one port after the other (a kube-proxy dump publishes thousands:
    # their copies need not be alive at once), then again for the ports INPUT would stop
    everything: Any = union_stream((found[1] for found in map(seen, arriving.values()) if found is not None),
                                   sp.none())
    if everything.is_empty():
        return
    blocked = _input_verdicts(a.engine, everything)
    del everything
    if not blocked:
        return
    for pub in arriving.values():
        found = seen(pub)
        if found is None:
            continue
        post, pre = found
        for packets, outcome in blocked:
            hit = pre & packets
            if hit.is_empty():
                continue
            decided = outcome.decided_by
            explicit = (decided is not None and isinstance(decided.index, int)
                        and _tests_dport(a, decided))
            managed = pub.dnat.chain.startswith(_MANAGED_PREFIXES)
            if not (explicit or managed):
                continue  # a hand-written port forward the INPUT policy does not concern
            w = _witness(hit, after=post, prefer=a.telling())
            assert w is not None
            after = _after(w)
            how = "rejects" if outcome.verdict == "REJECT" else "drops"
            if decided is None:
                where = "INPUT"
            elif decided.index == "policy":
                where = f"the {decided.chain} policy ({outcome.verdict})"
            else:
                where = f"line {decided.line} ({decided.chain})"
            accepted = _forward_accept(pub)
            port = w["dport"]
            proto = _proto_name(int(str(w["proto"])))
            msg = (f"{_describe_port(w)} from outside ({w['in_interface']}) is published to"
                   f" {after.get('dst')}:{after.get('dport')} by this DNAT and forwarded"
                   f" (out of {after.get('out_interface')}), although INPUT {how} the same packets at {where}:"
                   f" DNAT happens before routing, so this traffic never crosses INPUT and the host firewall does"
                   f" not protect the port. If it should not be public, publish it on 127.0.0.1 only"
                   f" (docker run -p 127.0.0.1:{port}:...) or drop it in DOCKER-USER (FORWARD) by its original"
                   f" port: -A DOCKER-USER -i {w['in_interface']} -p {proto} -m conntrack --ctorigdstport {port}"
                   f" --ctdir ORIGINAL -j DROP.")
            related = [r for r in (a.step_related(decided, "INPUT would stop it here") if decided else None,
                                   a.step_related(accepted, "FORWARD accepts it here") if accepted else None) if r]
            reasons = tuple(dict.fromkeys(pub.reasons() + outcome.reasons))
            yield a.finding("NL306", msg, pub.dnat, related, w, reasons)
            break


def _tests_dport(a: _Analysis, step: Step) -> bool:
    rule = a.rules.get((step.table, step.chain, step.index))  # type: ignore[arg-type]
    if rule is None:
        return False
    return bool(a.sp.tests_field(a.engine.compiled(rule).set, "dport"))  # type: ignore[attr-defined]


def _forward_accept(pub: _Published) -> Step | None:
    for o in pub.outcomes:
        for step in reversed(o.steps):
            if step.hook == "FORWARD" and step.action == "ACCEPT":
                return step
            if step.hook == "FORWARD" and step.index == "policy":
                return step
    return None


def _input_verdicts(engine: Engine, packets: Any) -> list[tuple[Any, Outcome]]:
    """What the INPUT hook (mangle, filter, security; not nat) stops of these packets."""
    stopped: list[tuple[Any, Outcome]] = []
    branches = [_Branch(packets)]
    for table in ("mangle", "filter", "security"):
        if not branches:
            break
        result = engine.run_table(table, "INPUT", branches)
        branches = result.accepted
        for b, verdict in result.stopped:
            if verdict in ("DROP", "REJECT") and not b.packets.is_empty():  # type: ignore[attr-defined]
                stopped.append((b.packets, Outcome(b.packets, verdict, None, b.steps, b.reasons)))
    return stopped


# ------------------------------------------------------------------------------ NL307


def _loopback_exposed(a: _Analysis, arriving: dict[int, _Published]) -> Iterator[Finding]:
    sp = a.sp
    if a.ruleset.family != 4:
        return  # ip6_rcv_core drops ::1 from any other interface before PREROUTING
    public = union_stream((pub.packets() - a.orig_loopback for pub in arriving.values()), sp.none())
    reachable = _service_view(sp, public)
    del public
    for pub in arriving.values():
        post = pub.packets() & a.orig_loopback
        if post.is_empty():
            continue
        # what reaches the same service from the same interface through a public host address
        # anyway (a port published on every address also answers on 127.0.0.1) exposes nothing
        post = post - reachable
        if post.is_empty():
            continue
        w, after = _example(a, post, prefer=[a.outside()])
        proto = _proto_name(int(str(w["proto"])))
        msg = (f"{_describe_port(w)} is published on loopback only, but this DNAT also rewrites packets for"
               f" {w['dst']} arriving on {w['in_interface']}: a neighbour on that link can send to {w['dst']}"
               f" through this host's MAC address and reach {after.get('dst')}:{after.get('dport')}"
               f" (moby#45610). Drop such packets before nat, as Docker 28+ does:"
               f" -t raw -A PREROUTING -d {w['dst']}/32 ! -i lo -p {proto} -m {proto} --dport {w['dport']} -j DROP.")
        yield a.finding("NL307", msg, pub.dnat, [], w, pub.reasons())


def _service_view(sp: Any, packets: Any) -> Any:
    """The packets reduced to (input interface, protocol, post-NAT destination and port)."""
    keep = {"iif", "proto", "dst", "dport"}
    return sp.forget(packets, *[f for f in sp.fields if f not in keep])


# ------------------------------------------------------------------------------ NL308


def _pre_dnat(a: _Analysis, arriving: dict[int, _Published]) -> Iterator[Finding]:
    from natlint.graph.chains import build_graphs

    filter_table = a.ruleset.tables.get("filter")
    if filter_table is None or not arriving:
        return
    sp = a.sp
    hooks = build_graphs(a.ruleset)["filter"].hooks if "filter" in a.ruleset.tables else {}

    def views(pub: _Published) -> tuple[Any, Any]:
        """(the packets as filter FORWARD sees them, the same before DNAT)"""
        post = _before_nat(sp, pub.packets(), ("src", "sport"))  # filter runs before SNAT
        return post, _before_nat(sp, post, ("dst", "dport"))

    # the union first, one port after the other (thousands on a kube-proxy dump: their copies
    # need not be alive at once; putting fields back distributes over the union); a rule
    # that may match is then matched port by port
    all_post = union_stream((_before_nat(sp, pub.packets(), ("src", "sport")) for pub in arriving.values()),
                            sp.none())
    all_pre = _before_nat(sp, all_post, ("dst", "dport"))
    for chain in filter_table:
        if hooks.get(chain.name, frozenset()) != frozenset({"FORWARD"}):
            continue
        for rule in chain.rules:
            compiled: Any = a.engine.compiled(rule)
            match = compiled.set
            if match.is_all() or match.intersects(all_post):
                continue
            fields = [f for f in ("dport", "dst") if sp.tests_field(match, f) and _narrow(match, f)]
            if not fields:
                continue
            if not match.intersects(all_pre):
                continue
            hits = []
            for p in arriving.values():
                post, pre = views(p)
                if match.intersects(pre):
                    hits.append((p, post, match & pre))
            if not hits:
                continue
            pub, post, hit = hits[0]
            w = _witness(hit, after=post, prefer=a.telling())
            assert w is not None
            after = _after(w)
            blamed = [f for f in fields if not _holds(match, f, after.get(f))]
            fields = blamed or fields
            tested = " and ".join("dport " + str(w["dport"]) if f == "dport" else "destination " + str(w["dst"])
                                  for f in fields)
            fix = " ".join([f"-m conntrack --ctorigdst {w['dst']}"] * ("dst" in fields)
                           + [f"--ctorigdstport {w['dport']}"] * ("dport" in fields))
            if not fix.startswith("-m"):
                fix = "-m conntrack " + fix
            fix += " --ctdir ORIGINAL"
            msg = (f"this rule tests {tested}, but filter {rule.chain} runs after DNAT: the published"
                   f" {_describe_port(w)} is already rewritten to {after.get('dst')}:{after.get('dport')}"
                   f" (DNAT at line {pub.dnat.pos.line}), so the rule never matches the traffic it was written for."
                   f" Match the original destination instead: {fix}.")
            related = [a.related(p.dnat, "the DNAT that rewrites it") for p, _, _ in hits]
            reasons = tuple(dict.fromkeys(tuple(compiled.reasons) + pub.reasons()))
            yield a.finding("NL308", msg, rule, related, w, reasons)


def _holds(match: Any, name: str, value: object) -> bool:
    """Whether the rule's test of ``name`` accepts ``value`` (a witness's post-NAT value)."""
    if value is None:
        return False
    sp = match.space
    return bool(not (sp.forget(match, *[f for f in sp.fields if f != name]) & sp.value(name, value)).is_empty())


def _narrow(match: Any, name: str) -> bool:
    """The rule tests ``name`` for a few values (a positive test like --dport 8080 or -d HOST),
    not for 'anything but' (! -d 172.17.0.0/16)."""
    intervals = match.values(name, limit=64)
    if intervals is None:
        return False
    size = sum(hi - lo + 1 for lo, hi in intervals)
    bits = 16 if name == "dport" else (32 if match.space.family == 4 else 128)
    return bool(size <= (1 << (bits - 1)))


# ------------------------------------------------------------------------------ the check


def _has_dnat(ruleset: Ruleset) -> bool:
    nat = ruleset.tables.get("nat")
    return nat is not None and any(r.target is not None and r.target.name == "DNAT" for r in nat.rules())


def check(ctx: CheckContext) -> Iterable[Finding]:
    if not _has_dnat(ctx.ruleset):
        return []
    a = _Analysis(ctx)
    arriving = a.arriving()
    local = a.local()
    findings: list[Finding] = []
    findings.extend(_hairpin(a, arriving, local))
    findings.extend(_bypass(a, arriving))
    findings.extend(_loopback_exposed(a, arriving))
    findings.extend(_pre_dnat(a, arriving))
    return findings
