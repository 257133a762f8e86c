"""What the sender sees: the answer a REJECT sends, and the rest of a TCP handshake.

Both are packets other than the traced one, with their own way through the host's chains;
``natlint trace`` follows them (the checks judge the packets themselves).

**REJECT.**
REJECT drops the packet and answers it: a TCP reset (``--reject-with tcp-reset``) or an ICMP
error (every other type). That answer is a packet the host itself sends, and it crosses the
host's own chains like any other (measured on 6.18 in a network namespace;
fixtures/kernel/reject-answer.rules checks it on every CI run):

* raw, mangle and filter OUTPUT, then mangle POSTROUTING, and back through PREROUTING and
  INPUT when it goes to the host itself (a rejected connection the host opened);
* in conntrack state RELATED, on the rejected packet's connection: its original tuple,
  its conntrack mark and its NAT flags;
* with mark 0 (``fwmark_reflect`` is off by default);
* the reset from the rejected packet's destination address and port to its source, with
  RST (and ACK when the rejected packet had none); an ICMP error to the rejected packet's
  source, from its destination when that is the host's (INPUT), else from the address
  routing picks for the way back (FORWARD, OUTPUT).

When that way drops the answer, the sender waits for nothing, exactly as after a DROP: a
Shorewall ``Reject`` chain that drops non-SYN TCP in OUTPUT swallows the resets of its own
REJECTs, and a host whose OUTPUT rejects everything but a few users never sees the errors
of its own rejected connections. :func:`follow_replies` turns such a REJECT outcome into a
DROP, with the answer's way as steps marked ``reply``.

**The handshake.** An accepted SYN reaches the listener, which counts a connection only
once the SYN-ACK got out and the client's ACK got in. Both are ESTABLISHED packets of the
connection; after a SYN that raw NOTRACKed, the SYN-ACK is INVALID unless a raw OUTPUT rule
NOTRACKs it too (measured), and the ACK, unless NOTRACKed, is picked up as a NEW connection
(nf_conntrack_tcp_loose). When the host's chains drop
either, the outcome stays ACCEPT (the SYN was delivered) with ``connection="fails"``, the
dropped packet's way as ``reply`` steps and a note: the client times out. A host whose
OUTPUT policy is DROP with no ESTABLISHED rule accepts every SYN in INPUT and completes no
connection (measured on a corpus firewall); fixtures/kernel/handshake.rules checks it on
every CI run. See :func:`_handshake` for what is not followed.

What is not followed, and left as REJECT: an answer the kernel never sends (to a TCP reset,
to a fragment), a class whose addresses are not single values (``natlint trace --src
0.0.0.0/0``: the answer's addresses are the class's swapped, which a packet set cannot
express cheaply; a note says so), and nat: conntrack runs nat POSTROUTING for a reset when
the rejected packet never reached nat INPUT or POSTROUTING, which only matters when that
chain rewrites the reset's source (the sender then ignores it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from natlint.model.ruleset import Rule, Ruleset
from natlint.netfilter.engine import Engine, Outcome, Step

__all__ = ["follow_replies", "snat_replies_followed"]

_TCP = 6
_SYN, _RST, _ACK = 0x02, 0x04, 0x10
_ICMP_UNREACH = {4: (1, 3), 6: (58, 1)}  # (protocol, "destination unreachable" type)
_ICMP_CODES = {
    "icmp-net-unreachable": 0, "icmp-host-unreachable": 1, "icmp-proto-unreachable": 2,
    "icmp-port-unreachable": 3, "icmp-net-prohibited": 9, "icmp-host-prohibited": 10,
    "icmp-admin-prohibited": 13,
    "icmp6-no-route": 0, "icmp6-adm-prohibited": 1, "icmp6-addr-unreachable": 3, "icmp6-port-unreachable": 4,
    "icmp6-policy-fail": 5, "icmp6-reject-route": 6,
}
_DEFAULT = {4: "icmp-port-unreachable", 6: "icmp6-port-unreachable"}
_KEPT = ("orig_src", "orig_dst", "orig_sport", "orig_dport", "connmark", "ct_dnat", "ct_snat")
_DEAD = frozenset({"DROP", "REJECT"})


def follow_replies(engine: Engine, outcomes: Iterable[Outcome]) -> list[Outcome]:
    """The outcomes, with each REJECT whose answer the host's own chains drop made a DROP,
    and each accepted TCP SYN told whether its handshake completes (``connection``)."""
    found: list[Outcome] = []
    for outcome in outcomes:
        if outcome.verdict == "REJECT":
            found.extend(_follow(engine, outcome))
        elif outcome.verdict == "ACCEPT" and outcome.delivered is not None:
            found.append(_handshake(engine, outcome))
        else:
            found.append(outcome)
    return found


def _rejecting_rule(engine: Engine, outcome: Outcome) -> tuple[Step, Rule] | None:
    step = outcome.decided_by
    if step is None or not isinstance(step.index, int) or step.hook not in ("INPUT", "FORWARD", "OUTPUT"):
        return None
    table = engine.ruleset.tables.get(step.table)
    chain = table.chains.get(step.chain) if table is not None else None
    if chain is None or not 0 < step.index <= len(chain.rules):
        return None
    rule = chain.rules[step.index - 1]
    if rule.target is None or rule.target.name != "REJECT":
        return None
    return step, rule


def _single(packets: Any, name: str) -> int | None:
    found = packets.values(name, limit=1)
    if found is None or len(found) != 1 or found[0][0] != found[0][1]:
        return None
    return int(found[0][0])


def _follow(engine: Engine, outcome: Outcome) -> list[Outcome]:
    found = _rejecting_rule(engine, outcome)
    if found is None:
        return [outcome]
    step, rule = found
    sp: Any = engine.space
    family = engine.ruleset.family
    option = rule.target.option("reject_with") if rule.target is not None else None
    kind = str(option.value) if option is not None else _DEFAULT[family]
    packets: Any = outcome.packets
    src, dst = _single(packets, "src"), _single(packets, "dst")
    proto = _single(packets, "proto")
    if src is None or dst is None or proto is None:
        return [replace(outcome, note=_join(outcome.note, "natlint did not follow the answer this REJECT sends"
                                                          " (the class holds more than one address or protocol)"))]
    if packets.intersects(sp.value("fragment", True)):
        return [outcome]  # no answer to a fragment: left as natlint found it
    if not packets.issubset(sp.ctstate(["NEW", "ESTABLISHED", "RELATED"])):
        return [outcome]  # no connection to answer on (UNTRACKED, INVALID): not followed
    if kind in ("tcp-reset", "tcp-rst"):
        if proto != _TCP or packets.intersects(sp.masked("tcp_flags", _RST, _RST)):
            return [outcome]  # the kernel sends no reset for a reset (nor for what is not TCP)
        reply, choose = _reset(sp, packets, src, dst), False
        what = "TCP reset"
    else:
        code = _ICMP_CODES.get(kind)
        if code is None:
            return [outcome]
        # from the rejected destination when it is the host's (INPUT), else routing picks it
        choose = step.hook != "INPUT"
        reply = _icmp_error(sp, packets, family, src, dst, code, local=not choose)
        what = "ICMP error"
    if reply is None or reply.is_empty():
        return [outcome]
    fates = [o for o in engine.local(reply, choose_source=choose) if not o.packets.is_empty()]  # type: ignore[attr-defined]
    if not fates or not any(o.verdict in _DEAD for o in fates):
        return [outcome]
    dead = [o for o in fates if o.verdict in _DEAD]
    reasons = outcome.reasons + tuple(r for o in fates for r in o.reasons if r not in outcome.reasons)
    if len(dead) < len(fates):  # the answer's fate depends on what natlint cannot decide
        where = _where(dead[0].decided_by)
        reasons = reasons + (f"the {what} this REJECT sends may be dropped ({where}): the sender may see no answer",)
        return [replace(outcome, reasons=_unique(reasons))]
    first = dead[0]
    answer = tuple(replace(s, reply=True) for s in first.steps)
    where = _where(first.decided_by)
    note = (f"the REJECT at line {rule.pos.line} answers with a {what}, but the host's own chains drop that answer"
            f" ({where}): the sender sees no answer, as after a DROP")
    return [Outcome(outcome.packets, "DROP", None, outcome.steps + answer, _unique(reasons), _join(outcome.note, note))]


def _reset(sp: Any, packets: Any, src: int, dst: int) -> Any:
    """The reset: from the rejected packet's destination to its source, ports swapped."""
    flags = sp.none()
    if packets.intersects(sp.masked("tcp_flags", 0, _ACK)):
        flags = flags | sp.value("tcp_flags", _RST | _ACK)
    if packets.intersects(sp.masked("tcp_flags", _ACK, _ACK)):
        flags = flags | sp.value("tcp_flags", _RST)
    head = _swapped_tcp(sp, packets, src, dst)
    return None if head is None else _answer(sp, packets, head & flags)


