"""How an extension (match module or target) is described to natlint.

The grammar (``grammar/iptables_save.lark``) says how options are spelled and how many words
each takes; an :class:`ExtensionSpec` says which options a module owns, what their values
mean (a parser per option returning typed values), which may be negated, in which order
``iptables-save`` prints them, and the cross-option rules iptables enforces when it loads
the rule. Adding a module = adding a spec to one of the ``matches_*``/``targets_*`` files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from natlint.model.ruleset import Option

__all__ = [
    "ParseContext",
    "OptionSpec",
    "ExtensionSpec",
    "Problem",
    "Parser",
    "flag",
    "one",
    "two",
    "quote",
    "save_string",
]


@dataclass(frozen=True, slots=True)
class ParseContext:
    """What a value parser may need to know about the rule it is in."""

    family: int
    protocol: str | None  # the -p name, lower case (for service names and checks)
    protocol_inverted: bool = False


# A parser gets the option's words (1 or 2) and returns typed values; ValueError = NL002.
Parser = Callable[[Sequence[str], ParseContext], tuple[object, ...]]
Formatter = Callable[[tuple[object, ...]], list[str]]


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem found by a spec's cross-option validation."""

    message: str
    option: str | None = None  # the option it is about (for the column), None: the module
    code: Literal["NL001", "NL002"] = "NL001"


@dataclass(frozen=True, slots=True)
class OptionSpec:
    name: str  # the grammar's alias: "dport", "to_destination"
    parse: Parser | None = None  # None: a flag without argument
    invertible: bool = False
    fmt: Formatter | None = None  # the words iptables-save prints for the values
    printed: bool = True  # False: accepted but not printed by iptables-save (e.g. defaults)


Validator = Callable[[Mapping[str, Option], ParseContext], Iterable[Problem]]


@dataclass(frozen=True, slots=True)
class ExtensionSpec:
    name: str
    kind: Literal["match", "target"]
    options: tuple[OptionSpec, ...]  # in the order iptables-save prints them
    families: frozenset[int] = frozenset({4, 6})
    validate: Validator | None = None
    # Targets: whether the target ends the chain traversal (ACCEPT-like, DROP-like...).
    terminal: bool = False
    # Matches the engine cannot decide from packet headers (ipset, rate, time...).
    opaque: bool = False
    doc: str = ""
    option_index: Mapping[str, OptionSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "option_index", {o.name: o for o in self.options})

    def option(self, name: str) -> OptionSpec | None:
        return self.option_index.get(name)


# ---- small builders used by the spec files -------------------------------------------------


def flag(name: str, *, invertible: bool = False, printed: bool = True) -> OptionSpec:
    return OptionSpec(name, None, invertible, printed=printed)


def one(
    name: str,
    parse: Callable[[str, ParseContext], object],
    *,
    invertible: bool = False,
    fmt: Callable[[object], str] | None = None,
) -> OptionSpec:
    """An option with one argument parsed by ``parse(word, ctx)``."""

    def parser(words: Sequence[str], ctx: ParseContext) -> tuple[object, ...]:
        return (parse(words[0], ctx),)

    formatter: Formatter | None = None
    if fmt is not None:
        f = fmt

        def formatter(values: tuple[object, ...]) -> list[str]:
            return [f(values[0])]

    return OptionSpec(name, parser, invertible, formatter)


def two(
    name: str,
    parse: Callable[[str, str, ParseContext], tuple[object, object]],
    *,
    invertible: bool = False,
    fmt: Formatter | None = None,
) -> OptionSpec:
    """An option with two arguments (``--tcp-flags MASK COMP``, ``--match-set NAME FLAGS``)."""

    def parser(words: Sequence[str], ctx: ParseContext) -> tuple[object, ...]:
        return parse(words[0], words[1], ctx)

    return OptionSpec(name, parser, invertible, fmt)


_BARE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def save_string(text: str) -> str:
    """Quote a string as iptables-save does (``xtables_save_string``)."""
    if text and all(c in _BARE for c in text):
        return text
    return quote(text)


def quote(text: str) -> str:
    """Always quote, escaping ``"``, ``\\`` and ``'`` (the string match's form)."""
    escaped = "".join("\\" + c if c in "\"\\'" else c for c in text)
    return f'"{escaped}"'


def words_of(values: Iterable[object]) -> list[str]:
    return [str(v) for v in values]
