"""The typed, immutable model of a ruleset: Ruleset -> Table -> Chain -> Rule."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from natlint.api import ConfigLike, HostLike
    from natlint.findings import Finding
    from natlint.netfilter.engine import Outcome
    from natlint.netfilter.trace import TraceQuery
    from natlint.portmap import PortsReport

__all__ = [
    "SourcePos",
    "Option",
    "Match",
    "Target",
    "Rule",
    "Chain",
    "Table",
    "Ruleset",
    "BUILTIN_CHAINS",
    "TABLES",
    "VERDICTS",
    "Family",
]

Family = Literal[4, 6]

# Which built-in chains each table has (the kernel's valid_hooks per table).
BUILTIN_CHAINS: Mapping[str, tuple[str, ...]] = {
    "raw": ("PREROUTING", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}
TABLES: tuple[str, ...] = ("raw", "mangle", "nat", "filter", "security")
# Standard verdicts: handled by the core, never a chain name.
VERDICTS: frozenset[str] = frozenset({"ACCEPT", "DROP", "RETURN", "QUEUE"})


@dataclass(frozen=True, slots=True)
class SourcePos:
    """Where something was written: 1-based line, 1-based column."""

    path: str
    line: int
    column: int = 1

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Option:
    """One option of a rule, with typed values: ``! --dport 22`` is
    ``Option("dport", (PortRange(22, 22),), invert=True)``."""

    name: str
    values: tuple[object, ...] = ()
    invert: bool = False
    column: int = 0

    @property
    def value(self) -> object:
        """The single value of a one-argument option."""
        return self.values[0] if self.values else None


def _find_option(options: tuple[Option, ...], name: str) -> Option | None:
    for opt in options:
        if opt.name == name:
            return opt
    return None


@dataclass(frozen=True, slots=True)
class Match:
    """A match module loaded by ``-m NAME`` (or implicitly by ``-p tcp``)."""

    name: str
    options: tuple[Option, ...] = ()
    known: bool = True
    implicit: bool = False
    column: int = 0

    def option(self, name: str) -> Option | None:
        return _find_option(self.options, name)


TargetKind = Literal["verdict", "chain", "extension", "unknown"]


@dataclass(frozen=True, slots=True)
class Target:
    """What a rule does when it matches: ``-j NAME`` or ``-g CHAIN``."""

    name: str
    kind: TargetKind
    options: tuple[Option, ...] = ()
    goto: bool = False
    column: int = 0

    def option(self, name: str) -> Option | None:
        return _find_option(self.options, name)

    @property
    def is_chain(self) -> bool:
        return self.kind == "chain"


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of a chain, as the kernel holds it (``-s a,b`` is already two rules)."""

    table: str
    chain: str
    index: int
    pos: SourcePos
    text: str
    source: Option | None = None
    destination: Option | None = None
    in_interface: Option | None = None
    out_interface: Option | None = None
    protocol: Option | None = None
    fragment: Option | None = None
    matches: tuple[Match, ...] = ()
    target: Target | None = None
    counters: tuple[int, int] | None = None

    def match(self, name: str) -> Match | None:
        for m in self.matches:
            if m.name == name:
                return m
        return None

    @property
    def core_options(self) -> tuple[Option, ...]:
        return tuple(
            o
            for o in (
                self.source, self.destination, self.in_interface, self.out_interface, self.protocol, self.fragment
            )
            if o is not None
        )

    @property
    def location(self) -> str:
        return f"{self.table}/{self.chain}#{self.index}"


@dataclass(frozen=True, slots=True)
class Chain:
    """A built-in chain (with a policy) or a user chain (policy None)."""

    name: str
    builtin: bool
    policy: str | None
    rules: tuple[Rule, ...]
    pos: SourcePos | None
    counters: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    chains: Mapping[str, Chain]
    pos: SourcePos | None

    def __iter__(self) -> Iterator[Chain]:
        return iter(self.chains.values())

    def rules(self) -> Iterator[Rule]:
        for chain in self.chains.values():
            yield from chain.rules


