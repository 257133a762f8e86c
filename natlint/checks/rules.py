"""NL201-NL203: rules that never match, and rules whose removal changes nothing.

Per table, :mod:`natlint.checks.reach` walks every chain once on packet sets: which packets
reach the chain, and which of them earlier rules surely take. From that:

* NL201 shadowed-rule: the rule could match packets that reach its chain, but earlier rules
  (one or several together) take all of them, at least some with another outcome;
* NL202 redundant-rule: the same, but every one of those packets gets the rule's own outcome
  anyway (a duplicate ACCEPT); or, as info, a rule at the end of a chain that does what
  the end of the chain does (DROP before a DROP policy, a conditional RETURN last);
* NL203 unmatchable-rule: the rule's tests contradict each other, or they contradict every
  packet that can reach its chain (a ``-p udp`` rule in a chain entered only by ``-p tcp``
  jumps, ``--ctstate ESTABLISHED`` in the nat table).

Claims are sound: rate limits, random draws, ipsets and other tests natlint cannot decide
count as matching when that keeps a rule alive and as not matching when it would take
packets (see the reach module), so kube-proxy's ``-m statistic`` load balancing is never a
finding.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

from natlint.checks.context import CheckContext
from natlint.checks.reach import ChainWalk, Cover, Key, RuleState, TableReach, hook_packets
from natlint.checks.tools import generated_by
from natlint.findings import Code, Finding, Related, Severity, register
from natlint.graph.chains import build_graphs
from natlint.model.ruleset import TABLES, Rule, Ruleset, Table
from natlint.packets.compile import Compiled
from natlint.packets.space import Packet, PacketSet, PacketSpace

__all__ = ["check"]

register(Code(
    "NL201", "shadowed-rule", "warning",
    "A rule that never matches: earlier rules of its chain (one or several together) take every packet it"
    " would match, at least some of them with another outcome.",
    why="The rule says what should happen to these packets, but something else does: usually a rule added"
    " at the end (iptables -A) below a broader one, or a rule moved during a rewrite. The firewall does not"
    " do what its author meant, and nothing warns.",
    example="*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp -m tcp --dport 22 -j DROP\n"
    "-A INPUT -s 10.0.0.5/32 -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT",
    fixed="*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 10.0.0.5/32 -p tcp -m tcp --dport 22 -j ACCEPT\n"
    "-A INPUT -p tcp -m tcp --dport 22 -j DROP\nCOMMIT",
))
register(Code(
    "NL202", "redundant-rule", "warning",
    "A rule whose removal changes no packet's fate: earlier rules already do the same thing to every"
    " packet it would match (warning), or it repeats what the end of its chain does anyway (info).",
    why="Dead rules make a ruleset harder to read and review, cost time per packet, and duplicates are"
    " often the sign of a script that appends its rules again on every run.",
    example="*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n"
    "-A INPUT -s 10.0.0.0/8 -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT",
    fixed="*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT",
))
register(Code(
    "NL203", "unmatchable-rule", "warning",
    "A rule that no packet can match: its own tests contradict each other, or they contradict every"
    " packet that can reach its chain (the jumps into it, the hook, the nat table's first-packet rule).",
    why="The rule is dead code that looks alive: whatever it was written for does not happen. Typical"
    " causes: a typo in an address or port, a protocol test that the jump into the chain already excludes,"
    " a conntrack state the nat table never sees.",
    example="*filter\n:INPUT ACCEPT [0:0]\n:TCP - [0:0]\n-A INPUT -p tcp -j TCP\n"
    "-A TCP -p udp -m udp --dport 53 -j ACCEPT\nCOMMIT",
    fixed="*filter\n:INPUT ACCEPT [0:0]\n:TCP - [0:0]\n:UDP - [0:0]\n-A INPUT -p tcp -j TCP\n-A INPUT -p udp -j UDP\n"
    "-A UDP -p udp -m udp --dport 53 -j ACCEPT\nCOMMIT",
))

_SYNTAX = frozenset({"NL001", "NL002", "NL003"})
_NO_OUT = frozenset({"PREROUTING", "INPUT"})
_NO_IN = frozenset({"OUTPUT", "POSTROUTING"})
_VERB = {"ACCEPT": "accepted", "DROP": "dropped", "REJECT": "rejected", "RETURN": "returned from the chain",
         "QUEUE": "queued", "NFQUEUE": "queued", "DNAT": "DNATed", "SNAT": "SNATed", "MASQUERADE": "masqueraded",
         "REDIRECT": "redirected", "NETMAP": "NETMAPed", "TPROXY": "diverted (TPROXY)"}
_MAX_RELATED = 5


def check(ctx: CheckContext) -> Iterator[Finding]:
    return findings(ctx)


def findings(ctx: CheckContext, *, skip_unreadable: bool = True) -> Iterator[Finding]:
    """The NL2xx findings. A table with a line natlint could not read is skipped: the kernel
    refuses it until the line is fixed, and the missing rule may be the one that matters
    (``skip_unreadable=False`` analyses it anyway, with approximate findings: benchmarks)."""
    ruleset = ctx.ruleset
    unreadable = _tables_with_unread_lines(ruleset)
    graphs = build_graphs(ruleset)
    todo = [graphs[name] for name in TABLES if name in graphs and (name not in unreadable or not skip_unreadable)]
    if not todo:
        return
    engine = ctx.engine
    space = cast(PacketSpace, engine.space)

    def compile_rule(rule: Rule) -> Compiled:
        return cast(Compiled, engine.compiled(rule))

    for graph in todo:
        if graph.reachable_cycles() or next(graph.undefined_targets(), None) is not None:
            continue  # NL101/NL103: the kernel refuses the table
        analysis = TableReach(space, graph, compile_rule)
        certainty = "approximate" if graph.table.name in unreadable else "exact"
        for walk in analysis.walks():
            yield from _chain_findings(graph.table, graph.hooks.get(walk.chain.name, frozenset()), walk, analysis,
                                       certainty)


def _tables_with_unread_lines(ruleset: Ruleset) -> set[str]:
    """Tables with a line the reader could not turn into a rule: findings there assume that
    line away, so they are approximate (the kernel refuses the table until it is fixed)."""
    starts = sorted((t.pos.line, t.name) for t in ruleset.tables.values() if t.pos is not None)
    found: set[str] = set()
    for diag in ruleset.diagnostics:
        if not isinstance(diag, Finding) or diag.code not in _SYNTAX:
            continue
        owner = None
        for line, name in starts:
            if line <= diag.line:
                owner = name
        if owner is not None:
            found.add(owner)
    return found


def _finding(code: str, severity: Severity, message: str, rule: Rule, certainty: str,
             related: tuple[Related, ...] = (), witness: dict[str, object] | None = None) -> Finding:
    tool = generated_by(rule.chain)
    if tool is not None:
        severity = "info"
        message += f" (chain {rule.chain} is generated by {tool}: nothing to fix by hand, reported for information)"
    return Finding(code, severity, message, rule.pos.path, rule.pos.line, rule.pos.column, rule.table, rule.chain,
                   related, witness, "approximate" if certainty == "approximate" else "exact", source_line=rule.text)


def _chain_findings(table: Table, hooks: frozenset[str], walk: ChainWalk, analysis: TableReach,
                    certainty: str) -> Iterator[Finding]:
    where = f"chain {walk.chain.name}"
    for state in walk.rules:
        rule = state.rule
        if state.status == "contradiction":
            yield _finding(
                "NL203", "warning",
                "this rule can never match: its tests contradict each other (addresses, ports, protocols or"
                " states that exclude one another), so no packet ever gets its action. Fix the tests or delete it",
                rule, certainty)
        elif state.status == "unreached":
            if _interface_misuse(rule, hooks):
                continue  # NL104 says it already
            yield _finding("NL203", "warning", _unreached_message(table, walk, rule, analysis), rule, certainty,
                           _entry_related(walk))
        elif state.status == "covered" and state.action.kind != "none":
            yield _covered(walk, state, where, certainty)
    yield from _redundant_tail(walk, analysis, certainty)


def _interface_misuse(rule: Rule, hooks: frozenset[str]) -> bool:
    """The rule tests an interface its hooks never have (structure's NL104 reports it)."""
    if not hooks:
        return False
    return (rule.out_interface is not None and hooks <= _NO_OUT) or (rule.in_interface is not None and hooks <= _NO_IN)


# ---- NL203: unreached ------------------------------------------------------------------------

def _unreached_message(table: Table, walk: ChainWalk, rule: Rule, analysis: TableReach) -> str:
    chain = walk.chain
    may = analysis.view(rule).may
    if chain.builtin:
        reasons = _hook_reasons(analysis.space, table.name, chain.name, may)
        why = "; ".join(reasons) if reasons else f"no packet of the {chain.name} hook can match all of its tests"
        return (f"this rule can never match: {why}. Its action never happens; fix its tests (or move it to the"
                " chain or table where such packets pass) or delete it")
    lines = ", ".join(str(r.pos.line) for r in walk.entries[:_MAX_RELATED])
    more = f" and {len(walk.entries) - _MAX_RELATED} more" if len(walk.entries) > _MAX_RELATED else ""
    callers = sorted({r.chain for r in walk.entries})
    if may.intersects(walk.plain):
        why = (f"every packet that could match it is taken by earlier rules of {', '.join(callers)} before the"
               f" jump(s) into {chain.name} at line(s) {lines}{more}")
    else:
        why = (f"packets enter chain {chain.name} only through the jump(s) at line(s) {lines}{more}, and what they"
               f" let in ({_short(walk.reach)}) never matches it")
    return (f"this rule can never match: {why}. Its action never happens; fix its tests or the jumps into the"
            " chain, or delete it")


def _hook_reasons(space: PacketSpace, table: str, hook: str, may: PacketSet) -> list[str]:
    reasons: list[str] = []
    checks: list[tuple[PacketSet, str]] = []
    if table == "nat":
        checks.append((space.ctstate(("NEW", "RELATED")),
                       "the nat table only sees the first packet of each connection (conntrack state NEW, or"
                       " RELATED), and this rule tests another state"))
    if hook in ("PREROUTING", "INPUT"):
        checks.append((space.iface("oif", None), f"{hook} packets have no output interface yet"))
    if hook == "OUTPUT":
        checks.append((space.iface("iif", None), "OUTPUT packets (sent by the host) have no input interface"))
    for allowed, text in checks:
        if not may.intersects(allowed):
            reasons.append(text)
    if not reasons and not may.intersects(hook_packets(space, table, hook)):
        reasons.append(f"no packet the {hook} hook of table {table} sees can match all of its tests")
    return reasons


def _entry_related(walk: ChainWalk) -> tuple[Related, ...]:
    return tuple(Related(r.pos.path, r.pos.line, f"{'goto' if r.target and r.target.goto else 'jump'} into"
                         f" {walk.chain.name}") for r in walk.entries[:_MAX_RELATED])


# ---- NL201 / NL202: covered ------------------------------------------------------------------

def _covered(walk: ChainWalk, state: RuleState, where: str, certainty: str) -> Finding:
    rule = state.rule
    own = state.action.key if state.action.kind in ("terminal", "goto") else None
    outcomes = {k for c in state.covers for k in c.outcomes}
    same = own is not None and outcomes == {own}
    first = state.covers[0]
    lines = _lines(state.covers)
    pkt = state.witness.pick() if state.witness is not None else None
    witness = _witness(pkt, first.rule) if pkt is not None else None
    example = f" For example {pkt} is {_fate(first)} at line {first.rule.pos.line}." if pkt is not None else ""
    related = tuple(
        Related(c.rule.pos.path, c.rule.pos.line, f"{c.label}: takes {_short(c.take)}")
        for c in state.covers[:_MAX_RELATED]
    )
    if same:
        message = (f"redundant rule: every packet it could match is already {_verb(own)} earlier in {where} by"
                   f" {lines}, with the same outcome, so it never matches.{example} Delete it")
        return _finding("NL202", "warning", message, rule, certainty, related, witness)
    mine = state.action.label
    message = (f"shadowed rule: it never matches, because earlier rules in {where} take every packet it could"
               f" match: {lines}.{example} Its own action ({mine}) never happens: move it above line"
               f" {first.rule.pos.line} or delete it")
    return _finding("NL201", "warning", message, rule, certainty, related, witness)


def _lines(covers: tuple[Cover, ...]) -> str:
    parts = [f"line {c.rule.pos.line} ({c.label})" for c in covers[:_MAX_RELATED]]
    if len(covers) > _MAX_RELATED:
        parts.append(f"and {len(covers) - _MAX_RELATED} more")
    return ", ".join(parts)


def _fate(cover: Cover) -> str:
    if len(cover.outcomes) == 1:
        key = cover.outcomes[0]
        if not (isinstance(key, tuple) and key and key[0] == "goto"):
            return _verb(key)
    return f"taken ({cover.label})"


def _verb(key: Key) -> str:
    name = key[0] if isinstance(key, tuple) and key else key
    if isinstance(name, str) and name in _VERB:
        return _VERB[name]
    if isinstance(key, tuple) and len(key) == 2 and key[0] == "goto":
        return f"sent on (goto {key[1]})"
    return f"handled ({name})"


def _short(packets: PacketSet, limit: int = 160) -> str:
    text = packets.describe(limit=3)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _witness(pkt: Packet, taker: Rule) -> dict[str, object]:
    return {
        "src": str(pkt.src), "dst": str(pkt.dst), "proto": pkt.proto, "sport": pkt.sport, "dport": pkt.dport,
        "in_interface": pkt.iif, "out_interface": pkt.oif, "state": pkt.ctstate,
        "taken_by": {"line": taker.pos.line, "rule": taker.text},
    }


# ---- NL202 (info): the end of the chain does the same ----------------------------------------

def _redundant_tail(walk: ChainWalk, analysis: TableReach, certainty: str) -> Iterator[Finding]:
    chain = walk.chain
    if chain.builtin:
        policy = chain.policy or "ACCEPT"
        if policy not in ("ACCEPT", "DROP"):
            return
        for state in reversed(walk.rules):
            if state.status != "live":
                continue  # matches nothing: does not stand between a rule and the policy
            act = state.action
            if act.kind != "terminal" or act.key != policy:
                return
            yield _finding(
                "NL202", "info",
                f"redundant rule: it {policy.lower()}s packets at the end of built-in chain {chain.name}, whose"
                f" policy {policy} does the same to every packet that gets past it. Deleting it changes no packet's"
                " fate (keep it only if you want its counter)", state.rule, certainty)
        return
    for state in reversed(walk.rules):
        if state.status != "live":
            continue
        act = state.action
        if act.kind != "terminal" or act.key != "RETURN":
            return
        if _unconditional(analysis, state.rule):
            return  # '-A CHAIN -j RETURN' last: a deliberate end marker (Docker's DOCKER-USER)
        yield _finding(
            "NL202", "info",
            f"redundant rule: a RETURN at the end of user chain {chain.name} does what falling off the chain's"
            " end does (the packet goes back to the caller). Delete it", state.rule, certainty)


def _unconditional(analysis: TableReach, rule: Rule) -> bool:
    return analysis.view(rule).compiled.set.is_all()
