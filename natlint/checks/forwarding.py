"""NL310: forwarded TCP connections that never complete.

FORWARD letting a SYN through is half of a forward: the server's SYN-ACK comes back through
the host too, as an ESTABLISHED packet in the other direction (in on the interface the SYN
left by, out towards the client), and crosses raw, mangle and filter like any packet. A
FORWARD policy DROP (Docker sets it) with rules for one direction only, and no rule for the
replies (``--ctstate ESTABLISHED,RELATED``), lets every SYN through and completes no
connection: a port forward that looks right is dead, a container or a routed network cannot
reach anything (the kernel's listener never accepts them: fixtures/kernel/handshake.rules).

How, cheap where it cannot fire:

1. Every SYN-ACK that could come back through the host (ESTABLISHED, between two addresses
   that are not the host's, arriving on any interface but lo, to an ephemeral client port,
   of a connection no SNAT rewrote) is classified without steps. If none is dropped, stop:
   a Docker or kube-proxy host accepts them all in FORWARD.
2. The new TCP connections arriving on the host's interfaces are classified; those ACCEPTed
   out of an interface some dropped SYN-ACK came in by are grouped by input interface,
   server address range and ports. Each group's SYN-ACKs, over-approximated (every client of
   the group, on every ephemeral port, with the connection marks and NAT flags the group's
   SYNs leave in conntrack), are classified: a group whose every SYN-ACK is dropped fails
   for every client.
3. The failing connections, back as they arrived (their conntrack original tuple), are
   classified with steps: one finding per FORWARD rule (or policy) that accepted them, with
   a witness whose handshake ``natlint trace`` shows failing (natlint.netfilter.replies).

SNATed and MASQUERADEd connections (a container's way out) are followed when raw and mangle
PREROUTING have no rules: their SYN-ACK comes back to the host's own address, and conntrack
rewrites it back to the client in nat PREROUTING, which only those two chains see before
(natlint.netfilter.replies.snat_replies_followed). Not followed: connections between two
ports of one bridge, and a group whose SYN-ACKs may pass for some client: natlint reports
only what fails for every client.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from natlint.checks.context import CheckContext
from natlint.checks.dnat import first_packet
from natlint.checks.handshake import (
    ACK,
    DEAD,
    EPHEMERAL,
    LOOPBACK,
    SYN,
    TCP,
    accepting,
    dropped_at,
    handshake_finding,
)
from natlint.findings import Code, Finding, register
from natlint.netfilter.engine import Engine, Outcome, Step, prefixes_union, union_all
from natlint.netfilter.nat import real_interfaces
from natlint.netfilter.replies import snat_replies_followed

__all__ = ["check"]

register(Code(
    "NL310", "forwarded-connection-never-completes", "warning",
    "FORWARD accepts new TCP connections through the host, but drops the SYN-ACK every server answers"
    " with on its way back (usually a FORWARD policy DROP with no ESTABLISHED rule): the connections"
    " never complete.",
    why="A forwarded TCP connection needs the SYN through in one direction and the SYN-ACK back in the"
    " other. The SYN-ACK is an ESTABLISHED packet that FORWARD sees coming in on the interface the SYN"
    " left by; when FORWARD drops it, the port forward or the route looks right rule by rule, and every"
    " client times out.",
    example="*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
    "-A PREROUTING -i eth0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80\nCOMMIT\n"
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    "-A FORWARD -i eth0 -o docker0 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j ACCEPT\nCOMMIT",
    fixed="*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
    "-A PREROUTING -i eth0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80\nCOMMIT\n"
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
    "-A FORWARD -i eth0 -o docker0 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j ACCEPT\nCOMMIT",
))

_SERVERS = 32  # server address ranges per outcome and input interface, before giving up
_PORTS = 16
# What conntrack keeps for the SYN-ACK from the connection's first packet (its tuple aside).
_KEPT = ("ct_dnat", "ct_snat", "connmark", "orig_dst", "orig_dport")
_ORIGINAL = (("src", "orig_src"), ("dst", "orig_dst"), ("sport", "orig_sport"), ("dport", "orig_dport"))


def check(ctx: CheckContext) -> Iterator[Finding]:
    tables = ctx.ruleset.tables
    if not any(name in tables for name in ("filter", "mangle", "raw")):
        return
    sp: Any = ctx.engine.space
    family = ctx.ruleset.family
    interfaces = [i.name for i in ctx.host.interfaces if not i.loopback and i.name in sp.interfaces]
    if not interfaces:
        return
    remote = _not_host(ctx, sp, family, "dst")  # a client, as the SYN-ACK's destination
    plain = ctx.stepless_engine()
    base = _synacks(sp, snat=snat_replies_followed(ctx.ruleset))
    came_in = _dropped_synacks(sp, plain, base & _not_host(ctx, sp, family, "src") & remote, interfaces)
    if not came_in:
        return  # every SYN-ACK the host may forward gets through: nothing more to ask
    failing = _failing(sp, plain, base, remote, came_in, interfaces)
    if failing.is_empty():
        return
    yield from _findings(ctx, _as_sent(sp, failing))


def _not_host(ctx: CheckContext, sp: Any, family: int, name: str) -> Any:
    """Addresses (as the field ``name``) that are neither the host's nor loopback."""
    own = [a.host for i in ctx.host.interfaces for a in i.addresses if a.version == family]
    return sp.all() - prefixes_union(sp, own, name) - sp.prefix(name, LOOPBACK[family])


