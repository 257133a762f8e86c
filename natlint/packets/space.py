"""Sets of packets as binary decision diagrams (``dd``).

A :class:`PacketSpace` owns one BDD manager and the variable layout of one analysis (one
address family, one interface universe). A :class:`PacketSet` is an immutable set of packets
of that space: ``&``, ``|``, ``-``, ``~`` (complement within the space's valid packets),
``is_empty()``, ``==``, ``issubset()``, ``pick()`` (a concrete :class:`Packet`), ``count()``
and ``describe()``. Transforms for NAT and MARK (``assign``, ``copy``, ``xmark``...) live on
the space.

Backend: ``oxidd`` (complement-edge BDDs in Rust, through the dd-like facade of
:mod:`natlint.packets.oxbdd`; about twice as fast as CUDD on natlint's big analyses, since the
CUDD in dd's wheel is compiled without optimisation), else ``dd.cudd`` (CUDD, C) with dynamic
reordering off, else ``dd.autoref`` (pure Python); the last two collect garbage as described
at :class:`PacketSpace`. See research/linter-conventions-and-performance.md section 4 for the
measurements behind the variable order.

Fields (bits): ``src``, ``dst``, ``orig_src``, ``orig_dst`` (32 or 128), ``proto`` (8),
``sport``, ``dport``, ``orig_sport``, ``orig_dport`` (16), ``icmp_type``, ``icmp_code`` (8),
``tcp_flags`` (6: FIN=1 ... URG=32), ``iif``, ``oif`` (interned interface values),
``ctstate`` (NEW, ESTABLISHED, RELATED, INVALID, UNTRACKED), ``ct_dnat``, ``ct_snat`` (the
conntrack virtual states DNAT/SNAT: the connection is NATed), ``mark``, ``connmark`` (32,
absent with ``marks=False``), ``fragment`` (1: a non-first IPv4 fragment, what ``-f`` tests),
then one boolean variable per opaque predicate (:meth:`PacketSpace.opaque`).

Modelling notes (what a field does *not* say):

* Fields are independent except for the validity constraint: interface values inside the
  universe, a known ctstate, and no DNAT/SNAT virtual state without a connection (INVALID,
  UNTRACKED). In particular ports, ICMP type/code and TCP flags are free for protocols that
  have none, and ``orig_*`` (the conntrack original tuple) is free for packets without a
  connection: analyses must constrain them where it matters (``copy(s, "orig_dst", "dst")``
  when conntrack creates the entry).
* ``proto`` is the upper-layer protocol (for IPv6 the one after extension headers, what
  ``ip6tables -p`` tests).
* Interfaces are interned: every name of the universe, one value "another interface
  starting with STEM" for every wildcard ``STEM+`` of the universe, one value "any other
  interface", and one value "no interface" (OUTPUT has no input interface, PREROUTING and
  INPUT no output interface). ``-i +`` (empty stem) matches every value, "no interface"
  included, as the kernel's masked compare does.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import sys
import time
import warnings
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from natlint.model.values import PROTOCOL_NAMES, Interface, Prefix


def _import_dd() -> tuple[Any, Any]:
    """``dd.cudd`` (None where the wheel does not exist) and ``dd.autoref``.

    dd imports networkx at start-up only for its graph export, which natlint never uses, and
    networkx takes longer to import than natlint needs to check a small file (pre-commit runs
    it on every commit). So unless something imported networkx already, dd is imported with
    networkx hidden (dd then records it as missing); networkx stays importable afterwards.
    """
    hidden = "networkx" not in sys.modules
    if hidden:
        sys.modules["networkx"] = None  # type: ignore[assignment]  # makes 'import networkx' fail
    try:
        try:  # the CUDD wheel exists for CPython 3.11-3.13 on Linux x86_64 only
            from dd import cudd
        except ImportError:  # pragma: no cover - depends on the platform
            cudd = None
        from dd import autoref
    finally:
        if hidden and sys.modules.get("networkx", 0) is None:
            del sys.modules["networkx"]
    return cudd, autoref


_cudd_module, _autoref_module = _import_dd()

__all__ = [
    "BACKENDS",
    "BudgetExceeded",
    "CT_STATES",
    "DEFAULT_ORDER",
    "FIELDS",
    "ORDER_SEPARATE",
    "Packet",
    "PacketSet",
    "PacketSpace",
    "TRACKED_STATES",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_Node = Any  # a dd Function (cudd or autoref): dd ships no type information

CT_STATES: tuple[str, ...] = ("NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED")
TRACKED_STATES: frozenset[str] = frozenset({"NEW", "ESTABLISHED", "RELATED"})
VIRTUAL_STATES: Mapping[str, str] = {"DNAT": "ct_dnat", "SNAT": "ct_snat"}

ADDRESS_FIELDS: tuple[str, ...] = ("src", "dst", "orig_src", "orig_dst")
PORT_FIELDS: tuple[str, ...] = ("sport", "dport", "orig_sport", "orig_dport")
IFACE_FIELDS: tuple[str, ...] = ("iif", "oif")
BOOL_FIELDS: tuple[str, ...] = ("ct_dnat", "ct_snat", "fragment")
MARK_FIELDS: tuple[str, ...] = ("mark", "connmark")

# Every field in the canonical order of the Packet dataclass.
FIELDS: tuple[str, ...] = (
    "src", "dst", "proto", "sport", "dport", "icmp_type", "icmp_code", "iif", "oif", "ctstate",
    "ct_dnat", "ct_snat", "orig_src", "orig_dst", "orig_sport", "orig_dport", "mark", "connmark",
    "fragment", "tcp_flags",
)
_FIXED_WIDTHS: Mapping[str, int] = {
    "proto": 8, "sport": 16, "dport": 16, "orig_sport": 16, "orig_dport": 16, "icmp_type": 8,
    "icmp_code": 8, "tcp_flags": 6, "ctstate": 3, "ct_dnat": 1, "ct_snat": 1, "mark": 32,
    "connmark": 32, "fragment": 1,
}

OrderSpec = Sequence[str | Sequence[str]]

# The variable order: each entry is a field or a group of fields whose bits are interleaved
# (bit i of each field next to each other, aligned on the least significant bit).
# The interfaces and the connection state come first: they have few values, and the engine
# constrains and rewrites them on big sets all the time (oif := the route's interface,
# ctstate = NEW, the NAT flags). On top of the order such an operation touches a few nodes;
# at the bottom it rebuilds every node above them (2.2x faster on kube-proxy dumps, measured
# in docs/performance.md). The addresses come next (the most robust order measured for filter
# rules); each field is interleaved with its conntrack "orig" twin and mark with connmark, so
# that ``copy()`` (orig_dst := dst, CONNMARK --save-mark) builds equalities of linear size
# instead of 2**width. Bits that a set does not test cost nothing in a BDD.
DEFAULT_ORDER: tuple[str | tuple[str, ...], ...] = (
    "iif", "oif", "ctstate", "ct_dnat", "ct_snat",
    ("src", "orig_src"), ("dst", "orig_dst"), "proto", ("sport", "orig_sport"),
    ("dport", "orig_dport"), "icmp_type", "icmp_code", "tcp_flags", ("mark", "connmark"), "fragment",
)
# Field after field, the orig_* tuple after the packet's own: smaller when rules test the
# original tuple independently of the packet, exponential for ``copy()`` of unconstrained
# addresses (2**32 nodes): only for analyses that never copy between fields.
ORDER_SEPARATE: tuple[str, ...] = (
    "src", "dst", "orig_src", "orig_dst", "proto", "sport", "dport", "orig_sport", "orig_dport",
    "icmp_type", "icmp_code", "tcp_flags", "iif", "oif", "ctstate", "ct_dnat", "ct_snat", "mark",
    "connmark", "fragment",
)

# oxidd first: the CUDD inside dd's wheel is built without optimisation (see oxbdd.py).
# Found without importing it (the import costs 30 ms, and pre-commit runs natlint often).
_HAVE_OXIDD = importlib.util.find_spec("oxidd") is not None
BACKENDS: tuple[str, ...] = (
    ("oxidd",) if _HAVE_OXIDD else ()) + (("cudd",) if _cudd_module is not None else ()) + ("autoref",)

_TCP_SYN = 0x02
_TCP_ACK = 0x10
_NICE_ADDRESSES: Mapping[tuple[int, str], str] = {
    (4, "src"): "203.0.113.10", (4, "dst"): "198.51.100.10",
    (6, "src"): "2001:db8::10", (6, "dst"): "2001:db8:1::10",
}
_EPHEMERAL_PORT = 40000
_CUDD_COUNT_EVERY = 1024
_CUDD_COUNT_SECONDS = 0.25
_OXIDD_COUNT_EVERY = 64
# The fields the validity constraint tests (PacketSpace._build_valid).
_VALID_FIELDS = frozenset({"iif", "oif", "ctstate", "ct_dnat", "ct_snat"})
_OXIDD_GC_MIN = 1 << 22
# Opaque variables are declared in blocks at the bottom of the order: a first small one, then
# one big enough for a kube-proxy dump's statistic rules (declaring costs about 0.7 us per
# variable), then doubling. Each block is handed out from its bottom up, so that a new
# predicate's variable sits above the older ones of its block: the cubes that quantify every
# used opaque variable (may()/must(), what a transform forgets) grow by one node per new
# predicate (see _growing_cube), and an ∃ on a set of the newest predicates does not step
# through a cube of every older one to reach them (that was about 2 ms per MARK at the end
# of a 5,000-service kube-proxy dump).
_OPAQUE_BLOCK = 256
_OPAQUE_BIG_BLOCK = 1 << 16


class BudgetExceeded(RuntimeError):
    """The analysis went over the space's node or time budget.

    Raised by any operation of a :class:`PacketSpace` or :class:`PacketSet` once the manager
    holds more than ``max_nodes`` live nodes (or CUDD refuses to allocate within the memory
    cap derived from it) or more than ``max_seconds`` passed since the clock was (re)started.
    Callers catch it and report the analysis as incomplete; the space stays usable after
    :meth:`PacketSpace.restart_clock` (time) or once large sets are dropped (nodes).
    """

    def __init__(self, reason: str, *, nodes: int, seconds: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.nodes = nodes
        self.seconds = seconds


@dataclass(frozen=True, slots=True)
class Packet:
    """One concrete packet (a member of a set, as :meth:`PacketSet.pick` returns it).

    ``iif``/``oif`` are interface names, None when the packet has no such interface; a name
    that is not in the space's universe stands for its class ("another interface starting
    with eth"). ``opaque`` gives the value of each opaque predicate the set depends on, by
    label. ``orig_*`` are the conntrack original tuple (meaningless without a connection).
    """

    src: IPAddress
    dst: IPAddress
    proto: int = 6
    sport: int = 0
    dport: int = 0
    icmp_type: int = 0
    icmp_code: int = 0
    iif: str | None = None
    oif: str | None = None
    ctstate: str = "NEW"
    ct_dnat: bool = False
    ct_snat: bool = False
    orig_src: IPAddress | None = None  # None: the same as src (filled in)
    orig_dst: IPAddress | None = None
    orig_sport: int | None = None
    orig_dport: int | None = None
    mark: int = 0
    connmark: int = 0
    fragment: bool = False
    tcp_flags: int = 0
    opaque: Mapping[str, bool] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for orig, own in (("orig_src", "src"), ("orig_dst", "dst"), ("orig_sport", "sport"), ("orig_dport", "dport")):
            if getattr(self, orig) is None:
                object.__setattr__(self, orig, getattr(self, own))

    def __str__(self) -> str:
        proto = PROTOCOL_NAMES.get(self.proto, str(self.proto))
        if self.proto in _PORT_PROTOCOLS:
            src, dst = _endpoint(self.src, self.sport), _endpoint(self.dst, self.dport)
        else:
            src, dst = str(self.src), str(self.dst)
        text = f"{proto} {src} -> {dst}"
        if self.proto in (1, 58):
            text += f" type {self.icmp_type}/{self.icmp_code}"
        text += f" in {self.iif or '-'} out {self.oif or '-'} {self.ctstate}"
        nat = [name for name, on in (("DNAT", self.ct_dnat), ("SNAT", self.ct_snat)) if on]
        if nat:
            text += "," + ",".join(nat)
        if self.mark:
            text += f" mark {self.mark:#x}"
        if self.connmark:
            text += f" connmark {self.connmark:#x}"
        if self.fragment:
            text += " fragment"
        return text


_PORT_PROTOCOLS = frozenset({6, 17, 33, 132, 136})


def _endpoint(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


# ---------------------------------------------------------------------------- interfaces

IfaceKind = Literal["name", "wildcard", "other", "none"]
_SORT_LAST = "\U0010ffff"


@dataclass(frozen=True, slots=True)
class _IfaceValue:
    kind: IfaceKind
    name: str  # the name (kind "name"), the stem (kind "wildcard"), "" otherwise

    @property
    def label(self) -> str:
        if self.kind == "name":
            return self.name
        if self.kind == "wildcard":
            return f"{self.name}+ (other)"
        return "(other)" if self.kind == "other" else "(none)"


class _Interfaces:
    """The interned interface universe: sorted names and wildcard classes, other, none.

    Sorting names with each wildcard class at the end of its stem's names keeps every
    wildcard a contiguous range of values.
    """

    def __init__(self, interfaces: Iterable[str | Interface | None]) -> None:
        names: set[str] = set()
        stems: set[str] = set()
        for item in interfaces:
            if item is None:
                continue
            text = item.name if isinstance(item, Interface) else str(item)
            if text.endswith("+"):
                if text[:-1]:
                    stems.add(text[:-1])
            elif text:
                names.add(text)
        keyed = [(n, _IfaceValue("name", n)) for n in names]
        keyed += [(s + _SORT_LAST, _IfaceValue("wildcard", s)) for s in stems]
        keyed.sort(key=lambda kv: kv[0])
        self.values: tuple[_IfaceValue, ...] = (
            *(v for _, v in keyed), _IfaceValue("other", ""), _IfaceValue("none", "")
        )
        self.names = frozenset(names)
        self.stems = tuple(sorted(stems, key=len, reverse=True))  # longest first
        self.index = {(v.kind, v.name): i for i, v in enumerate(self.values)}
        self.other = len(self.values) - 2
        self.none = len(self.values) - 1
        self.bits = max(1, (len(self.values) - 1).bit_length())

    def classify(self, name: str | None) -> int:
        """The value a packet with this interface has (unknown names: their class)."""
        if name is None:
            return self.none
        if name in self.names:
            return self.index[("name", name)]
        for stem in self.stems:
            if name.startswith(stem):
                return self.index[("wildcard", stem)]
        return self.other

    def matching(self, iface: Interface | str | None) -> list[int]:
        """The values ``-i IFACE`` matches; ValueError for names outside the universe."""
        if iface is None:
            return [self.none]
        text = iface.name if isinstance(iface, Interface) else iface
        if text == "+":
            return list(range(len(self.values)))
        if text.endswith("+"):
            stem = text[:-1]
            if stem not in self.stems:
                raise ValueError(f"wildcard interface '{text}' is not in the space's interface universe")
            return [
                i for i, v in enumerate(self.values)
                if v.kind in ("name", "wildcard") and v.name.startswith(stem)
            ]
        if text not in self.names:
            raise ValueError(f"interface '{text}' is not in the space's interface universe")
        return [self.index[("name", text)]]

    def representative(self, index: int) -> str | None:
        """A concrete name for a value (a made-up one for a class)."""
        value = self.values[index]
        if value.kind == "none":
            return None
        if value.kind == "name":
            return value.name
        prefixes = [value.name] if value.kind == "wildcard" else ["if", "other", "x", "nl"]
        for prefix in prefixes:
            for suffix in _suffixes():
                candidate = prefix + suffix
                if len(candidate.encode()) < 16 and self.classify(candidate) == index:
                    return candidate
        return value.label  # pragma: no cover - every stem leaves some free name


def _suffixes() -> Iterator[str]:
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    yield from alphabet
    for a in alphabet:
        for b in alphabet:
            yield a + b


# ---------------------------------------------------------------------------- the space


@dataclass(slots=True)
class _Opaque:
    key: Hashable
    var: str
    label: str
    depends: frozenset[str] | None  # None: every field


_F = TypeVar("_F", bound=Callable[..., Any])
_NODE_CACHE_MAX = 100_000


class PacketSpace:
    """One BDD manager and the variable layout of one analysis.

    ``family`` is 4 or 6; ``interfaces`` the interface universe: names and wildcards
    (``eth+``) — build it with :func:`natlint.packets.compile.compile_interfaces`; names
    not in it cannot be tested exactly. ``marks=False`` leaves out mark and connmark.
    ``order`` is the variable order (see :data:`DEFAULT_ORDER`); fields it leaves out follow
    in the default order. ``backend`` is "oxidd", "cudd" or "autoref" (default: the first
    available, see :data:`BACKENDS`).

    Budget: ``max_nodes`` live BDD nodes and ``max_seconds`` since construction (or
    :meth:`restart_clock`); going over raises :class:`BudgetExceeded` from the operation
    that noticed. On CUDD, ``max_nodes`` also caps the manager's memory (about 100 bytes a
    node, at least 64 MiB), and on oxidd the manager holds at most twice ``max_nodes`` nodes
    (dead ones are collected first), so that a single exploding operation fails instead of
    eating the machine. On autoref, dead nodes are collected every ``gc_every`` operations and
    whenever the node count doubled since the last collection.
    """

    def __init__(
        self,
        family: int,
        interfaces: Sequence[str | Interface | None] = (),
        *,
        marks: bool = True,
        order: OrderSpec | None = None,
        backend: str | None = None,
        max_nodes: int | None = 10_000_000,
        max_seconds: float | None = None,
        gc_every: int = 2000,
    ) -> None:
        if family not in (4, 6):
            raise ValueError(f"family must be 4 or 6, not {family!r}")
        self.family = family
        self.address_bits = 32 if family == 4 else 128
        self.marks = marks
        self._ifaces = _Interfaces(interfaces)
        self.backend = backend or BACKENDS[0]
        if self.backend not in BACKENDS:
            raise ValueError(f"BDD backend {self.backend!r} is not available (have: {', '.join(BACKENDS)})")
        self.max_nodes = max_nodes
        self.max_seconds = max_seconds
        self.gc_every = gc_every
        self._started = time.monotonic()
        self._ops = 0
        self._counted = 0.0
        self._gc_nodes = 0
        if self.backend == "oxidd":
            from natlint.packets.oxbdd import OxBDD

            # room for garbage above the live-node budget; nodes are allocated on demand
            capacity = min(2 * max_nodes, 1 << 30) if max_nodes is not None else 1 << 28
            self._bdd: Any = OxBDD(capacity)
        elif self.backend == "cudd":
            assert _cudd_module is not None
            self._bdd = _cudd_module.BDD()
            settings: dict[str, Any] = {"reordering": False}
            if max_nodes is not None:
                settings["max_memory"] = max(64 * 2**20, max_nodes * 100)
            self._bdd.configure(**settings)
        else:
            self._bdd = _autoref_module.BDD()
            self._bdd.configure(reordering=False)

        widths = dict(_FIXED_WIDTHS)
        for name in ADDRESS_FIELDS:
            widths[name] = self.address_bits
        widths["iif"] = widths["oif"] = self._ifaces.bits
        if not marks:
            for name in MARK_FIELDS:
                del widths[name]
        self.widths: Mapping[str, int] = widths
        self.fields: tuple[str, ...] = tuple(f for f in FIELDS if f in widths)
        self._vars: dict[str, tuple[str, ...]] = {}  # field -> variable names, MSB first
        self._var_field: dict[str, tuple[str, int]] = {}  # variable -> (field, bit from the LSB)
        declared: list[str] = []
        for group in self._resolve_order(order):
            top = max(widths[f] for f in group)
            for bit in range(top - 1, -1, -1):
                for name in group:
                    if bit < widths[name]:
                        var = f"{name}_{bit}"
                        declared.append(var)
                        self._var_field[var] = (name, bit)
        self._bdd.declare(*declared)
        for name in self.fields:
            self._vars[name] = tuple(f"{name}_{bit}" for bit in range(widths[name] - 1, -1, -1))
        self._base_vars: tuple[str, ...] = tuple(declared)
        self._level: dict[str, int] = {v: i for i, v in enumerate(declared)}
        self._opaque: dict[Hashable, _Opaque] = {}
        self._opaque_declared = 0  # opaque_0 .. opaque_{n-1} exist in the manager (see _OPAQUE_BLOCK)
        self._opaque_by_var: dict[str, _Opaque] = {}
        # Opaque variables by what their predicate depends on (None: every field): a transform
        # forgets the classes depending on a field it changes (see _growing_cube).
        self._pools: dict[frozenset[str] | None, list[str]] = {}  # the used variables per class
        self._used_opaque: list[str] = []  # every used opaque variable, in the order taken
        self._free_opaque: list[str] = []  # declared, not yet used: pop() takes the bottom-most
        self._grown: dict[tuple[object, ...], tuple[_Node, dict[object, int]]] = {}  # _growing_cube
        # Nodes rebuilt over and over otherwise (cubes of quantified variables, value cubes,
        # field equalities): the analysis of a big dump asks for the same ones thousands of times.
        self._qcubes: dict[tuple[object, ...], _Node] = {}
        self._node_cache: dict[tuple[object, ...], _Node] = {}
        self._bit_vars: dict[tuple[object, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._memo: dict[Hashable, PacketSet] = {}
        self._interleaving: dict[tuple[str, str], bool] = {}
        self._labels: set[str] = set()
        self._true: _Node = self._bdd.true
        self._false: _Node = self._bdd.false
        self._proj_any: dict[str, _Node] = {}
        self._valid = self._build_valid()

    # ------------------------------------------------------------------ layout

    def _resolve_order(self, order: OrderSpec | None) -> list[tuple[str, ...]]:
        groups: list[tuple[str, ...]] = []
        seen: set[str] = set()
        for entry in (*(order or ()), *DEFAULT_ORDER):
            group = (entry,) if isinstance(entry, str) else tuple(entry)
            for name in group:
                if name not in FIELDS:
                    raise ValueError(f"unknown field {name!r} in the variable order")
            group = tuple(n for n in group if n in self.widths and n not in seen)
            if not group:
                continue
            seen.update(group)
            groups.append(group)
        return groups

    def _build_valid(self) -> _Node:
        n = len(self._ifaces.values)
        valid = self._range_node("iif", 0, n - 1) & self._range_node("oif", 0, n - 1)
        valid &= self._range_node("ctstate", 0, len(CT_STATES) - 1)
        untracked = self._value_node("ctstate", CT_STATES.index("INVALID")) | self._value_node(
            "ctstate", CT_STATES.index("UNTRACKED")
        )
        nat = self._value_node("ct_dnat", 1) | self._value_node("ct_snat", 1)
        return valid & ~(untracked & nat)

    @property
    def interfaces(self) -> tuple[str, ...]:
        """The labels of the interned interface values, in value order."""
        return tuple(v.label for v in self._ifaces.values)

    def variables(self, field_name: str) -> tuple[str, ...]:
        """The BDD variable names of a field, most significant bit first."""
        return self._vars[self._field(field_name)]

    @property
    def nodes(self) -> int:
        """Live nodes in the manager."""
        return self._live_nodes()

    def _live_nodes(self) -> int:
        if self.backend == "autoref":
            return len(self._bdd)
        # dd.cudd's len() walks every unique-table node (Cudd_CheckZeroRef); the statistics
        # read CUDD's counters. dd warns about a unit change of another key on each call.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return int(self._bdd.statistics()["n_nodes"])

    def opaque_keys(self) -> tuple[Hashable, ...]:
        return tuple(self._opaque)

    def opaque_label(self, key: Hashable) -> str:
        return self._opaque[key].label

    # ------------------------------------------------------------------ budget

    def restart_clock(self) -> None:
        """Start the ``max_seconds`` budget again (e.g. for the next chain)."""
        self._started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def check_budget(self) -> None:
        """Raise :class:`BudgetExceeded` when the space is over its budget."""
        nodes = self._live_nodes()
        if self.backend == "oxidd" and self.max_nodes is not None and nodes > self.max_nodes:
            self.collect_garbage()  # oxidd's count includes dead nodes until a collection
            nodes = self._gc_nodes
        if self.max_nodes is not None and nodes > self.max_nodes:
            raise BudgetExceeded(
                f"the packet-set analysis needs more than {self.max_nodes} BDD nodes",
                nodes=nodes, seconds=self.elapsed,
            )
        if self.max_seconds is not None and self.elapsed > self.max_seconds:
            raise BudgetExceeded(
                f"the packet-set analysis took more than {self.max_seconds:g} s", nodes=nodes, seconds=self.elapsed
            )

    def collect_garbage(self) -> None:
        """Free dead nodes now (autoref and oxidd; CUDD collects on its own)."""
        if self.backend == "autoref":
            self._bdd.collect_garbage()
            self._gc_nodes = len(self._bdd)
        elif self.backend == "oxidd":
            self._bdd.collect_garbage()
            self._gc_nodes = self._live_nodes()

    def _tick(self) -> None:
        self._ops += 1
        if self.backend == "autoref":  # len() is O(1) here
            nodes = len(self._bdd)
            if self._ops % self.gc_every == 0 or nodes > 2 * max(self._gc_nodes, 100_000):
                self.collect_garbage()
            self.check_budget()
        elif self.backend == "oxidd":
            if self._ops % _OXIDD_COUNT_EVERY == 0:
                # oxidd frees nothing on its own: collect when the nodes (dead ones included)
                # doubled since the last collection, or near the manager's capacity; only the
                # live nodes count against the budget
                nodes = self._live_nodes()
                if nodes > 2 * max(self._gc_nodes, _OXIDD_GC_MIN) or nodes > self._bdd.capacity * 0.7:
                    self.collect_garbage()
                    self.check_budget()
            if self.max_seconds is not None and self.elapsed > self.max_seconds:
                self.check_budget()
        elif self._ops % _CUDD_COUNT_EVERY == 0 and time.monotonic() - self._counted >= _CUDD_COUNT_SECONDS:
            # Reading CUDD's counters costs up to ~10 ms on a big manager: not after every
            # operation, and not more than a few times a second (the memory cap stops a single
            # runaway operation in between).
            self._counted = time.monotonic()
            self.check_budget()
        elif self.max_seconds is not None and self.elapsed > self.max_seconds:
            self.check_budget()

    def _wrap(self, node: _Node) -> PacketSet:
        self._tick()
        return PacketSet(self, node)

    def _cudd_failed(self, error: Exception) -> bool:
        if self.backend == "oxidd":
            return isinstance(error, MemoryError)
        text = str(error)
        return self.backend == "cudd" and ("NULL" in text or "out of memory" in text.lower())

    def _guard(self, fn: Callable[[], _Node]) -> PacketSet:
        try:
            node = fn()
        except (ValueError, RuntimeError, MemoryError) as error:
            if isinstance(error, BudgetExceeded) or not self._cudd_failed(error):
                raise
        else:
            return self._wrap(node)
        if self.backend == "oxidd":  # the manager is full of dead nodes, maybe: collect, try once more
            self.collect_garbage()
            if self.max_nodes is None or self._gc_nodes <= self.max_nodes:
                try:
                    return self._wrap(fn())
                except MemoryError:
                    pass
        # Raised outside the handler and never bound to a local: no traceback or context
        # keeps half-built nodes (or a frame cycle holding the manager) alive.
        raise BudgetExceeded(
            "the BDD manager ran out of its memory budget (max_nodes)", nodes=self._live_nodes(), seconds=self.elapsed
        )

    # ------------------------------------------------------------------ raw nodes

    def _field(self, name: str) -> str:
        if name not in self.widths:
            if name in MARK_FIELDS:
                raise ValueError(f"this space has no {name} field (marks=False)")
            raise ValueError(f"unknown packet field {name!r}")
        return name

    def _cached(self, key: tuple[object, ...], build: Callable[[], _Node]) -> _Node:
        """A node built once per key (constant nodes: value cubes, equalities...)."""
        node = self._node_cache.get(key)
        if node is None:
            if len(self._node_cache) >= _NODE_CACHE_MAX:
                self._node_cache.clear()
            node = build()
            self._node_cache[key] = node
        return node

    def memo(self, key: Hashable, build: Callable[[], PacketSet]) -> PacketSet:
        """A set built once per space and key: the constant sets an analysis asks for again
        and again (the NAT module's port maps, the union of the known interfaces...)."""
        found = self._memo.get(key)
        if found is None:
            found = build()
            self._memo[key] = found
        return found

    def _value_node(self, name: str, value: int) -> _Node:
        width = self.widths[name]
        if not 0 <= value < (1 << width):
            return self._false
        return self._cached(("value", name, value), lambda: self._bdd.cube(
            {var: bool(value >> (width - 1 - i) & 1) for i, var in enumerate(self._vars[name])}))

    def _masked_node(self, name: str, value: int, mask: int) -> _Node:
        width = self.widths[name]
        full = (1 << width) - 1
        mask &= full
        if value & ~mask & full or value > full:
            return self._false  # (x & mask) == value can never hold
        return self._cached(("masked", name, value, mask), lambda: self._bdd.cube({
            var: bool(value >> (width - 1 - i) & 1)
            for i, var in enumerate(self._vars[name])
            if mask >> (width - 1 - i) & 1
        }))

    def _range_node(self, name: str, lo: int, hi: int) -> _Node:
        width = self.widths[name]
        lo, hi = max(lo, 0), min(hi, (1 << width) - 1)
        if lo > hi:
            return self._false
        if lo == 0 and hi == (1 << width) - 1:
            return self._true
        if lo == hi:
            return self._value_node(name, lo)
        bdd = self._bdd
        ge = le = self._true
        names = self._vars[name]
        for i in range(width):  # from the least significant bit up: cheap, each new var is on top
            x = bdd.var(names[width - 1 - i])
            ge = (x & ge) if lo >> i & 1 else (x | ge)
            le = (~x | le) if hi >> i & 1 else (~x & le)
        return ge & le

    def _intervals_node(self, name: str, intervals: Iterable[tuple[int, int]]) -> _Node:
        node = self._false
        for lo, hi in intervals:
            node = node | self._range_node(name, lo, hi)
        return node

    def _index_node(self, name: str, indices: Iterable[int]) -> _Node:
        runs: list[tuple[int, int]] = []
        for i in sorted(set(indices)):
            if runs and runs[-1][1] + 1 == i:
                runs[-1] = (runs[-1][0], i)
            else:
                runs.append((i, i))
        return self._intervals_node(name, runs)

    def _vars_of(self, names: Iterable[str]) -> list[str]:
        return [v for name in names for v in self._vars[self._field(name)]]

    # ------------------------------------------------------------------ encoding values

    def encode(self, name: str, value: object) -> int:
        """The integer a field stores for a value (address, interface name, state...)."""
        name = self._field(name)
        if name in ADDRESS_FIELDS:
            return self._address(value)
        if name in IFACE_FIELDS:
            if value is None or isinstance(value, str | Interface):
                text = value.name if isinstance(value, Interface) else value
                return self._ifaces.classify(text)
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(self._ifaces.values):
                return value  # an interned value, as values() reports them
            raise TypeError(f"{name} takes an interface name or None, not {value!r}")
        if name == "ctstate":
            if isinstance(value, str) and value.upper() in CT_STATES:
                return CT_STATES.index(value.upper())
            if isinstance(value, int) and 0 <= value < len(CT_STATES):
                return value
            raise ValueError(f"unknown conntrack state {value!r}: use one of {', '.join(CT_STATES)}")
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            if not 0 <= value < (1 << self.widths[name]):
                raise ValueError(f"{value} does not fit the {self.widths[name]}-bit field {name}")
            return value
        raise TypeError(f"{name} takes an integer, not {value!r}")

    def _address(self, value: object) -> int:
        if isinstance(value, bool):
            raise TypeError("an address cannot be a bool")
        if isinstance(value, int):
            address = value
        elif isinstance(value, str):
            address = int(ipaddress.ip_address(value.strip("[]")))
            if ipaddress.ip_address(value.strip("[]")).version != self.family:
                raise ValueError(f"{value} is not an IPv{self.family} address")
        elif isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            if value.version != self.family:
                raise ValueError(f"{value} is not an IPv{self.family} address")
            address = int(value)
        else:
            raise TypeError(f"not an address: {value!r}")
        if not 0 <= address < (1 << self.address_bits):
            raise ValueError(f"{address} is not an IPv{self.family} address")
        return address

    def decode(self, name: str, value: int) -> object:
        """The inverse of :meth:`encode` (interface classes give a representative name)."""
        if name in ADDRESS_FIELDS:
            return ipaddress.ip_address(value) if self.family == 4 else ipaddress.IPv6Address(value)
        if name in IFACE_FIELDS:
            return self._ifaces.representative(value)
        if name == "ctstate":
            return CT_STATES[value]
        if name in BOOL_FIELDS:
            return bool(value)
        return value

    # ------------------------------------------------------------------ constructors

    def all(self) -> PacketSet:
        """Every valid packet."""
        return PacketSet(self, self._valid)

    def none(self) -> PacketSet:
        return PacketSet(self, self._false)

    def value(self, name: str, value: object) -> PacketSet:
        """Packets whose field equals ``value`` (see :meth:`encode` for accepted values)."""
        name = self._field(name)
        return self._guard(lambda: self._valid & self._value_node(name, self.encode(name, value)))

    def range(self, name: str, lo: object, hi: object) -> PacketSet:
        """Packets with ``lo <= field <= hi`` (empty when lo > hi, as the kernel's reversed ranges)."""
        name = self._field(name)
        a, b = self.encode(name, lo), self.encode(name, hi)
        return self._guard(lambda: self._valid & self._range_node(name, a, b))

    def addresses(self, name: str, first: object, last: object) -> PacketSet:
        """An inclusive address range (iprange, NAT ranges) of an address field."""
        if name not in ADDRESS_FIELDS:
            raise ValueError(f"{name} is not an address field")
        return self.range(name, first, last)

    def prefix(self, name: str, prefix: Prefix) -> PacketSet:
        """Packets whose address field is in ``prefix`` (any mask, contiguous or not)."""
        if name not in ADDRESS_FIELDS:
            raise ValueError(f"{name} is not an address field")
        if prefix.version != self.family:
            raise ValueError(f"{prefix} is not an IPv{self.family} prefix")
        return self.masked(name, prefix.address & prefix.mask, prefix.mask)

    def masked(self, name: str, value: int, mask: int) -> PacketSet:
        """Packets with ``(field & mask) == value`` (``--mark v/m``; empty if value has bits outside mask)."""
        name = self._field(name)
        return self._guard(lambda: self._valid & self._masked_node(name, value, mask))

    def iface(self, name: str, iface: Interface | str | None) -> PacketSet:
        """Packets whose ``iif``/``oif`` matches ``-i IFACE`` (None: the packet has none).

        ``eth+`` matches every interned name with the prefix and the class of other
        interfaces with it; ``+`` matches everything, "no interface" included. Names and
        wildcards outside the universe raise ValueError.
        """
        if name not in IFACE_FIELDS:
            raise ValueError(f"{name} is not an interface field")
        indices = self._ifaces.matching(iface)
        return self._guard(lambda: self._valid & self._index_node(name, indices))

    def ctstate(self, names: Iterable[str]) -> PacketSet:
        """``--ctstate NAMES``: the states, where DNAT/SNAT mean the virtual NAT states."""
        wanted = {n.upper() for n in names}
        unknown = wanted - set(CT_STATES) - set(VIRTUAL_STATES)
        if unknown:
            raise ValueError(f"unknown conntrack state(s) {', '.join(sorted(unknown))}")

        def build() -> _Node:
            node = self._index_node("ctstate", (CT_STATES.index(s) for s in wanted if s in CT_STATES))
            for state, flag in VIRTUAL_STATES.items():
                if state in wanted:
                    node |= self._value_node(flag, 1)
            return self._valid & node

        return self._guard(lambda: self._cached(("ctstate", frozenset(wanted)), build))

    def tracked(self) -> PacketSet:
        """Packets with a connection (NEW, ESTABLISHED, RELATED)."""
        return self.ctstate(TRACKED_STATES)

    def opaque(self, key: Hashable, *, label: str | None = None, depends: Iterable[str] | None = None) -> PacketSet:
        """The packets for which an undecidable predicate ``key`` holds.

        One fresh boolean variable per distinct key, created on first use at the bottom of
        the order; ``~`` of it is "the predicate does not hold". ``label`` names it in
        ``describe()`` and ``Packet.opaque``; ``depends`` the fields whose transforms
        (``assign``, ``copy``, ``xmark``, ``forget``) change its value (None: every field),
        so that a transform forgets it instead of keeping a stale correlation.
        """
        entry = self._opaque.get(key)
        if entry is None:
            text = label or _short(key)
            unique = text
            n = 2
            while unique in self._labels:
                unique = f"{text} #{n}"
                n += 1
            self._labels.add(unique)
            deps = None if depends is None else frozenset(self._field(f) for f in depends)
            var = self._take_variable(deps)
            entry = _Opaque(key, var, unique, deps)
            self._opaque[key] = entry
            self._opaque_by_var[var] = entry
        var_name = entry.var
        return self._guard(lambda: self._valid & self._bdd.var(var_name))

    def _take_variable(self, deps: frozenset[str] | None) -> str:
        """A new opaque variable for a predicate of the class ``deps``: the bottom-most free
        one of the newest block (see _OPAQUE_BLOCK)."""
        if not self._free_opaque:
            declared = self._opaque_declared
            big = _OPAQUE_BIG_BLOCK if self.backend == "oxidd" else _OPAQUE_BLOCK  # CUDD slows down per variable
            block = _OPAQUE_BLOCK if declared == 0 else max(big, declared)
            names = [f"opaque_{i}" for i in range(declared, declared + block)]
            self._bdd.declare(*names)
            for name in names:
                self._level[name] = len(self._level)
            self._opaque_declared += block
            self._free_opaque = names
        var = self._free_opaque.pop()
        self._pools.setdefault(deps, []).append(var)
        self._used_opaque.append(var)
        return var

    def packet(self, packet: Packet | None = None, /, **fields: object) -> PacketSet:
        """The set holding one concrete packet (opaque predicates not given stay free).

        Fields default to those of ``packet`` or of ``Packet`` (``orig_*`` to the packet's
        own tuple); ``opaque={key_or_label: bool}`` fixes opaque predicates.
        """
        values: dict[str, object] = {}
        if packet is not None:
            values.update({f: getattr(packet, f) for f in FIELDS})
            values["opaque"] = dict(packet.opaque)
        values.update(fields)
        opaque = values.pop("opaque", None) or {}
        for orig, own in (("orig_src", "src"), ("orig_dst", "dst"), ("orig_sport", "sport"), ("orig_dport", "dport")):
            if values.get(orig) is None:
                values[orig] = values.get(own)
        defaults = Packet(src=ipaddress.ip_address(0), dst=ipaddress.ip_address(0))
        cube: dict[str, bool] = {}
        for name in self.fields:
            raw = values.get(name)
            if raw is None and name not in IFACE_FIELDS:
                raw = 0 if name in ADDRESS_FIELDS else getattr(defaults, name)
            if raw is None and name in ("orig_sport", "orig_dport"):
                raw = 0
            number = self.encode(name, raw)
            width = self.widths[name]
            for i, var in enumerate(self._vars[name]):
                cube[var] = bool(number >> (width - 1 - i) & 1)
        if not isinstance(opaque, Mapping):
            raise TypeError("opaque= takes a mapping of key (or label) to bool")
        by_label = {e.label: e for e in self._opaque.values()}
        for key, on in opaque.items():
            entry = self._opaque.get(key) or by_label.get(str(key))
            if entry is None:
                raise KeyError(f"no opaque predicate {key!r} in this space")
            cube[entry.var] = bool(on)
        return self._guard(lambda: self._valid & self._bdd.cube(cube))

    # ------------------------------------------------------------------ transforms

    def _revalidate(self, node: _Node, changed: Iterable[str]) -> _Node:
        """``valid ∧ node`` after a transform of the fields ``changed`` of a valid set: needed
        only when the validity constraint tests one of them (∃x.S stays within valid when
        valid does not test x). Saves a pass over the result of every NAT and MARK."""
        if _VALID_FIELDS.isdisjoint(changed):
            return node
        return self._valid & node

    def _dependent_classes(self, names: Iterable[str]) -> list[frozenset[str] | None]:
        """The classes of opaque variables a transform of these fields must forget."""
        changed = frozenset(names)
        return [deps for deps in self._pools if deps is None or deps & changed]

    def _dependent_opaque(self, names: Iterable[str]) -> list[str]:
        """The opaque variables a transform of these fields must forget."""
        return [v for deps in self._dependent_classes(names) for v in self._pools[deps]]

    def _growing_cube(self, key: tuple[object, ...], base: Callable[[], list[str]],
                      classes: Iterable[frozenset[str] | str | None]) -> _Node:
        """The positive cube of ``base()`` and of the used opaque variables of ``classes`` (a
        class of _pools, or "*" for all), kept per key and extended by what the classes
        gained since the last call: one conjunction with the new variables, which sit above
        the older ones of their block (see _take_variable), instead of a cube rebuilt over
        thousands of variables for each new predicate."""
        entry = self._grown.get(key)
        if entry is None:
            entry = (self._bdd.cube(dict.fromkeys(base(), True)), {})
        cube, seen = entry
        added: list[str] = []
        for cls in classes:
            used = self._used_opaque if cls == "*" else self._pools.get(cls, [])  # type: ignore[arg-type]
            known = seen.get(cls, 0)
            if known < len(used):
                added.extend(used[known:])
                seen[cls] = len(used)
        if added:
            cube = cube & self._bdd.cube(dict.fromkeys(added, True))
        self._grown[key] = (cube, seen)
        return cube

    def _exist(self, node: _Node, names: Iterable[str], extra: Iterable[str] = ()) -> _Node:
        """∃ the fields, the extra variables and the opaque variables depending on the fields."""
        names = tuple(names)
        return self._forget_vars(node, names, tuple(extra), names)

    def _forget_vars(self, node: _Node, names: tuple[str, ...], extra: tuple[str, ...], changed: tuple[str, ...],
                     conjoin: _Node | None = None) -> _Node:
        """∃ (the fields ``names``, the variables ``extra``, the opaque variables depending on
        the fields ``changed``) of ``node``, or of ``node ∧ conjoin`` in one pass (oxidd's
        and-exists). The cube is kept per key and grown with new predicates (a kube-proxy
        dump has thousands of statistic predicates: no list of them is built per operation)."""
        if conjoin is not None and self.backend != "oxidd":
            node, conjoin = node & conjoin, None
        if self.backend == "autoref":
            found = self._vars_of(names) + list(extra) + self._dependent_opaque(changed)
            return self._bdd.exist(found, node) if found else node

        # Grown by each new predicate to forget, not rebuilt: rebuilt for every new statistic
        # rule of a kube-proxy dump, it was half of the engine's time at 1,000 services.
        cube = self._growing_cube(("forget", names, extra, changed), lambda: self._vars_of(names) + list(extra),
                                  self._dependent_classes(changed))
        if conjoin is not None:
            return self._bdd.and_exists(node, conjoin, cube)  # type: ignore[union-attr]
        if cube == self._true:
            return node
        return self._bdd.apply("\\E", cube, node)

    def _qcube(self, key: tuple[object, ...], variables: Callable[[], list[str]]) -> _Node:
        """The positive cube of variables to quantify, built once per key (CUDD and oxidd: dd's
        ``exist`` on CUDD rebuilds the cube from names, over every variable of the manager,
        each call). Cubes over opaque variables, which only grow: _growing_cube."""
        cube = self._qcubes.get(key)
        if cube is None:
            cube = self._bdd.cube(dict.fromkeys(variables(), True))
            self._qcubes[key] = cube
        return cube

    def _quantify(self, variables: list[str], node: _Node) -> _Node:
        if not variables:
            return node
        if self.backend == "autoref":
            return self._bdd.exist(variables, node)
        return self._bdd.apply("\\E", self._qcube(("vars", tuple(variables)), lambda: variables), node)

    def _over_opaque(self, packets: PacketSet, quantifier: str) -> PacketSet:
        """∃ (``\\E``) or ∀ (``\\A``) every opaque predicate, with the cube of every used opaque
        variable (grown with each new one, see _growing_cube): no support() walk (a Python walk
        over every node on oxidd)."""
        if not self._opaque:
            return packets
        if self.backend == "autoref":
            qvars = [v for v in packets.node.support if v in self._opaque_by_var]
            if not qvars:
                return packets
            how = self._bdd.exist if quantifier == "\\E" else self._bdd.forall
            return self._guard(lambda: how(qvars, packets.node))
        cube = self._growing_cube(("all-opaque",), list, ["*"])
        return self._guard(lambda: self._bdd.apply(quantifier, cube, packets.node))

    def forget(self, packets: PacketSet, *names: str) -> PacketSet:
        """∃ fields: the packets that equal a member of ``packets`` except in these fields."""
        self._own(packets)
        return self._guard(lambda: self._revalidate(self._exist(packets.node, names), names))

    def forget_opaque(
        self, packets: PacketSet, keys: Iterable[Hashable] | Callable[[Hashable], bool]
    ) -> PacketSet:
        """∃ opaque predicates (given by key, or a test on the key), e.g. after a TTL target."""
        self._own(packets)
        if callable(keys):
            test = keys
            chosen = [e.var for e in self._opaque.values() if test(e.key)]
        else:
            chosen = [self._opaque[k].var for k in keys if k in self._opaque]
        return self._guard(lambda: self._bdd.exist(chosen, packets.node) if chosen else packets.node)

    def assign(self, packets: PacketSet, name: str, value: object) -> PacketSet:
        """field := value (DNAT/SNAT to one address or port, MARK --set-mark without mask...)."""
        self._own(packets)
        name = self._field(name)
        number = self.encode(name, value)
        if name not in _VALID_FIELDS:
            return self._guard(lambda: self._exist(packets.node, [name]) & self._value_node(name, number))
        # valid ∧ value as one constant node: one conjunction with the big set instead of two
        valid_value = self._cached(("valid-value", name, number), lambda: self._valid & self._value_node(name, number))
        return self._guard(lambda: self._exist(packets.node, [name]) & valid_value)

    def assign_fields(self, packets: PacketSet, values: Mapping[str, object], *,
                      record: Sequence[tuple[str, str]] = ()) -> PacketSet:
        """Several fields := values at once: ``∃fields.S ∧ field1 = v1 ∧ ...`` (one ∃, one ∧).

        The same set as :meth:`assign` field after field when at most the last of them is
        tested by the validity constraint (iif, oif, ctstate, ct_dnat, ct_snat), e.g. DNAT's
        dst, dport then ct_dnat.

        ``record``: (target, source) pairs to :meth:`equate_fields` first, in the same pass
        when the pairs are interleaved in the order (the conntrack original tuple of a new
        connection, recorded just before NAT rewrites it).
        """
        self._own(packets)
        if record and not all(self._interleaved(self._field(t), self._field(s)) for t, s in record if t != s):
            packets, record = self.equate_fields(packets, record), ()
        names = [self._field(n) for n in values]
        numbers = [self.encode(name, value) for name, value in zip(names, values.values(), strict=True)]
        if any(not 0 <= n < (1 << self.widths[name]) for name, n in zip(names, numbers, strict=True)):
            return self.none()

        def cube() -> _Node:
            bits: dict[str, bool] = {}
            for name, number in zip(names, numbers, strict=True):
                width = self.widths[name]
                for i, var in enumerate(self._vars[name]):
                    bits[var] = bool(number >> (width - 1 - i) & 1)
            return self._bdd.cube(bits)

        # valid ∧ values as one constant node when the validity constraint tests a field set
        # here (ct_dnat, ct_snat): one conjunction with the big set instead of two
        revalidate = not _VALID_FIELDS.isdisjoint(names)
        values_cube = self._cached(("values", tuple(names), tuple(numbers), revalidate),
                                   lambda: self._valid & cube() if revalidate else cube())
        pairs = [(self._field(t), self._field(s)) for t, s in record if t != s]
        equal = self._equalities(pairs) if pairs else None
        fields = tuple(names)
        return self._guard(lambda: self._forget_vars(packets.node, fields, (), fields, equal) & values_cube)

    def assign_range(self, packets: PacketSet, name: str, lo: object, hi: object) -> PacketSet:
        """field := any value in [lo, hi]: ``∃field.S ∧ field ∈ [lo, hi]`` (NAT ranges)."""
        self._own(packets)
        name = self._field(name)
        a, b = self.encode(name, lo), self.encode(name, hi)
        return self._guard(lambda: self._revalidate(self._exist(packets.node, [name]) & self._range_node(name, a, b),
                                                    (name,)))

    def assign_prefix(self, packets: PacketSet, name: str, prefix: Prefix) -> PacketSet:
        """NETMAP: the prefix's network bits replace the field's, its host bits are kept."""
        if name not in ADDRESS_FIELDS:
            raise ValueError(f"{name} is not an address field")
        if prefix.version != self.family:
            raise ValueError(f"{prefix} is not an IPv{self.family} prefix")
        return self._bits_transform(packets, name, prefix.address & prefix.mask, prefix.mask, flip=False)

    def xmark(self, packets: PacketSet, name: str, value: int, mask: int) -> PacketSet:
        """field := (field & ~mask) ^ value (``--set-xmark value/mask``).

        Per bit: the value's bit where the mask is 1; flipped where the mask is 0 and the
        value's bit is 1; unchanged otherwise.
        """
        return self._bits_transform(packets, name, value, mask, flip=True)

    def _bits_transform(self, packets: PacketSet, name: str, value: int, mask: int, *, flip: bool) -> PacketSet:
        self._own(packets)
        name = self._field(name)
        width = self.widths[name]
        full = (1 << width) - 1
        value &= full
        mask &= full
        names = self._vars[name]
        key = ("bits-vars", name, value, mask, flip)
        found = self._bit_vars.get(key)
        if found is None:  # once per target: KUBE-MARK-MASQ runs tens of thousands of times
            found = self._bit_vars[key] = (
                tuple(names[width - 1 - i] for i in range(width) if mask >> i & 1),
                tuple(names[width - 1 - i] for i in range(width) if flip and not mask >> i & 1 and value >> i & 1))
        fixed, flipped = found

        def constants() -> _Node:
            return self._bdd.cube({names[width - 1 - i]: bool(value >> i & 1) for i in range(width) if mask >> i & 1})

        def build() -> _Node:
            node = packets.node
            if fixed or flipped:
                node = self._forget_vars(node, (), fixed, (name,))
            if flipped:
                node = self._bdd.let({v: ~self._bdd.var(v) for v in flipped}, node)
            if fixed:
                node = node & self._cached(("bits", name, value, mask), constants)
            return self._revalidate(node, (name,))

        return self._guard(build)

    def copy(self, packets: PacketSet, target: str, source: str) -> PacketSet:
        """target := source (``orig_dst := dst`` when conntrack creates the entry,
        ``connmark := mark`` for CONNMARK --save-mark). Linear size when the two fields are
        interleaved in the order (the default for these pairs)."""
        return self._equal_fields(packets, target, source, forget_target=True)

    def copy_fields(self, packets: PacketSet, pairs: Sequence[tuple[str, str]]) -> PacketSet:
        """:meth:`copy` for several (target, source) pairs, no target being a source: one ∃ of
        the targets and one conjunction of equalities (the conntrack original tuple of a new
        connection, ``orig_X := X``) instead of a pass per field and per step."""
        pairs = [(t, s) for t, s in pairs if t != s]
        if any(t in {src for _, src in pairs} for t, _ in pairs):
            raise ValueError("copy_fields: a target is also a source")
        if not pairs:
            return packets
        return self.equate_fields(self.forget(packets, *(t for t, _ in pairs)), pairs)

    def tests_field(self, packets: PacketSet, name: str) -> bool:
        """Whether the set says anything about the field beyond the validity constraint
        (``∃field.S ≠ S``; opaque predicates are not quantified)."""
        self._own(packets)
        names = self._vars_of([self._field(name)])
        # no support(): dd builds it over every variable of the manager (thousands of opaque
        # predicates in a kube-proxy dump)
        quantified = self._quantify(names, packets.node)
        if quantified == packets.node:
            return False
        return bool((self._valid & quantified) != packets.node)

    def tests_variables(self, packets: PacketSet, variables: Sequence[str]) -> bool:
        """Whether the set depends on any of these variables (fields' bits or opaque ones)."""
        self._own(packets)
        return bool(self._quantify(list(variables), packets.node) != packets.node)

    def opaque_variable(self, key: Hashable) -> str:
        return self._opaque[key].var

    def equate(self, packets: PacketSet, target: str, source: str) -> PacketSet:
        """``packets ∧ target = source``: no ∃ (so no opaque predicate is forgotten). The
        same as :meth:`copy` when ``packets`` does not test ``target`` (a lazily recorded
        conntrack original tuple)."""
        return self._equal_fields(packets, target, source, forget_target=False)

    def equate_fields(self, packets: PacketSet, pairs: Sequence[tuple[str, str]]) -> PacketSet:
        """``packets ∧ target1 = source1 ∧ ...``: :meth:`equate` for several pairs in one
        conjunction (the conntrack original tuple recorded at once) when every pair is
        interleaved in the variable order; else one pair after the other."""
        self._own(packets)
        pairs = [(self._field(t), self._field(s)) for t, s in pairs if t != s]
        if not pairs:
            return packets
        if not all(self._interleaved(t, s) for t, s in pairs):
            for t, s in pairs:
                packets = self.equate(packets, t, s)
            return packets
        return self._guard(lambda: packets.node & self._equalities(pairs))

    def _equalities(self, pairs: Sequence[tuple[str, str]]) -> _Node:
        """``target1 = source1 ∧ ...`` for interleaved pairs of fields, built once."""
        key = tuple(sorted(pairs))

        def conjunction() -> _Node:
            node = self._true
            for t, s in key:
                node = node & self._equality(t, s)
            return node

        return self._cached(("equal-all", key), conjunction)

    def _interleaved(self, a: str, b: str) -> bool:
        """Whether two fields have the same width and their bits alternate in the order."""
        key = (a, b)
        found = self._interleaving.get(key)
        if found is None:
            found = self.widths[a] == self.widths[b] and all(
                abs(self._level[x] - self._level[y]) == 1 for x, y in zip(self._vars[a], self._vars[b], strict=True))
            self._interleaving[key] = found
        return found

    def _equality(self, target: str, source: str) -> _Node:
        """``target = source`` for two interleaved fields (linear size), built once."""
        bdd = self._bdd
        pairs = list(zip(self._vars[target], self._vars[source], strict=True))

        def equality() -> _Node:
            equal = self._true
            for t, s in reversed(pairs):  # bottom-up
                equal = bdd.ite(bdd.var(t), bdd.var(s), ~bdd.var(s)) & equal
            return equal

        return self._cached(("equal", target, source), equality)

    def _equal_fields(self, packets: PacketSet, target: str, source: str, *, forget_target: bool) -> PacketSet:
        """``packets`` (with ``target`` first forgotten when asked) ∧ ``target = source``."""
        self._own(packets)
        target, source = self._field(target), self._field(source)
        if self.widths[target] != self.widths[source]:
            what = f"copy {source} ({self.widths[source]} bits) to" if forget_target else (
                f"equate {source} ({self.widths[source]} bits) and")
            raise ValueError(f"cannot {what} {target} ({self.widths[target]} bits)")
        if target == source:
            return packets

        def build() -> _Node:
            node = self._revalidate(self._exist(packets.node, [target]), (target,)) if forget_target else packets.node
            if self._interleaved(target, source):  # the whole equality is linear, one conjunction
                return node & self._equality(target, source)
            # apart in the order: the equality alone is exponential, constrain bit by bit
            bdd = self._bdd
            for t, s in zip(self._vars[target], self._vars[source], strict=True):
                node = node & bdd.ite(bdd.var(t), bdd.var(s), ~bdd.var(s))
            return node

        return self._guard(build)

    def _own(self, packets: PacketSet) -> None:
        if packets.space is not self:
            raise ValueError("the packet set belongs to another PacketSpace")

    # ------------------------------------------------------------------ node helpers

    def _cofactors(self, node: _Node) -> tuple[_Node, _Node]:
        if node.negated:
            return ~node.low, ~node.high
        return node.low, node.high

    def _count_base(self, node: _Node) -> int:
        """Models of a node over the base variables (its support must be within them)."""
        total = len(self._base_vars)
        true, false = self._true, self._false
        level = self._level
        memo: dict[_Node, int] = {}

        def lvl(f: _Node) -> int:
            return total if f in (true, false) else level[f.var]

        def value(f: _Node) -> int:  # models over the levels lvl(f)..total-1
            if f == true:
                return 1
            if f == false:
                return 0
            regular = ~f if f.negated else f
            c = memo[regular]
            return (1 << (total - lvl(f))) - c if f.negated else c

        stack = [node]
        while stack:
            f = stack[-1]
            if f in (true, false):
                stack.pop()
                continue
            regular = ~f if f.negated else f
            if regular in memo:
                stack.pop()
                continue
            low, high = regular.low, regular.high
            pending = [c for c in (low, high) if c not in (true, false) and (~c if c.negated else c) not in memo]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            here = lvl(regular)
            memo[regular] = sum(value(c) << (lvl(c) - here - 1) for c in (low, high))
        return value(node) << lvl(node)

    def _project(self, node: _Node, name: str) -> _Node:
        def others() -> list[str]:
            keep = set(self._vars[name])
            return [v for v in self._base_vars if v not in keep]

        if self.backend == "autoref":
            return self._bdd.exist(others() + self._used_opaque, node)
        # the cube of every other variable, grown with the opaque ones
        return self._bdd.apply("\\E", self._growing_cube(("project", name), others, ["*"]), node)

    def _any_values(self, name: str) -> _Node:
        if name not in self._proj_any:
            self._proj_any[name] = self._project(self._valid, name)
        return self._proj_any[name]

    def _intervals(self, node: _Node, name: str, limit: int) -> list[tuple[int, int]] | None:
        """The values of a projection on one field as sorted disjoint intervals (None: > limit)."""
        names = self._vars[name]
        width = len(names)
        position = {v: i for i, v in enumerate(names)}
        out: list[tuple[int, int]] = []
        steps = 0
        stack: list[tuple[_Node, int, int]] = [(node, 0, 0)]
        while stack:
            steps += 1
            if steps > (limit + 4) * (width + 1) * 4:
                return None
            f, i, base = stack.pop()
            if f == self._false:
                continue
            if f == self._true or i == width:
                lo, hi = base, base + (1 << (width - i)) - 1
                if out and out[-1][1] + 1 == lo:
                    out[-1] = (out[-1][0], hi)
                else:
                    out.append((lo, hi))
                    if len(out) > limit:
                        return None
                continue
            half = 1 << (width - 1 - i)
            if position[f.var] > i:
                stack.append((f, i + 1, base + half))
                stack.append((f, i + 1, base))
            else:
                low, high = self._cofactors(f)
                stack.append((high, i + 1, base + half))
                stack.append((low, i + 1, base))
        return out

    def _cube_of(self, node: _Node, name: str) -> tuple[int, int] | None:
        """(value, mask) when a projection is one cube, else None."""
        width = self.widths[name]
        value = mask = 0
        f = node
        while f != self._true:
            if f == self._false:
                return None
            low, high = self._cofactors(f)
            _, bit = self._var_field[f.var]
            if low == self._false:
                value |= 1 << bit
                f = high
            elif high == self._false:
                f = low
            else:
                return None
            mask |= 1 << bit
        return value & ((1 << width) - 1), mask

    def __repr__(self) -> str:
        return (
            f"PacketSpace(family={self.family}, interfaces={len(self._ifaces.values)} values, "
            f"opaque={len(self._opaque)}, backend={self.backend!r}, nodes={self._live_nodes()})"
        )


def _short(key: Hashable) -> str:
    if isinstance(key, tuple):
        return " ".join(_short(k) for k in key if k not in ((), None, ""))
    if isinstance(key, frozenset):
        return ",".join(sorted(_short(k) for k in key))
    return str(key)


# ---------------------------------------------------------------------------- sets


class PacketSet:
    """An immutable set of packets of one :class:`PacketSpace` (a BDD node)."""

    __slots__ = ("node", "space")

    def __init__(self, space: PacketSpace, node: _Node) -> None:
        self.space = space
        self.node = node

    # --------------------------------------------------------------- algebra

    def _other(self, other: object) -> PacketSet:
        if not isinstance(other, PacketSet):
            raise TypeError(f"expected a PacketSet, not {type(other).__name__}")
        if other.space is not self.space:
            raise ValueError("packet sets of different PacketSpaces cannot be combined")
        return other

    def __and__(self, other: PacketSet) -> PacketSet:
        o = self._other(other)
        return self.space._guard(lambda: self.node & o.node)

    def __or__(self, other: PacketSet) -> PacketSet:
        o = self._other(other)
        return self.space._guard(lambda: self.node | o.node)

    def __sub__(self, other: PacketSet) -> PacketSet:
        o = self._other(other)
        return self.space._guard(lambda: self.node & ~o.node)

    def __xor__(self, other: PacketSet) -> PacketSet:
        o = self._other(other)
        return self.space._guard(lambda: (self.node & ~o.node) | (o.node & ~self.node))

    def __invert__(self) -> PacketSet:
        return self.space._guard(lambda: self.space._valid & ~self.node)

    def is_empty(self) -> bool:
        return bool(self.node == self.space._false)

    def is_all(self) -> bool:
        return bool(self.node == self.space._valid)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PacketSet):
            return NotImplemented
        return other.space is self.space and bool(self.node == other.node)

    def __hash__(self) -> int:
        return hash((id(self.space), self.node))

    def issubset(self, other: PacketSet) -> bool:
        o = self._other(other)
        return bool((self.node & ~o.node) == self.space._false)

    def __le__(self, other: PacketSet) -> bool:
        return self.issubset(other)

    def intersects(self, other: PacketSet) -> bool:
        o = self._other(other)
        return bool((self.node & o.node) != self.space._false)

    def __contains__(self, packet: object) -> bool:
        """Whether a concrete :class:`Packet` may be in the set (for some opaque values)."""
        if not isinstance(packet, Packet):
            return False
        return self.intersects(self.space.packet(packet))

    # --------------------------------------------------------------- queries

    def depends_on_opaque(self) -> tuple[Hashable, ...]:
        """The keys of the opaque predicates the set's membership depends on."""
        by_var = self.space._opaque_by_var
        return tuple(by_var[v].key for v in sorted(self.node.support, key=self.space._level.__getitem__) if v in by_var)

    def may(self) -> PacketSet:
        """Packets that are in the set for some value of the opaque predicates (∃opaque)."""
        return self.space._over_opaque(self, "\\E")

    def must(self) -> PacketSet:
        """Packets that are in the set whatever the opaque predicates are (∀opaque)."""
        return self.space._over_opaque(self, "\\A")

    def count(self) -> int:
        """The number of packets (over all fields) that may be in the set (∃opaque).

        Exact (Python integers); fields a set does not constrain count with all their
        values, so use ratios (:meth:`fraction_of`) rather than absolute numbers.
        """
        return self.space._count_base(self.may().node)

    def fraction_of(self, other: PacketSet) -> float:
        """``count() / other.count()`` (0.0 when other is empty)."""
        whole = other.count()
        return self.count() / whole if whole else 0.0

    def pick(self) -> Packet | None:
        """A member as a concrete :class:`Packet`, preferring readable witnesses.

        Preferences, each kept only if the set allows it: tcp, then udp, then ICMP; state
        NEW, then ESTABLISHED; no fragment, no NAT; real interface names over classes and
        "no interface"; documentation addresses (203.0.113.10 -> 198.51.100.10) or else
        the lowest address with the low bit set; source port 40000 then the lowest port
        >= 1024; the lowest destination port >= 1; echo-request; SYN for NEW tcp, ACK
        otherwise; the conntrack original tuple equal to the packet's; then lowest values.
        """
        space = self.space
        node = self.node
        if node == space._false:
            return None
        bdd = space._bdd
        chosen: dict[str, int] = {}

        def restrict(name: str, candidates: Sequence[_Node]) -> None:
            nonlocal node
            for c in candidates:
                attempt = node & c
                if attempt != space._false:
                    node = attempt
                    break
            number = 0
            for var in space._vars[name]:
                zero = bdd.let({var: False}, node)
                if zero != space._false:
                    node = zero
                    number <<= 1
                else:
                    node = bdd.let({var: True}, node)
                    number = number << 1 | 1
            chosen[name] = number

        def value(name: str, v: int) -> _Node:
            return space._value_node(name, v)

        restrict("proto", [value("proto", 6), value("proto", 17), value("proto", 1 if space.family == 4 else 58)])
        restrict("ctstate", [value("ctstate", 0), value("ctstate", 1)])
        for name in ("fragment", "ct_dnat", "ct_snat"):
            restrict(name, [])
        names = [i for i, v in enumerate(space._ifaces.values) if v.kind == "name"]
        classes = [i for i, v in enumerate(space._ifaces.values) if v.kind in ("wildcard", "other")]
        for name in IFACE_FIELDS:
            restrict(name, [space._index_node(name, names), space._index_node(name, classes)])
        for name in ("src", "dst"):
            nice = space._address(_NICE_ADDRESSES[(space.family, name)])
            restrict(name, [value(name, nice), space._masked_node(name, 1, 1)])
        restrict("sport", [value("sport", _EPHEMERAL_PORT), space._range_node("sport", 1024, 65535)])
        restrict("dport", [space._range_node("dport", 1, 65535)])
        restrict("icmp_type", [value("icmp_type", 8 if space.family == 4 else 128)])
        restrict("icmp_code", [])
        preferred_flags = _TCP_SYN if chosen["ctstate"] == 0 else _TCP_ACK
        restrict("tcp_flags", [value("tcp_flags", preferred_flags)])
        for orig, own in (("orig_src", "src"), ("orig_dst", "dst"), ("orig_sport", "sport"), ("orig_dport", "dport")):
            restrict(orig, [value(orig, chosen[own])])
        for name in MARK_FIELDS:
            if name in space.widths:
                restrict(name, [])
        opaque: dict[str, bool] = {}
        support = self.node.support
        for entry in space._opaque.values():
            if entry.var in support:
                zero = bdd.let({entry.var: False}, node)
                on = zero == space._false
                node = bdd.let({entry.var: on}, node)
                opaque[entry.label] = on
        fields = {name: space.decode(name, chosen[name]) for name in space.fields}
        return Packet(
            src=_ip(fields["src"]), dst=_ip(fields["dst"]), proto=chosen["proto"], sport=chosen["sport"],
            dport=chosen["dport"], icmp_type=chosen["icmp_type"], icmp_code=chosen["icmp_code"],
            iif=_opt_str(fields["iif"]), oif=_opt_str(fields["oif"]), ctstate=CT_STATES[chosen["ctstate"]],
            ct_dnat=bool(chosen["ct_dnat"]), ct_snat=bool(chosen["ct_snat"]), orig_src=_ip(fields["orig_src"]),
            orig_dst=_ip(fields["orig_dst"]), orig_sport=chosen["orig_sport"], orig_dport=chosen["orig_dport"],
            mark=chosen.get("mark", 0), connmark=chosen.get("connmark", 0), fragment=bool(chosen["fragment"]),
            tcp_flags=chosen["tcp_flags"], opaque=opaque,
        )

    def values(self, name: str, *, limit: int = 64) -> list[tuple[int, int]] | None:
        """The values one field takes in the set, as sorted inclusive intervals (None: more than limit)."""
        space = self.space
        name = space._field(name)
        return space._intervals(space._project(self.node, name), name, limit)

    def describe(self, *, limit: int = 4) -> str:
        """A compact summary: ``tcp dport 8080 from any to 198.51.100.1/32 in eth0``.

        Each field is summarised by the values it takes; when the set is not the product of
        those (e.g. "src A and dport 22, or src B"), the text starts with "part of: " as the
        summary then describes a superset. Opaque predicates show as "if LABEL"/"unless LABEL"
        when the set fixes them.
        """
        space = self.space
        if self.is_empty():
            return "no packets"
        if self.node == space._valid:
            return "all packets"
        proj = {name: space._project(self.node, name) for name in space.fields}
        text: dict[str, str | None] = {
            name: None if proj[name] == space._any_values(name) else _describe_field(space, name, proj[name], limit)
            for name in space.fields
        }
        words: list[str] = [text["proto"] or "all"]
        for name, word in (("sport", "sport"), ("dport", "dport"), ("icmp_type", "icmp-type"),
                           ("icmp_code", "icmp-code"), ("tcp_flags", "flags")):
            if text[name]:
                words.append(f"{word} {text[name]}")
        words.append(f"from {text['src'] or 'any'} to {text['dst'] or 'any'}")
        for name, word in (("iif", "in"), ("oif", "out"), ("ctstate", "state")):
            if text[name]:
                words.append(f"{word} {text[name]}")
        for name, state in (("ct_dnat", "DNAT"), ("ct_snat", "SNAT")):
            if text[name]:
                words.append(state if text[name] == "1" else f"not {state}")
        for name, word in (("orig_src", "orig-src"), ("orig_dst", "orig-dst"), ("orig_sport", "orig-sport"),
                           ("orig_dport", "orig-dport"), ("mark", "mark"), ("connmark", "connmark")):
            if text.get(name):
                words.append(f"{word} {text[name]}")
        if text["fragment"] == "1":
            words.append("fragment")
        product = space._valid
        for name in space.fields:
            product &= proj[name]
        support = self.node.support
        for entry in space._opaque.values():
            if entry.var not in support:
                continue
            keep = [v for v in space._level if v != entry.var]
            only = space._bdd.exist(keep, self.node)
            product &= only
            if only == space._bdd.var(entry.var):
                words.append(f"if {entry.label}")
            elif only == ~space._bdd.var(entry.var):
                words.append(f"unless {entry.label}")
        summary = " ".join(words)
        return summary if product == self.node else f"part of: {summary}"

    def __repr__(self) -> str:
        if self.is_empty():
            return "PacketSet(empty)"
        return f"PacketSet(nodes={self.node.dag_size})"


