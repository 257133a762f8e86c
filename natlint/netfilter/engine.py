"""Push packet sets through netfilter as the kernel does.

One :class:`Engine` per (ruleset, host model). It walks chains rule by rule on *sets* of
packets: a rule splits the set into what it matches and what it does not; ``-j`` pushes a
return point, ``-g`` does not, ``RETURN`` or the end of a user chain returns to the caller,
and the end of a built-in chain applies its policy (ipt_do_table). Targets that rewrite
headers (DNAT, SNAT, MASQUERADE, REDIRECT, NETMAP, MARK, CONNMARK, NOTRACK) transform the set.

The hook pipeline (research 3.1):

* arriving: raw, mangle, nat PREROUTING -> routing -> INPUT (mangle, filter, security, nat)
  for local destinations, else FORWARD (mangle, filter, security) -> POSTROUTING (mangle, nat);
* local: OUTPUT (raw, mangle, nat, filter, security) -> reroute -> POSTROUTING (mangle, nat),
  and a packet for a local address then comes back in on ``lo`` (raw, mangle PREROUTING,
  mangle and filter INPUT; nat is already decided for that connection).

nat chains see only packets whose connection has no mapping yet: conntrack state NEW (and
RELATED, which natlint treats as already mapped). filter sees post-DNAT, pre-SNAT headers.
Connection tracking itself only runs in a namespace when a loaded rule needs it (a NAT
target, a conntrack/state/connmark match, CT...): without one, nat chains never run.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, TypeVar

from natlint.model.ruleset import Chain, Rule, Ruleset, Table, Target
from natlint.model.values import Prefix
from natlint.netfilter import shared_chains as sc

if TYPE_CHECKING:
    from natlint.host.model import RouteDecision

__all__ = ["Engine", "Outcome", "Step", "Delivery", "BranchBudgetExceeded", "ORIG_PAIRS", "uses_conntrack"]

Verdict = Literal["ACCEPT", "DROP", "REJECT", "QUEUE", "UNKNOWN"]
_T = TypeVar("_T")
Hook = Literal["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]

# Table order per hook by priority (raw -300, mangle -150, nat DNAT -100, filter 0,
# security 50 (legacy) / 150 (nft), nat SNAT 100). natlint follows iptables-nft.
_TABLES_AT: dict[str, tuple[str, ...]] = {
    "PREROUTING": ("raw", "mangle", "nat"),
    "INPUT": ("mangle", "filter", "nat", "security"),
    "FORWARD": ("mangle", "filter", "security"),
    "OUTPUT": ("raw", "mangle", "nat", "filter", "security"),
    "POSTROUTING": ("mangle", "nat"),
}
_NON_TERMINAL_NO_EFFECT = frozenset({
    "LOG", "NFLOG", "ULOG", "TRACE", "TCPMSS", "CHECKSUM", "DSCP", "TOS", "TTL", "HL", "CLASSIFY",
    "AUDIT", "SECMARK", "CONNSECMARK", "LED", "IDLETIMER", "RATEEST", "TEE", "ECN", "TCPOPTSTRIP",
})
_MAX_DEPTH = 64
# What makes the kernel track connections in a network namespace (nf_ct_netns_get, called by
# these matches and targets when a rule using them is loaded). A namespace whose rules use
# none of them has no conntrack: no packet has a connection, and nat chains never run.
_CONNTRACK_MATCHES = frozenset({
    "conntrack", "state", "connmark", "connbytes", "connlabel", "connlimit", "helper", "cluster", "ipvs",
})
_CONNTRACK_TARGETS = frozenset({
    "DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP", "CT", "NOTRACK", "CONNMARK", "CONNSECMARK",
    "SYNPROXY", "CLUSTERIP",
})


def uses_conntrack(ruleset: Ruleset) -> bool:
    """Whether loading the ruleset turns connection tracking on (see _CONNTRACK_*)."""
    for rule in ruleset.rules():
        if rule.target is not None and rule.target.name in _CONNTRACK_TARGETS:
            return True
        if any(m.name in _CONNTRACK_MATCHES for m in rule.matches):
            return True
    return False


class BranchBudgetExceeded(RuntimeError):
    """The analysis split into more branches than its budget allows."""


@dataclass(frozen=True, slots=True)
class Step:
    """One thing that happened to a packet class: a rule that matched, or a policy.

    ``index`` is the rule's 1-based position in its chain (as ``iptables -L --line-numbers``
    and the kernel's trace count), ``"policy"`` for a chain policy, None for routing.
    ``reply``: a step of another packet than the traced one: the answer a REJECT sent, or
    the SYN-ACK or ACK a failing handshake loses (natlint.netfilter.replies).
    """

    hook: str
    table: str
    chain: str
    line: int | None
    rule: str | None
    action: str
    index: int | Literal["policy"] | None = None
    reply: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"hook": self.hook, "table": self.table, "chain": self.chain, "line": self.line,
                "index": self.index, "rule": self.rule, "action": self.action, "reply": self.reply}


@dataclass(frozen=True, slots=True)
class Delivery:
    to: Literal["local", "out"]
    interface: str | None


@dataclass(frozen=True)
class Outcome:
    """A set of packets that share one fate.

    ``connection``: for a TCP SYN that is accepted, whether the handshake then completes
    ("completes": the SYN-ACK and the client's ACK pass too; "fails": one of them is
    dropped, the client times out), None when natlint did not follow it (only
    ``natlint trace`` does: natlint.netfilter.replies)."""

    packets: object  # a natlint.packets PacketSet (after all NAT)
    verdict: Verdict
    delivered: Delivery | None
    steps: tuple[Step, ...]
    reasons: tuple[str, ...] = ()
    note: str | None = None
    connection: Literal["completes", "fails"] | None = None

    @property
    def certainty(self) -> Literal["exact", "approximate"]:
        return "approximate" if self.reasons else "exact"

    @property
    def decided_by(self) -> Step | None:
        for step in reversed(self.steps):
            if step.action not in ("continue",):
                return step
        return None

    def accepted_by(self, hook: str) -> Step | None:
        """The filter table's rule or policy that let the packet through in ``hook`` (its
        own steps, not a reply's), or None."""
        for step in reversed(self.steps):
            if not step.reply and step.hook == hook and step.table == "filter" \
                    and step.action in ("ACCEPT", "policy ACCEPT"):
                return step
        return None


@dataclass(frozen=True)
class _Branch:
    packets: object
    steps: tuple[Step, ...] = ()
    reasons: tuple[str, ...] = ()
    # Fields of the conntrack original tuple not yet recorded in the set: for the branch's
    # NEW packets orig_FIELD is implicitly FIELD (see Engine._settle).
    lazy: frozenset[str] = frozenset()

    def extend(self, packets: object, step: Step | None = None, reasons: Iterable[str] = ()) -> _Branch:
        new_reasons = self.reasons + tuple(r for r in reasons if r not in self.reasons)
        steps = self.steps + (step,) if step is not None else self.steps
        return _Branch(packets, steps, new_reasons, self.lazy)

    def with_packets(self, packets: object) -> _Branch:
        return _Branch(packets, self.steps, self.reasons, self.lazy)


def _history(b: _Branch, *, steps: bool) -> tuple[object, ...]:
    """What branches must share to be merged into one: their steps (when recorded), their
    reasons and their lazy fields."""
    return (b.steps, b.reasons, b.lazy) if steps else (b.reasons, b.lazy)


