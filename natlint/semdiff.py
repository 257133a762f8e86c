"""Semantic diff of two rulesets: what a change does to traffic, not to text.

:func:`diff` pushes the same packets through both rulesets, on one host model and in one
:class:`~natlint.packets.space.PacketSpace` (so that the outcome sets of the two engines can be
intersected): new connections arriving on every interface of the host, and new connections the
host itself opens. Each engine partitions these packets into outcomes (a set, a fate, the steps
that decided it). An outcome's set holds the packets *after* NAT, with the conntrack original
tuple (``orig_src``... ``orig_dport``) recording what they were on arrival; :func:`_origin`
turns it back into the arriving packets. For every pair (old outcome, new outcome) of different
fates whose origins intersect, the intersection is a class of packets whose fate changed:

* ``exposed``: dropped or rejected before, now delivered locally or forwarded;
* ``blocked``: the reverse;
* ``nat``: passing in both, but rewritten to another destination or source (or delivered
  elsewhere because of a NAT rule);
* ``changed``: anything else (DROP became REJECT, a verdict natlint cannot decide...).

Classes are merged by (kind, old fate, new fate, responsible rules) so that the report stays
short; each comes with a witness packet and the rules that decided its fate on each side.

Rules natlint cannot decide (``-m statistic``, ``-m recent``...) are opaque predicates; those
keyed by the rule's position differ between the two files even for the same rule, so they are
treated as a free choice: a class is reported only when a fate became possible that was not,
or stopped being possible. Such changes are marked ``approximate``.

The analysis can run out of its budget: :class:`~natlint.packets.space.BudgetExceeded` or
:class:`~natlint.netfilter.engine.BranchBudgetExceeded` propagate to the caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from natlint.model.ruleset import Chain, Ruleset, Table
from natlint.model.values import Interface

if TYPE_CHECKING:
    from natlint.host.model import HostModel
    from natlint.netfilter.engine import Outcome, Step
    from natlint.packets.space import Packet, PacketSet, PacketSpace

__all__ = ["Change", "ChangeKind", "DiffReport", "Fate", "RuleRef", "Side", "diff", "format_text"]

ChangeKind = Literal["exposed", "blocked", "nat", "changed"]
Traffic = Literal["arriving", "local"]
KINDS: tuple[ChangeKind, ...] = ("exposed", "blocked", "nat", "changed")
_HEADINGS: dict[str, str] = {
    "exposed": "Newly exposed (blocked before, let through now)",
    "blocked": "Newly blocked (let through before, blocked now)",
    "nat": "NAT changed (let through in both, rewritten or delivered differently)",
    "changed": "Other changes",
}
_TUPLE = ("src", "dst", "sport", "dport")
# Fields the pipeline sets, whose starting values the query fixes (no output interface, no
# mark, a NEW connection without NAT): forgotten to go back from an outcome to its origin.
_SET_ON_THE_WAY = ("oif", "mark", "connmark", "ctstate", "ct_dnat", "ct_snat")
DEFAULT_BUDGET_SECONDS = 120.0
DEFAULT_MAX_BRANCHES = 5_000_000


# ---------------------------------------------------------------- report types

@dataclass(frozen=True)
class Fate:
    """What happens to a packet: the verdict, and where an accepted packet ends up."""

    verdict: str  # ACCEPT, DROP, REJECT, QUEUE, UNKNOWN
    delivered: Literal["local", "out"] | None = None
    interface: str | None = None

    @property
    def passes(self) -> bool:
        return self.verdict == "ACCEPT" and self.delivered is not None

    @property
    def blocked(self) -> bool:
        return self.verdict in ("DROP", "REJECT")

    def __str__(self) -> str:
        if self.passes:
            if self.delivered == "local":
                return "delivered locally" + (f" (on {self.interface})" if self.interface else "")
            return f"forwarded out of {self.interface}" if self.interface else "forwarded"
        return {"DROP": "dropped", "REJECT": "rejected", "QUEUE": "queued to userspace"}.get(
            self.verdict, "unknown (natlint cannot decide)")

    def to_dict(self) -> dict[str, object]:
        return {"verdict": self.verdict, "delivered": self.delivered, "interface": self.interface,
                "text": str(self)}


@dataclass(frozen=True)
class RuleRef:
    """A rule (or chain policy, or routing decision) that decided a fate."""

    path: str
    table: str
    chain: str
    line: int | None
    index: int | str | None
    rule: str | None
    action: str

    def __str__(self) -> str:
        if self.table == "-":
            return f"{self.chain if self.chain != '-' else 'routing'}: {self.action}"
        where = f"{self.table}/{self.chain}"
        if self.rule is not None:
            return f"{where} line {self.line}: {self.rule}"
        return f"{where} {self.action}" + (f" (line {self.line})" if self.line else "")

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "table": self.table, "chain": self.chain, "line": self.line,
                "index": self.index, "rule": self.rule, "action": self.action}


@dataclass(frozen=True)
class Side:
    """What one ruleset does to the witness packet."""

    fate: Fate
    rules: tuple[RuleRef, ...]
    result: str | None = None  # the witness after NAT, for a packet let through
    approximate: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"fate": self.fate.to_dict(), "rules": [r.to_dict() for r in self.rules], "result": self.result,
                "certainty": "approximate" if self.approximate else "exact"}


@dataclass(frozen=True)
class Change:
    """A class of packets whose fate changed."""

    kind: ChangeKind
    traffic: Traffic
    packets: str  # a summary of the class (PacketSet.describe)
    interfaces: tuple[str, ...]  # input interfaces of the class (arriving traffic)
    witness: dict[str, object]  # a concrete packet of the class
    old: Side
    new: Side

    @property
    def certainty(self) -> Literal["exact", "approximate"]:
        return "approximate" if self.old.approximate or self.new.approximate else "exact"

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "traffic": self.traffic, "packets": self.packets,
                "interfaces": list(self.interfaces), "witness": self.witness, "old": self.old.to_dict(),
                "new": self.new.to_dict(), "certainty": self.certainty}


@dataclass
class DiffReport:
    old_path: str
    new_path: str
    family: int
    changes: list[Change] = field(default_factory=list)
    interfaces: tuple[str, ...] = ()  # the input interfaces compared
    host_source: str = "inferred"
    seconds: float = 0.0

    def of_kind(self, kind: ChangeKind) -> list[Change]:
        return [c for c in self.changes if c.kind == kind]

    @property
    def exposed(self) -> list[Change]:
        return self.of_kind("exposed")

    @property
    def blocked(self) -> list[Change]:
        return self.of_kind("blocked")

    @property
    def nat_changed(self) -> list[Change]:
        return self.of_kind("nat")

    @property
    def unchanged(self) -> bool:
        return not self.changes

    def to_dict(self) -> dict[str, object]:
        return {
            "old": self.old_path, "new": self.new_path, "family": self.family,
            "host": {"source": self.host_source, "interfaces": list(self.interfaces)},
            "summary": {kind: len(self.of_kind(kind)) for kind in KINDS},
            "changes": [c.to_dict() for c in self.changes],
            "seconds": round(self.seconds, 3),
        }


# ---------------------------------------------------------------- the analysis

def union_ruleset(old: Ruleset, new: Ruleset) -> Ruleset:
    """One ruleset holding the rules of both (for inferring one host model from the evidence
    of both dumps; its order means nothing)."""
    tables: dict[str, Table] = {}
    for source in (old, new):
        for table in source.tables.values():
            seen = tables.get(table.name)
            chains: dict[str, Chain] = dict(seen.chains) if seen is not None else {}
            for chain in table:
                mine = chains.get(chain.name)
                chains[chain.name] = chain if mine is None else replace(mine, rules=mine.rules + chain.rules)
            tables[table.name] = Table(table.name, chains, seen.pos if seen is not None else table.pos)
    return Ruleset(old.path, old.family, tables)


class _Run:
    """One engine's outcomes for one kind of traffic, and where they came from.

    ``origin(i)``: the arriving packets that outcome i is made of (its set with NAT undone and
    what the pipeline set forgotten); ``unions``: per key (fate and NAT), the union of the
    origins, computed on the union of the outcomes (every step distributes over a union).
    Per-outcome origins and normalised sets are only computed for the keys that changed.
    """

    def __init__(self, sp: PacketSpace, outcomes: list[Outcome], start: PacketSet, local: bool) -> None:
        from natlint.netfilter.engine import union_all

        self.sp, self.outcomes, self.start, self.local = sp, outcomes, start, local
        self.keys = [_key(o) for o in outcomes]
        self.by_key: dict[tuple[object, ...], list[int]] = {}
        for i, key in enumerate(self.keys):
            self.by_key.setdefault(key, []).append(i)
        self._choices = _free_choices(sp)
        self._origins: dict[int, PacketSet] = {}
        self._sets: dict[int, PacketSet] = {}
        self.unions: dict[tuple[object, ...], PacketSet] = {}
        for key, members in self.by_key.items():
            parts = []
            for nat in (False, True):
                chosen = [outcomes[i].packets for i in members if bool(_nat_steps(outcomes[i])) == nat]
                if chosen:
                    parts.append(self._back(union_all(chosen), nat))  # type: ignore[arg-type]
            self.unions[key] = union_all(parts)  # type: ignore[assignment]

    def _back(self, packets: PacketSet, nat: bool) -> PacketSet:
        sp = self.sp
        forget_state = _variables(sp, (*_SET_ON_THE_WAY, "iif") if self.local else _SET_ON_THE_WAY)
        orig = _variables(sp, [f"orig_{f}" for f in _TUPLE])
        if not nat:
            # no NAT: the tuple is the original one (orig_* is either equal to it or, for a
            # routing drop before conntrack, unrecorded): forgetting orig_* is enough
            back = _exist(sp, packets, [*orig, *forget_state])
        else:  # NAT rewrote the tuple after conntrack recorded the original in orig_*
            back = _exist(sp, packets, [*_variables(sp, _TUPLE), *forget_state])
            for f in _TUPLE:
                back = sp.equate(back, f, f"orig_{f}")
            back = _exist(sp, back, orig)
        return _exist(sp, back & self.start, self._choices)

    def origin(self, i: int) -> PacketSet:
        found = self._origins.get(i)
        if found is None:
            o = self.outcomes[i]
            found = self._origins[i] = self._back(o.packets, bool(_nat_steps(o)))  # type: ignore[arg-type]
        return found

    def packets(self, i: int) -> PacketSet:
        """Outcome i's set with its origin in orig_* (recorded for outcomes without NAT)."""
        found = self._sets.get(i)
        if found is None:
            o = self.outcomes[i]
            found = o.packets  # type: ignore[assignment]
            assert found is not None
            if not _nat_steps(o):
                for f in _TUPLE:
                    found = self.sp.equate(found, f"orig_{f}", f)
            self._sets[i] = found
        return found


