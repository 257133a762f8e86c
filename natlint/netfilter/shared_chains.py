"""One run of a chain that several built-in chains jump to, restricted for each caller.

kube-proxy's nat ``KUBE-SERVICES`` is jumped to from both PREROUTING and OUTPUT: a check that
classifies arriving and local traffic walks its thousands of rules twice. When no rule of the
chain's closure tests an interface (``-i``, ``-o``), and its targets are among those whose
effect is known (verdicts, jumps, MARK, DNAT, SNAT, and the targets the engine treats as
no-ops), the chain does to every packet what it would do to it whatever interfaces the packet
carries. So the chain is run once on the packets with their interfaces forgotten (``S``, from
packets that test no opaque predicate), and a later caller's packets ``J`` within ``S`` are
served from that run when ``J ∧ S = S ∧ P`` where ``P`` does not test the fields the closure
sets without a record of their old value (mark, connmark, the conntrack NAT flags): those
must be as in ``S``. ``J - S`` runs as usual. (Docker's nat ``DOCKER`` tests ``-i docker0``:
it is never shared.)

Each outcome of the run is then restricted by ``P``. Fields the closure never changes are
tested as they are; a tuple field a NAT target may have rewritten (nat table only, where
every packet is NEW and its tuple at the chain's entry is its conntrack original tuple) is
tested on ``orig_X`` once recorded, on ``X`` while still implicit (the branch's lazy fields).

Engines that record no steps, or only those a filter keeps, use it (the served steps name the
caller's hook); an engine that records every step (a trace, the kernel's ground truth) runs
each hook itself. Only in the nat table (which a check enters once per hook; a filter chain is
entered once per branch, where the bookkeeping would cost more than it saves), from the
built-in chain itself, one run per hook; the run is let go of once every caller was served.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from natlint.model.ruleset import Chain, Table

if TYPE_CHECKING:
    from natlint.netfilter.engine import Verdict, _Branch

__all__ = ["ChainRun", "Served", "callers", "condition", "restricted", "shareable_chains", "start_of"]

_KEEP_TARGETS = frozenset({"MARK", "DNAT", "SNAT", "REJECT"})
# Fields the shareable targets set without recording their old value.
_SET_FIELDS = ("mark", "connmark", "ct_dnat", "ct_snat")


@dataclass
class ChainRun:
    """One run of a shared chain: its input and its outcomes (branches not yet restricted)."""

    hook: str  # the hook of the caller it was made for
    start: object  # S: a PacketSet
    lazy: frozenset[str]
    stopped: list[tuple[_Branch, Verdict]]
    returned: list[_Branch]
    rewrites: frozenset[str]  # tuple fields a NAT target of the closure may rewrite
    callers: frozenset[str] = frozenset()  # the built-in chains that jump to it
    served: set[str] = field(default_factory=set)  # the hooks it served (its own included)

    def done(self) -> bool:
        """Whether every caller has been served: the run need not stay alive any more."""
        return self.callers <= self.served


def _closure(table: Table, name: str) -> list[Chain] | None:
    found: dict[str, Chain] = {}
    todo = [name]
    while todo:
        current = todo.pop()
        if current in found:
            continue
        chain = table.chains.get(current)
        if chain is None:
            return None
        found[current] = chain
        for rule in chain.rules:
            if rule.target is not None and rule.target.kind == "chain":
                todo.append(rule.target.name)
    return list(found.values())


def _shareable(chains: Iterable[Chain], no_effect: frozenset[str]) -> tuple[bool, frozenset[str]]:
    """(whether the closure qualifies, the tuple fields its NAT targets may rewrite)."""
    rewrites: set[str] = set()
    for chain in chains:
        for rule in chain.rules:
            if rule.in_interface is not None or rule.out_interface is not None:
                return False, frozenset()
            target = rule.target
            if target is None or target.kind in ("chain", "verdict"):
                if target is not None and target.name == "QUEUE":
                    return False, frozenset()
                continue
            if target.name not in _KEEP_TARGETS and target.name not in no_effect:
                return False, frozenset()
            if target.name == "DNAT":
                rewrites |= {"dst", "dport"}
            elif target.name == "SNAT":
                rewrites |= {"src", "sport"}
    return True, frozenset(rewrites)


def _jumped_to(table: Table) -> dict[str, set[str]]:
    """Chain name -> the built-in chains of the table that jump to (or go to) it directly."""
    found: dict[str, set[str]] = {}
    for chain in table:
        if not chain.builtin:
            continue
        for rule in chain.rules:
            if rule.target is not None and rule.target.kind == "chain":
                found.setdefault(rule.target.name, set()).add(chain.name)
    return found


def callers(table: Table, name: str) -> frozenset[str]:
    """The built-in chains of the table that jump to (or go to) the chain directly."""
    return frozenset(_jumped_to(table).get(name, ()))


def shareable_chains(table: Table, no_effect: frozenset[str]) -> dict[str, frozenset[str]]:
    """The chains of the table that two or more of its built-in chains jump to (or go to)
    directly and whose closure qualifies: name -> the tuple fields it may rewrite."""
    found: dict[str, frozenset[str]] = {}
    for name, hooks in _jumped_to(table).items():
        if len(hooks) < 2:
            continue
        chains = _closure(table, name)
        if chains is None:
            continue
        ok, rewrites = _shareable(chains, no_effect)
        if ok:
            found[name] = rewrites
    return found


@dataclass
class Served:
    """How a run serves a caller's packets."""

    cond: object  # P
    rest: object  # the packets outside the run's start: run as usual
    interfaces_only: bool  # P tests only the interfaces (never rewritten: no original to test)