class _Pile:
    """The branches a chain ended with a verdict, as (branch, verdict) pairs.

    With ``merge`` (an engine that records no steps) the ACCEPTed ones are unioned as they
    come, per (reasons, lazy) as :meth:`Engine._merge` groups them, in a binary counter:
    partial unions of 1, 2, 4... branches, two of the same weight merged at once. The same
    balanced tree as ``union_all`` at the end, but the 32,000 translated branches of a big
    kube-proxy dump are never alive all at once (they were the peak of the nat checks).
    """

    def __init__(self, *, merge: bool) -> None:
        self.merge = merge
        self.items: list[tuple[_Branch, Verdict]] = []
        self._stacks: dict[tuple[object, ...], list[tuple[int, _Branch]]] = {}

    def append(self, item: tuple[_Branch, Verdict]) -> None:
        if self.merge and item[1] == "ACCEPT":
            self._push(item[0], 1)
        else:
            self.items.append(item)

    def extend(self, other: _Pile) -> None:
        self.items.extend(other.items)
        for stack in other._stacks.values():
            for weight, b in stack:
                self._push(b, weight)
        other.clear()

    def _push(self, b: _Branch, weight: int) -> None:
        _carry(self._stacks.setdefault(_history(b, steps=False), []), weight, b,
               lambda older, newer: older.with_packets(older.packets | newer.packets))  # type: ignore[operator]

    def __iter__(self) -> Iterator[tuple[_Branch, Verdict]]:
        yield from self.items
        for stack in self._stacks.values():
            for _weight, b in stack:
                yield b, "ACCEPT"

    def clear(self) -> None:
        self.items.clear()
        self._stacks.clear()


@dataclass
class _TableResult:
    accepted: list[_Branch] = field(default_factory=list)  # go on to the next table
    stopped: list[tuple[_Branch, Verdict]] = field(default_factory=list)  # DROP, REJECT, ...


# What one arriving run produces: outcomes before the bridge split, and per group (packets,
# bridge, outcomes).
_Parts = tuple[list[Outcome], list[tuple[object, str | None, list[Outcome]]]]