def _ip(value: object) -> IPAddress:
    assert isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address)
    return value


def _opt_str(value: object) -> str | None:
    assert value is None or isinstance(value, str)
    return value


# ---------------------------------------------------------------------------- describe


def _describe_field(space: PacketSpace, name: str, node: _Node, limit: int) -> str:
    width = space.widths[name]
    full = (1 << width) - 1
    if name in BOOL_FIELDS:
        ivs = space._intervals(node, name, 2) or []
        return str(ivs[0][0]) if len(ivs) == 1 and ivs[0][0] == ivs[0][1] else "0,1"
    if name in IFACE_FIELDS:
        ivs = space._intervals(node, name, 4096) or []
        members = {i for lo, hi in ivs for i in range(lo, hi + 1)}
        included = _describe_ifaces(space, members, limit)
        excluded = _describe_ifaces(space, set(range(len(space._ifaces.values))) - members, limit)
        return included if included.count(",") <= excluded.count(",") else f"not {excluded}"
    if name == "ctstate":
        ivs = space._intervals(node, name, 8) or []
        return ",".join(CT_STATES[i] for lo, hi in ivs for i in range(lo, hi + 1) if i < len(CT_STATES))
    if name in MARK_FIELDS or name == "tcp_flags":
        cube = space._cube_of(node, name)
        if cube is not None:
            value, mask = cube
            if name == "tcp_flags":
                from natlint.extensions.matches_l4 import format_tcp_flag_set

                return f"{format_tcp_flag_set(mask)}/{format_tcp_flag_set(value)}"
            return f"{value:#x}" if mask == full else f"{value:#x}/{mask:#x}"
    wide = max(limit, 1024)  # list up to this many, print the first ``limit`` of them
    positive = space._intervals(node, name, wide)
    negative = space._intervals(space._any_values(name) & ~node, name, wide)
    if positive is None and negative is None:
        cube = space._cube_of(node, name)
        if cube is not None and name in ADDRESS_FIELDS:
            return str(Prefix(space.family, cube[0], cube[1]))
        return f"(more than {wide} ranges)"
    if positive is not None and (negative is None or _cost(space, name, positive) <= _cost(space, name, negative)):
        return _format_values(space, name, positive, limit)
    assert negative is not None
    return "not " + _format_values(space, name, negative, limit)