def diff(old: Ruleset, new: Ruleset, host: HostModel | None = None, *, budget_seconds: float | None =
         DEFAULT_BUDGET_SECONDS, max_branches: int = DEFAULT_MAX_BRANCHES) -> DiffReport:
    """What changing ``old`` into ``new`` does to new connections (see the module's doc).

    ``host``: the host model (default: inferred from both dumps together). Raises ValueError
    for rulesets of different families, and the engine's budget exceptions when the analysis
    goes over ``budget_seconds`` or ``max_branches``.
    """
    import time

    from natlint.netfilter.engine import Engine
    from natlint.netfilter.trace import TraceQuery, query_set
    from natlint.packets.compile import compile_interfaces
    from natlint.packets.space import PacketSpace

    started = time.monotonic()
    if old.family != new.family:
        raise ValueError(f"cannot compare an IPv{old.family} ruleset ({old.path}) with an IPv{new.family}"
                         f" one ({new.path})")
    if host is None:
        from natlint.host import infer

        host = infer(union_ruleset(old, new))
    names = sorted(set(compile_interfaces(old, host)) | set(compile_interfaces(new, host)))
    sp = PacketSpace(old.family, names, max_seconds=budget_seconds)
    engines = [Engine(r, host, space=sp, record_steps=True, max_branches=max_branches) for r in (old, new)]
    inputs = [n for n in dict.fromkeys([*host.interface_names(), *names]) if n != "lo" and not n.endswith("+")]
    report = DiffReport(old.path, new.path, old.family, interfaces=tuple(inputs), host_source=host.source)
    tcp = sp.value("proto", 6)
    for traffic in ("arriving", "local"):
        start: PacketSet = query_set(engines[0], TraceQuery(local=traffic == "local"))  # type: ignore[assignment]
        if traffic == "arriving":
            on = sp.none()
            for name in inputs:
                on = on | sp.iface("iif", Interface(name))
            start = start & on
        start = (start - tcp) | (start & tcp & sp.value("tcp_flags", 0x02))  # a new TCP connection: a SYN
        if start.is_empty():
            continue
        runs = []
        for engine in engines:
            found = engine.local(start) if traffic == "local" else engine.arriving(start)
            runs.append(_Run(sp, [o for o in found if not o.packets.is_empty()], start,  # type: ignore[attr-defined]
                             traffic == "local"))
        report.changes.extend(_compare(sp, runs[0], runs[1], traffic, (old.path, new.path), inputs))  # type: ignore[arg-type]
    order = {k: i for i, k in enumerate(KINDS)}
    report.changes.sort(key=lambda c: (order[c.kind], c.traffic, c.interfaces, c.packets))
    report.seconds = time.monotonic() - started
    return report