class Engine:
    """Evaluate a ruleset on packet sets under a host model."""

    def __init__(self, ruleset: Ruleset, host: object, *, space: object | None = None,
                 record_steps: bool | Callable[[Step], bool] = True, max_branches: int = 20_000,
                 conntrack: bool | None = None, like: Engine | None = None, share_chains: bool = True) -> None:
        """``record_steps``: True records every step of a branch's way, and outcomes with
        different ways stay apart; False merges outcomes whatever their way (fates only: much
        faster; outcomes have no steps); a function records only the steps it keeps, and
        outcomes that kept the same steps merge (e.g. one outcome per DNAT rule instead of one
        per path through it).
        ``like``: an engine of the same ruleset, host and space whose compiled rules this
        one shares (a kube-proxy dump has tens of thousands of rules to compile).
        ``share_chains``: an engine that records no steps, or only some, runs a nat chain
        that several hooks jump to once for all of them (natlint.netfilter.shared_chains)."""
        from natlint.packets.compile import compile_interfaces
        from natlint.packets.space import PacketSpace

        self.ruleset = ruleset
        self.host = host
        self.space = space if space is not None else PacketSpace(
            ruleset.family, compile_interfaces(ruleset, host))  # type: ignore[arg-type]
        self.record_steps = record_steps is not False
        self._keep: Callable[[Step], bool] | None = None if isinstance(record_steps, bool) else record_steps
        self.max_branches = max_branches
        # None: on when the rules need it (another user of the namespace may turn it on too)
        self.conntrack = uses_conntrack(ruleset) if conntrack is None else conntrack
        self._compiled: dict[int, object] = {}
        self._orig_reads: dict[int, frozenset[str]] = {}
        if like is not None:
            if like.ruleset is not ruleset or like.host is not host or like.space is not self.space:
                raise ValueError("an engine shares compiled rules only with one of the same ruleset, host and space")
            self._compiled = like._compiled
            self._orig_reads = like._orig_reads
        self._iif_free: bool | None = None
        self._shared: tuple[object, _Parts] | None = None
        # shared chains (natlint.netfilter.shared_chains): per table, the chains and what they
        # may rewrite; per (table, chain), the runs made
        self.share_chains = share_chains
        self._shareable: dict[str, dict[str, frozenset[str]]] = {}
        self._chain_runs: dict[tuple[str, str], list[sc.ChainRun]] = {}
        self.chains_served = 0  # calls a shared run served for another hook
        self._routes: list[tuple[object, RouteDecision]] | None = None
        self._routed_out: dict[tuple[str, str], object] = {}
        self._branches = 0
        self._all_new = False  # while _hook runs the nat table: every packet is NEW

    # ---- compiled rules -------------------------------------------------------------------
    def compiled(self, rule: Rule) -> object:
        key = id(rule)
        found = self._compiled.get(key)
        if found is None:
            from natlint.packets.compile import compile_rule

            found = compile_rule(self.space, rule, self.host)  # type: ignore[arg-type]
            self._compiled[key] = found
        return found

    # ---- chains -----------------------------------------------------------------------------
    def run_table(self, table_name: str, hook: str, branches: Sequence[_Branch]) -> _TableResult:
        """Run one table's built-in chain for ``hook`` on the branches."""
        result = _TableResult()
        table = self.ruleset.tables.get(table_name)
        chain = table.chains.get(hook) if table is not None else None
        if chain is not None and chain.pos is None and not chain.rules:
            # A built-in chain the dump neither declares nor appends to does not exist with
            # iptables-nft (a base chain is made when declared or first appended to): the
            # packet crosses no chain there, as if the table had none (legacy iptables has
            # the chain, with policy ACCEPT: the same verdict).
            chain = None
        if table is None or chain is None:
            result.accepted.extend(branches)
            return result
        for branch in branches:
            stopped, returned = self._run_chain(table, chain, hook, branch, 0)
            result.stopped.extend((b, v) for b, v in stopped if v != "ACCEPT")
            result.accepted.extend(b for b, v in stopped if v == "ACCEPT")
            stopped.clear()  # the accepted ones are merged below: no other reference to them
            policy: Verdict = "DROP" if chain.policy == "DROP" else "ACCEPT"
            for b in self._merge(returned):
                step = self._kept(Step(hook, table.name, chain.name, chain.pos.line if chain.pos else None, None,
                                       f"policy {policy}", "policy"))
                done = b.extend(b.packets, step)
                if policy == "ACCEPT":
                    result.accepted.append(done)
                else:
                    result.stopped.append((done, "DROP"))
        result.accepted = self._merge(result.accepted)
        return result

    def _run_chain(self, table: Table, chain: Chain, hook: str, branch: _Branch, depth: int
                   ) -> tuple[_Pile, list[_Branch]]:
        """(branches that ended with a verdict, branches that returned / fell off the end)."""
        stopped = _Pile(merge=not self.record_steps)
        returned: list[_Branch] = []
        if depth > _MAX_DEPTH:
            too_deep = branch.extend(branch.packets, reasons=[f"chain nesting deeper than {_MAX_DEPTH}"])
            stopped.append((too_deep, "UNKNOWN"))
            return stopped, []
        live = [branch]
        for rule in chain.rules:
            if not live:
                break
            compiled = self.compiled(rule)
            match_set = compiled.set  # type: ignore[attr-defined]
            next_live: list[_Branch] = []
            matches_all = match_set.is_all()  # type: ignore[attr-defined]
            reads = self._reads_orig(rule, match_set)
            for b in live:
                if reads and b.lazy & reads:  # the rule tests the original tuple: record it first
                    b = self._settle(b, b.lazy & reads)
                if matches_all:  # no test (e.g. '-j KUBE-MARK-MASQ'): every packet matches
                    hit = b.packets
                else:
                    hit = b.packets & match_set  # type: ignore[operator]
                    if hit.is_empty():
                        next_live.append(b)
                        continue
                # BDDs are canonical: the whole branch matched when hit is the same node
                if not matches_all and hit != b.packets:
                    miss = b.packets - match_set  # type: ignore[operator]
                    if not miss.is_empty():
                        next_live.append(b.with_packets(miss))
                reasons = compiled.reasons if compiled.approximate else ()  # type: ignore[attr-defined]
                hit_branch = b.with_packets(hit).extend(hit, None, reasons)
                self._target(table, chain, hook, rule, hit_branch, depth, stopped, returned, next_live)
            live = self._merge(next_live)
        returned.extend(live)
        return stopped, returned

    def shareable_chains(self, table: Table) -> dict[str, frozenset[str]]:
        """The table's chains one run may serve for several hooks, with the tuple fields they
        may rewrite (natlint.netfilter.shared_chains; made once per table)."""
        found = self._shareable.get(table.name)
        if found is None:
            found = self._shareable[table.name] = sc.shareable_chains(table, _NON_TERMINAL_NO_EFFECT)
        return found

    def _shared_run(self, table: Table, chain: Chain, hook: str, b: _Branch, depth: int
                    ) -> tuple[_Pile, list[_Branch]] | None:
        """The chain's outcomes for the branch from one run shared by the built-in chains
        that jump to it (see natlint.netfilter.shared_chains), or None: run it as usual.
        Engines that record every step run it as usual (a trace asks once per hook)."""
        if (self.record_steps and self._keep is None) or not self.share_chains or table.name != "nat" or depth != 1:
            return None
        rewrites = self.shareable_chains(table).get(chain.name)
        if rewrites is None:
            return None
        sp = self.space
        runs = self._chain_runs.setdefault((table.name, chain.name), [])
        found = None
        for run in runs:
            found = sc.condition(sp, run.start, b.packets) if run.lazy == b.lazy else None
            if found is not None:
                break
        else:
            if any(run.hook == hook for run in runs):
                return None  # one run per hook: another branch of this hook runs as usual
            start = sc.start_of(sp, b.packets)
            if start is None:
                return None
            stopped, returned = self._run_chain(table, chain, hook, _Branch(start, lazy=b.lazy), depth)
            run = sc.ChainRun(hook, start, b.lazy, list(stopped), returned, rewrites, sc.callers(table, chain.name))
            runs.append(run)
            found = sc.condition(sp, run.start, b.packets)
            if found is None:  # cannot happen: the run's start holds the packets as asked
                raise AssertionError(f"the shared run of {chain.name} does not serve its first caller")
        run.served.add(hook)
        if run.hook != hook:
            self.chains_served += 1
        cache: dict[frozenset[str], object] = {}

        def serve(o: _Branch) -> _Branch | None:
            packets = sc.restricted(sp, o.packets, found, o.lazy, run.rewrites, cache)
            if packets.is_empty():  # type: ignore[attr-defined]
                return None
            # the run's steps (a step filter's) name the hook it was made for
            steps = o.steps if run.hook == hook else tuple(replace(s, hook=hook) for s in o.steps)
            return _Branch(packets, b.steps + steps, b.reasons + tuple(r for r in o.reasons if r not in b.reasons),
                           o.lazy)

        pile = _Pile(merge=not self.record_steps)
        for o, verdict in run.stopped:
            kept = serve(o)
            if kept is not None:
                pile.append((kept, verdict))
        back = [kept for o in run.returned if (kept := serve(o)) is not None]
        if not found.rest.is_empty():  # type: ignore[attr-defined]
            more, returned = self._run_chain(table, chain, hook, b.with_packets(found.rest), depth)
            pile.extend(more)
            back.extend(returned)
        return pile, back

    def _step(self, hook: str, table: Table, chain: Chain, rule: Rule, action: str) -> Step | None:
        if not self.record_steps:  # not even made: one per rule a branch meets
            return None
        return self._kept(Step(hook, table.name, chain.name, rule.pos.line, rule.text, action, rule.index))

    def _kept(self, step: Step) -> Step | None:
        """The step, or None when it is not recorded (no steps, or the step filter drops it)."""
        if not self.record_steps:
            return None
        return step if self._keep is None or self._keep(step) else None

    def _then(self, steps: tuple[Step, ...], step: Step) -> tuple[Step, ...]:
        """The steps followed by ``step`` when it is recorded."""
        return steps if self._kept(step) is None else steps + (step,)

    def _target(self, table: Table, chain: Chain, hook: str, rule: Rule, b: _Branch, depth: int,
                stopped: _Pile, returned: list[_Branch], live: list[_Branch]) -> None:
        self._count()
        target = rule.target
        if target is None:
            live.append(b.extend(b.packets, self._step(hook, table, chain, rule, "continue")))
            return
        name = target.name
        if target.kind == "verdict":
            step = self._step(hook, table, chain, rule, name)
            if name == "RETURN":
                returned.append(b.extend(b.packets, step))
            elif name == "QUEUE":
                stopped.append((b.extend(b.packets, step, ["QUEUE hands the packet to a userspace program"]),
                                "QUEUE"))
            else:
                stopped.append((b.extend(b.packets, step), "ACCEPT" if name == "ACCEPT" else "DROP"))
            return
        if target.kind == "chain":
            sub = table.chains.get(name)
            how = "goto" if target.goto else "jump"
            step = self._step(hook, table, chain, rule, f"{how} {name}")
            entered = b.extend(b.packets, step)
            if sub is None:
                stopped.append((entered.extend(entered.packets, reasons=[f"chain {name} is not defined"]), "UNKNOWN"))
                return
            shared = self._shared_run(table, sub, hook, entered, depth + 1)
            sub_stopped, sub_returned = shared or self._run_chain(table, sub, hook, entered, depth + 1)
            stopped.extend(sub_stopped)
            (returned if target.goto else live).extend(sub_returned)
            return
        self._extension(table, chain, hook, rule, target, b, stopped, live)

    def _extension(self, table: Table, chain: Chain, hook: str, rule: Rule, target: Target, b: _Branch,
                   stopped: _Pile, live: list[_Branch]) -> None:
        from natlint.netfilter import nat

        name = target.name
        options = {o.name: o for o in target.options}
        sp = self.space
        step_text = _describe_target(target)
        step = self._step(hook, table, chain, rule, step_text)
        if name == "REJECT":
            stopped.append((b.extend(b.packets, step), "REJECT"))
        elif name in nat.NAT_TARGETS:
            # conntrack keeps the original tuple: record it before rewriting it (every packet
            # of the nat table is NEW: in the rewrite's own pass)
            record = b.lazy & _rewritten_by(name, hook)
            pairs: tuple[tuple[str, str], ...] = ()
            if record and self._all_new:
                pairs = _orig_pairs(record)
                b = _Branch(b.packets, b.steps, b.reasons, b.lazy - record)
            elif record:
                b = self._settle(b, record)
            for packets, verdict, reasons in nat.apply(sp, self.host, name, options, hook, b.packets, record=pairs):
                stopped.append((b.extend(packets, step, reasons), verdict))
        elif name == "MARK":
            from natlint.extensions.targets_mangle import mark_action

            action = mark_action(options)
            packets = b.packets if action is None else sp.xmark(b.packets, "mark", action.value, action.mask)  # type: ignore[attr-defined]
            live.append(b.extend(packets, step))
        elif name == "CONNMARK":
            live.append(_connmark_branch(sp, options, b, step))
        elif name == "HMARK":  # mark := a hash of the packet's addresses and ports
            live.append(b.extend(sp.forget(b.packets, "mark"), step,  # type: ignore[attr-defined]
                                 ["HMARK sets a mark from a hash of the packet: natlint forgets the mark"]))
        elif name == "NOTRACK" or (name == "CT" and "notrack" in options):
            b = self._settle(b, b.lazy)  # the packets stop being NEW: record their tuple now
            packets = sp.assign(b.packets, "ctstate", "UNTRACKED")  # type: ignore[attr-defined]
            live.append(b.extend(packets, step))
        elif name in _NON_TERMINAL_NO_EFFECT or name == "CT" or name == "SET":
            notes = ["SET changes an ipset that later '-m set' tests read"] if name == "SET" else []
            live.append(b.extend(b.packets, step, notes))
        elif target.kind == "unknown":
            live.append(b.extend(b.packets, step, [f"natlint does not model the {name} target and assumes"
                                                   " it lets the packet continue"]))
        else:
            from natlint.extensions import TARGETS

            spec = TARGETS.get(name)
            if spec is not None and spec.terminal:
                fate: Verdict = "QUEUE" if name == "NFQUEUE" else "UNKNOWN"
                stopped.append((b.extend(b.packets, step, [f"natlint does not model what {name} does"]), fate))
            else:
                live.append(b.extend(b.packets, step, [f"natlint does not model what {name} does"]))

    # ---- the conntrack original tuple ---------------------------------------------------------
    def _conntrack_start(self, packets: object) -> tuple[object, frozenset[str]]:
        """Conntrack records the original tuple of a new connection before any NAT. The copy
        is deferred (the branch's ``lazy`` fields): carrying orig_X = X through every rule
        makes every set bigger. A set that already tests orig_* or opaque predicates gets the
        copy at once (what it means then: :func:`_conntrack_new`)."""
        sp = self.space
        support = packets.node.support  # type: ignore[attr-defined]
        if support and not support <= self._plain_vars():
            return _conntrack_new(sp, packets), frozenset()
        return packets, _TUPLE

    def _plain_vars(self) -> frozenset[str]:
        found = getattr(self, "_plain", None)
        if found is None:
            sp = self.space
            found = frozenset(v for name in sp.fields if not name.startswith("orig_")  # type: ignore[attr-defined]
                              for v in sp.variables(name))  # type: ignore[attr-defined]
            self._plain = found
        return found

    def _reads_orig(self, rule: Rule, match_set: object) -> frozenset[str]:
        """The fields X whose orig_X the rule's tests read."""
        key = id(rule)
        found = self._orig_reads.get(key)
        if found is None:
            from natlint.packets.compile import may_read_original_tuple

            if not may_read_original_tuple(rule):
                found = self._orig_reads[key] = frozenset()
        if found is None:
            sp = self.space
            by_field = {f: sp.variables(f"orig_{f}") for f in _TUPLE if f"orig_{f}" in sp.fields}  # type: ignore[attr-defined]
            # one test for the whole tuple first: almost no rule reads it
            every = [v for names in by_field.values() for v in names]
            if not every or not sp.tests_variables(match_set, every):  # type: ignore[attr-defined]
                found = frozenset()
            else:
                found = frozenset(f for f, names in by_field.items()
                                  if sp.tests_variables(match_set, names))  # type: ignore[attr-defined]
            self._orig_reads[key] = found
        return found

    def _settle(self, b: _Branch, fields: frozenset[str]) -> _Branch:
        """Record orig_X = X for these lazy fields of the branch's NEW packets."""
        if not fields:
            return b
        return _Branch(_materialize(self.space, b.packets, fields, all_new=self._all_new), b.steps, b.reasons,
                       b.lazy - fields)

    def _final(self, b: _Branch) -> object:
        """The branch's packets with the whole original tuple recorded (an outcome's set)."""
        return _materialize(self.space, b.packets, b.lazy)

    # ---- bookkeeping --------------------------------------------------------------------------
    def _count(self) -> None:
        self._branches += 1
        if self._branches > self.max_branches:
            raise BranchBudgetExceeded(f"more than {self.max_branches} rule applications")

    def _merge(self, branches: list[_Branch]) -> list[_Branch]:
        """Union branches that share their history (or all of them when steps are not recorded).

        Consumes ``branches`` (the list is emptied when anything is merged): a part is freed as
        soon as the union has taken it, so that merging the 32,000 translated branches of a big
        kube-proxy dump does not hold every part and every level of the union at once."""
        if len(branches) < 2:
            return branches
        groups: dict[tuple[object, ...], list[_Branch]] = {}
        for b in branches:
            groups.setdefault(_history(b, steps=self.record_steps), []).append(b)
        if len(groups) == len(branches):
            return branches
        branches.clear()
        merged: list[_Branch] = []
        for group in groups.values():
            if len(group) == 1:
                merged.append(group[0])
                continue
            steps, reasons, lazy = group[0].steps, group[0].reasons, group[0].lazy
            parts = [b.packets for b in group]
            group.clear()
            merged.append(_Branch(union_all(parts, consume=True), steps, reasons, lazy))
        return merged

    # ---- the pipeline -------------------------------------------------------------------------
    def release(self, *, runs: bool = True) -> None:
        """Let go of the last arriving run kept for other interfaces (see _arriving_shared)
        and, with ``runs``, of the runs of chains kept for other hooks (see _shared_run): on
        a big kube-proxy dump they hold millions of BDD nodes that a caller done with them
        does not need."""
        self._shared = None
        if runs:
            self._chain_runs.clear()

    def arriving(self, packets: object) -> list[Outcome]:
        """Packets arriving on an interface (the set fixes iif; oif is 'none').

        A frame between two ports of one bridge (its destination on the bridge's subnet and not
        the host's) is bridged, not routed: with br_netfilter it still crosses PREROUTING,
        FORWARD (``-i br -o br``) and POSTROUTING, whatever ``ip_forward`` says; without it
        iptables never sees it. Routed packets for another host need ``ip_forward``.
        """
        shared = self._arriving_shared(packets)
        if shared is not None:
            return shared
        return self._arriving(packets)

    def _arriving_shared(self, packets: object) -> list[Outcome] | None:
        """When nothing on the way tests or uses the input interface, the outcomes for packets
        arriving on one interface are those for the same packets arriving on any interface,
        restricted to it: one run serves every interface (the last one is kept). None when
        this does not apply."""
        sp = self.space
        if not self._no_iif_dependence():
            return None
        others = [name for name in sp.fields if name != "iif"]  # type: ignore[attr-defined]
        if packets.node.support - self._plain_vars():  # type: ignore[attr-defined]
            return None  # tests the original tuple or opaque predicates
        anywhere = sp.forget(packets, "iif")  # type: ignore[attr-defined]
        where = sp.forget(packets, *others)  # type: ignore[attr-defined]
        if anywhere & where != packets:  # type: ignore[operator]
            return None  # the input interface is tied to other fields
        if self._shared is None or self._shared[0] != anywhere:
            try:
                self._shared = (anywhere, self._arriving_parts(anywhere))
            except BranchBudgetExceeded:  # every interface at once may split more than one does
                return None
        pre, parts = self._shared[1]

        def restrict(outcomes: list[Outcome]) -> list[Outcome]:
            found: list[Outcome] = []
            for o in outcomes:
                part = o.packets & where  # type: ignore[operator]
                if not part.is_empty():
                    found.append(Outcome(part, o.verdict, o.delivered, o.steps, o.reasons, o.note))
            return found

        # what one run on these packets would have split off (_l2_bridged is per input interface)
        groups = [(g & where, bridge, restrict(outs)) for g, bridge, outs in parts]  # type: ignore[operator]
        groups = [groups[0]] + [g for g in groups[1:] if not g[0].is_empty()]  # type: ignore[attr-defined]
        return _assemble(restrict(pre), groups)

    def _no_iif_dependence(self) -> bool:
        """No rule tests the input interface and no target uses it (REDIRECT).

        Only ``-i`` tests it (matches that depend on the interface, such as addrtype's
        ``--limit-iface-in``, are opaque predicates, not tests of iif): the other rules are not
        compiled for this (a trace on a kube-proxy dump would compile 100k rules)."""
        if self._iif_free is None:
            sp = self.space
            free = True
            for rule in self.ruleset.rules():
                if rule.target is not None and rule.target.name == "REDIRECT":
                    free = False
                    break
                if rule.in_interface is None:
                    continue
                match_set = self.compiled(rule).set  # type: ignore[attr-defined]
                if sp.tests_field(match_set, "iif"):  # type: ignore[attr-defined]
                    free = False
                    break
            self._iif_free = free
        return self._iif_free

    def _arriving(self, packets: object) -> list[Outcome]:
        return _assemble(*self._arriving_parts(packets))

    def _arriving_parts(self, packets: object
                        ) -> tuple[list[Outcome], list[tuple[object, str | None, list[Outcome]]]]:
        """(outcomes of frames bridged without br_netfilter, per group: (its packets, its
        bridge or None, its outcomes)); the first group is what is not bridged."""
        self._branches = 0
        sp = self.space
        start, lazy = self._conntrack_start(packets)
        pre: list[Outcome] = []
        groups: list[tuple[object, str | None]] = []
        rest = self._v6_loopback_received(start, lazy, pre)
        for name, part in self._l2_bridged(start):
            rest = rest - part  # type: ignore[operator]
            if getattr(self.host, "br_netfilter", True):
                groups.append((part, name))
            else:
                step = Step("BRIDGE", "-", "-", None, None,
                            f"bridged on {name}: iptables does not see it (br_netfilter is off)")
                part = _materialize(sp, part, lazy)
                pre.append(Outcome(sp.assign(part, "oif", name), "ACCEPT",  # type: ignore[attr-defined]
                                   Delivery("out", name), self._then((), step)))
        groups.insert(0, (rest, None))
        parts: list[tuple[object, str | None, list[Outcome]]] = []
        for group, bridge in groups:
            outcomes: list[Outcome] = []
            parts.append((group, bridge, outcomes))
            if group.is_empty():  # type: ignore[attr-defined]
                continue
            branches = self._hook("PREROUTING", [_Branch(group, lazy=lazy)], outcomes)
            if bridge is None:  # frames bridged with their destination unchanged skip routing
                branches = self._martians(branches, outcomes)
            for b, decision in self._route(branches, outcomes):
                if decision.kind == "local":  # type: ignore[attr-defined]
                    self._input(b, outcomes)
                    continue
                oif: str = decision.oif  # type: ignore[attr-defined]
                if not getattr(self.host, "ip_forward", True) and self._not_forwarded(b, oif, bridge, outcomes):
                    continue
                kept = self._hairpin(b, oif, outcomes)
                if kept is None:
                    continue
                b = kept
                forwarded = self._hook("FORWARD", [b.extend(sp.assign(b.packets, "oif", oif))], outcomes)  # type: ignore[attr-defined]
                for done in self._hook("POSTROUTING", forwarded, outcomes):
                    outcomes.append(Outcome(self._final(done), "ACCEPT", Delivery("out", oif), done.steps,
                                            done.reasons))
        return pre, parts

    def _not_forwarded(self, b: _Branch, oif: str, bridge: str | None, outcomes: list[Outcome]) -> bool:
        """With ip_forward off routing drops what is for another host (True: dropped), except
        frames bridged between two ports of one bridge (with br_netfilter they still cross
        FORWARD). A packet DNATed back onto its bridge is dropped too (measured on 6.18: the
        route lookup gives an unreachable route, so br_netfilter's "bridged DNAT" shortcut does
        not apply)."""
        if bridge is not None and oif == bridge:
            return False
        step = Step("ROUTING", "-", "-", None, None, "not forwarded: ip_forward is off")
        outcomes.append(Outcome(self._final(b), "DROP", None, self._then(b.steps, step), b.reasons))
        return True

    # ---- host settings the routing and bridging steps depend on --------------------------
    def _iifs(self, names: Iterable[str]) -> object:
        """Packets arriving on one of these interfaces (names outside the space: none)."""
        sp = self.space
        universe = set(getattr(sp, "interfaces", ()))
        found = sp.none()  # type: ignore[attr-defined]
        for name in names:
            if name in universe:
                found = found | sp.iface("iif", _iface(name))  # type: ignore[attr-defined, operator]
        return found

    def _martians(self, branches: list[_Branch], outcomes: list[Outcome]) -> list[_Branch]:
        """The input route lookup's martian checks that depend on the interface (after
        PREROUTING, so on the post-DNAT header), split off as DROP.

        IPv4 (ip_route_input_slow): a destination in 127.0.0.0/8, else a source in it, on an
        interface other than lo without route_localnet (conf.all or conf.<if>); the limited
        broadcast 255.255.255.255 is exempt from the source check. With route_localnet, a
        source that is one of the host's own 127/8 addresses (127.0.0.1 on lo) still fails
        source validation (fib_validate_source, accept_local off). IPv6: ``::1`` as source or
        destination off lo (a DNAT to [::1] from another interface).
        Measured on 6.18 (tests/test_engine_kernel_host.py).
        """
        sp = self.space
        host = self.host
        names = [n for n in getattr(host, "interface_names", lambda: ())() if n != "lo"]
        arrived = sp.all() - self._iifs(["lo"]) - sp.iface("iif", None)  # type: ignore[attr-defined, operator]
        cuts: list[tuple[object, str]] = []
        if self.ruleset.family == 4:
            loopnet = Prefix(4, 0x7F000000, 0xFF000000)
            dst127 = sp.prefix("dst", loopnet)  # type: ignore[attr-defined]
            src127 = sp.prefix("src", loopnet) - dst127 - sp.value("dst", "255.255.255.255")  # type: ignore[attr-defined, operator]
            lo = getattr(host, "interface", lambda _n: None)("lo")
            own = sp.none()  # type: ignore[attr-defined]
            for a in getattr(lo, "addresses", ()):
                if a.version == 4 and loopnet.contains(a.address):
                    own = own | sp.value("src", a.address)  # type: ignore[attr-defined, operator]
            localnet = getattr(host, "localnet", lambda _n: False)
            off = [n for n in names if not localnet(n)]
            on = [n for n in names if localnet(n)]
            other = arrived - self._iifs(names)  # type: ignore[operator]
            for name in off:
                iif = self._iifs([name])
                why = "dropped by routing (route_localnet is off)"
                cuts.append((iif & dst127, f"martian destination 127.0.0.0/8 on {name}: {why}"))  # type: ignore[operator]
                cuts.append((iif & src127, f"martian source 127.0.0.0/8 on {name}: {why}"))  # type: ignore[operator]
            if not other.is_empty():  # type: ignore[attr-defined]
                why = "dropped by routing (route_localnet is off)"
                cuts.append((other & dst127, f"martian destination 127.0.0.0/8 on another interface: {why}"))  # type: ignore[operator]
                cuts.append((other & src127, f"martian source 127.0.0.0/8 on another interface: {why}"))  # type: ignore[operator]
            if not own.is_empty():  # type: ignore[attr-defined]
                for name in on:
                    cuts.append((self._iifs([name]) & own & src127,  # type: ignore[operator]
                                 f"martian source on {name}: the host's own loopback address (dropped by routing"
                                 " although route_localnet is on: accept_local is off)"))
        else:
            loop = sp.value("src", "::1") | sp.value("dst", "::1")  # type: ignore[attr-defined]
            for name in [*names, None]:
                iif = self._iifs([name]) if name is not None else arrived - self._iifs(names)  # type: ignore[operator]
                where = name if name is not None else "another interface"
                cuts.append((iif & loop, f"loopback address ::1 on {where}: dropped by routing"  # type: ignore[operator]
                             " (IPv6 never routes ::1 off lo)"))
        return self._drop_cuts(branches, cuts, outcomes)

    def _v6_loopback_received(self, packets: object, lazy: frozenset[str], outcomes: list[Outcome]) -> object:
        """IPv6 drops a packet with ``::1`` as source or destination that arrives on an
        interface other than lo on receipt (ip6_rcv_core, RFC 4291 2.5.3), before PREROUTING:
        no rule sees it. Measured on 6.18: a bridge port's packet with br_netfilter crosses
        PREROUTING first (the bridge runs it), and is dropped after it (:meth:`_martians`)."""
        if self.ruleset.family != 6:
            return packets
        sp = self.space
        names = [n for n in getattr(self.host, "interface_names", lambda: ())() if n != "lo"]
        bridges = [i.name for i in getattr(self.host, "bridges", lambda: ())()]
        arrived = sp.all() - self._iifs(["lo"]) - sp.iface("iif", None)  # type: ignore[attr-defined, operator]
        if getattr(self.host, "br_netfilter", True):
            arrived = arrived - self._iifs(bridges)  # type: ignore[operator]
        loop = sp.value("src", "::1") | sp.value("dst", "::1")  # type: ignore[attr-defined]
        for name in [*names, None]:
            if name in bridges and getattr(self.host, "br_netfilter", True):
                continue
            iif = self._iifs([name]) if name is not None else arrived - self._iifs(names)  # type: ignore[operator]
            part = packets & arrived & iif & loop  # type: ignore[operator]
            if part.is_empty():  # type: ignore[attr-defined]
                continue
            packets = packets - part  # type: ignore[operator]
            where = name if name is not None else "another interface"
            step = Step("ROUTING", "-", "-", None, None,
                        f"loopback address ::1 on {where}: dropped on receipt (IPv6 never accepts ::1 off lo)")
            outcomes.append(Outcome(_materialize(sp, part, lazy), "DROP", None, self._then((), step)))
        return packets

    def _hairpin(self, b: _Branch, oif: str, outcomes: list[Outcome]) -> _Branch | None:
        """With br_netfilter, a packet that arrived on bridge ``oif`` and is routed back onto
        it after DNAT is bridged ("bridged DNAT"); one DNATed back to its own sender (src ==
        dst: a container reaching its own published port) must leave through the port it came
        in on, which the bridge refuses unless the port is in hairpin mode: dropped before
        FORWARD. Without br_netfilter the packet is routed and the bridge device sends it
        (no hairpin needed). Measured on 6.18. None: nothing left."""
        host = self.host
        if not getattr(host, "br_netfilter", True):
            return b
        iface = getattr(host, "interface", lambda _n: None)(oif)
        if iface is None or not iface.bridge or iface.hairpin:
            return b
        sp = self.space
        # only a DNAT sends a packet back to its sender (a host never routes to itself)
        back = b.packets & self._iifs([oif]) & sp.value("ct_dnat", True)  # type: ignore[operator, attr-defined]
        if back.is_empty():  # type: ignore[attr-defined]
            return b
        part = _same_address(sp, back)
        if part.is_empty():  # type: ignore[attr-defined]
            return b
        step = Step("BRIDGE", "-", "-", None, None,
                    f"hairpin on {oif}: DNATed back to its sender, the packet must leave through the port it came"
                    f" in on; dropped by the bridge (hairpin mode is off on {oif}'s ports)")
        outcomes.append(Outcome(_materialize(sp, part, b.lazy), "DROP", None, self._then(b.steps, step), b.reasons))
        rest = b.packets - part  # type: ignore[operator]
        return None if rest.is_empty() else b.with_packets(rest)

    def _localnet_out(self, branches: list[_Branch], outcomes: list[Outcome], *, first: bool = False
                      ) -> list[_Branch]:
        """IPv4 output routing refuses a 127.0.0.0/8 source on an interface other than lo
        without route_localnet (__mkroute_output: EINVAL). ``first``: the socket's own route
        lookup (the application gets the error, no rule sees the packet); else the reroute
        after nat OUTPUT changed the destination (ip_route_me_harder: dropped after nat
        OUTPUT, before filter OUTPUT). Measured on 6.18."""
        if self.ruleset.family != 4 or not branches:
            return branches
        sp = self.space
        localnet = getattr(self.host, "localnet", lambda _n: False)
        src127 = sp.prefix("src", Prefix(4, 0x7F000000, 0xFF000000))  # type: ignore[attr-defined]
        cuts: list[tuple[object, str]] = []
        for dsts, decision in self._route_sets():
            if decision.kind != "forward" or decision.oif is None or localnet(decision.oif):
                continue
            when = "the socket's route" if first else "rerouted after nat OUTPUT"
            cuts.append((dsts & src127, f"source 127.0.0.0/8 out of {decision.oif} ({when}): dropped by routing"  # type: ignore[operator]
                         " (route_localnet is off)"))
        return self._drop_cuts(branches, cuts, outcomes)

    def _drop_cuts(self, branches: list[_Branch], cuts: list[tuple[object, str]], outcomes: list[Outcome]
                   ) -> list[_Branch]:
        """Split each (set, why) off the branches as a DROP by routing; what is left goes on."""
        if not cuts:
            return branches
        kept: list[_Branch] = []
        for b in branches:
            rest = b.packets
            for cut, action in cuts:
                part = rest & cut  # type: ignore[operator]
                if part.is_empty():
                    continue
                rest = rest - cut  # type: ignore[operator]
                step = Step("ROUTING", "-", "-", None, None, action)
                outcomes.append(Outcome(_materialize(self.space, part, b.lazy), "DROP", None, self._then(b.steps, step),
                                        b.reasons))
            if not rest.is_empty():  # type: ignore[attr-defined]
                kept.append(b.with_packets(rest))
        return kept

    def _l2_bridged(self, packets: object) -> list[tuple[str, object]]:
        """Per bridge, the packets that arrive on it for another host of its own subnet."""
        sp = self.space
        found: list[tuple[str, object]] = []
        bridges = getattr(self.host, "bridges", lambda: ())()
        if not bridges:
            return found
        for iface in bridges:
            if iface.name not in getattr(sp, "interfaces", ()):
                continue
            on_bridge = packets & sp.iface("iif", _iface(iface.name))  # type: ignore[attr-defined, operator]
            if on_bridge.is_empty():
                continue
            subnet = prefixes_union(sp, iface.subnets)
            routed_out = sp.none()  # type: ignore[attr-defined]
            for dsts, d in self._route_sets():
                if d.kind == "forward" and d.oif == iface.name:
                    routed_out = routed_out | dsts  # type: ignore[operator]
            part = on_bridge & subnet & routed_out
            if not part.is_empty():
                found.append((iface.name, part))
        return found

    def local(self, packets: object, *, choose_source: bool = False) -> list[Outcome]:
        """Packets the host itself sends (iif 'none'); routing picks oif and, with
        ``choose_source``, the source address (the primary address of that interface, or the
        destination itself for a local destination)."""
        self._branches = 0
        sp = self.space
        outcomes: list[Outcome] = []
        start: list[_Branch] = []
        for b, decision in self._route([_Branch(packets)], outcomes, output=True):
            oif = "lo" if decision.kind == "local" else decision.oif  # type: ignore[attr-defined]
            pkt = sp.assign(b.packets, "oif", oif)  # type: ignore[attr-defined]
            if choose_source:
                if decision.kind == "local":  # type: ignore[attr-defined]
                    pkt = sp.copy(pkt, "src", "dst")  # type: ignore[attr-defined]
                else:
                    address = self.host.primary_address(oif)  # type: ignore[attr-defined]
                    pkt = sp.assign(pkt, "src", address) if address is not None else pkt  # type: ignore[attr-defined]
            start.append(b.extend(pkt))
        start = self._localnet_out(start, outcomes, first=True)
        tracked: list[_Branch] = []
        for b in start:
            packets, lazy = self._conntrack_start(b.packets)
            tracked.append(_Branch(packets, b.steps, b.reasons, lazy))
        start = tracked
        after_output = self._hook("OUTPUT", start, outcomes, after_nat=self._localnet_out)
        # nat OUTPUT or mangle may have changed the destination: route again.
        rerouted: list[_Branch] = []
        for b, decision in self._route(after_output, outcomes, output=True):
            oif = "lo" if decision.kind == "local" else decision.oif  # type: ignore[attr-defined]
            rerouted.append(b.extend(sp.assign(b.packets, "oif", oif)))  # type: ignore[attr-defined]
        for done in self._hook("POSTROUTING", rerouted, outcomes):
            local_part, out_part = _split_loopback(sp, done)
            if local_part is not None:
                looped = local_part.extend(sp.assign(sp.assign(local_part.packets, "iif", "lo"), "oif", None))  # type: ignore[attr-defined]
                self._loopback_input(looped, outcomes)
            if out_part is not None:
                pkt = self._final(out_part)
                for oif in _interfaces_of(sp, pkt):
                    part = pkt & sp.iface("oif", _iface(oif))  # type: ignore[attr-defined, operator]
                    outcomes.append(Outcome(part, "ACCEPT", Delivery("out", oif), out_part.steps, out_part.reasons))
        return outcomes

    def _input(self, b: _Branch, outcomes: list[Outcome]) -> None:
        for done in self._hook("INPUT", [b], outcomes):
            outcomes.append(Outcome(self._final(done), "ACCEPT", Delivery("local", None), done.steps, done.reasons))

    def _loopback_input(self, b: _Branch, outcomes: list[Outcome]) -> None:
        # The connection is already tracked and NATed (OUTPUT/POSTROUTING): nat does not run again.
        pre = self._hook("PREROUTING", [b], outcomes, nat=False)
        for p in pre:
            for done in self._hook("INPUT", [p], outcomes, nat=False):
                outcomes.append(Outcome(self._final(done), "ACCEPT", Delivery("local", "lo"), done.steps,
                                        done.reasons))

    def _hook(self, hook: str, branches: list[_Branch], outcomes: list[Outcome], *, nat: bool = True,
              after_nat: Callable[[list[_Branch], list[Outcome]], list[_Branch]] | None = None) -> list[_Branch]:
        sp = self.space
        for table in _TABLES_AT[hook]:
            if not branches:
                break
            if table == "nat":
                if not nat or not self.conntrack:
                    continue
                new_set = sp.ctstate(["NEW"])  # type: ignore[attr-defined]
                todo = [b.with_packets(b.packets & new_set) for b in branches]  # type: ignore[operator]
                passing = [b.with_packets(b.packets - new_set) for b in branches]  # type: ignore[operator]
                todo = [b for b in todo if not b.packets.is_empty()]  # type: ignore[attr-defined]
                passing = [b for b in passing if not b.packets.is_empty()]  # type: ignore[attr-defined]
                self._all_new = True  # nat sees a connection's first packet only
                try:
                    result = self.run_table(table, hook, todo)
                finally:
                    self._all_new = False
                for runs in self._chain_runs.values():  # every hook they serve is done with them
                    runs[:] = [run for run in runs if not run.done()]
                branches = self._merge(result.accepted + passing)
                if after_nat is not None:
                    branches = after_nat(branches, outcomes)
            else:
                result = self.run_table(table, hook, branches)
                branches = result.accepted
            for b, verdict in result.stopped:
                outcomes.append(Outcome(self._final(b), verdict, None, b.steps, b.reasons))
        return branches

    def _route_sets(self) -> list[tuple[object, RouteDecision]]:
        """The routing partition as (destination set, decision), built once per engine."""
        if self._routes is None:
            self._routes = [(prefixes_union(self.space, prefixes), decision)
                            for prefixes, decision in self.host.route_partition()]  # type: ignore[attr-defined]
        return self._routes

    def routed_out(self, interface: str, name: str = "dst") -> object:
        """The addresses the host forwards out of the interface (as field ``name``: a source
        of that set is a client the host answers through the interface). Made once per
        interface and field: the checks ask for each interface again and again."""
        found = self._routed_out.get((interface, name))
        if found is None:
            found = self._routed_out[(interface, name)] = prefixes_union(
                self.space, [p for prefixes, decision in self.host.route_partition()  # type: ignore[attr-defined]
                             if decision.kind == "forward" and decision.oif == interface for p in prefixes], name)
        return found

    def _route(self, branches: list[_Branch], outcomes: list[Outcome], *, output: bool = False
               ) -> Iterator[tuple[_Branch, object]]:
        """The branches split by the routing decision, each part with its decision (what no
        route takes is dropped). Consumes ``branches``, and each part is let go of once the
        caller is done with it: the thousands of translated branches of a big dump need not
        stay alive beside the outcomes made of them."""
        sp = self.space
        routed: list[tuple[_Branch, object]] = []
        for b in branches:
            for dsts, decision in self._route_sets():
                part = b.packets & dsts  # type: ignore[operator]
                if part.is_empty():
                    continue
                if decision.kind == "unreachable":
                    step = Step("ROUTING", "-", "-", None, None, "no route to the destination")
                    outcomes.append(Outcome(_materialize(sp, part, b.lazy), "DROP", None, self._then(b.steps, step),
                                            b.reasons))
                    continue
                routed.append((b.with_packets(part), decision))
        branches.clear()
        routed.reverse()
        while routed:
            yield routed.pop()


