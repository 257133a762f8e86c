"""Which packets reach each rule of a table, and which rules surely take them.

The NL2xx checks (:mod:`natlint.checks.rules`) ask one question per rule: of the packets
that can reach its chain, which ones can still reach the rule, and who took the others?
This module answers it for one table with one walk per chain (no pairwise comparisons):

* A built-in chain is reached by every packet its hook can carry (:func:`hook_packets`:
  nat chains only see connections' first packets, PREROUTING/INPUT packets have no output
  interface, OUTPUT packets no input interface...). Nothing else is assumed: marks set by
  earlier tables, routing and addresses stay free, so the set is an over-approximation.
* A user chain is reached by the union, over the jumps and gotos into it, of the packets
  that reach the jump and match it. Chains are walked callers first (the table's chain
  graph is a DAG: tables with a reachable loop or an undefined chain are skipped, the
  kernel refuses them anyway).
* Walking a chain keeps ``remaining``: its reaching set minus what earlier rules *surely*
  took. A rule takes packets only with a terminal action (ACCEPT, DROP, REJECT, RETURN,
  NFQUEUE, a goto, a NAT target in the nat table) and only for the packets it matches
  whatever its undecidable tests say (``must``); it lets through everything it *may*
  match otherwise. A jump to a user chain takes only what that chain surely ends with a
  verdict (:class:`Summary`, computed once per chain for any entering packet). A rule or
  chain that may change a field (MARK, CONNMARK, NOTRACK, an unknown target...) makes
  ``remaining`` forget that field for the packets it may match.

Every set here is an over-approximation of what can reach (or an under-approximation of
what is surely taken), for every value of the opaque predicates: a rule whose ``may`` set
misses ``remaining`` never matches, whatever ipsets, rate limits or random draws say.
Matches whose compilation is a heuristic rather than a sound over-approximation are
recompiled: ``-m addrtype`` without the host model (an opaque predicate instead of the
inferred LOCAL addresses) and ``-m pkttype`` dropped (a wider set, and the rule then never
surely takes anything).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from natlint.graph.chains import ChainGraph
from natlint.model.ruleset import Chain, Rule, Table
from natlint.packets.compile import Compiled, compile_rule
from natlint.packets.space import PacketSet, PacketSpace

__all__ = [
    "Action",
    "ChainWalk",
    "Cover",
    "RuleState",
    "Summary",
    "TableReach",
    "View",
    "action_of",
    "hook_packets",
]

# Fields a target may change (the others are not modelled or not changed by any target).
_ALL_CHANGING = ("src", "dst", "sport", "dport", "mark", "connmark", "ctstate", "ct_dnat", "ct_snat")
_NAT_TARGETS = frozenset({"DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP"})
# Targets that end the packet's walk through the table (NFQUEUE: userspace gives the verdict;
# a repeated packet starts the hook again, as any packet of the hook's reaching set).
_TERMINAL_EXTENSIONS = frozenset({"REJECT", "TPROXY", "NFQUEUE"})
_CHANGES: dict[str, tuple[str, ...]] = {
    "MARK": ("mark",),
    "HMARK": ("mark",),
    "CONNMARK": ("mark", "connmark"),
    "NOTRACK": ("ctstate", "ct_dnat", "ct_snat"),
    "CT": ("ctstate", "ct_dnat", "ct_snat"),
    "SYNPROXY": ("ctstate",),
}
# Extension targets known to change none of the modelled fields.
_NO_CHANGE = frozenset({
    "LOG", "NFLOG", "ULOG", "TRACE", "TCPMSS", "CHECKSUM", "DSCP", "TOS", "TTL", "HL", "CLASSIFY",
    "AUDIT", "SECMARK", "CONNSECMARK", "LED", "IDLETIMER", "RATEEST", "TEE", "ECN", "TCPOPTSTRIP", "SET",
})
# Matches whose compiled set is a heuristic (not a sound superset): see the module doc.
_HOST_MODULES = frozenset({"addrtype"})
_DROPPED_MODULES = frozenset({"pkttype"})

Key = Hashable
# Covers of at most this many rules are pruned to a smaller subset that still covers.
_PRUNE = 12
# A user chain's reaching set bigger than this (BDD nodes) is widened to its callers' jumps.
REACH_NODES = 2000


@dataclass(frozen=True, slots=True)
class Action:
    """What a rule's target does to the packets it matches, for this analysis.

    ``key`` names the outcome of a terminal action (two rules with the same key do the same
    thing with a packet); ``chain`` is the user chain of a jump or goto; ``changes`` the
    fields the target may change for packets that go on.
    """

    kind: Literal["terminal", "jump", "goto", "continue", "none"]
    key: Key
    label: str
    chain: str | None = None
    changes: tuple[str, ...] = ()


def action_of(rule: Rule, table: Table) -> Action:
    target = rule.target
    if target is None:
        return Action("none", ("rule", id(rule)), "no target (counts packets)")
    name = target.name
    if target.kind == "chain":
        if target.goto:
            return Action("goto", ("goto", name), f"goto {name}", name)
        return Action("jump", ("jump", name), f"jump to {name}", name)
    if target.kind == "verdict":
        if name == "RETURN":
            chain = table.chains.get(rule.chain)
            if chain is not None and chain.builtin:  # RETURN from a built-in chain: its policy
                policy = chain.policy or "ACCEPT"
                return Action("terminal", policy, f"RETURN (the {policy} policy)")
            return Action("terminal", "RETURN", "RETURN")
        return Action("terminal", name, name)
    options = tuple((o.name, o.values, o.invert) for o in target.options)
    text = " ".join([name, *(f"--{o.name.replace('_', '-')} {' '.join(str(v) for v in o.values)}".strip()
                             for o in target.options)])
    if name in _NAT_TARGETS:
        if table.name == "nat":
            return Action("terminal", (name, options), text)
        return Action("continue", ("rule", id(rule)), text, changes=_ALL_CHANGING)
    if name in _TERMINAL_EXTENSIONS:
        return Action("terminal", (name, options), text)
    if target.kind == "extension" and name in _NO_CHANGE:
        return Action("continue", ("rule", id(rule)), text)
    changes = _CHANGES.get(name, _ALL_CHANGING)  # unknown targets: anything may change
    return Action("continue", ("rule", id(rule)), text, changes=changes)


@dataclass(frozen=True, slots=True)
class View:
    """A rule's match as the analysis uses it: ``may`` (matches for some value of the opaque
    predicates: an over-approximation), ``must`` (for every value: an under-approximation)."""

    may: PacketSet
    must: PacketSet
    compiled: Compiled


@dataclass(frozen=True, slots=True)
class Summary:
    """What a user chain does with any packet that enters it (jump or goto).

    ``done``: per outcome key, the packets that surely end there with that verdict (never
    return); ``leave``: the packets that may end there (an over-approximation); ``changes``:
    the fields the chain may change for packets that return.
    """

    done: dict[Key, PacketSet]
    leave: PacketSet
    changes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Cover:
    """An earlier rule that takes part of a rule's packets: ``outcomes`` what it does with them."""

    rule: Rule
    packets: PacketSet  # the part of the covered rule's packets it takes
    take: PacketSet  # everything it surely takes
    outcomes: tuple[Key, ...]
    label: str


