"""``natlint trace``: what happens to one packet, or to a class of packets, and why."""

from __future__ import annotations

from dataclasses import dataclass

from natlint.model.ruleset import Ruleset
from natlint.model.values import Interface, PortRange, Prefix, parse_port_range, parse_prefix, parse_protocol
from natlint.netfilter.engine import Engine, Outcome

__all__ = ["TraceQuery", "trace", "outcome_to_dict"]


@dataclass(frozen=True)
class TraceQuery:
    """A packet class: every field left None is 'any'."""

    in_interface: str | None = None  # None together with local=True: sent by the host itself
    local: bool = False
    src: str | None = None
    dst: str | None = None
    proto: str | None = None
    sport: str | None = None
    dport: str | None = None
    state: str = "new"


def _prefix(text: str, family: int) -> Prefix:
    return parse_prefix(text, family)


def _ports(text: str) -> PortRange:
    return parse_port_range(text)


def query_set(engine: Engine, query: TraceQuery) -> object:
    sp = engine.space
    family = engine.ruleset.family
    s = sp.all()  # type: ignore[attr-defined]
    if query.local:
        s = s & sp.iface("iif", None)  # type: ignore[attr-defined]
    elif query.in_interface is not None:
        s = s & sp.iface("iif", Interface(query.in_interface))  # type: ignore[attr-defined]
    else:
        s = s - sp.iface("iif", None)  # type: ignore[attr-defined]
    s = s & sp.iface("oif", None)  # type: ignore[attr-defined]
    if query.src:
        s = s & sp.prefix("src", _prefix(query.src, family))  # type: ignore[attr-defined]
    if query.dst:
        s = s & sp.prefix("dst", _prefix(query.dst, family))  # type: ignore[attr-defined]
    if query.proto:
        proto = parse_protocol(query.proto)
        if proto.number:
            s = s & sp.value("proto", proto.number)  # type: ignore[attr-defined]
    if query.sport:
        r = _ports(query.sport)
        s = s & sp.range("sport", r.first, r.last)  # type: ignore[attr-defined]
    if query.dport:
        r = _ports(query.dport)
        s = s & sp.range("dport", r.first, r.last)  # type: ignore[attr-defined]
    state = query.state.upper()
    s = s & sp.ctstate([state])  # type: ignore[attr-defined]
    # A packet starts with no mark, no conntrack mark and no NAT state; a new TCP
    # connection starts with a SYN.
    for field_name in ("mark", "connmark"):
        s = s & sp.value(field_name, 0)  # type: ignore[attr-defined]
    s = s & sp.value("ct_dnat", False) & sp.value("ct_snat", False) & sp.value("fragment", False)  # type: ignore[attr-defined]
    if state == "NEW" and query.proto and parse_protocol(query.proto).number == 6:
        s = s & sp.value("tcp_flags", 0x02)  # type: ignore[attr-defined]
    return s


def trace(ruleset: Ruleset, host: object, query: TraceQuery, *, engine: Engine | None = None) -> list[Outcome]:
    from natlint.netfilter.replies import follow_replies

    engine = engine or Engine(ruleset, host)
    packets = query_set(engine, query)
    outcomes = engine.local(packets, choose_source=not query.src) if query.local else engine.arriving(packets)
    # what the sender sees: a REJECT whose answer the host's own chains drop is a DROP, and
    # an accepted SYN is told whether its handshake completes (natlint.netfilter.replies)
    outcomes = follow_replies(engine, outcomes)
    found = [o for o in outcomes if not o.packets.is_empty()]  # type: ignore[attr-defined]
    # The biggest share of the class first: a query that leaves a field open (any source)
    # reads best when the usual fate comes before the corner cases (a spoofed 127.0.0.1
    # source that routing drops). Stable: equal shares keep the engine's order.
    return sorted(found, key=lambda o: -o.packets.count())  # type: ignore[attr-defined, no-any-return]


def packet_dict(packets: object) -> dict[str, object] | None:
    pkt = packets.pick()  # type: ignore[attr-defined]
    if pkt is None:
        return None
    return {"src": str(pkt.src), "dst": str(pkt.dst), "proto": pkt.proto, "sport": pkt.sport, "dport": pkt.dport}


def outcome_to_dict(outcome: Outcome) -> dict[str, object]:
    delivered = None
    if outcome.delivered is not None:
        delivered = {"to": outcome.delivered.to, "interface": outcome.delivered.interface}
    return {
        "verdict": outcome.verdict,
        "delivered": delivered,
        "packet": packet_dict(outcome.packets),
        "steps": [s.to_dict() for s in outcome.steps],
        "certainty": outcome.certainty,
        "reasons": list(outcome.reasons),
        "note": outcome.note,
        "connection": outcome.connection,
        "class": outcome.packets.describe(),  # type: ignore[attr-defined]
    }