def _same_address(sp: object, packets: object) -> object:
    """The packets whose source equals their destination. src and dst are far apart in the
    variable order, where the equality alone is exponential: go by the destinations the set
    has (a few DNAT targets) when there are not many."""
    values = packets.values("dst", limit=256)  # type: ignore[attr-defined]
    if values is None or sum(hi - lo + 1 for lo, hi in values) > 256:
        return sp.equate(packets, "src", "dst")  # type: ignore[attr-defined]
    found = sp.none()  # type: ignore[attr-defined]
    for lo, hi in values:
        for address in range(lo, hi + 1):
            found = found | (packets & sp.value("dst", address) & sp.value("src", address))  # type: ignore[attr-defined, operator]
    return found


def _assemble(pre: list[Outcome], parts: list[tuple[object, str | None, list[Outcome]]]) -> list[Outcome]:
    outcomes = list(pre)
    for _group, _bridge, found in parts:
        outcomes.extend(found)
    return _merge_outcomes(outcomes) if len(parts) > 1 else outcomes


def _merge_outcomes(outcomes: list[Outcome]) -> list[Outcome]:
    """Union the outcomes that share their fate and history (from separately run groups)."""
    merged: dict[tuple[object, ...], Outcome] = {}
    for o in outcomes:
        key = (o.verdict, o.delivered, o.steps, o.reasons, o.note)
        seen = merged.get(key)
        merged[key] = o if seen is None else Outcome(seen.packets | o.packets, o.verdict, o.delivered,  # type: ignore[operator]
                                                     o.steps, o.reasons, o.note)
    return list(merged.values())


