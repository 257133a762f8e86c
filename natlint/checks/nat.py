"""NL301-NL304, NL309: port forwards and source NAT that do not do what they say.

How each code is found (the engine and the nat walk of :mod:`natlint.checks.dnat`):

* NL301: every new connection arriving from the network (and every one the host opens) is
  classified once by the whole netfilter pipeline (an :class:`Engine` without step
  recording). A DNAT's rewritten packets keep their input interface, protocol, conntrack
  original tuple and new destination until they leave the host, so the DNAT's share of the
  outcomes is the outcomes' intersection with that key. A DNAT none of whose packets is
  delivered (and some dropped or rejected) is reported; a witness packet is traced with
  steps to name the rule or policy that drops it. A part that is delivered makes the drop
  of the rest a policy decision: not reported.
* NL302: a DNAT/REDIRECT the nat walk never fires although packets match its tests and the
  jumps to its chain: earlier nat rules took them all.
* NL303: connections from each private subnet of an internal interface (bridges included)
  to public addresses that leave through an external interface with their private source.
* NL304: a SNAT/MASQUERADE rule of nat POSTROUTING the walk never fires although packets
  match it (warning), or part of whose traffic a broader ACCEPT or NAT rule takes first (info).
* NL309: a DNAT target address on no network of the host model (only reachable through the
  default route) when the model was given (``--host``/live); with an inferred model only
  addresses no host can have (0.0.0.0/8, multicast, broadcast).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from natlint.checks.context import CheckContext
from natlint.checks.dnat import (
    DnatEntry,
    DnatInventory,
    NatWalk,
    dnat_inventory,
    full_walk,
    key_fields_of,
    postrouting_start,
    potential,
    takers,
    walk_nat,
)
from natlint.findings import Code, Finding, Related, Severity, register
from natlint.host.model import HostModel, cidr, format_ip
from natlint.model.ruleset import Rule
from natlint.model.values import Interface, Prefix
from natlint.netfilter.engine import Engine, Outcome, Step, union_all
from natlint.netfilter.trace import TraceQuery, query_set
from natlint.packets.space import Packet, PacketSet, PacketSpace

__all__ = ["check", "PRIVATE_V4", "PRIVATE_V6"]

register(Code(
    "NL301", "port-forward-unreachable", "warning",
    "A DNAT/REDIRECT (port forward) none of whose connections is ever delivered: every packet it"
    " rewrites is dropped later (filter FORWARD or INPUT, DOCKER-USER, a policy DROP) or has no route.",
    why="The forward looks configured, yet no connection through it ever works. filter chains see the"
    " packet after DNAT: a FORWARD rule that tests the published port (8080) instead of the target's"
    " port (80) or address never matches, and the FORWARD policy drops the connection.",
    example="*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -i eth0 -p tcp --dport 8080 -j DNAT"
    " --to-destination 172.17.0.2:80\nCOMMIT\n*filter\n:FORWARD DROP [0:0]\n"
    "-A FORWARD -i eth0 -p tcp --dport 8080 -j ACCEPT\nCOMMIT",
    fixed="*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -i eth0 -p tcp --dport 8080 -j DNAT"
    " --to-destination 172.17.0.2:80\nCOMMIT\n*filter\n:FORWARD DROP [0:0]\n"
    "-A FORWARD -d 172.17.0.2/32 -i eth0 -p tcp --dport 80 -j ACCEPT\nCOMMIT",
))
register(Code(
    "NL302", "port-forward-shadowed", "warning",
    "A DNAT/REDIRECT that never applies: an earlier nat rule (another DNAT, a RETURN, an ACCEPT)"
    " takes every connection it would rewrite, e.g. two containers publishing the same host port.",
    why="nat sees only a connection's first packet and stops at the first NAT target or ACCEPT:"
    " the later forward is dead and its connections go where the earlier rule sends them.",
    example="*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp --dport 8080 -j DNAT --to-destination"
    " 172.17.0.2:80\n-A PREROUTING -i eth0 -p tcp --dport 8080 -j DNAT --to-destination 172.17.0.3:80\nCOMMIT",
    fixed="*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp --dport 8080 -j DNAT --to-destination"
    " 172.17.0.2:80\n-A PREROUTING -i eth0 -p tcp --dport 8081 -j DNAT --to-destination 172.17.0.3:80\nCOMMIT",
))
register(Code(
    "NL303", "missing-masquerade", "warning",
    "Connections from a private or container subnet leave through the external interface with"
    " their private source address: no SNAT/MASQUERADE rewrites it.",
    why="Replies to a private (RFC 1918, ULA, container) address cannot come back from the"
    " Internet: the connection hangs. Usually the MASQUERADE rule is missing, names the wrong"
    " interface or subnet, or was lost when a firewall tool reloaded the nat table.",
    example="*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n*filter\n:FORWARD DROP [0:0]\n"
    "-A FORWARD -i br0 -o eth0 -j ACCEPT\nCOMMIT",
    fixed="*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 192.168.10.0/24 -o eth0 -j MASQUERADE\n"
    "COMMIT\n*filter\n:FORWARD DROP [0:0]\n-A FORWARD -i br0 -o eth0 -j ACCEPT\nCOMMIT",
))
register(Code(
    "NL304", "masquerade-shadowed", "warning",
    "A MASQUERADE/SNAT rule that an earlier nat POSTROUTING rule (an ACCEPT, a RETURN, another"
    " SNAT) keeps from applying to all (warning) or part (info) of its traffic.",
    why="nat stops at the first ACCEPT or NAT target: the connections taken earlier leave with"
    " another source address (or their private one) than this rule says.",
    example="*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o eth0 -j ACCEPT\n"
    "-A POSTROUTING -s 192.168.10.0/24 -o eth0 -j MASQUERADE\nCOMMIT",
    fixed="*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 192.168.10.0/24 -o eth0 -j MASQUERADE\n"
    "-A POSTROUTING -o eth0 -j ACCEPT\nCOMMIT",
))
register(Code(
    "NL309", "dnat-target-unknown", "warning",
    "A DNAT to an address on no network of the host model: no interface subnet and no route but"
    " the default one holds it (or no host can have it: 0.0.0.0/8, multicast, broadcast).",
    why="A mistyped container or server address sends the forwarded connections to the default"
    " gateway, where they die or reach the wrong host.",
    example="# host: eth0 203.0.113.5/24, docker0 172.17.0.1/16\n*nat\n:PREROUTING ACCEPT [0:0]\n"
    "-A PREROUTING -p tcp --dport 8080 -j DNAT --to-destination 172.71.0.2:80\nCOMMIT",
    fixed="*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp --dport 8080 -j DNAT"
    " --to-destination 172.17.0.2:80\nCOMMIT",
))

PRIVATE_V4: tuple[Prefix, ...] = (
    cidr(4, 0x0A000000, 8), cidr(4, 0xAC100000, 12), cidr(4, 0xC0A80000, 16), cidr(4, 0x64400000, 10),
)
PRIVATE_V6: tuple[Prefix, ...] = (cidr(6, 0xFC << 120, 7),)
# Destinations that are not "the Internet": private, loopback, link-local, multicast, reserved.
_NOT_PUBLIC_V4: tuple[Prefix, ...] = PRIVATE_V4 + (
    cidr(4, 0, 8), cidr(4, 0x7F000000, 8), cidr(4, 0xA9FE0000, 16), cidr(4, 0xE0000000, 4), cidr(4, 0xF0000000, 4),
)
_PUBLIC_V6 = cidr(6, 0x2 << 124, 3)  # 2000::/3, global unicast
_DEAD = frozenset({"DROP", "REJECT"})
_PORT_PROTOCOLS = frozenset({6, 17, 33, 132, 136})
_PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp", 132: "sctp", 33: "dccp", 136: "udplite"}


def check(ctx: CheckContext) -> Iterator[Finding]:
    if "nat" not in ctx.ruleset.tables and "filter" not in ctx.ruleset.tables:
        return
    inventory = dnat_inventory(ctx)
    if inventory.entries:
        yield from _unreachable(ctx, inventory)
    yield from _shadowed_dnat(ctx, inventory)
    yield from _masquerade_shadowed(ctx)
    yield from _missing_masquerade(ctx)
    yield from _target_unknown(ctx, inventory)


# ---------------------------------------------------------------- helpers


def _space(ctx: CheckContext) -> PacketSpace:
    return ctx.engine.space  # type: ignore[return-value]


def _arriving_query(ctx: CheckContext, engine: Engine) -> PacketSet:
    sp = _space(ctx)
    s: PacketSet = query_set(engine, TraceQuery())  # type: ignore[assignment]
    return s - sp.iface("iif", Interface("lo"))


def _proto(number: int) -> str:
    return _PROTO_NAMES.get(number, str(number))


def _endpoint(address: object, port: int | None, proto: int) -> str:
    text = str(address)
    if ":" in text:
        text = f"[{text}]"
    return f"{text}:{port}" if port is not None and proto in _PORT_PROTOCOLS else text


def _sent(p: Packet) -> dict[str, object]:
    """The packet as it was sent (the conntrack original tuple), for a witness."""
    ports = p.proto in _PORT_PROTOCOLS
    return {
        "in": p.iif, "src": str(p.orig_src), "dst": str(p.orig_dst), "proto": p.proto,
        "sport": p.orig_sport if ports else None, "dport": p.orig_dport if ports else None,
    }


def _where(step: Step) -> str:
    if step.index == "policy":
        return f"the {step.table} {step.chain} policy ({step.action.replace('policy ', '')})"
    if step.hook == "ROUTING":
        return f"routing ({step.action})"
    return f"{step.table}/{step.chain} rule {step.index} (line {step.line})"


def _related(ctx: CheckContext, step: Step, message: str) -> Related | None:
    if step.line is None:
        return None
    return Related(ctx.path, step.line, message)


def _finding(code: str, severity: Severity, message: str, rule: Rule, *, related: tuple[Related, ...] = (),
             witness: dict[str, object] | None = None, approximate: bool = False) -> Finding:
    return Finding(code, severity, message, rule.pos.path, rule.pos.line, rule.pos.column, rule.table, rule.chain,
                   related, witness, "approximate" if approximate else "exact", source_line=rule.text)


def _approx_note(reasons: tuple[str, ...] | list[str]) -> str:
    if not reasons:
        return ""
    shown = "; ".join(list(reasons)[:2])
    return f" (approximate: this depends on what natlint cannot decide: {shown})"


# ---------------------------------------------------------------- NL301


@dataclass
class _Fates:
    delivered: PacketSet
    dead: PacketSet
    unknown: PacketSet
    dead_reasons: list[tuple[PacketSet, tuple[str, ...]]]


def _fates(sp: PacketSpace, outcomes: list[Outcome]) -> _Fates:
    """The outcomes' packets by fate, reduced to the fields of DnatEntry.key: what NL301 tests
    them with (the rest, e.g. a kube-proxy hairpin mark tied to each endpoint's source, would
    make each union several times bigger)."""
    delivered, dead, unknown = sp.none(), sp.none(), sp.none()
    reasons: list[tuple[PacketSet, tuple[str, ...]]] = []
    for o in outcomes:
        packets = key_fields_of(sp, o.packets)  # type: ignore[arg-type]
        if o.verdict == "ACCEPT":
            delivered = delivered | packets
        elif o.verdict in _DEAD:
            dead = dead | packets
            if o.reasons:
                reasons.append((packets, o.reasons))
        else:
            unknown = unknown | packets
    return _Fates(delivered, dead, unknown, reasons)


def _unreachable(ctx: CheckContext, inventory: DnatInventory) -> Iterator[Finding]:
    sp = _space(ctx)
    plain = ctx.stepless_engine()
    fates: dict[str, _Fates] = {}
    # Only what some DNAT rewrites is classified (all traffic at once costs far more). The
    # inventory's fires have the marks nat rules set on the way (KUBE-MARK-MASQ) forgotten:
    # the engine starts from unmarked packets and sets them itself.
    fired = {hook: union_all([e.fires[hook] for e in inventory if hook in e.fires] or [sp.none()])  # type: ignore[misc]
             for hook in ("PREROUTING", "OUTPUT")}
    if not fired["PREROUTING"].is_empty():  # type: ignore[attr-defined]
        start = _arriving_query(ctx, plain) & fired["PREROUTING"]  # type: ignore[operator]
        fates["PREROUTING"] = _fates(sp, plain.arriving(start))
        plain.release(runs=False)  # the run of nat KUBE-SERVICES serves OUTPUT below
    if not fired["OUTPUT"].is_empty():  # type: ignore[attr-defined]
        local: PacketSet = query_set(plain, TraceQuery(local=True))  # type: ignore[assignment]
        # choose_source=True on many destinations at once is exponential (src := dst): leave
        # the source free; the witness trace below chooses it.
        fates["OUTPUT"] = _fates(sp, plain.local(local & fired["OUTPUT"]))  # type: ignore[operator]
    plain.release()  # the runs kept for other interfaces and hooks (nat KUBE-SERVICES) are done
    # the fates test only key fields: an entry's probe meets them when its key does, unless
    # they test opaque predicates (DnatEntry.probe)
    plain_fates = {hook: all(s.may() == s for s in (f.unknown, f.delivered, f.dead)) for hook, f in fates.items()}
    for entry in inventory:
        dead_parts: list[tuple[str, PacketSet]] = []
        delivered_parts: list[str] = []
        for hook in entry.key:
            f = fates.get(hook)
            if f is None:
                continue
            probe = entry.probe(hook) if plain_fates[hook] else entry.key[hook]
            if probe.intersects(f.unknown):
                delivered_parts.append(hook)  # natlint cannot tell: treat as working
            elif probe.intersects(f.delivered):
                delivered_parts.append(hook)
            elif probe.intersects(f.dead):
                dead_parts.append((hook, entry.key[hook] & f.dead))
        if not dead_parts:
            continue
        finding = _explain_unreachable(ctx, entry, dead_parts, delivered_parts, fates)
        if finding is not None:
            yield finding


def _readable(ctx: CheckContext, packets: PacketSet, name: str = "dst") -> PacketSet:
    """Prefer a witness sent to one of the host's own (non-loopback) addresses, else to any
    address but loopback (the kernel drops 127/8 arriving on another interface than lo as a
    martian, and a person expects the host's address)."""
    sp = _space(ctx)
    external, own = sp.none(), sp.none()
    for iface in ctx.host.interfaces:
        if not iface.loopback:
            for a in iface.addresses:
                own = own | sp.value(name, a.address)
                if iface.external:
                    external = external | sp.value(name, a.address)
    for preferred in (packets & external, packets & own, packets - sp.prefix(name, _loopback(ctx.host.family))):
        if not preferred.is_empty():
            return preferred
    return packets


def _loopback(family: int) -> Prefix:
    return cidr(4, 0x7F000000, 8) if family == 4 else Prefix.host(6, 1)


def _witness_set(ctx: CheckContext, hook: str, dead: PacketSet) -> tuple[PacketSet, Packet] | None:
    sp = _space(ctx)
    dead = _readable(ctx, dead, "orig_dst")
    p = dead.pick()
    if p is None:
        return None
    engine = ctx.engine
    if hook == "OUTPUT":
        base: PacketSet = query_set(engine, TraceQuery(local=True))  # type: ignore[assignment]
    else:
        base = _arriving_query(ctx, engine)
        others = [f for f in sp.fields if f != "iif"]  # type: ignore[attr-defined]
        base = base & sp.forget(dead, *others)
        if p.iif is not None:
            with contextlib.suppress(ValueError):  # a class of interfaces: keep the set of them
                base = base & sp.iface("iif", Interface(p.iif))
    s = base & sp.value("proto", p.proto)
    if hook != "OUTPUT":
        s = s & sp.value("src", p.orig_src)
    s = s & sp.value("dst", p.orig_dst)
    if p.proto in _PORT_PROTOCOLS:
        s = s & sp.value("sport", p.orig_sport or 0) & sp.value("dport", p.orig_dport or 0)
    if p.proto == 6:
        s = s & sp.value("tcp_flags", 0x02)
    return (s, p) if not s.is_empty() else None


def _explain_unreachable(ctx: CheckContext, entry: DnatEntry, dead_parts: list[tuple[str, PacketSet]],
                         delivered_parts: list[str], fates: dict[str, _Fates]) -> Finding | None:
    rule = entry.rule
    hook, dead = dead_parts[0]
    found = _witness_set(ctx, hook, dead)
    if found is None:
        return None
    packets, picked = found
    outcomes = ctx.engine.local(packets, choose_source=True) if hook == "OUTPUT" else ctx.engine.arriving(packets)
    mine = [o for o in outcomes if any(s.table == "nat" and s.line == rule.pos.line for s in o.steps)
            and not o.packets.is_empty()]  # type: ignore[attr-defined]
    if not mine or any(o.verdict not in _DEAD for o in mine):
        return None  # the traced witness does not confirm the claim: say nothing
    outcome = mine[0]
    decided = outcome.decided_by
    if decided is None or decided.table == "nat":
        return None  # the NAT itself failed (an interface without address in the model): no claim
    after = outcome.packets.pick()  # type: ignore[attr-defined]
    reasons = list(entry.reasons)
    for o in mine:
        reasons.extend(r for r in o.reasons if r not in reasons)
    for part, why in fates[hook].dead_reasons:
        if part.intersects(dead):
            reasons.extend(r for r in why if r not in reasons)
    sent = _sent(after) if after is not None else {}
    if hook == "OUTPUT" and after is not None:
        sent["in"] = None
    to = _endpoint(after.dst, after.dport, after.proto) if after is not None else "?"
    orig = f"{_proto(picked.proto)} {_endpoint(picked.orig_src, picked.orig_sport, picked.proto)} ->" \
           f" {_endpoint(picked.orig_dst, picked.orig_dport, picked.proto)}"
    where_from = f" arriving on {picked.iif}" if hook != "OUTPUT" and picked.iif else \
        " opened by the host itself" if hook == "OUTPUT" else ""
    parts = {"PREROUTING": "arriving from the network", "OUTPUT": "opened by the host itself"}
    scope = " and ".join(parts[h] for h, _ in dead_parts)
    if delivered_parts:
        working = " and ".join(parts[h] for h in delivered_parts)
        scope_text = f"every connection {scope} that it rewrites dies (connections {working} do get through)"
        # a forward that works for no client from the network is broken; one that only
        # fails for the host's own connections is worth knowing
        severity: Severity = "warning" if any(h == "PREROUTING" for h, _ in dead_parts) else "info"
    else:
        scope_text = f"no connection it rewrites is ever delivered: every one {scope} dies"
        severity = "warning"
    fix = _fix_hint(decided, to, after) + (" If blocking it is intended, do not forward (publish) the port at all,"
                                          " or bind it to 127.0.0.1.")
    message = (
        f"port forward {entry.target_text} never works: {scope_text}. e.g. {orig}{where_from} becomes -> {to}"
        f" and is dropped by {_where(decided)}. {fix}{_approx_note(reasons)}"
    )
    related: list[Related] = []
    rel = _related(ctx, decided, f"drops the connections the DNAT at line {rule.pos.line} rewrites")
    if rel is not None:
        related.append(rel)
    witness: dict[str, object] = dict(sent)
    witness.update({
        "after_nat": {"dst": str(after.dst), "dport": after.dport} if after is not None else None,
        "verdict": outcome.verdict,
        "dropped_by": decided.to_dict(),
        "hook": hook,
    })
    return _finding("NL301", severity, message, rule, related=tuple(related), witness=witness,
                    approximate=bool(reasons))


def _fix_hint(step: Step, to: str, after: Packet | None) -> str:
    if step.hook == "ROUTING":
        return "Give the host a route to the target, or fix the target address."
    if step.table == "raw":
        return "The raw table drops it before NAT: remove or narrow that rule, or change the forward."
    if step.hook == "INPUT":
        return f"The target is this host: accept {to} in filter INPUT (INPUT sees the rewritten port)."
    if step.hook == "FORWARD":
        dst = after.dst if after is not None else "the target"
        return (f"filter sees the rewritten packet: accept it there by its new destination ({to}), e.g."
                f" '-A FORWARD -d {dst} ... --dport {after.dport if after is not None else 'PORT'} -j ACCEPT', or match"
                " the original port with '-m conntrack --ctorigdstport'.")
    return "Accept the rewritten connection where it is dropped, or remove the forward."


# ---------------------------------------------------------------- NL302


def _shadowed_dnat(ctx: CheckContext, inventory: DnatInventory) -> Iterator[Finding]:
    for rule, _paths in inventory.silent:
        for hook in ("PREROUTING", "OUTPUT"):
            walk = full_walk(ctx, inventory, hook)
            if walk is None:
                continue
            finding = _never_fires(ctx, walk, rule, "NL302", "warning")
            if finding is not None:
                yield finding
                break


def _taken_message(taker: Rule) -> str:
    target = taker.target.name if taker.target is not None else "?"
    if target == "RETURN":
        return "returns them first"
    if target == "ACCEPT":
        return "accepts them first (no NAT)"
    return f"{target}s them first"


def _never_fires(ctx: CheckContext, walk: NatWalk, rule: Rule, code: str, severity: Severity) -> Finding | None:
    pot = potential(ctx, walk, rule)
    if pot.is_empty():
        return None
    taken = takers(walk, rule, pot)
    if not taken or all(_same_translation(t, rule) for t, _ in taken):
        return None  # a duplicate of an earlier rule: dead but harmless (NL201 reports it)
    sample = _readable(ctx, pot).pick()
    first = taken[0][0]
    if sample is not None:
        for t, part in taken:
            if sample in part:
                first = t
                break
    what = "port forward" if code == "NL302" else "source NAT"
    related = tuple(Related(t.pos.path, t.pos.line, f"{_taken_message(t)} ({t.chain} rule {t.index})")
                    for t, _ in taken[:5])
    example = ""
    witness: dict[str, object] | None = None
    if sample is not None:
        ports = sample.proto in _PORT_PROTOCOLS
        example = (f" e.g. {_proto(sample.proto)} {_endpoint(sample.src, sample.sport, sample.proto)} ->"
                   f" {_endpoint(sample.dst, sample.dport, sample.proto)}"
                   + (f" in {sample.iif}" if sample.iif and walk.hook == "PREROUTING" else "")
                   + (f" out {sample.oif}" if sample.oif and walk.hook == "POSTROUTING" else "")
                   + f" is taken by line {first.pos.line} ({first.text.strip()}).")
        witness = {"in": sample.iif, "out": sample.oif, "src": str(sample.src), "dst": str(sample.dst),
                   "proto": sample.proto, "sport": sample.sport if ports else None,
                   "dport": sample.dport if ports else None, "taken_by": first.pos.line, "hook": walk.hook}
    lines = ", ".join(str(t.pos.line) for t, _ in taken[:5])
    message = (
        f"this {what} never applies: every connection it matches is taken earlier in nat {walk.hook} by"
        f" line(s) {lines}.{example} Move it above the rule that takes its packets, narrow that rule,"
        " or delete the dead one."
    )
    reasons = [r for t, _ in taken for r in walk.approximate.get(id(t), ())]
    return _finding(code, severity, message + _approx_note(reasons), rule, related=related, witness=witness,
                    approximate=False)


# ---------------------------------------------------------------- NL304


def _masquerade_shadowed(ctx: CheckContext) -> Iterator[Finding]:
    table = ctx.ruleset.tables.get("nat")
    if table is None or "POSTROUTING" not in table.chains:
        return
    if not any(r.target is not None and r.target.name in ("SNAT", "MASQUERADE") for r in table.rules()):
        return
    walk = walk_nat(ctx, "POSTROUTING", postrouting_start(ctx))
    if walk is None:
        return
    from natlint.checks.dnat import chain_paths

    reached = chain_paths(table, ("POSTROUTING",))
    for chain in table:
        if chain.name not in reached:
            continue
        for rule in chain.rules:
            if rule.target is None or rule.target.name not in ("SNAT", "MASQUERADE"):
                continue
            fired = walk.fired(rule)
            if fired is None or fired.is_empty():
                finding = _never_fires(ctx, walk, rule, "NL304", "warning")
                if finding is not None:
                    yield finding
                continue
            partial = _partial(ctx, walk, rule)
            if partial is not None:
                yield partial


def _same_translation(a: Rule, b: Rule) -> bool:
    ta, tb = a.target, b.target
    if ta is None or tb is None or ta.name != tb.name:
        return False
    if ta.name == "MASQUERADE":
        return True  # the outgoing interface's address either way

    def to(t: object) -> object:
        opt = t.option("to_source") or t.option("to_destination") or t.option("to_ports")  # type: ignore[attr-defined]
        opt = opt or t.option("to")  # type: ignore[attr-defined]
        return opt.values if opt is not None else None
    return to(ta) == to(tb)


def _partial(ctx: CheckContext, walk: NatWalk, rule: Rule) -> Finding | None:
    pot = potential(ctx, walk, rule)
    match: PacketSet = ctx.engine.compiled(rule).set  # type: ignore[attr-defined]
    broad: list[tuple[Rule, PacketSet]] = []
    for t, part in takers(walk, rule, pot):
        if t.target is None or t.target.name not in ("ACCEPT", "SNAT", "MASQUERADE", "NETMAP"):
            continue  # RETURN is how exceptions are written
        took = walk.took.get(id(t))
        if took is None or took <= match:
            continue  # a narrower rule first: an exception, on purpose
        if _same_translation(t, rule):
            continue  # the connections get the same source either way
        broad.append((t, part))
    if not broad:
        return None
    t, part = broad[0]
    sample = part.pick()
    example = ""
    witness: dict[str, object] | None = None
    if sample is not None:
        example = (f" e.g. {_proto(sample.proto)} {_endpoint(sample.src, sample.sport, sample.proto)} ->"
                   f" {_endpoint(sample.dst, sample.dport, sample.proto)} out {sample.oif}")
        witness = {"in": sample.iif, "out": sample.oif, "src": str(sample.src), "dst": str(sample.dst),
                   "proto": sample.proto, "sport": sample.sport, "dport": sample.dport, "taken_by": t.pos.line,
                   "hook": "POSTROUTING"}
    verb = _taken_message(t)
    message = (
        f"part of this rule's traffic never gets its source rewritten here: line {t.pos.line}"
        f" ({t.text.strip()}) {verb}.{example} If that is not intended, move this rule above it or narrow it."
    )
    related = tuple(Related(r.pos.path, r.pos.line, _taken_message(r)) for r, _ in broad[:5])
    return _finding("NL304", "info", message, rule, related=related, witness=witness)


# ---------------------------------------------------------------- NL303


def _private(version: int) -> tuple[Prefix, ...]:
    return PRIVATE_V4 if version == 4 else PRIVATE_V6


def _is_private(p: Prefix) -> bool:
    return any(r.contains(p.address) and (p.mask & r.mask) == r.mask for r in _private(p.version))


def _public(sp: PacketSpace, host: HostModel) -> PacketSet:
    if host.family == 4:
        s = sp.all()
        for p in _NOT_PUBLIC_V4:
            s = s - sp.prefix("dst", p)
        s = s - sp.value("dst", 0xFFFFFFFF)
    else:
        s = sp.prefix("dst", _PUBLIC_V6)
    for iface in host.interfaces:
        for a in iface.addresses:
            s = s - sp.prefix("dst", a.prefix)
    return s


def _missing_masquerade(ctx: CheckContext) -> Iterator[Finding]:
    host = ctx.host
    externals = {i.name for i in host.external_interfaces()}
    if not externals or ("filter" not in ctx.ruleset.tables and "nat" not in ctx.ruleset.tables):
        return
    sp = _space(ctx)
    plain = ctx.stepless_engine()
    base = _arriving_query(ctx, plain)
    public = _public(sp, host)
    sources: list[tuple[str, Prefix]] = []
    named = _named_sources(ctx) if host.source == "inferred" else None
    for iface in host.interfaces:
        if iface.loopback or iface.name in externals or iface.name not in sp.interfaces:
            continue
        for a in iface.addresses:
            if not _is_private(a.prefix) or (iface.name, a.prefix) in sources:
                continue
            # an inferred subnet that no rule names (a guess) is not enough to claim a leak
            if named is not None and not any(_overlap(a.prefix, p) for p in named):
                continue
            sources.append((iface.name, a.prefix))
    for name, subnet in sources:
        start = base & sp.iface("iif", Interface(name)) & sp.prefix("src", subnet) & public
        start = start - _host_addresses(sp, host)
        if start.is_empty():
            continue
        leak = sp.none()
        for o in plain.arriving(start):
            if o.verdict == "ACCEPT" and o.delivered is not None and o.delivered.to == "out" \
                    and o.delivered.interface in externals:
                leak = leak | (o.packets & sp.prefix("src", subnet))  # type: ignore[operator]
        plain.release()
        if leak.is_empty():
            continue
        finding = _explain_leak(ctx, name, subnet, leak)
        if finding is not None:
            yield finding


def _named_sources(ctx: CheckContext) -> list[Prefix]:
    """The prefixes rules test as a source (``-s``, negated or not), shorter than a host."""
    found: list[Prefix] = []
    bits = 32 if ctx.ruleset.family == 4 else 128
    for rule in ctx.ruleset.rules():
        opt = rule.source
        if opt is not None and isinstance(opt.value, Prefix) and (opt.value.prefix_length or bits) < bits:
            found.append(opt.value)
    return found


def _overlap(a: Prefix, b: Prefix) -> bool:
    return a.contains(b.address) or b.contains(a.address)


def _host_addresses(sp: PacketSpace, host: HostModel) -> PacketSet:
    s = sp.none()
    for iface in host.interfaces:
        for a in iface.addresses:
            s = s | sp.value("src", a.address)
    return s


def _explain_leak(ctx: CheckContext, iface: str, subnet: Prefix, leak: PacketSet) -> Finding | None:
    sp = _space(ctx)
    p = leak.pick()
    if p is None:
        return None
    base = _arriving_query(ctx, ctx.engine) & sp.iface("iif", Interface(iface))
    s = base & sp.value("src", p.orig_src) & sp.value("dst", p.orig_dst) & sp.value("proto", p.proto)
    if p.proto in _PORT_PROTOCOLS:
        s = s & sp.value("sport", p.orig_sport or 0) & sp.value("dport", p.orig_dport or 0)
    if p.proto == 6:
        s = s & sp.value("tcp_flags", 0x02)
    outcomes = [o for o in ctx.engine.arriving(s) if o.verdict == "ACCEPT" and o.delivered is not None
                and o.delivered.interface == p.oif]
    if not outcomes:
        return None
    outcome = outcomes[0]
    forward = [st for st in outcome.steps if st.hook == "FORWARD" and st.action != "continue"
               and not st.action.startswith(("jump", "goto"))]
    decided = forward[-1] if forward else outcome.decided_by
    table = ctx.ruleset.tables.get("filter") or ctx.ruleset.tables.get("nat")
    line = decided.line if decided is not None and decided.line is not None else (
        table.pos.line if table is not None and table.pos is not None else 1)
    after = outcome.packets.pick()  # type: ignore[attr-defined]
    src = after.src if after is not None else p.src
    related: list[Related] = []
    nat = ctx.ruleset.tables.get("nat")
    post = nat.chains.get("POSTROUTING") if nat is not None else None
    if post is not None and post.pos is not None:
        related.append(Related(ctx.path, post.pos.line, "no MASQUERADE/SNAT here applies to these connections"))
    accepted = f" accepted by {_where(decided)}" if decided is not None else ""
    message = (
        f"connections from {subnet} (on {iface}) leave through {p.oif} with their private source address: e.g."
        f" {_proto(p.proto)} {_endpoint(p.orig_src, p.orig_sport, p.proto)} ->"
        f" {_endpoint(p.orig_dst, p.orig_dport, p.proto)} is forwarded{accepted} and leaves as source {src}, which"
        f" no reply from the Internet can reach. Add '-t nat -A POSTROUTING -s {subnet} -o {p.oif} -j MASQUERADE'"
        " (or SNAT to the external address), or check that the existing one names the right subnet and"
        f" interface.{_approx_note(outcome.reasons)}"
    )
    witness: dict[str, object] = {
        "in": iface, "out": p.oif, "src": str(p.orig_src), "dst": str(p.orig_dst), "proto": p.proto,
        "sport": p.orig_sport if p.proto in _PORT_PROTOCOLS else None,
        "dport": p.orig_dport if p.proto in _PORT_PROTOCOLS else None, "source_seen": str(src),
    }
    table_name = decided.table if decided is not None and decided.line is not None else None
    chain_name = decided.chain if decided is not None and decided.line is not None else None
    return Finding("NL303", "warning", message, ctx.path, line, 1, table_name, chain_name, tuple(related), witness,
                   "approximate" if outcome.reasons else "exact", source_line=decided.rule if decided else None)


# ---------------------------------------------------------------- NL309


def _martian(version: int, address: int) -> bool:
    if version == 4:
        return address >> 24 == 0 or address >> 28 == 0xE or address == 0xFFFFFFFF
    return address == 0 or address >> 120 == 0xFF


def _known(host: HostModel, address: int) -> bool:
    """An interface subnet or a route other than the default holds the address, or it is local."""
    for iface in host.interfaces:
        for a in iface.addresses:
            if a.prefix.contains(address):
                return True
    if host.route(address).kind == "local":
        return True
    return any(r.dst.mask != 0 and r.dst.contains(address) for r in host.routes)


def _target_unknown(ctx: CheckContext, inventory: DnatInventory) -> Iterator[Finding]:
    host = ctx.host
    given = host.source != "inferred"
    for entry in inventory:
        if entry.addresses is None:
            continue
        first, last = entry.addresses
        candidates = [first] if first == last else [first, last]
        for address in candidates:
            text = format_ip(host.family, address)
            if _martian(host.family, address):
                why = "no host can have it (unspecified, multicast or broadcast): the kernel drops what it rewrites"
            elif given and not _known(host, address):
                why = ("no interface subnet and no route of the host model but the default one holds it: the"
                       " forwarded connections go to the default gateway")
            else:
                continue
            source = "the given host model" if given else "the host model"
            yield _finding(
                "NL309", "warning",
                f"DNAT target {text} is on no network of {source}: {why}. Check the address (a typo in the"
                " container or server address?), or add the network or route to the host model.",
                entry.rule, witness={"target": text},
            )
            break