def condition(sp: object, start: object, packets: object) -> Served | None:
    """How a run on ``start`` serves these packets but for the rest (those outside it, to run
    as usual; see the module's docstring), or None when it does not."""
    inside = packets & start  # type: ignore[operator]
    if inside.is_empty() or inside.may() != inside:  # opaque predicates: transforms forget some
        return None
    rest = packets - start  # type: ignore[operator]
    # the common case (the run's own caller, whose interfaces were forgotten): P is a test
    # of the interfaces, at the top of the variable order: restricting costs a few nodes
    others = [f for f in sp.fields if f not in ("iif", "oif")]  # type: ignore[attr-defined]
    interfaces = sp.forget(inside, *others)  # type: ignore[attr-defined]
    if (start & interfaces) == inside:
        return Served(interfaces, rest, True)
    fixed = [f for f in _SET_FIELDS if f in sp.fields]  # type: ignore[attr-defined]
    cond = sp.forget(inside, *fixed) if fixed else inside  # type: ignore[attr-defined]
    if (start & cond) != inside:
        return None
    return Served(cond, rest, False)


def start_of(sp: object, packets: object) -> object | None:
    """The set to run the chain on for these packets (interfaces forgotten), or None when
    the packets test opaque predicates."""
    if packets.may() != packets:  # type: ignore[attr-defined]
        return None
    start: object = sp.forget(packets, "iif", "oif")  # type: ignore[attr-defined]
    return start


def restricted(sp: object, packets: object, served: Served, lazy: frozenset[str], rewrites: frozenset[str],
               cache: dict[frozenset[str], object]) -> object:
    """The outcome's packets restricted to the caller's (``served.cond``): a rewritten tuple
    field is tested on its recorded original value (``cache``: the condition per set of such
    fields)."""
    if served.interfaces_only:
        return packets & served.cond  # type: ignore[operator]
    moved = frozenset(f for f in rewrites if f not in lazy)
    found = cache.get(moved)
    if found is None:
        cond = found = served.cond
        if moved:
            pairs: Sequence[tuple[str, str]] = [(f, f"orig_{f}") for f in sorted(moved)]
            found = sp.forget(sp.equate_fields(cond, pairs), *moved)  # type: ignore[attr-defined]
        cache[moved] = found
    return packets & found  # type: ignore[operator]