def _swapped_tcp(sp: Any, packets: Any, src: int, dst: int, *, client_port: str = "sport") -> Any:
    """A TCP header going back the other way: from the packets' destination ``dst`` and
    ports to their source ``src`` and ports (``client_port``: the field that holds the
    source port, ``orig_sport`` before an SNAT; None: the ports are too scattered)."""
    sports, dports = packets.values(client_port, limit=16), packets.values("dport", limit=16)
    if sports is None or dports is None:
        return None
    return (sp.value("proto", _TCP) & sp.value("src", sp.decode("dst", dst)) & sp.value("dst", sp.decode("src", src))
            & _ranges(sp, "sport", dports) & _ranges(sp, "dport", sports))


def _icmp_error(sp: Any, packets: Any, family: int, src: int, dst: int, code: int, *, local: bool) -> Any:
    """The ICMP error: to the rejected packet's source; from its destination when that is
    the host's (INPUT), else from the address routing picks (``choose_source``)."""
    if packets.intersects(_icmp_errors(sp, family)):
        return None  # never an ICMP error about an ICMP error
    proto, unreach = _ICMP_UNREACH[family]
    head = (sp.value("proto", proto) & sp.value("icmp_type", unreach) & sp.value("icmp_code", code)
            & sp.value("dst", sp.decode("src", src)))
    if local:
        head = head & sp.value("src", sp.decode("dst", dst))
    return _answer(sp, packets, head)