RuleStatus = Literal["contradiction", "unreached", "covered", "live"]


@dataclass(slots=True)
class RuleState:
    """What the walk found out about one rule of a chain."""

    rule: Rule
    action: Action
    status: RuleStatus
    # "covered": the earlier rules that together take every packet it would match, and one
    # such packet (with the rule that takes it first).
    covers: tuple[Cover, ...] = ()
    witness: PacketSet | None = None


@dataclass(slots=True)
class ChainWalk:
    chain: Chain
    reach: PacketSet
    entries: tuple[Rule, ...]  # the jumps and gotos into it (user chains)
    # a superset of reach: the jumps' own matches, without what earlier rules of the callers took
    plain: PacketSet
    rules: list[RuleState] = field(default_factory=list)


def hook_packets(space: PacketSpace, table: str, hook: str) -> PacketSet:
    """Every packet that can reach ``table``'s built-in chain ``hook`` (an over-approximation).

    PREROUTING and INPUT packets have no output interface yet, OUTPUT packets no input
    interface; each packet but OUTPUT's has an input interface, and every packet after
    routing an output one. nat chains only see packets whose connection has no NAT mapping
    yet: a NEW connection's first packet or the first packet of a RELATED one (an expected
    connection; nf_nat_inet_fn). Marks, addresses and the rest are left free: earlier tables
    and hooks may have set them.
    """
    packets = space.all()
    no_in = space.iface("iif", None)
    no_out = space.iface("oif", None)
    if hook in ("PREROUTING", "INPUT"):
        packets = (packets & no_out) - no_in
    elif hook == "FORWARD":
        packets = packets - no_in - no_out
    elif hook == "OUTPUT":
        packets = (packets & no_in) - no_out
    elif hook == "POSTROUTING":
        packets = packets - no_out
    if table == "nat":
        packets &= space.ctstate(("NEW", "RELATED"))
    return packets