def _synacks(sp: Any, *, snat: bool) -> Any:
    """SYN-ACKs of connections the host forwards: ESTABLISHED, no mark, not yet routed, to an
    ephemeral port; with ``snat``, those of SNATed connections too, as conntrack rewrites them
    back to the client in nat PREROUTING (natlint.netfilter.replies.snat_replies_followed)."""
    found = (sp.value("proto", TCP) & sp.value("tcp_flags", SYN | ACK) & sp.ctstate(["ESTABLISHED"])
             & sp.iface("oif", None) & sp.value("fragment", False) & sp.range("dport", *EPHEMERAL))
    if not snat:
        found = found & sp.value("ct_snat", False)
    if "mark" in sp.fields:
        found = found & sp.value("mark", 0)
    return found


def _dropped_synacks(sp: Any, plain: Engine, synacks: Any, interfaces: list[str]) -> list[str]:
    """The interfaces a forwarded SYN-ACK (of ``synacks``: between addresses not the host's)
    the host's chains drop may come in by."""
    # each interface's SYN-ACKs to clients routed out of another one (a connection between
    # two ports of one bridge is not followed: the engine would have to tell every sender
    # from every receiver to know which of them a DNAT sent back to itself)
    arriving = union_all([sp.iface("iif", name) & _elsewhere(sp, plain, name, interfaces) for name in interfaces])
    dead = [o.packets for o in plain.arriving(synacks & arriving) if o.verdict in DEAD]
    plain.release()
    if not dead:
        return []
    found: Any = union_all(dead)
    return [name for name in interfaces if found.intersects(sp.iface("iif", name))]


def _elsewhere(sp: Any, plain: Engine, name: str, interfaces: list[str]) -> Any:
    """The destinations the host forwards out of another interface than this one."""
    return union_all([plain.routed_out(other) for other in interfaces if other != name] or [sp.none()])


def _failing(sp: Any, plain: Engine, base: Any, remote: Any, came_in: list[str], interfaces: list[str]) -> Any:
    """The forwarded new TCP connections (as the engine leaves them: after NAT, with their
    original tuple) whose every SYN-ACK the host's chains drop."""
    syns = first_packet(sp) & sp.value("proto", TCP) - sp.iface("iif", None) - sp.iface("iif", "lo")
    failing = sp.none()
    snat = base.intersects(sp.value("ct_snat", True))
    for o in plain.arriving(syns):
        if o.verdict != "ACCEPT" or o.delivered is None or o.delivered.to != "out" \
                or o.delivered.interface not in came_in:
            continue
        packets: Any = o.packets if snat else o.packets & sp.value("ct_snat", False)
        back = base & sp.iface("iif", o.delivered.interface)
        for name in interfaces:
            if name == o.delivered.interface:
                continue  # routed back out where it came from: not followed (see above)
            part = packets & sp.iface("iif", name)
            if not part.is_empty():
                failing = failing | (part & _unanswered(sp, plain, part, name, back, remote))
    plain.release()
    return failing