def _icmp_errors(sp: Any, family: int) -> Any:
    if family == 4:  # destination unreachable, source quench, redirect, time exceeded, parameter problem
        types = [3, 4, 5, 11, 12]
        proto = 1
    else:
        types = [1, 2, 3, 4]
        proto = 58
    found = sp.none()
    for t in types:
        found = found | sp.value("icmp_type", t)
    return sp.value("proto", proto) & found


def _answer(sp: Any, packets: Any, head: Any) -> Any:
    """The answer (header ``head``) the host sends on the rejected packet's connection: RELATED."""
    return _later(sp, packets, head, "RELATED") & sp.iface("iif", None)


def _ranges(sp: Any, name: str, intervals: list[tuple[int, int]]) -> Any:
    found = sp.none()
    for lo, hi in intervals:
        found = found | sp.range(name, lo, hi)
    return found


def _where(step: Step | None) -> str:
    if step is None:
        return "on its way"
    if step.index == "policy":
        return f"the {step.table} {step.chain} policy in {step.hook}"
    if step.line is not None:
        return f"{step.table}/{step.chain} rule {step.index}, line {step.line}, in {step.hook}"
    return f"{step.action} in {step.hook}"


def _unique(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _join(note: str | None, more: str) -> str:
    return more if not note else f"{note}; {more}"


# ---------------------------------------------------------------------------------------------
# The TCP handshake of an accepted SYN


def _handshake(engine: Engine, outcome: Outcome) -> Outcome:
    """``outcome`` with ``connection`` set when natlint can follow the handshake: the SYN-ACK
    the receiver sends back (ESTABLISHED, from the host's socket through OUTPUT, or from the
    receiver into PREROUTING, FORWARD and POSTROUTING) and the client's ACK (ESTABLISHED, the
    SYN's own way). "fails" when the host's chains drop either; "completes" when both pass
    and the receiver is the host or a container behind one of its bridges. The SYN-ACK of a
    connection that SNAT rewrote comes back to the translated address, and conntrack
    rewrites it back to the client in nat PREROUTING: it is followed from there when raw and
    mangle PREROUTING, which see it before, have no rules (:func:`snat_replies_followed`),
    else left alone. The ACK of a connection that NAT rewrote is not followed (nat rewrites
    it between mangle and filter)."""
    sp: Any = engine.space
    packets: Any = outcome.packets
    delivered = outcome.delivered
    assert delivered is not None
    if _single(packets, "proto") != _TCP or not packets.issubset(sp.value("tcp_flags", _SYN)):
        return outcome
    if packets.issubset(sp.ctstate(["NEW"])):
        states = ("ESTABLISHED", "ESTABLISHED")  # (the SYN-ACK's, the ACK's)
    elif packets.issubset(sp.ctstate(["UNTRACKED"])):
        # raw NOTRACKed the SYN: conntrack finds no connection for the SYN-ACK (INVALID) and
        # picks the ACK up as a new one; either is UNTRACKED if a raw rule NOTRACKs it too
        # (measured on 6.18)
        states = ("INVALID", "NEW")
    else:
        return outcome
    snat = packets.intersects(sp.value("ct_snat", True))
    if snat and (not packets.issubset(sp.value("ct_snat", True)) or not snat_replies_followed(engine.ruleset)):
        return outcome
    # the client: the SYN's source before any SNAT (its answer is rewritten back to it in nat
    # PREROUTING, before routing)
    client = "orig_src" if snat else "src"
    src, dst, iif = _single(packets, client), _single(packets, "dst"), _single(packets, "iif")
    if src is None or dst is None or iif is None:
        return outcome
    if sp.decode("iif", iif) in (None, "lo"):
        return outcome  # sent by the host itself: not followed
    dnat = packets.intersects(sp.value("ct_dnat", True))
    if dnat and not packets.issubset(sp.value("ct_dnat", True)):
        return outcome
    head = _swapped_tcp(sp, packets, src, dst, client_port="orig_sport" if snat else "sport")
    if head is None:
        return outcome
    synack = _later(sp, packets, head & sp.value("tcp_flags", _SYN | _ACK), states[0])
    if delivered.to == "local":
        back = engine.local(synack & sp.iface("iif", None))
    else:
        if delivered.interface is None:
            return outcome
        back = engine.arriving(synack & sp.iface("iif", delivered.interface))
    ways: list[tuple[str, list[Outcome]]] = [("SYN-ACK", back)]
    if not dnat and not snat:  # the client's ACK: the SYN's own way, ESTABLISHED
        ack = _later(sp, packets, sp.forget(packets, *(n for n in sp.fields if n not in _SAME))
                     & sp.value("tcp_flags", _ACK), states[1])
        ways.append(("client's ACK", engine.arriving(ack & sp.iface("iif", sp.decode("iif", iif)))))
    for what, fates in ways:
        fates = [o for o in fates if not o.packets.is_empty()]  # type: ignore[attr-defined]
        dead = [o for o in fates if o.verdict in _DEAD]
        if not dead:
            continue
        where = _where(dead[0].decided_by)
        if len(dead) < len(fates):
            reason = f"the {what} of this connection may be dropped ({where}): it may never complete"
            return replace(outcome, reasons=_unique(outcome.reasons + (reason,)))
        reasons = _unique(outcome.reasons + tuple(r for o in dead for r in o.reasons))
        note = (f"the SYN gets through, but the {what} is dropped ({where}): the TCP connection never"
                " completes and the client times out")
        answer = tuple(replace(st, reply=True) for st in dead[0].steps)
        return replace(outcome, steps=outcome.steps + answer, reasons=reasons, note=_join(outcome.note, note),
                       connection="fails")
    if len(ways) < 2 or any(not o.packets.is_empty() and o.verdict != "ACCEPT"  # type: ignore[attr-defined]
                            for _what, fates in ways for o in fates):
        return outcome
    if delivered.to == "out" and delivered.interface not in {b.name for b in engine.host.bridges()}:  # type: ignore[attr-defined]
        # beyond an interface that is not one of the host's bridges (whose containers route
        # back through the host), whether the receiver's answer finds its way back to an
        # address that was not translated is up to networks natlint does not see
        return outcome
    return replace(outcome, connection="completes")


def snat_replies_followed(ruleset: Ruleset) -> bool:
    """Whether the answer to a SNATed connection can be followed from where conntrack has
    rewritten its destination back (nat PREROUTING): only raw and mangle PREROUTING come
    before, and they have no rules. Otherwise natlint does not follow it."""
    for name in ("raw", "mangle"):
        table = ruleset.tables.get(name)
        chain = table.chains.get("PREROUTING") if table is not None else None
        if chain is not None and chain.rules:
            return False
    return True


_SAME = ("src", "dst", "sport", "dport", "proto", "iif", "orig_src", "orig_dst", "orig_sport", "orig_dport",
         "connmark", "ct_dnat", "ct_snat")


def _later(sp: Any, packets: Any, head: Any, state: str) -> Any:
    """A later packet of the connection (header ``head``): in ``state``, mark 0, no output
    interface yet, the connection's original tuple, conntrack mark and NAT flags."""
    rest = [name for name in sp.fields if name not in _KEPT]
    kept = sp.forget(packets, *rest)
    fresh = sp.ctstate([state]) & sp.iface("oif", None) & sp.value("fragment", False)
    if "mark" in sp.fields:
        fresh = fresh & sp.value("mark", 0)
    renewed = [n for n in (*_KEPT, "ctstate", "oif", "mark", "fragment", "iif") if n in sp.fields]
    return sp.forget(head, *renewed) & fresh & kept