def _variables(sp: PacketSpace, fields: Iterable[str]) -> list[str]:
    return [v for f in fields if f in sp.fields for v in sp.variables(f)]


def _exist(sp: PacketSpace, packets: PacketSet, variables: Sequence[str]) -> PacketSet:
    """∃ these BDD variables, and nothing else (PacketSpace.forget also forgets the opaque
    predicates that depend on the fields, which here are part of the packet's origin)."""
    from natlint.packets.space import PacketSet

    if not variables:
        return packets
    node = packets.node
    return PacketSet(sp, node.bdd.exist(list(variables), node)) & sp.all()


def _free_choices(sp: PacketSpace) -> list[str]:
    """The opaque predicates keyed by a rule's position: the same rule in the two files has
    two of them, so they are a free choice, not a property of the packet."""
    return [sp.opaque_variable(k) for k in sp.opaque_keys() if isinstance(k, tuple) and k and k[0] == "rule"]


def _fate(o: Outcome) -> Fate:
    if o.delivered is not None:
        return Fate(o.verdict, o.delivered.to, o.delivered.interface)
    return Fate(o.verdict)


def _nat_steps(o: Outcome) -> tuple[tuple[str, str], ...]:
    return tuple((s.hook, s.action) for s in o.steps if _is_nat(s))


