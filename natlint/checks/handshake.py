"""NL204: TCP connections the host accepts but can never answer.

INPUT accepting a SYN is half of a TCP service: the host's SYN-ACK must get out too. It is
an ESTABLISHED packet from the host's address and service port, and it crosses raw, mangle
and filter OUTPUT and mangle POSTROUTING like anything the host sends. A firewall whose
OUTPUT policy is DROP and that accepts ESTABLISHED replies only for some ports (or not at
all) lets every SYN in and completes no connection: clients time out, and the INPUT rule
looks right (measured on a corpus firewall: tests/test_corpus_kernel.py; the fixture
fixtures/kernel/handshake.rules).

How: the SYN-ACKs the host could send from each of its addresses and ports to any remote
address and ephemeral client port (32768-60999) go through the local path first (cheap:
nat does not run for them). Only when some (address, port) has no SYN-ACK that survives,
to any remote address at all, are the new TCP connections that arrive on the host's
interfaces classified, from clients the host answers through the interface they came in
by (a source the host model routes nothing back to, through an interface whose subnet no
rule names, could be anyone: natlint says nothing about it); those delivered to such an
(address, port) without NAT are reported, one finding per INPUT rule (or policy) that
accepted them, with a witness traced
through ``natlint trace``'s handshake (natlint.netfilter.replies). A SYN-ACK that an
undecidable match may let through counts as getting through: natlint reports only what
fails for every client.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from natlint.checks.context import CheckContext
from natlint.checks.dnat import first_packet
from natlint.findings import Code, Finding, Related, register
from natlint.model.values import Prefix
from natlint.netfilter.engine import Engine, Outcome, Step, prefixes_union, union_all

__all__ = ["ACK", "DEAD", "EPHEMERAL", "LOOPBACK", "SYN", "TCP", "accepting", "check", "dropped_at",
           "dropping", "handshake_finding"]

register(Code(
    "NL204", "connection-never-completes", "warning",
    "INPUT accepts new TCP connections to a port, but the host's own chains drop every SYN-ACK it would"
    " answer them with (usually an OUTPUT policy DROP with no ESTABLISHED rule): the connections never"
    " complete.",
    why="A TCP service needs the SYN in and the SYN-ACK out. The SYN-ACK is an ESTABLISHED packet that"
    " crosses OUTPUT like anything the host sends; when OUTPUT drops it, clients time out although the"
    " INPUT rule for the port looks right, and the service seems down for no visible reason.",
    example="*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\n"
    "-A INPUT -p tcp -m tcp --dport 443 -j ACCEPT\n-A OUTPUT -p udp -m udp --dport 53 -j ACCEPT\nCOMMIT",
    fixed="*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\n"
    "-A INPUT -p tcp -m tcp --dport 443 -j ACCEPT\n"
    "-A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A OUTPUT -p udp -m udp --dport 53 -j ACCEPT\n"
    "COMMIT",
))

TCP = 6
SYN, ACK = 0x02, 0x10
DEAD = frozenset({"DROP", "REJECT"})
# Clients connect from an ephemeral port: Linux's default ip_local_port_range (Windows and the
# BSDs use 49152-65535, inside it). A rule that lets the SYN-ACK out only to client port 53
# or 80 does not make a service answerable.
EPHEMERAL = (32768, 60999)
LOOPBACK = {4: Prefix(4, 0x7F000000, 0xFF000000), 6: Prefix(6, 1, (1 << 128) - 1)}


def check(ctx: CheckContext) -> Iterator[Finding]:
    if "filter" not in ctx.ruleset.tables and "mangle" not in ctx.ruleset.tables:
        return
    sp: Any = ctx.engine.space
    family = ctx.ruleset.family
    own = [a.host for i in ctx.host.interfaces if not i.loopback for a in i.addresses if a.version == family]
    if not own:
        return
    plain = ctx.stepless_engine()
    mine = prefixes_union(sp, own)
    dead = _unanswered(sp, plain, own, mine, family)
    if dead.is_empty():
        return  # every (address, port) can answer some client: nothing more to ask
    # a client is one the host answers through the interface its SYN came in by (where the
    # host model routes nothing back, say an interface whose subnet no rule names, natlint
    # cannot tell who the clients are, and says nothing)
    back = union_all([sp.iface("iif", i.name) & plain.routed_out(i.name, "src") for i in ctx.host.interfaces
                      if not i.loopback and i.name in sp.interfaces] or [sp.none()])
    syns = _syn(sp) & mine & dead & back
    delivered = [o.packets for o in plain.arriving(syns)
                 if o.verdict == "ACCEPT" and o.delivered is not None and o.delivered.to == "local"]
    if not delivered:
        return
    failing = union_all(delivered) & sp.value("ct_dnat", False)
    if failing.is_empty():
        return
    # back to the packets as sent (no NAT: the same header) for the traced engine
    fresh_fields = ("mark", "connmark", "ctstate", "oif", "orig_src", "orig_dst", "orig_sport", "orig_dport")
    failing = sp.forget(failing, *(n for n in fresh_fields if n in sp.fields))
    failing = _syn(sp) & failing
    yield from _findings(ctx, failing)


def _syn(sp: Any) -> Any:
    """New TCP connections as they arrive: a SYN, no mark, no NAT yet."""
    return first_packet(sp) & sp.value("proto", TCP)


def _unanswered(sp: Any, plain: Engine, own: list[Prefix], mine: Any, family: int) -> Any:
    """The (dst = host address, dport = port) pairs none of whose SYN-ACKs, from that address
    and port to any remote address and ephemeral port, gets out (as a set of arriving packets)."""
    remote = sp.all() - mine - sp.prefix("dst", LOOPBACK[family])
    synacks = (sp.value("proto", TCP) & sp.value("tcp_flags", SYN | ACK) & sp.ctstate(["ESTABLISHED"])
               & sp.iface("iif", None) & sp.value("fragment", False) & remote
               & sp.range("dport", *EPHEMERAL)
               & prefixes_union(sp, own, "src"))
    for name in ("mark", "connmark"):
        if name in sp.fields:
            synacks = synacks & sp.value(name, 0)
    # what gets out to a remote client (delivered on the host itself: a broadcast address)
    alive = [o.packets for o in plain.local(synacks)
             if o.verdict not in DEAD and not (o.delivered is not None and o.delivered.to == "local")]
    others = [n for n in sp.fields if n not in ("src", "sport")]
    answered = sp.forget(union_all(alive), *others) if alive else sp.none()
    answered = answered.may()
    unanswered = sp.forget(synacks, *others) - answered
    # as arriving packets: dst := the answering address, dport := its port
    found = sp.none()
    for prefix in own:
        ports = (unanswered & sp.prefix("src", prefix)).values("sport", limit=256)
        if ports is None:
            continue  # too scattered to report port by port
        for lo, hi in ports:
            found = found | (sp.prefix("dst", prefix) & sp.range("dport", lo, hi))
    return found & mine


def _findings(ctx: CheckContext, failing: Any) -> Iterator[Finding]:
    from natlint.netfilter.replies import follow_replies

    groups: dict[Step | None, list[Outcome]] = {}
    for o in ctx.engine.arriving(failing):
        if o.verdict == "ACCEPT" and o.delivered is not None and o.delivered.to == "local":
            groups.setdefault(o.accepted_by("INPUT") or o.decided_by, []).append(o)
    for step, outcomes in groups.items():
        packets: Any = union_all([o.packets for o in outcomes])
        witness = _neighbour(ctx, packets).pick()
        if witness is None:
            continue
        one = ctx.engine.arriving(ctx.engine.space.packet(witness))  # type: ignore[attr-defined]
        traced = [o for o in follow_replies(ctx.engine, one) if o.connection == "fails"]
        if not traced:
            continue  # the witness's handshake is not shown to fail: say nothing
        yield _finding(ctx, step, packets, witness, traced[0])


def _neighbour(ctx: CheckContext, packets: Any) -> Any:
    """Prefer a client on one of the host's subnets, arriving on that interface (the host
    routes its answer there), external interfaces first; else any of the packets."""
    sp: Any = ctx.engine.space
    ifaces = [*ctx.host.external_interfaces(), *(i for i in ctx.host.interfaces if not i.loopback)]
    own = prefixes_union(sp, [a.host for i in ctx.host.interfaces for a in i.addresses
                              if a.version == ctx.ruleset.family], "src")
    for iface in ifaces:
        for subnet in iface.subnets:
            if subnet.version != ctx.ruleset.family:
                continue
            found = packets & sp.prefix("src", subnet) & sp.iface("iif", iface.name) - own
            if not found.is_empty():
                return found
    return packets


def _ports(packets: Any) -> str:
    found = packets.values("dport", limit=6)
    if found is None:
        return "many ports"
    words = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in found]
    return ("port " if len(words) == 1 and "-" not in words[0] else "ports ") + ", ".join(words)


def dropped_at(ctx: CheckContext, traced: Outcome, unknown: str) -> tuple[str, list[Related], Step | None]:
    """Where a failing handshake's SYN-ACK is dropped (the last rule or policy of its reply
    steps): the words for the message, the related location and the step (``unknown``: the
    words when no rule or policy is named)."""
    answer = [s for s in traced.steps if s.reply]
    drop = next((s for s in reversed(answer) if s.index is not None), None)
    where = unknown
    related: list[Related] = []
    if drop is not None:
        where = dropping(drop, line=True)
        if drop.line is not None:
            related.append(Related(ctx.path, drop.line, f"drops the SYN-ACK: {drop.rule or drop.action}"))
    return where, related, drop


def dropping(step: Step, *, line: bool) -> str:
    """How a finding names the rule or policy that drops a packet: "the filter OUTPUT policy
    (DROP)", "filter/Reject rule 11" (and "(line 197)" with ``line``)."""
    if step.index == "policy":
        return f"the {step.table} {step.chain} policy ({step.action.replace('policy ', '')})"
    return f"{step.table}/{step.chain} rule {step.index}" + (f" (line {step.line})" if line else "")