def _unanswered(sp: Any, plain: Engine, group: Any, came_by: str, back: Any, remote: Any) -> Any:
    """The servers (``dst``, ``dport`` of the group's SYNs, which came in by ``came_by``)
    none of whose SYN-ACKs gets through, exactly: the SYN-ACKs to every client of the group,
    on every ephemeral port, with what conntrack keeps of the group's SYNs (a superset of the
    real ones)."""
    clients = _addresses(sp, group, "orig_src", "dst", _SERVERS)
    # a client is one the host routes its answer back to where the SYN came from (not one
    # it has no route to, nor one of its own or its bridges' other ports)
    to = (remote if clients is None else clients & remote) & plain.routed_out(came_by)
    servers = _moved(sp, sp.forget(group, *(n for n in sp.fields if n not in ("dst", "dport"))),
                     ("dst", "dport"), ("src", "sport"))
    if servers is None:
        return sp.none()
    kept = [n for n in _KEPT if n in sp.fields]
    synacks = back & to & servers & sp.forget(group, *(n for n in sp.fields if n not in kept))
    if synacks.is_empty():
        return sp.none()
    # what each SYN-ACK became before it was dropped: the mark and the output interface may
    # have changed on the way (a reverse NAT only comes after the last place that drops)
    changed = [n for n in ("mark", "connmark", "oif") if n in sp.fields]
    fates = plain.arriving(synacks)
    dead = [sp.forget(o.packets, *changed) for o in fates if o.verdict in DEAD and not o.reasons]
    if not dead:
        return sp.none()
    passing = synacks - union_all(dead)
    header = [n for n in sp.fields if n not in ("src", "sport")]
    unanswered = sp.forget(synacks, *header) - sp.forget(passing, *header).may()
    found = _moved(sp, unanswered, ("src", "sport"), ("dst", "dport"))
    if found is None:
        return sp.none()
    # and only for the clients it was judged for (the SYN's source, as conntrack keeps it)
    judged = _addresses(sp, sp.forget(synacks, *(n for n in sp.fields if n != "dst")), "dst", "orig_src", 4 * _SERVERS)
    return sp.none() if judged is None else found & judged


def _addresses(sp: Any, packets: Any, name: str, to: str, limit: int) -> Any | None:
    """The addresses of one field of the packets as the same addresses of another (None: more
    than ``limit`` ranges)."""
    spans = packets.values(name, limit=limit)
    if spans is None:
        return None
    return union_all([sp.range(to, sp.decode(name, lo), sp.decode(name, hi)) for lo, hi in spans] or [sp.none()])


def _moved(sp: Any, packets: Any, names: tuple[str, str], to: tuple[str, str]) -> Any | None:
    """A set over an (address, port) pair of fields as a set over another pair: split into
    address ranges times port sets; what is too scattered for that is left out (None when
    nothing is left: the caller then claims nothing)."""
    address, port = names
    pieces: list[Any] = []
    todo = [(lo, hi) for lo, hi in packets.values(address, limit=_SERVERS) or []]
    while todo and len(pieces) < 4 * _SERVERS:
        lo, hi = todo.pop()
        block = sp.range(address, sp.decode(address, lo), sp.decode(address, hi))
        part = packets & block
        ports = sp.forget(part, address)
        if (ports & block) == part:  # the same ports for every address of the range
            spans = ports.values(port, limit=_PORTS)
            if spans is not None:
                pieces.append(sp.range(to[0], sp.decode(address, lo), sp.decode(address, hi))
                              & union_all([sp.range(to[1], a, b) for a, b in spans]))
            continue
        if lo < hi and len(todo) < 4 * _SERVERS:
            mid = (lo + hi) // 2
            todo += [(a, b) for a, b in ((lo, mid), (mid + 1, hi))]
    return union_all(pieces) if pieces else None


def _as_sent(sp: Any, failing: Any) -> Any:
    """The connections' first packets as they arrived: their conntrack original tuple."""
    kept = ["iif", "proto", *(orig for _field, orig in _ORIGINAL)]
    header = sp.forget(failing, *(n for n in sp.fields if n not in kept))
    header = sp.forget(sp.equate_fields(header, list(_ORIGINAL)), *(orig for _field, orig in _ORIGINAL))
    return header & first_packet(sp)