def _is_nat(step: Step) -> bool:
    from natlint.netfilter.nat import NAT_TARGETS

    return step.table != "-" and step.action.split(" ", 1)[0] in NAT_TARGETS


def _key(o: Outcome) -> tuple[object, ...]:
    fate = _fate(o)
    return (fate, _nat_steps(o) if fate.passes else ())


@dataclass
class _Group:
    kind: ChangeKind
    packets: PacketSet
    pairs: list[tuple[int, int, PacketSet]]


def _compare(sp: PacketSpace, old: _Run, new: _Run, traffic: Traffic, paths: tuple[str, str],
             inputs: Sequence[str]) -> list[Change]:
    """The classes whose fate changed. For keys (fates) ko != kn, the packets of old fate ko
    and new fate kn where ko is no longer possible (lost) or kn was not possible before
    (gained): without free choices, all of old ko & new kn. Only keys whose union changed
    can be part of such a pair."""
    none = sp.none()
    lost = {k: u - new.unions.get(k, none) for k, u in old.unions.items()}
    gained = {k: u - old.unions.get(k, none) for k, u in new.unions.items()}
    lost = {k: d for k, d in lost.items() if not d.is_empty()}
    gained = {k: d for k, d in gained.items() if not d.is_empty()}
    groups: dict[tuple[object, ...], _Group] = {}
    for ko, uo in old.unions.items():
        for kn, un in new.unions.items():
            if ko == kn or (ko not in lost and kn not in gained):
                continue
            region = none
            if ko in lost:
                region = lost[ko] & un
            if kn in gained:
                region = region | (uo & gained[kn])
            if region.is_empty():
                continue
            for i in old.by_key[ko]:
                part = old.origin(i) & region
                if part.is_empty():
                    continue
                for j in new.by_key[kn]:
                    both = part & new.origin(j)
                    if not both.is_empty():
                        _add(sp, groups, old, new, i, j, both, traffic == "local")
    return [_change(sp, g, old, new, traffic, paths, inputs) for g in groups.values()]