def accepting(step: Step | None) -> str | None:
    """How a finding names the rule or policy that accepted the connections."""
    if step is None or step.line is None:
        return None
    return f"{step.table}/{step.chain} {'policy' if step.index == 'policy' else f'rule {step.index}'}"


def handshake_finding(ctx: CheckContext, code: str, message: str, step: Step | None, sent: Any, traced: Outcome,
                      related: list[Related]) -> Finding:
    """A finding on the rule (or policy) ``step`` that accepted connections that never complete:
    the witness ``sent`` (a packet as its sender sent it) and its traced handshake."""
    line, column, table, chain, text = 1, 1, None, None, None
    if step is not None and step.line is not None:
        line, table, chain, text = step.line, step.table, step.chain, step.rule
    reasons = traced.reasons
    if reasons:
        message += " Approximate: " + "; ".join(reasons[:2]) + "."
    witness = {"in": sent.iif, "src": str(sent.src), "dst": str(sent.dst), "proto": sent.proto,
               "sport": sent.sport, "dport": sent.dport}
    return Finding(code, "warning", message, ctx.path, line, column, table, chain, tuple(related), witness,
                   "approximate" if reasons else "exact", source_line=text)


def _finding(ctx: CheckContext, step: Step | None, packets: Any, witness: Any, traced: Outcome) -> Finding:
    where, related, _drop = dropped_at(ctx, traced, "the host's own chains")
    sp: Any = ctx.engine.space
    dsts = sorted({str(sp.decode("dst", lo)) for lo, _hi in (packets.values("dst", limit=4) or [])})
    to = ", ".join(dsts) if dsts else "the host"
    how = f"INPUT accepts new TCP connections to {to} {_ports(packets)}"
    rule = accepting(step)
    if rule is not None:
        how += f" ({rule})"
    message = (f"{how}, but the SYN-ACK the host answers with is dropped on its way out by {where}, for every"
               " client: these connections never complete and clients time out. Accept the replies before"
               " that point, e.g. '-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT' as OUTPUT's"
               " first rule.")
    return handshake_finding(ctx, "NL204", message, step, witness, traced, related)