class TableReach:
    """The walk of one table (see the module doc). ``walks()`` yields each reached chain,
    callers before callees; unreferenced chains and chains whose entries never match are
    left out."""

    def __init__(self, space: PacketSpace, graph: ChainGraph, compile: Callable[[Rule], Compiled]) -> None:
        self.space = space
        self.graph = graph
        self.table = graph.table
        self._compile = compile  # the engine's compilation (with the host model), shared by the checks
        self._views: dict[int, View] = {}
        self._actions: dict[int, Action] = {}
        self._summaries: dict[str, Summary] = {}
        self._changing = tuple(f for f in _ALL_CHANGING if f in space.fields)

    # ---- per rule ---------------------------------------------------------------------------
    def view(self, rule: Rule) -> View:
        key = id(rule)
        found = self._views.get(key)
        if found is None:
            names = {m.name for m in rule.matches}
            heuristic = bool(names & (_HOST_MODULES | _DROPPED_MODULES))
            if heuristic:
                kept = tuple(m for m in rule.matches if m.name not in _DROPPED_MODULES)
                plain = dataclasses.replace(rule, matches=kept)
                compiled = compile_rule(self.space, plain, None)
            else:
                compiled = self._compile(rule)
            s = compiled.set
            # opaque predicates are only in a set compiled with a reason (no ∃/∀ for the others)
            may, must = (s.may(), s.must()) if compiled.approximate else (s, s)
            if names & _DROPPED_MODULES:
                must = self.space.none()
            found = View(may, must, compiled)
            self._views[key] = found
        return found

    def action(self, rule: Rule) -> Action:
        key = id(rule)
        found = self._actions.get(key)
        if found is None:
            found = action_of(rule, self.table)
            self._actions[key] = found
        return found

    def _forget(self, packets: PacketSet, names: tuple[str, ...]) -> PacketSet:
        """∃names.packets, skipping the work when the set does not test those fields."""
        # ∃x.S == S exactly when S does not depend on x (no walk over the set's nodes)
        tested = tuple(n for n in names if self.space.tests_variables(packets, self.space.variables(n)))
        return self.space.forget(packets, *tested) if tested else packets

    def _changes(self, names: tuple[str, ...] | frozenset[str]) -> tuple[str, ...]:
        return tuple(f for f in self._changing if f in names)

    # ---- chain summaries ----------------------------------------------------------------------
    def summary(self, name: str) -> Summary:
        """What chain ``name`` surely / may decide for any packet entering it (memoized)."""
        found = self._summaries.get(name)
        if found is not None:
            return found
        # callees first, so that the summaries do not recurse once per nested jump (10,000 nested
        # user chains would hit the recursion limit)
        for callee in reversed(self.graph.topological_order(self.graph.descendants(name), acyclic_only=True)):
            if callee not in self._summaries:
                self._summary(callee)
        return self._summary(name)

    def _summary(self, name: str) -> Summary:
        found = self._summaries.get(name)
        if found is not None:
            return found
        sp = self.space
        chain = self.table.chains[name]
        # placeholder against recursion through a loop (tables with reachable loops are skipped)
        self._summaries[name] = Summary({}, sp.all(), frozenset(self._changing))
        unchanged = sp.all()  # entering packets that surely reach this rule, unchanged
        done: dict[Key, list[PacketSet]] = {}
        leave: list[PacketSet] = []
        changed: set[str] = set()

        def before(packets: PacketSet) -> PacketSet:
            """The entering packets that, changed by earlier rules, may be in ``packets``."""
            return self._forget(packets, self._changes(frozenset(changed))) if changed else packets

        for rule in chain.rules:
            v = self.view(rule)
            if v.may.is_empty():
                continue
            act = self.action(rule)
            if act.kind in ("jump", "goto") and act.chain in self.table.chains:
                assert act.chain is not None
                sub = self.summary(act.chain)
                leave.append(before(v.may & sub.leave))
                sure = unchanged & v.must
                if not sure.is_empty():
                    for key, packets in sub.done.items():
                        part = sure & packets
                        if not part.is_empty():
                            done.setdefault(key, []).append(part)
                if act.kind == "goto" or sub.changes:
                    unchanged -= v.may
                else:
                    unchanged -= v.may & sub.leave
                changed |= sub.changes
            elif act.kind == "terminal":
                if act.key != "RETURN":
                    leave.append(before(v.may))
                    part = unchanged & v.must
                    if not part.is_empty():
                        done.setdefault(act.key, []).append(part)
                unchanged -= v.may
            elif act.changes:
                unchanged -= v.may
                changed.update(act.changes)
        result = Summary(
            {k: _union(sp, parts) for k, parts in done.items()},
            _union(sp, leave),
            frozenset(self._changes(frozenset(changed))),
        )
        self._summaries[name] = result
        return result

    # ---- the walk -----------------------------------------------------------------------------
    def walks(self) -> Iterator[ChainWalk]:
        sp = self.space
        table = self.table
        order = [n for n in self.graph.topological_order(self.graph.reachable_from_hooks()) if n in table.chains]
        incoming: dict[str, list[PacketSet]] = {}
        entries: dict[str, list[Rule]] = {}
        plain: dict[str, PacketSet] = {}  # per chain: a simple superset of its reaching set
        for name in order:
            chain = table.chains[name]
            callers = entries.pop(name, [])
            if chain.builtin:
                reach = simple = hook_packets(sp, table.name, name)
            else:
                parts = incoming.pop(name, [])
                if not parts:
                    continue  # no jump into it can match: the jumps are reported, not its rules
                reach = _union(sp, parts)
                simple = _union(sp, [self.view(r).may & plain[r.chain] for r in callers])
                if reach.node.dag_size > REACH_NODES and simple.node.dag_size < reach.node.dag_size:
                    # What the callers' earlier rules took makes the set big (a blocklist before
                    # the jump), and every operation in this chain would pay for it: widen to the
                    # jumps' own matches (an over-approximation, so only findings are lost).
                    reach = simple
            plain[name] = simple
            walk = ChainWalk(chain, reach, tuple(callers), simple)
            self._walk(walk, incoming, entries)
            yield walk

    def _walk(self, walk: ChainWalk, incoming: dict[str, list[PacketSet]], entries: dict[str, list[Rule]]) -> None:
        sp = self.space
        reach = walk.reach
        remaining = reach
        takes: list[tuple[Rule, PacketSet, Action]] = []
        for rule in walk.chain.rules:
            act = self.action(rule)
            v = self.view(rule)
            if v.may.is_empty():
                walk.rules.append(RuleState(rule, act, "contradiction"))
                continue
            if not v.may.intersects(reach):
                walk.rules.append(RuleState(rule, act, "unreached"))
                continue
            hit = v.may & remaining
            if hit.is_empty():
                covers, witness = self._cover(v.may & reach, takes)
                status: RuleStatus = "covered" if covers else "live"  # "live": the cover failed (never expected)
                walk.rules.append(RuleState(rule, act, status, covers, witness))
                continue
            walk.rules.append(RuleState(rule, act, "live"))
            take = sp.none()
            changes: tuple[str, ...] = act.changes
            if act.kind in ("jump", "goto") and act.chain in self.table.chains:
                assert act.chain is not None
                incoming.setdefault(act.chain, []).append(hit)
                entries.setdefault(act.chain, []).append(rule)
                if act.kind == "goto":
                    take = v.must
                else:
                    sub = self.summary(act.chain)
                    if sub.done and not v.must.is_empty():
                        take = v.must & _union(sp, list(sub.done.values()))
                    changes = tuple(sub.changes)
            elif act.kind == "terminal":
                take = v.must
            if not take.is_empty() and take.intersects(remaining):
                remaining -= take
                takes.append((rule, take, act))
            if changes:
                moved = remaining & v.may
                if not moved.is_empty():
                    remaining |= self._forget(moved, self._changes(changes))

    def _cover(self, packets: PacketSet, takes: list[tuple[Rule, PacketSet, Action]]
               ) -> tuple[tuple[Cover, ...], PacketSet | None]:
        """Earlier rules that together take ``packets`` (a small set of them), and a part of
        ``packets`` that the first of them really takes (for a witness); () when they do not
        cover it all (never expected)."""
        left = packets
        found: list[Cover] = []
        for rule, take, act in takes:
            part = left & take
            if part.is_empty():
                continue
            found.append(Cover(rule, part, take, self._outcomes(act, part), act.label))
            left -= take
            if left.is_empty():
                break
        else:
            return (), None
        # First come first gives the rules that really take the packets, but often more of
        # them than needed ("-d X" rules each taking a corner): keep a smaller set that still
        # covers, preferring one rule that covers alone.
        chosen = found
        for c in found:
            if packets.issubset(c.take):
                chosen = [c]
                break
        else:
            if len(found) <= _PRUNE:
                for c in list(found):
                    rest = [o for o in chosen if o is not c]
                    if rest and packets.issubset(_union(self.space, [o.take for o in rest])):
                        chosen = rest
        covers = []
        for c in chosen:
            mine = packets & c.take
            covers.append(Cover(c.rule, mine, c.take, self._outcomes(self.action(c.rule), mine), c.label))
        return tuple(covers), chosen[0].packets  # the part it takes first: a true witness

    def _outcomes(self, act: Action, packets: PacketSet) -> tuple[Key, ...]:
        if act.kind == "jump" and act.chain is not None:
            sub = self.summary(act.chain)
            return tuple(k for k, done in sub.done.items() if done.intersects(packets))
        return (act.key,)


def _union(space: PacketSpace, sets: list[PacketSet]) -> PacketSet:
    if not sets:
        return space.none()
    level = list(sets)
    while len(level) > 1:
        paired = [level[i] | level[i + 1] for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]