def _findings(ctx: CheckContext, failing: Any) -> Iterator[Finding]:
    from natlint.netfilter.replies import follow_replies

    groups: dict[Step | None, list[Outcome]] = {}
    for o in ctx.engine.arriving(failing):
        if o.verdict == "ACCEPT" and o.delivered is not None and o.delivered.to == "out":
            groups.setdefault(o.accepted_by("FORWARD"), []).append(o)
    for step, outcomes in groups.items():
        packets: Any = union_all([o.packets for o in outcomes])
        sp: Any = ctx.engine.space
        # a port forward of the host's own address makes the better witness
        external = _own(ctx, sp, ctx.host.external_interfaces())
        own = _own(ctx, sp, [i for i in ctx.host.interfaces if not i.loopback])
        dnat = packets & sp.value("ct_dnat", True)
        witness = None
        for better in (dnat & external, dnat & own, dnat, packets):
            witness = better.pick()
            if witness is not None:
                break
        if witness is None:
            continue
        sent = _as_sent(sp, sp.packet(witness)).pick()
        if sent is None:
            continue
        traced = [o for o in follow_replies(ctx.engine, ctx.engine.arriving(sp.packet(sent)))
                  if o.connection == "fails"]
        if not traced:
            continue  # the witness's handshake is not shown to fail: say nothing
        yield _finding(ctx, step, packets, sent, traced[0])


def _endpoint(address: object, port: object) -> str:
    """ADDRESS:PORT, an IPv6 address in brackets."""
    text = str(address)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def _own(ctx: CheckContext, sp: Any, interfaces: Any) -> Any:
    """The addresses of these interfaces of the host, as ``orig_dst``."""
    return prefixes_union(sp, [a.host for i in interfaces for a in i.addresses if a.version == ctx.ruleset.family],
                          "orig_dst")


def _servers(sp: Any, packets: Any) -> str:
    """The servers, address range by address range, with their ports."""
    spans = packets.values("dst", limit=4)
    if spans is None:
        return "many addresses"
    words = []
    for lo, hi in spans:
        block = sp.range("dst", sp.decode("dst", lo), sp.decode("dst", hi))
        part = packets & block
        ports = sp.forget(part, "dst")
        found = ports.values("dport", limit=6)
        if found == [(0, 65535)]:
            text = "any port"
        elif found is None:
            text = "many ports"
        else:
            text = ("port " if len(found) == 1 and found[0][0] == found[0][1] else "ports ") + ", ".join(
                str(a) if a == b else f"{a}-{b}" for a, b in found)
        if (ports & block) != part:
            text += ", not every one for every address"
        where = str(sp.decode("dst", lo)) if lo == hi else f"{sp.decode('dst', lo)}-{sp.decode('dst', hi)}"
        words.append(f"{where} ({text})")
    return ", ".join(words)


def _finding(ctx: CheckContext, step: Step | None, packets: Any, sent: Any, traced: Outcome) -> Finding:
    sp: Any = ctx.engine.space
    where, related, drop = dropped_at(ctx, traced, "the host's chains")
    names = [n for n in real_interfaces(sp) if n != "lo"]
    ins = sorted(n for n in names if packets.intersects(sp.iface("iif", n)))
    outs = sorted(n for n in names if packets.intersects(sp.iface("oif", n)))
    how = (f"{accepting(step) or 'FORWARD'} accepts new TCP connections from {', '.join(ins) or 'the network'} to"
           f" {_servers(sp, packets)} out of {', '.join(outs) or 'an interface'}")
    after = traced.packets.pick()  # type: ignore[attr-defined]
    if after is not None and sent.dst != after.dst:
        how += (f", port forwards among them (e.g. {_endpoint(sent.dst, sent.dport)} DNATed to"
                f" {_endpoint(after.dst, after.dport)})")
    if drop is not None and drop.chain == "DOCKER-USER":
        fix = ("Let the replies through before that rule: '-I DOCKER-USER -m conntrack --ctstate RELATED,ESTABLISHED"
               " -j RETURN' (Docker's own FORWARD rules then accept them).")
    else:
        fix = ("Accept the replies before that point, e.g. '-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED"
               " -j ACCEPT' as FORWARD's first rule (on a Docker host: in DOCKER-USER).")
    message = (f"{how}, but the SYN-ACK each server answers with is dropped on its way back by {where}, for every"
               f" client: these connections never complete and clients time out. {fix}")
    return handshake_finding(ctx, "NL310", message, step, sent, traced, related)
