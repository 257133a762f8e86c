"""The nat table as packet classes: what each NAT rule rewrites, and what takes packets first.

:func:`walk_nat` runs the nat table's built-in chain of one hook on the connections that
reach it (state NEW: nat sees only a connection's first packet) and records, for every NAT
rule, the packets its target acted on (``fires``), what a terminal rule took away from the rest of
the table (``took``), and the order in which rules were first reached. It follows the
kernel's chain semantics (``-j`` returns, ``-g`` does not, RETURN, MARK rewrites the mark for
later rules) but applies no NAT rewriting: the sets are the packets *before* NAT, as the
rules test them. What natlint cannot model (unknown targets, opaque matches) over-approximates
the packets that reach later rules, so "never fires" is only claimed when it holds for every
value of every opaque predicate.

:func:`dnat_inventory` (cached per :class:`CheckContext`) lists every DNAT/REDIRECT rule the
PREROUTING or OUTPUT chain reaches: the chain path to it, the packets it rewrites per hook,
what they become and the target endpoint. Other checks (exposure, NL305-NL308) may build on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from natlint.model.ruleset import Chain, Rule, Ruleset, Table
from natlint.model.values import Interface, PortRange

if TYPE_CHECKING:
    from natlint.checks.context import CheckContext
    from natlint.host.model import HostModel
    from natlint.packets.space import PacketSet, PacketSpace

__all__ = [
    "NAT_TERMINAL",
    "DnatEntry",
    "DnatInventory",
    "NatWalk",
    "arriving_start",
    "dnat_inventory",
    "first_packet",
    "full_walk",
    "key_fields_of",
    "local_start",
    "postrouting_start",
    "routed",
    "walk_nat",
]

Hook = Literal["PREROUTING", "OUTPUT", "POSTROUTING", "INPUT"]
# Targets that end a packet's walk through the nat table.
NAT_TERMINAL = frozenset({"ACCEPT", "DROP", "REJECT", "DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP"})
_DNAT_TARGETS = frozenset({"DNAT", "REDIRECT"})
# The rules whose ``fires`` a walk records: only NAT rules' are asked for, and a set per rule
# of a kube-proxy dump (tens of thousands of jumps) is millions of BDD nodes kept alive.
_NAT_RULES = frozenset({"DNAT", "REDIRECT", "SNAT", "MASQUERADE", "NETMAP"})
_MAX_DEPTH = 64
# The conntrack original tuple and what else a DNATed packet keeps until it leaves the host:
# a rewritten packet is identified by these (see DnatEntry.key).
_KEY_FIELDS = ("iif", "proto", "orig_src", "orig_dst", "orig_sport", "orig_dport", "dst", "dport")


@dataclass
class NatWalk:
    """What one walk of a nat built-in chain found (sets are packets before NAT)."""

    hook: str
    start: PacketSet
    # id(rule) -> packets its NAT target saw (marks and opaque predicates forgotten when walked
    # with exact=False)
    fires: dict[int, PacketSet] = field(default_factory=dict)
    # id(rule) -> packets it ended or returned (empty when walked with took=False)
    took: dict[int, PacketSet] = field(default_factory=dict)
    order: dict[int, int] = field(default_factory=dict)  # id(rule) -> when the walk first reached it
    rules: dict[int, Rule] = field(default_factory=dict)
    approximate: dict[int, tuple[str, ...]] = field(default_factory=dict)  # id(rule) -> reasons

    def fired(self, rule: Rule) -> PacketSet | None:
        return self.fires.get(id(rule))


class _Walker:
    def __init__(self, ctx: CheckContext, table: Table, hook: str, start: PacketSet, *, took: bool = True,
                 exact: bool = True) -> None:
        self.ctx = ctx
        self.took = took
        self.exact = exact
        self.engine = ctx.engine
        self.sp: PacketSpace = ctx.engine.space  # type: ignore[assignment]
        self.table = table
        self.result = NatWalk(hook, start)
        self.steps = 0
        self.budget = ctx.max_branches

    def _count(self) -> None:
        from natlint.netfilter.engine import BranchBudgetExceeded

        self.steps += 1
        if self.steps > self.budget:
            raise BranchBudgetExceeded(f"more than {self.budget} rule applications in the nat walk")

    def _add(self, store: dict[int, PacketSet], rule: Rule, packets: PacketSet) -> None:
        key = id(rule)
        seen = store.get(key)
        store[key] = packets if seen is None else seen | packets

    def _reduced(self, packets: PacketSet) -> PacketSet:
        """The packets with the marks and the opaque predicates forgotten: what may reach the
        rule. Kept per DNAT of a dump, a statistic path per endpoint made each kube-proxy
        endpoint's set a copy of its service's (the predicates sit below every field)."""
        marks = [f for f in ("mark", "connmark") if f in self.sp.fields]
        return (self.sp.forget(packets, *marks) if marks else packets).may()

    def _shared(self, chain: Chain, packets: PacketSet) -> PacketSet | None:
        """What comes back out of a chain that PREROUTING and OUTPUT both jump to (kube-proxy's
        KUBE-SERVICES), from one walk shared by the hooks' walks (made once per context:
        natlint.netfilter.shared_chains), recording what it reached for these packets; None
        when the chain is not shared or the walk does not serve them: walk it as usual.
        The walk's sets are packets before any NAT (a NAT rule ends the walk of what it
        takes): restricted as they are."""
        from natlint.netfilter import shared_chains as sc

        if chain.name not in self.engine.shareable_chains(self.table):
            return None
        store = vars(self.ctx).setdefault("_natlint_shared_nat_walks", {})
        key = (chain.name, self.took, self.exact)
        run = store.get(key)
        if run is None:
            start = sc.start_of(self.sp, packets)
            if start is None:
                return None
            walker = _Walker(self.ctx, self.table, self.result.hook, start, took=self.took, exact=self.exact)  # type: ignore[arg-type]
            back = walker.run(chain, start, 1)  # type: ignore[arg-type]
            run = store[key] = (start, walker.result, back)
        start, walked, back = run
        found = sc.condition(self.sp, start, packets)
        if found is None:
            return None
        cond, rest = found.cond, found.rest  # the walk's sets are before any NAT: tested as they are
        r = self.result
        for key_id in sorted(walked.order, key=walked.order.__getitem__):
            r.order.setdefault(key_id, len(r.order))
            r.rules[key_id] = walked.rules[key_id]
        for mine, theirs in ((r.fires, walked.fires), (r.took, walked.took)):
            for key_id, part in theirs.items():
                part = part & cond  # type: ignore[operator]
                if not part.is_empty():
                    seen = mine.get(key_id)
                    mine[key_id] = part if seen is None else seen | part
        for key_id, why in walked.approximate.items():  # read for the rules that fired or took
            if key_id in r.fires or key_id in r.took:
                r.approximate.setdefault(key_id, why)
        back = back & cond  # type: ignore[operator]
        if not rest.is_empty():  # type: ignore[attr-defined]
            back = back | self.run(chain, rest, 1)  # type: ignore[arg-type]
        return back  # type: ignore[no-any-return]

    def run(self, chain: Chain, live: PacketSet, depth: int) -> PacketSet:
        """The packets that come back out of the chain (RETURN or its end)."""
        returned = self.sp.none()
        if depth > _MAX_DEPTH:
            return live
        r = self.result
        for rule in chain.rules:
            r.order.setdefault(id(rule), len(r.order))
            r.rules[id(rule)] = rule
            if live.is_empty():
                continue  # still numbered: the order tells what comes before what
            self._count()
            compiled = self.engine.compiled(rule)
            match: PacketSet = compiled.set  # type: ignore[attr-defined]
            hit = live if match.is_all() else live & match
            if hit.is_empty():
                continue
            if rule.target is not None and rule.target.name in _NAT_RULES:
                self._add(r.fires, rule, hit if self.exact else self._reduced(hit))
            if compiled.approximate:  # type: ignore[attr-defined]
                r.approximate[id(rule)] = compiled.reasons  # type: ignore[attr-defined]
            target = rule.target
            if target is None:
                continue
            name = target.name
            if target.kind == "chain":
                sub = self.table.chains.get(name)
                if sub is None:
                    continue  # undefined chain (NL101): assume it lets the packets continue
                shared = self._shared(sub, hit) if depth == 0 else None
                back = shared if shared is not None else self.run(sub, hit, depth + 1)
                if target.goto:
                    returned = returned | back
                    live = live - hit
                else:
                    live = (live - hit) | back
                continue
            if name == "RETURN":
                if self.took:
                    self._add(r.took, rule, hit)
                returned = returned | hit
                live = live - hit
            elif name in NAT_TERMINAL:
                if self.took:
                    self._add(r.took, rule, hit)
                live = live - hit
            elif name == "MARK":
                from natlint.extensions.targets_mangle import mark_action

                action = mark_action({o.name: o for o in target.options})
                if action is not None:
                    live = (live - hit) | self.sp.xmark(hit, "mark", action.value, action.mask)
            elif name == "CONNMARK":
                live = (live - hit) | self.sp.forget(hit, "mark", "connmark")
            elif name == "HMARK":
                live = (live - hit) | self.sp.forget(hit, "mark")
            # any other target (LOG, unknown ones...) lets the packets continue: the
            # over-approximation keeps "never fires" claims sound
        return returned | live


def walk_nat(ctx: CheckContext, hook: str, start: PacketSet, *, took: bool = True, exact: bool = True
             ) -> NatWalk | None:
    """Walk nat's built-in chain ``hook`` with ``start`` (None: no such chain).

    ``took=False`` records no ``took`` sets, ``exact=False`` records ``fires`` with the marks
    and the opaque predicates forgotten (what may reach each NAT rule): what the DNAT
    inventory keeps for every DNAT of a dump (a kube-proxy hairpin mark ties each endpoint's
    source to its service, a statistic path each endpoint's set to its own copy of the
    service's: sets several times bigger).
    """
    table = ctx.ruleset.tables.get("nat")
    chain = table.chains.get(hook) if table is not None else None
    if table is None or chain is None:
        return None
    walker = _Walker(ctx, table, hook, start, took=took, exact=exact)
    walker.run(chain, start, 0)
    return walker.result


# ---------------------------------------------------------------- start sets


def _fresh(sp: PacketSpace) -> PacketSet:
    """A connection's first packet: state NEW, no NAT yet, not a fragment."""
    return (sp.ctstate(["NEW"]) & sp.value("ct_dnat", False) & sp.value("ct_snat", False)
            & sp.value("fragment", False))


def first_packet(sp: PacketSpace) -> PacketSet:
    """A connection's first packet as its sender makes it: :func:`_fresh`, no mark and no
    conntrack mark yet, and a TCP one is a SYN (exposure's classes, NL204's connections)."""
    s = _fresh(sp) & sp.iface("oif", None)
    for name in ("mark", "connmark"):
        if name in sp.widths:
            s = s & sp.value(name, 0)
    tcp = sp.value("proto", 6)
    return s & ((tcp & sp.value("tcp_flags", 0x02)) | (sp.all() - tcp))


def arriving_start(ctx: CheckContext) -> PacketSet:
    """New connections arriving from any interface but lo (the host's own packets come back
    in on lo already NATed at OUTPUT: nat PREROUTING never sees them)."""
    sp: PacketSpace = ctx.engine.space  # type: ignore[assignment]
    s = _fresh(sp) - sp.iface("iif", None) - sp.iface("iif", Interface("lo"))
    return s & sp.iface("oif", None)


def local_start(ctx: CheckContext) -> PacketSet:
    """New connections the host itself opens (no input interface)."""
    sp: PacketSpace = ctx.engine.space  # type: ignore[assignment]
    return _fresh(sp) & sp.iface("iif", None)


def postrouting_start(ctx: CheckContext) -> PacketSet:
    """New connections leaving through an interface (forwarded or the host's own)."""
    sp: PacketSpace = ctx.engine.space  # type: ignore[assignment]
    s = sp.ctstate(["NEW"]) & sp.value("ct_snat", False) & sp.value("fragment", False)
    return (s - sp.iface("oif", None)) & routed(ctx)


def routed(ctx: CheckContext) -> PacketSet:
    """Packets whose output interface is the one routing gives their destination (the host
    model's routes; local destinations leave through lo)."""
    sp: PacketSpace = ctx.engine.space  # type: ignore[assignment]
    names = set(sp.interfaces)
    result = sp.none()
    for prefixes, decision in ctx.host.route_partition():
        if decision.kind == "unreachable":
            continue
        oif = "lo" if decision.kind == "local" and decision.oif in (None, "lo") else decision.oif
        dsts = sp.none()
        for prefix in prefixes:
            dsts = dsts | sp.prefix("dst", prefix)
        if oif is None:
            result = result | dsts
        elif oif in names:
            result = result | (dsts & sp.iface("oif", Interface(oif)))
    return result


# ---------------------------------------------------------------- the DNAT inventory


@dataclass(frozen=True)
class DnatEntry:
    """One DNAT/REDIRECT rule and what it does.

    ``fires[hook]``: the new connections it may rewrite (before NAT, marks and opaque
    predicates forgotten) on that hook's path;
    ``rewritten[hook]``: the same connections after it (``orig_*`` hold the original tuple),
    computed when asked for (kept for every DNAT of a kube-proxy dump they were millions of
    live BDD nodes);
    ``key[hook]``: ``rewritten`` reduced to the fields a packet keeps until it leaves the host
    (input interface, protocol, original tuple, new destination), to recognise its packets
    in the engine's outcomes (computed when asked for when the rule rewrites to one address
    and port, and then not kept either).
    ``addresses``/``ports``: the target range (None: unchanged, or for REDIRECT the incoming
    interface's address).
    """

    rule: Rule
    paths: tuple[tuple[str, ...], ...]
    fires: Mapping[str, PacketSet]
    rewritten: Mapping[str, PacketSet]
    key: Mapping[str, PacketSet]
    addresses: tuple[int, int] | None
    ports: PortRange | None
    reasons: tuple[str, ...] = ()

    @property
    def hooks(self) -> tuple[str, ...]:
        return tuple(self.fires)

    def probe(self, hook: str) -> PacketSet:
        """A set that meets a set of the key fields testing no opaque predicate exactly when
        ``key[hook]`` does (the key is the probe with the other fields and the opaque
        predicates forgotten): the rewritten connections when the key would be made from
        them on demand (two ∃ fewer for each of the 27,500 DNATs of a 100k-rule kube-proxy
        dump), else the key."""
        return self.rewritten[hook] if isinstance(self.key, _Rewritten) else self.key[hook]

    @property
    def target_text(self) -> str:
        assert self.rule.target is not None
        opt = self.rule.target.option("to_destination") or self.rule.target.option("to_ports") \
            or self.rule.target.option("to")
        value = " ".join(str(v) for v in opt.values) if opt is not None else ""
        return f"{self.rule.target.name} {value}".strip()


@dataclass
class DnatInventory:
    """Every DNAT/REDIRECT rule nat PREROUTING/OUTPUT reaches, and the walks that found them
    (``walks``: fires only, marks and opaque predicates forgotten; :func:`full_walk` has what
    the rules took)."""

    entries: list[DnatEntry]
    walks: dict[str, NatWalk]
    silent: list[tuple[Rule, tuple[tuple[str, ...], ...]]]  # reached by a path, fire on no packet
    full: dict[str, NatWalk | None] = field(default_factory=dict)  # full_walk's, per hook

    def __iter__(self) -> Iterator[DnatEntry]:
        return iter(self.entries)


_STARTS: dict[str, Callable[[CheckContext], PacketSet]] = {"PREROUTING": arriving_start, "OUTPUT": local_start}


def full_walk(ctx: CheckContext, inventory: DnatInventory, hook: str) -> NatWalk | None:
    """The walk of ``hook`` with everything recorded (``took``, marks): what the shadowing
    analysis needs, walked again when first asked for (a clean dump never asks)."""
    if hook not in inventory.full:
        inventory.full[hook] = walk_nat(ctx, hook, _STARTS[hook](ctx)) if hook in inventory.walks else None
    return inventory.full[hook]


def chain_paths(table: Table, hooks: tuple[str, ...], limit: int = 8) -> dict[str, list[tuple[str, ...]]]:
    """Chain name -> up to ``limit`` call paths (built-in chain first) that reach it."""
    paths: dict[str, list[tuple[str, ...]]] = {}
    for hook in hooks:
        if hook not in table.chains:
            continue
        todo: list[tuple[str, ...]] = [(hook,)]
        while todo:
            path = todo.pop()
            name = path[-1]
            found = paths.setdefault(name, [])
            if len(found) >= limit or path in found:
                continue
            found.append(path)
            chain = table.chains.get(name)
            if chain is None or len(path) > 16:
                continue
            for rule in chain.rules:
                t = rule.target
                if t is not None and t.kind == "chain" and t.name in table.chains and t.name not in path:
                    todo.append(path + (t.name,))
    return paths


def _rewrite(sp: PacketSpace, host: HostModel, rule: Rule, hook: str, packets: PacketSet
             ) -> tuple[PacketSet, tuple[str, ...]]:
    from natlint.netfilter import nat
    from natlint.netfilter.engine import ORIG_PAIRS

    assert rule.target is not None
    with_orig = sp.copy_fields(packets, ORIG_PAIRS)  # conntrack records the original tuple
    options = {o.name: o for o in rule.target.options}
    out = sp.none()
    reasons: list[str] = []
    for part, _verdict, why in nat.apply(sp, host, rule.target.name, options, hook, with_orig):
        out = out | part  # type: ignore[operator]
        reasons.extend(r for r in why if r not in reasons)
    return out, tuple(reasons)


def key_fields_of(sp: PacketSpace, packets: PacketSet) -> PacketSet:
    """``packets`` reduced to :data:`_KEY_FIELDS` (the other fields forgotten)."""
    keep = set(_KEY_FIELDS)
    return sp.forget(packets, *(f for f in sp.fields if f not in keep))


def _key(sp: PacketSpace, rewritten: PacketSet) -> PacketSet:
    """``DnatEntry.key`` of one hook: the rewritten connections on the key fields, every
    value of the opaque predicates."""
    return key_fields_of(sp, rewritten).may()


class _Rewritten(Mapping[str, "PacketSet"]):
    """``DnatEntry.rewritten``: what the rule makes of the connections it fires on, per hook,
    translated anew on each access (``keys``: reduced to the key fields, as ``DnatEntry.key``)."""

    def __init__(self, sp: PacketSpace, host: HostModel, rule: Rule, fires: Mapping[str, PacketSet], *,
                 keys: bool = False) -> None:
        self._sp = sp
        self._host = host
        self._rule = rule
        self._fires = fires
        self._keys = keys

    def __getitem__(self, hook: str) -> PacketSet:
        out = _rewrite(self._sp, self._host, self._rule, hook, self._fires[hook])[0]
        return _key(self._sp, out) if self._keys else out

    def __iter__(self) -> Iterator[str]:
        return iter(self._fires)

    def __len__(self) -> int:
        return len(self._fires)


def _target_range(rule: Rule) -> tuple[tuple[int, int] | None, PortRange | None]:
    assert rule.target is not None
    opt = rule.target.option("to_destination") or rule.target.option("to")
    if rule.target.name == "REDIRECT":
        opt = rule.target.option("to_ports") or rule.target.option("to")
        value = opt.value if opt is not None else None
        ports = getattr(value, "ports", value if isinstance(value, PortRange) else None)
        return None, ports if isinstance(ports, PortRange) else None
    value = opt.value if opt is not None else None
    addresses = getattr(value, "addresses", None)
    ports = getattr(value, "ports", None)
    span = (int(addresses.first), int(addresses.last)) if addresses is not None else None
    return span, ports if isinstance(ports, PortRange) else None


def dnat_inventory(ctx: CheckContext) -> DnatInventory:
    """The DNAT inventory of the context's ruleset (computed once per context)."""
    cached = vars(ctx).get("_natlint_dnat_inventory")
    if isinstance(cached, DnatInventory):
        return cached
    inventory = _build_inventory(ctx)
    vars(ctx)["_natlint_dnat_inventory"] = inventory
    return inventory


def _build_inventory(ctx: CheckContext) -> DnatInventory:
    from natlint.netfilter import nat

    ruleset: Ruleset = ctx.ruleset
    table = ruleset.tables.get("nat")
    if table is None:
        return DnatInventory([], {}, [])
    sp: PacketSpace = ctx.engine.space  # type: ignore[assignment]
    walks: dict[str, NatWalk] = {}
    for hook, start in _STARTS.items():
        walked = walk_nat(ctx, hook, start(ctx), took=False, exact=False)
        if walked is not None:
            walks[hook] = walked
    vars(ctx).pop("_natlint_shared_nat_walks", None)  # the walks are done: their shared walks need not stay alive
    paths = chain_paths(table, ("PREROUTING", "OUTPUT"))
    entries: list[DnatEntry] = []
    silent: list[tuple[Rule, tuple[tuple[str, ...], ...]]] = []
    for chain in table:
        for rule in chain.rules:
            if rule.target is None or rule.target.name not in _DNAT_TARGETS or chain.name not in paths:
                continue
            fires: dict[str, PacketSet] = {}
            keys: dict[str, PacketSet] = {}
            reasons: list[str] = []
            # One address and port: the translation has nothing to report, so the keys are
            # made when asked for (kept for the 27,500 DNATs of a 100k-rule kube-proxy dump
            # they were most of the inventory's live nodes). Otherwise the translation is made
            # once, for its reasons, and gives the keys.
            fixed = nat.is_fixed(rule.target.name, {o.name: o for o in rule.target.options})
            for hook, w in walks.items():
                hit = w.fired(rule)
                if hit is None or hit.is_empty():
                    continue
                fires[hook] = hit
                why: tuple[str, ...] = ()
                if not fixed:
                    out, why = _rewrite(sp, ctx.host, rule, hook, hit)
                    keys[hook] = _key(sp, out)
                reasons.extend(r for r in why + w.approximate.get(id(rule), ()) if r not in reasons)
            chain_path = tuple(paths.get(chain.name, ()))
            if not fires:
                silent.append((rule, chain_path))
                continue
            addresses, ports = _target_range(rule)
            rewritten = _Rewritten(sp, ctx.host, rule, fires)
            key: Mapping[str, PacketSet] = _Rewritten(sp, ctx.host, rule, fires, keys=True) if fixed else keys
            entries.append(DnatEntry(rule, chain_path, fires, rewritten, key, addresses, ports, tuple(reasons)))
    return DnatInventory(entries, walks, silent)


def potential(ctx: CheckContext, walk: NatWalk, rule: Rule) -> PacketSet:
    """The packets ``rule`` would match on ``walk``'s hook if no earlier rule took any: the
    walk's start, the tests of the jumps on the way, and the rule's own tests."""
    table = ctx.ruleset.tables["nat"]
    sp: PacketSpace = ctx.engine.space  # type: ignore[assignment]
    callers: dict[str, list[tuple[str, Rule]]] = {}
    for chain in table:
        for r in chain.rules:
            t = r.target
            if t is not None and t.kind == "chain":
                callers.setdefault(t.name, []).append((chain.name, r))
    memo: dict[str, PacketSet] = {}

    def entry(name: str, visiting: frozenset[str]) -> PacketSet:
        if name == walk.hook:
            return walk.start
        if name in memo:
            return memo[name]
        found = sp.none()
        for caller, jump in callers.get(name, ()):
            if caller in visiting:
                continue
            found = found | (entry(caller, visiting | {name}) & ctx.engine.compiled(jump).set)  # type: ignore[attr-defined]
        memo[name] = found
        return found

    match: PacketSet = ctx.engine.compiled(rule).set  # type: ignore[attr-defined]
    return entry(rule.chain, frozenset({rule.chain})) & match


def takers(walk: NatWalk, rule: Rule, packets: PacketSet) -> list[tuple[Rule, PacketSet]]:
    """The rules reached before ``rule`` that ended or returned some of ``packets``."""
    limit = walk.order.get(id(rule))
    found: list[tuple[Rule, PacketSet]] = []
    for key, took in walk.took.items():
        if key == id(rule) or (limit is not None and walk.order.get(key, 0) >= limit):
            continue
        part = took & packets
        if not part.is_empty():
            found.append((walk.rules[key], part))
    found.sort(key=lambda rp: walk.order.get(id(rp[0]), 0))
    return found