_TUPLE = frozenset({"src", "dst", "sport", "dport"})
# The conntrack original tuple: (orig_X, X) for each field of the tuple.
ORIG_PAIRS: tuple[tuple[str, str], ...] = tuple((f"orig_{f}", f) for f in ("src", "dst", "sport", "dport"))


def _rewritten_by(target: str, hook: str) -> frozenset[str]:
    """The tuple fields a NAT target may rewrite."""
    if target in ("DNAT", "REDIRECT"):
        return frozenset({"dst", "dport"})
    if target in ("SNAT", "MASQUERADE"):
        return frozenset({"src", "sport"})
    if target == "NETMAP":
        return frozenset({"dst"}) if hook in ("PREROUTING", "OUTPUT") else frozenset({"src"})
    return _TUPLE


def _orig_pairs(fields: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """The (orig_X, X) pairs of the conntrack original tuple for these tuple fields."""
    return tuple((o, f) for o, f in ORIG_PAIRS if f in fields)


def _materialize(sp: object, packets: object, fields: frozenset[str], *, all_new: bool = False) -> object:
    """orig_X := X for the NEW packets of a set whose orig_X are untested (lazy).
    ``all_new``: the caller knows every packet of the set is NEW (the nat table)."""
    if not fields:
        return packets
    if all_new:
        return sp.equate_fields(packets, _orig_pairs(fields))  # type: ignore[attr-defined]
    new_set = sp.ctstate(["NEW"])  # type: ignore[attr-defined]
    new = packets & new_set  # type: ignore[operator]
    if new.is_empty():  # type: ignore[attr-defined]
        return packets
    recorded = sp.equate_fields(new, _orig_pairs(fields))  # type: ignore[attr-defined]
    if new == packets:  # all NEW (the nat table sees nothing else): nothing to add back
        return recorded
    return recorded | (packets - new_set)  # type: ignore[operator]


def _conntrack_new(sp: object, packets: object) -> object:
    """Conntrack records the original tuple of a new connection before any NAT."""
    new = packets & sp.ctstate(["NEW"])  # type: ignore[attr-defined, operator]
    rest = packets - sp.ctstate(["NEW"])  # type: ignore[attr-defined, operator]
    return sp.copy_fields(new, ORIG_PAIRS) | rest  # type: ignore[attr-defined]


def _connmark_branch(sp: object, options: Mapping[str, object], b: _Branch, step: Step | None) -> _Branch:
    from natlint.extensions.targets_mangle import connmark_action

    action = connmark_action(options)  # type: ignore[arg-type]
    if action is None:
        return b.extend(b.packets, step)
    full = 0xFFFFFFFF
    if action.mode == "set":
        return b.extend(sp.xmark(b.packets, "connmark", action.mark, action.ctmask), step)  # type: ignore[attr-defined]
    if action.shift_bits == 0 and action.ctmask == full and action.nfmask == full:
        src, dst = ("mark", "connmark") if action.mode == "save" else ("connmark", "mark")
        return b.extend(sp.copy(b.packets, dst, src), step)  # type: ignore[attr-defined]
    dst = "connmark" if action.mode == "save" else "mark"
    return b.extend(sp.forget(b.packets, dst), step,  # type: ignore[attr-defined]
                    [f"CONNMARK with masks or shifts: natlint forgets the {dst} value"])


def _describe_target(target: Target) -> str:
    words = [target.name]
    for opt in target.options:
        value = " ".join(str(v) for v in opt.values)
        words.append(f"{opt.name.replace('_', '-')} {value}".strip())
    return " ".join(words)


def _split_loopback(sp: object, b: _Branch) -> tuple[_Branch | None, _Branch | None]:
    lo = b.packets & sp.iface("oif", _iface("lo"))  # type: ignore[attr-defined, operator]
    rest = b.packets - lo  # type: ignore[operator]
    return (
        b.with_packets(lo) if not lo.is_empty() else None,
        b.with_packets(rest) if not rest.is_empty() else None,
    )


def _iface(name: str) -> object:
    from natlint.model.values import Interface

    return Interface(name)


def _interfaces_of(sp: object, packets: object) -> list[str]:
    from natlint.netfilter.nat import real_interfaces

    names: list[str] = []
    for name in real_interfaces(sp):  # type: ignore[attr-defined]
        if not (packets & sp.iface("oif", _iface(name))).is_empty():  # type: ignore[attr-defined, operator]
            names.append(name)
    return names


def union_all(sets: Sequence[object], *, consume: bool = False) -> object:
    """The union of non-empty list of packet sets, as a balanced tree of ``|``.

    Unioning many sets left to right makes each step pay for the size of everything
    unioned so far (quadratic for thousands of small disjoint DNAT results); pairing them
    up level by level costs about the final size per level. BDDs are canonical: the result
    is the same set whatever the order. Each set is let go as soon as it is paired;
    ``consume=True``: ``sets`` is a list the union may empty, so that the caller's parts
    are let go too.
    """
    level: list[object | None] = sets if consume and isinstance(sets, list) else list(sets)
    while len(level) > 1:
        paired: list[object | None] = []
        for i in range(0, len(level) - 1, 2):
            paired.append(level[i] | level[i + 1])  # type: ignore[operator]
            level[i] = level[i + 1] = None
        if len(level) % 2:
            paired.append(level[-1])
        level.clear()
        level = paired
    return level[0]


def _carry(stack: list[tuple[int, _T]], weight: int, item: _T, join: Callable[[_T, _T], _T]) -> None:
    """Push ``item`` (a union of ``weight`` parts) on a binary counter of partial unions: the
    top two are joined while the newer weighs as much as the older, so the stack holds about
    log2(n) unions and they pair up as :func:`union_all`'s balanced tree does."""
    stack.append((weight, item))
    while len(stack) > 1 and stack[-1][0] >= stack[-2][0]:
        (w1, newer), (w2, older) = stack.pop(), stack.pop()
        stack.append((w1 + w2, join(older, newer)))


def union_stream(sets: Iterable[object], empty: object) -> object:
    """The union of the sets as they come (``empty`` when there is none), as the same
    balanced tree as :func:`union_all` (a binary counter: two partial unions of the same
    weight are merged at once), holding only about log2(n) partial unions: the caller's
    sets need not all be alive at once."""
    stack: list[tuple[int, object]] = []
    for s in sets:
        _carry(stack, 1, s, operator.or_)
    if not stack:
        return empty
    found = stack.pop()[1]
    while stack:
        found = stack.pop()[1] | found  # type: ignore[operator]
    return found


def prefixes_union(sp: object, prefixes: Iterable[Prefix], name: str = "dst") -> object:
    result = sp.none()  # type: ignore[attr-defined]
    for prefix in prefixes:
        result = result | sp.prefix(name, prefix)  # type: ignore[attr-defined]
    return result