def _add(sp: PacketSpace, groups: dict[tuple[object, ...], _Group], old: _Run, new: _Run, i: int, j: int,
         both: PacketSet, local: bool) -> None:
    o, n = old.outcomes[i], new.outcomes[j]
    kind = _kind(o, n)
    if kind == "nat" and _fate(o) == _fate(n):
        both = _rewritten_differently(sp, old.packets(i), new.packets(j), both, local)
        if both.is_empty():
            return
    gkey = (kind, *_group_steps(o, n, kind), _fate(o), _fate(n))
    group = groups.get(gkey)
    if group is None:
        groups[gkey] = _Group(kind, both, [(i, j, both)])
    else:
        group.packets = group.packets | both
        group.pairs.append((i, j, both))


def _kind(o: Outcome, n: Outcome) -> ChangeKind:
    fo, fn = _fate(o), _fate(n)
    if fo.blocked and fn.passes:
        return "exposed"
    if fo.passes and fn.blocked:
        return "blocked"
    if fo.passes and fn.passes and (fo == fn or _nat_steps(o) or _nat_steps(n)):
        return "nat"
    return "changed"


def _lift(sp: PacketSpace, packets: PacketSet, local: bool) -> PacketSet:
    """The outcome-side constraint 'the packet started as a member of ``packets``'."""
    s = packets
    for f in _TUPLE:
        s = sp.equate(s, f"orig_{f}", f)
    forget = (*_TUPLE, *_SET_ON_THE_WAY, "iif") if local else (*_TUPLE, *_SET_ON_THE_WAY)
    return _exist(sp, s, _variables(sp, forget))


def _rewritten_differently(sp: PacketSpace, old: PacketSet, new: PacketSet, where: PacketSet, local: bool
                           ) -> PacketSet:
    """The packets of ``where`` that the two outcomes rewrite to different headers."""
    lifted = _lift(sp, where, local)
    state = _variables(sp, ("mark", "connmark", "ctstate", "ct_dnat", "ct_snat"))
    rel_old = _exist(sp, old & lifted, state)
    rel_new = _exist(sp, new & lifted, state)
    if rel_old == rel_new:
        return sp.none()
    differ = (rel_old - rel_new) | (rel_new - rel_old)
    back = _exist(sp, differ, _variables(sp, (*_TUPLE, *_SET_ON_THE_WAY, *(("iif",) if local else ()))))
    for f in _TUPLE:
        back = sp.equate(back, f, f"orig_{f}")
    return _exist(sp, back, _variables(sp, [f"orig_{f}" for f in _TUPLE])) & where


def _responsible(o: Outcome) -> tuple[Step, ...]:
    """The steps that decided the fate: for a packet let through, its NAT rules and the last
    filter rule (or policy) that accepted it; otherwise the step that stopped it."""
    if o.verdict == "ACCEPT":
        chosen = [s for s in o.steps if _is_nat(s)]
        accepted = [s for s in o.steps if s.table == "filter" and s.action in ("ACCEPT", "policy ACCEPT")]
        if accepted:
            chosen.append(accepted[-1])
        if chosen:
            return tuple(sorted(chosen, key=o.steps.index))
    last = o.decided_by
    return (last,) if last is not None else ()


def _source_nat(step: Step) -> bool:
    return _is_nat(step) and step.hook in ("POSTROUTING", "INPUT")


def _group_steps(o: Outcome, n: Outcome, kind: ChangeKind) -> tuple[tuple[Step, ...], tuple[Step, ...]]:
    """The steps that tell merged classes apart: the responsible ones, without the source NAT
    (a MASQUERADE per source subnet would split every class) unless the change is in it."""
    old, new = _responsible(o), _responsible(n)
    if kind != "nat" or [s.action for s in old if _source_nat(s)] == [s.action for s in new if _source_nat(s)]:
        old = tuple(s for s in old if not _source_nat(s))
        new = tuple(s for s in new if not _source_nat(s))
    return old, new


def _ref(path: str, step: Step) -> RuleRef:
    return RuleRef(path, step.table, step.chain, step.line, step.index, step.rule, step.action)


def _constraint(sp: PacketSpace, w: Packet, local: bool) -> PacketSet:
    """The outcome-side packets that started as the witness."""
    s = sp.all()
    for f in ("proto", "icmp_type", "icmp_code", "tcp_flags", "fragment"):
        s = s & sp.value(f, getattr(w, f))
    if not local and w.iif is not None:
        s = s & sp.iface("iif", Interface(w.iif))
    for f in _TUPLE:
        s = s & sp.value(f"orig_{f}", getattr(w, f))
    return s