@dataclass(frozen=True, slots=True)
class Ruleset:
    """A whole dump: its family, tables and everything the reader had to say about it."""

    path: str
    family: Family
    tables: Mapping[str, Table]
    diagnostics: tuple[object, ...] = field(default=())
    lines: tuple[str, ...] = field(default=(), repr=False)

    def table(self, name: str) -> Table | None:
        return self.tables.get(name)

    def rules(self) -> Iterator[Rule]:
        for table in self.tables.values():
            yield from table.rules()

    @property
    def rule_count(self) -> int:
        return sum(len(c.rules) for t in self.tables.values() for c in t.chains.values())

    # ---- the library API (natlint.api); imported when called, so ``import natlint`` stays light

    def check(self, config: ConfigLike = None, host: HostLike = None, *, select: Sequence[str] | None = None,
              extend_select: Sequence[str] = (), ignore: Sequence[str] = (), suppressions: bool = True,
              budget_seconds: float | None = None) -> list[Finding]:
        """Every finding, as ``natlint check`` reports it: the reader's, every check's, then the
        configuration's selection and severities and the file's own suppressions.

        ``config``: a ``natlint.config.Config``, the path of a ``natlint.toml`` or
        ``pyproject.toml``, a mapping with the same keys, or None (every code, default
        severities). ``host``: a ``HostModel``, a host TOML file, ``"live"``, or None (the
        configuration's ``host``, else inferred from the dump). ``select``, ``extend_select`` and
        ``ignore`` act as the command-line options and win over ``config``;
        ``suppressions=False`` is ``--no-suppressions``; ``budget_seconds`` bounds the semantic
        checks (60 s by default; over it, NL007). Raises ``ValueError`` for a bad configuration,
        selector or host file (see :func:`natlint.api.check`).

        >>> import natlint
        >>> rs = natlint.load("*filter\\n:INPUT DROP [0:0]\\n-A INPUT -j NOPE\\nCOMMIT\\n")
        >>> [f.code for f in rs.check()]
        ['NL101']
        """
        from natlint.api import check

        return check(self, config, host, select=select, extend_select=extend_select, ignore=ignore,
                     suppressions=suppressions, budget_seconds=budget_seconds)

    def trace(self, packet: TraceQuery | None = None, *, host: HostLike = None, **fields: object) -> list[Outcome]:
        """What the firewall does to a packet class (``natlint trace``): a list of outcomes, one per
        fate. ``packet`` is a ``natlint.netfilter.trace.TraceQuery``, or give its fields as
        keywords: ``in_interface="eth0"`` or ``local=True``, ``src``, ``dst``, ``proto``,
        ``sport``, ``dport`` (a port or ``"8000:9000"``), ``state`` (``"new"``).
        """
        from natlint.api import trace

        return trace(self, packet, host, **fields)

    def ports(self, host: HostLike = None) -> PortsReport:
        """The ports this ruleset opens and forwards, and from where (``natlint ports``): a
        ``natlint.portmap.PortsReport``. ``host`` as for :meth:`check`."""
        from natlint.api import ports

        return ports(self, host)


_T = TypeVar("_T")


def _positional_constructor(cls: type[_T]) -> Callable[..., _T]:
    """``cls(*values)`` for a frozen, slotted dataclass with every field given, about twice as
    fast: the generated ``__init__`` calls ``object.__setattr__`` by name for each field, this
    one calls each slot's setter directly. Same object (no ``__post_init__``, no conversion)."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    assert names == list(cls.__slots__) and "__post_init__" not in vars(cls)  # type: ignore[attr-defined]
    scope: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    body = [f"def make({', '.join(names)}):", "    o = _new(_cls)"]
    for i, name in enumerate(names):
        scope[f"_set{i}"] = getattr(cls, name).__set__
        body.append(f"    _set{i}(o, {name})")
    body.append("    return o")
    exec("\n".join(body), scope)
    make: Callable[..., _T] = scope["make"]
    make.__doc__ = f"{cls.__name__}(*values), with every field given (see _positional_constructor)."
    return make


# For readers that build one of these per line of a large dump.
make_rule: Callable[..., Rule] = _positional_constructor(Rule)
make_source_pos: Callable[[str, int, int], SourcePos] = _positional_constructor(SourcePos)