def _cost(space: PacketSpace, name: str, intervals: list[tuple[int, int]]) -> int:
    if name in ADDRESS_FIELDS:
        return sum(len(_cidrs(space, lo, hi)) for lo, hi in intervals)
    return len(intervals)


def _cidrs(space: PacketSpace, lo: int, hi: int) -> list[str]:
    cls = ipaddress.IPv4Address if space.family == 4 else ipaddress.IPv6Address
    return [str(n) for n in ipaddress.summarize_address_range(cls(lo), cls(hi))]


def _format_values(space: PacketSpace, name: str, intervals: list[tuple[int, int]], limit: int) -> str:
    parts: list[str] = []
    for lo, hi in intervals:
        if name in ADDRESS_FIELDS:
            parts.extend(_cidrs(space, lo, hi))
        elif name == "proto":
            parts.extend(PROTOCOL_NAMES.get(p, str(p)) for p in range(lo, hi + 1)) if hi - lo < 8 else parts.append(
                f"{lo}-{hi}"
            )
        elif name in MARK_FIELDS:
            parts.append(f"{lo:#x}" if lo == hi else f"{lo:#x}-{hi:#x}")
        else:
            parts.append(str(lo) if lo == hi else f"{lo}:{hi}")
    if len(parts) > limit:
        return ",".join(parts[:limit]) + f",... ({len(parts)} in all)"
    return ",".join(parts)


def _describe_ifaces(space: PacketSpace, members: set[int], limit: int) -> str:
    universe = space._ifaces
    words: list[str] = []
    left = set(members)
    for stem in sorted(universe.stems, key=len):  # shortest (widest) wildcard first
        covered = set(universe.matching(stem + "+"))
        if covered <= left:
            words.append(stem + "+")
            left -= covered
    for i in sorted(left):
        words.append(universe.values[i].label)
    if len(words) > limit:
        return ",".join(words[:limit]) + f",... ({len(words)} in all)"
    return ",".join(words)