def _endpoint(address: object, port: int, proto: int) -> str:
    text = f"[{address}]" if ":" in str(address) else str(address)
    return f"{text}:{port}" if proto in (6, 17, 33, 132, 136) else text


def _proto(number: int) -> str:
    from natlint.model.values import PROTOCOL_NAMES

    return PROTOCOL_NAMES.get(number, str(number))


def _side(sp: PacketSpace, o: Outcome, packets: PacketSet, w: Packet, local: bool, path: str) -> Side:
    fate = _fate(o)
    result = None
    if fate.passes:
        after = (packets & _constraint(sp, w, local)).pick()
        if after is not None:
            source = _endpoint(after.src, after.sport, after.proto)
            result = f"{source} -> {_endpoint(after.dst, after.dport, after.proto)}"
            if after.oif:
                result += f" out {after.oif}"
    return Side(fate, tuple(_ref(path, s) for s in _responsible(o)), result, bool(o.reasons))


def _change(sp: PacketSpace, group: _Group, old: _Run, new: _Run, traffic: Traffic, paths: tuple[str, str],
            inputs: Sequence[str]) -> Change:
    local = traffic == "local"
    from natlint.model.values import parse_prefix

    readable = group.packets - sp.prefix("dst", parse_prefix("127.0.0.0/8" if sp.family == 4 else "::1", sp.family))
    w = (readable if not readable.is_empty() else group.packets).pick()
    assert w is not None
    i, j, _ = next((p for p in group.pairs if w in p[2]), group.pairs[0])
    interfaces: tuple[str, ...] = ()
    if not local:
        interfaces = tuple(n for n in inputs if not (group.packets & sp.iface("iif", Interface(n))).is_empty())
    arrow = f"{_endpoint(w.src, w.sport, w.proto)} -> {_endpoint(w.dst, w.dport, w.proto)}"
    where = "sent by the host" if local else f"arriving on {w.iif}"
    witness: dict[str, object] = {
        "text": f"{_proto(w.proto)} {arrow} {where}", "src": str(w.src), "dst": str(w.dst), "proto": w.proto,
        "sport": w.sport, "dport": w.dport, "in": None if local else w.iif,
    }
    if w.opaque:
        witness["opaque"] = dict(w.opaque)
    return Change(group.kind, traffic, _summary(sp, group.packets), interfaces, witness,
                  _side(sp, old.outcomes[i], old.packets(i), w, local, paths[0]),
                  _side(sp, new.outcomes[j], new.packets(j), w, local, paths[1]))


def _summary(sp: PacketSpace, packets: PacketSet) -> str:
    """describe() of the class without the fields every member shares by construction."""
    fixed = _variables(sp, (*_SET_ON_THE_WAY, "iif", "tcp_flags", *[f"orig_{f}" for f in _TUPLE]))
    return _exist(sp, packets, fixed).describe()


# ---------------------------------------------------------------- text output

def format_text(report: DiffReport) -> str:
    lines = [f"natlint diff {report.old_path} -> {report.new_path} (IPv{report.family}; new connections arriving"
             f" on {', '.join(report.interfaces) or 'no interface'} and sent by the host; host model:"
             f" {report.host_source})"]
    if report.unchanged:
        lines.append("No change: every new connection has the same fate in both rulesets.")
        return "\n".join(lines) + "\n"
    for kind in KINDS:
        changes = report.of_kind(kind)
        if not changes:
            continue
        lines.append("")
        lines.append(f"{_HEADINGS[kind]}: {len(changes)}")
        for c in changes:
            source = "sent by the host" if c.traffic == "local" else f"arriving on {', '.join(c.interfaces)}"
            note = " [approximate]" if c.certainty == "approximate" else ""
            lines.append(f"  * {c.packets} ({source}){note}")
            lines.append(f"    e.g. {c.witness['text']}")
            for label, side in (("old", c.old), ("new", c.new)):
                fate = str(side.fate) + (f", as {side.result}" if side.result else "")
                lines.append(f"    {label}: {fate}")
                for ref in side.rules:
                    lines.append(f"         by {ref}")
    counts = ", ".join(f"{len(report.of_kind(k))} {k}" for k in KINDS)
    lines.append("")
    lines.append(f"{len(report.changes)} change(s): {counts}.")
    return "\n".join(lines) + "\n"
