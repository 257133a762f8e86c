"""Bind a parsed line (its items) to the typed model, as iptables' ``do_parse`` does.

The grammar said which words are options and which are their arguments; the binder decides
what they mean: which loaded module owns each option (the most recently loaded one that
defines it, else the match implied by ``-p``), whether ``!`` is allowed there, and what the
values are (typed, through the extension specs). Problems become :class:`BindProblem` with
the word they concern, so the reader can point at the exact column.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Literal

from natlint.extensions import IMPLICIT_BY_PROTOCOL, MATCHES, TARGETS, ExtensionSpec
from natlint.extensions.spec import ParseContext, Parser, Validator
from natlint.model.ruleset import VERDICTS, Match, Option, Target
from natlint.model.values import (
    Prefix,
    interface_name_problem,
    parse_interface,
    parse_prefix_list,
    parse_protocol,
    parse_uint,
)
from natlint.syntax.grammar import (
    COMMANDS,
    SPELLINGS,
    Item,
    LineSyntaxError,
    parse_shape,
    parse_words,
    remember_shape,
    shape_of,
)
from natlint.syntax.grammar import clear_caches as grammar_clear_caches

__all__ = [
    "BindProblem", "Bound", "LinePlan", "bind", "bind_planned", "clear_caches", "expand_abbreviations", "line_plan",
    "KNOWN_TARGET_NAMES", "MODULE_ALIASES",
]

# Target extensions iptables ships: a -j to one of these that is not a declared chain is an
# extension natlint does not model (NL004), not an undefined chain.
KNOWN_TARGET_NAMES = frozenset({
    "AUDIT", "CHECKSUM", "CLASSIFY", "CLUSTERIP", "CONNMARK", "CONNSECMARK", "CT", "DNAT", "DNPT",
    "DSCP", "ECN", "HL", "HMARK", "IDLETIMER", "LED", "LOG", "MARK", "MASQUERADE", "MIRROR",
    "NETMAP", "NFLOG", "NFQUEUE", "NOTRACK", "RATEEST", "REDIRECT", "REJECT", "SAME", "SECMARK",
    "SET", "SNAT", "SNPT", "SYNPROXY", "TCPMSS", "TCPOPTSTRIP", "TEE", "TOS", "TPROXY", "TRACE",
    "TTL", "ULOG", "TARPIT", "CHAOS", "DELUDE", "ECHO", "IPMARK", "LOGMARK", "SYSRQ", "DHCPMAC",
})
_MODULE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,28}")
# Match names that load another module (iptables' "real name" / revision aliases).
MODULE_ALIASES: dict[str, str] = {"icmpv6": "icmp6", "ipv6-icmp": "icmp6"}

_CORE = {
    "source": "-s",
    "destination": "-d",
    "in_interface": "-i",
    "out_interface": "-o",
    "protocol": "-p",
    "fragment": "-f",
}
_NOT_IN_RESTORE = {
    "table": "the -t option cannot be used inside an iptables-restore file: the table is set by the '*table' line",
    "wait": "-w cannot be used inside an iptables-restore file",
    "wait_interval": "-W cannot be used inside an iptables-restore file",
}


@dataclass(frozen=True, slots=True)
class BindProblem:
    code: Literal["NL001", "NL002", "NL004", "NL006"]
    message: str
    word: int | None  # index of the word it concerns, None: the whole line
    severity: Literal["error", "warning", "info"] = "error"
    # Found after iptables' option loop (addresses, an extension's final check, no command):
    # a line that the other family's flag makes iptables-restore skip never gets there.
    final: bool = False


@dataclass(slots=True)
class _Ext:
    name: str
    spec: ExtensionSpec | None
    at: int
    implicit: bool = False
    items: list[tuple[str, Item]] = field(default_factory=list)


@dataclass(slots=True)
class Bound:
    """A bound command line. ``sources``/``destinations`` hold every address of ``-s a,b``."""

    command: str | None = None
    command_args: tuple[str, ...] = ()
    command_at: int = 0
    core: dict[str, Option] = field(default_factory=dict)
    core_at: dict[str, int] = field(default_factory=dict)  # word index of each core value
    sources: tuple[Prefix, ...] = ()
    destinations: tuple[Prefix, ...] = ()
    matches: tuple[Match, ...] = ()
    target: Target | None = None
    counters: tuple[int, int] | None = None
    skipped: bool = False
    problems: list[BindProblem] = field(default_factory=list)
    # The core options of the one rule the line makes when -s and -d name one address each:
    # source, destination, in_interface, out_interface, protocol, fragment (None: not known).
    rule_core: tuple[Option | None, ...] | None = None

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


def _spelling(item: Item, words: Sequence[str]) -> str:
    return words[item.at]


# The classes below are plain: each @dataclass costs about 2 ms at import, and `natlint
# check` of a small file is mostly import time.


class _Classified:
    """What the option loop of ``do_parse`` decided: which module owns each option."""

    __slots__ = (
        "command_item", "core_items", "counters_given", "exts", "out", "target_arg", "target_at", "target_ext",
        "target_goto", "target_name",
    )

    def __init__(self, out: Bound) -> None:
        self.out = out
        self.exts: list[_Ext] = []  # in load order; the target (if any) is in here too
        self.target_ext: _Ext | None = None
        self.target_name: str | None = None
        self.target_goto = False
        self.target_at = 0
        self.target_arg = 0  # word index of the target's name
        self.command_item: Item | None = None
        self.core_items: dict[str, Item] = {}
        self.counters_given = False


def bind(
    items: Sequence[Item], words: Sequence[str], columns: Sequence[int], family: int, *, skip_at: int | None = None
) -> Bound:
    """Bind a line's items. ``skip_at``: the word index of a ``-6`` (``-4`` in ip6tables) that
    makes iptables-restore skip the line; only the items before it are processed, as getopt does."""
    return _finish(_classify(items, words, columns, family, skip_at), words, columns, family)


def _classify(
    items: Sequence[Item], words: Sequence[str], columns: Sequence[int], family: int, skip_at: int | None
) -> _Classified:
    out = Bound()
    problems = out.problems
    other = ("-6", "--ipv6") if family == 4 else ("-4", "--ipv4")
    if skip_at is None and (other[0] in words or other[1] in words):
        skip_at = next((it.at for it in items if it.name == ("ipv6" if family == 4 else "ipv4")), None)
    if skip_at is not None:
        items = [it for it in items if it.at < skip_at]
    c = _Classified(out)
    exts = c.exts
    unknown_modules: list[_Ext] = []

    def err(message: str, word: int | None, code: Literal["NL001", "NL002"] = "NL001", final: bool = False) -> None:
        problems.append(BindProblem(code, message, word, final=final))

    # A line with the other family's flag is skipped silently by iptables-restore: getopt has
    # processed the options before the flag (their errors count), nothing after it.
    if skip_at is not None:
        flag = "-6" if family == 4 else "-4"
        tool = "iptables" if family == 4 else "ip6tables"
        problems.append(BindProblem(
            "NL006", f"{tool}-restore silently skips a line with {flag}: this rule is not loaded", skip_at, "warning",
        ))
        out.skipped = True

    for item in items:
        name = item.name
        if name in COMMANDS:
            if item.negated:
                err("'!' cannot be used before a command", item.neg_at)
            if out.command is not None:
                err(f"only one command per line: '{words[out.command_at]}' already given", item.at)
                continue
            out.command = name
            out.command_args = tuple(words[i] for i in item.args)
            out.command_at = item.at
            c.command_item = item
        elif name in _CORE:
            if name in out.core:
                err(f"{_CORE[name]} can be given only once per rule", item.at)
                continue
            out.core[name] = Option(name, tuple(words[i] for i in item.args), item.negated, columns[item.at])
            out.core_at[name] = item.args[0] if item.args else item.at
            c.core_items[name] = item
        elif name == "match":
            if item.negated:
                err("'!' cannot be used before -m: negate the module's options instead", item.neg_at)
            module = words[item.args[0]]
            real = MODULE_ALIASES.get(module, module)
            spec = MATCHES.get(real)
            if spec is None and not _MODULE_NAME.fullmatch(module):
                # iptables loads libxt_NAME.so: such a name can never exist.
                err(f"there is no match module named {module!r}", item.args[0])
                continue
            ext = _Ext(real, spec, item.at)
            exts.append(ext)
            if spec is None:
                unknown_modules.append(ext)
        elif name in ("jump", "goto"):
            if item.negated:
                err(f"'!' cannot be used before {words[item.at]}", item.neg_at)
            if c.target_name is not None:
                err("a rule can have only one -j or -g", item.at)
                continue
            target_name = c.target_name = words[item.args[0]]
            c.target_goto = name == "goto"
            c.target_at = item.at
            c.target_arg = item.args[0]
            if not c.target_goto:
                spec = TARGETS.get(target_name)
                if spec is not None or (target_name in KNOWN_TARGET_NAMES):
                    c.target_ext = _Ext(target_name, spec, item.at)
                    exts.append(c.target_ext)
                    if spec is None:
                        unknown_modules.append(c.target_ext)
        elif name == "set_counters":
            c.counters_given = True
            args = [words[i] for i in item.args]
            if len(args) == 1 and "," in args[0]:
                args = args[0].split(",", 1)
            try:
                if len(args) != 2:
                    raise ValueError("-c needs two numbers: packets and bytes")
                out.counters = (parse_uint(args[0], 2**64 - 1), parse_uint(args[1], 2**64 - 1))
            except ValueError as exc:
                err(str(exc), item.at, "NL002")
        elif name in ("ipv4", "ipv6", "verbose", "numeric", "exact"):
            continue
        elif name in _NOT_IN_RESTORE:
            err(_NOT_IN_RESTORE[name], item.at)
        elif name.startswith("?"):
            owner = unknown_modules[-1] if unknown_modules else None
            if owner is None:
                err(f"unknown option '{words[item.at]}'" + _hint(words[item.at]), item.at)
                continue
            owner.items.append((name[1:].lstrip("-"), item))
        else:
            owner = next((e for e in reversed(exts) if e.spec is not None and name in e.spec.option_index), None)
            if owner is None:
                owner = _implicit_match(out, exts, name)
            if owner is None and unknown_modules:
                owner = unknown_modules[-1]
            if owner is None:
                err(_orphan_message(name, words[item.at], out.core.get("protocol")), item.at)
                continue
            owner.items.append((name, item))

    if out.command is None:
        err("this line has no command: a rule line starts with -A CHAIN (or -I, -D, -N, -P...)", None, final=True)
    return c


def _finish(c: _Classified, words: Sequence[str], columns: Sequence[int], family: int) -> Bound:
    """Parse the values (``_core`` and each extension), as iptables does after the option loop."""
    out = c.out
    problems = out.problems
    target_ext = c.target_ext
    target_name = c.target_name
    target_at = c.target_at

    def err(message: str, word: int | None, code: Literal["NL001", "NL002"] = "NL001", final: bool = False) -> None:
        problems.append(BindProblem(code, message, word, final=final))

    ctx = _core(out, family, err)
    matches: list[Match] = []
    target_options: tuple[Option, ...] = ()
    for ext in c.exts:
        built = _build_extension(ext, words, columns, ctx, problems)
        if ext is target_ext:
            target_options = built
            continue
        assert isinstance(built, tuple)
        matches.append(
            Match(ext.name, built, known=ext.spec is not None, implicit=ext.implicit, column=columns[ext.at])
        )
        if ext.spec is None:
            problems.append(BindProblem(
                "NL004", f"natlint does not model the '{ext.name}' match: rules using it are analysed as"
                " 'may or may not match'", ext.at, "info"))
        elif family not in ext.spec.families:
            err(f"the '{ext.name}' match is not available for IPv{family}", ext.at)
    out.matches = tuple(matches)
    if target_name is not None:
        if target_ext is not None:
            options = target_options
            kind: Literal["verdict", "chain", "extension", "unknown"] = "extension" if target_ext.spec else "unknown"
            if target_ext.spec is None:
                problems.append(BindProblem(
                    "NL004", f"natlint does not model the {target_name} target: what it does to packets"
                    " is treated as unknown", target_at, "info"))
            elif family not in target_ext.spec.families:
                err(f"the {target_name} target is not available for IPv{family}", target_at)
        else:
            options = ()
            kind = "verdict" if target_name in VERDICTS else "chain"
            if c.target_goto and target_name in VERDICTS:
                err(f"-g needs a user chain, not {target_name}", target_at, final=True)
        out.target = Target(target_name, kind, options, c.target_goto, columns[target_at])
    if out.skipped:
        out.problems[:] = [p for p in problems if not p.final]
    return out


def _hint(spelling: str) -> str:
    if spelling.startswith("--") and "-" + spelling.lstrip("-") in SPELLINGS:
        return f" (did you mean '-{spelling.lstrip('-')}'?)"
    return ""


def _implicit_match(out: Bound, exts: list[_Ext], name: str) -> _Ext | None:
    # iptables loads the protocol's match even for '! -p tcp' (the rule then never matches).
    proto = out.core.get("protocol")
    if proto is None:
        return None
    module = IMPLICIT_BY_PROTOCOL.get(str(proto.values[0]).lower()) if proto.values else None
    if module is None:
        try:
            module = IMPLICIT_BY_PROTOCOL.get(parse_protocol(str(proto.values[0])).name)
        except ValueError:
            return None
    spec = MATCHES.get(module) if module else None
    if spec is None or name not in spec.option_index:
        return None
    existing = next((e for e in exts if e.name == spec.name), None)
    if existing is not None:
        return existing
    ext = _Ext(spec.name, spec, 0, implicit=True)
    exts.append(ext)
    return ext


def _orphan_message(name: str, spelling: str, proto: Option | None) -> str:
    owners = sorted(s.name for s in list(MATCHES.values()) + list(TARGETS.values()) if name in s.option_index)
    if not owners:
        return f"unknown option '{spelling}'"
    if any(o in IMPLICIT_BY_PROTOCOL.values() for o in owners) and proto is None:
        return (f"'{spelling}' needs a protocol: add '-p {owners[0] if owners[0] != 'icmp6' else 'ipv6-icmp'}'"
                f" (or '-m {owners[0]}') before it")
    listed = ", ".join(owners)
    return (f"'{spelling}' belongs to {listed}, which this rule does not load before it"
            f" (add '-m {owners[0]}' or '-j {owners[0]}')")

_MEMO: dict[tuple[object, ...], object] = {}
_MEMO_LIMIT = 500_000
_MISSING = object()


def _memo(parse: Callable[..., Any], *args: Any) -> Any:
    """Call a pure value parser once per distinct argument tuple (values are immutable).

    Large dumps repeat the same addresses, ports and comments thousands of times; parsing each
    distinct word once is most of the binder's speed. A ValueError is remembered too."""
    key = (parse, *args)
    found = _MEMO.get(key, _MISSING)
    if found is _MISSING:
        try:
            found = parse(*args)
        except ValueError as exc:
            found = _Failure(str(exc))
        if len(_MEMO) >= _MEMO_LIMIT:
            _MEMO.clear()
        _MEMO[key] = found
    if isinstance(found, _Failure):
        raise ValueError(found.message)
    return found


@dataclass(frozen=True, slots=True)
class _Failure:
    message: str


_NEGATED_LIST = (
    "'!' is not allowed when -s or -d lists several addresses (iptables: '! not allowed with multiple"
    " source or destination IP addresses'): write one rule per address"
)


def _matches_nothing(key: str, word: str) -> str:
    return (f"'! {_CORE[key]} {word}' matches no packet at all: iptables-nft refuses the rule"
            " ('RULE_APPEND failed (Invalid argument)'; legacy loads a rule that never matches). Delete the rule")


def _weird_interface(weird: str, invert: bool, word: int) -> BindProblem:
    never = "always" if invert else "never"
    return BindProblem("NL002", f"{weird}: this test {never} matches", word, "warning")


def _core(out: Bound, family: int, err) -> ParseContext:  # type: ignore[no-untyped-def]
    core = out.core
    protocol: str | None = None
    inverted = False
    popt = core.get("protocol")
    if popt is not None:
        try:
            proto = _memo(parse_protocol, str(popt.values[0]))
            if proto.number == 0 and popt.invert:
                err("'! -p all' would never match any packet", out.core_at['protocol'])
            protocol = proto.name
            inverted = popt.invert
            core["protocol"] = Option("protocol", (proto,), popt.invert, popt.column)
        except ValueError as exc:
            err(str(exc), out.core_at['protocol'], "NL002")
            del core["protocol"]
    for key in ("source", "destination"):
        opt = core.get(key)
        if opt is None:
            continue
        try:
            prefixes = _memo(parse_prefix_list, str(opt.values[0]), family)
        except ValueError as exc:
            err(str(exc), out.core_at[key], "NL002", final=True)
            del core[key]
            continue
        if opt.invert and any(p.mask == 0 for p in prefixes):
            err(_matches_nothing(key, str(opt.values[0])), out.core_at[key], "NL002", final=True)
        if key == "source":
            out.sources = prefixes
        else:
            out.destinations = prefixes
        core[key] = Option(key, (prefixes[0],), opt.invert, opt.column)
    negated = [k for k in ("source", "destination") if k in core and core[k].invert]
    if (len(out.sources) > 1 or len(out.destinations) > 1) and negated:
        err(_NEGATED_LIST, out.core_at[negated[0]], final=True)
    for key in ("in_interface", "out_interface"):
        opt = core.get(key)
        if opt is None:
            continue
        try:
            core[key] = Option(key, (_memo(parse_interface, str(opt.values[0])),), opt.invert, opt.column)
        except ValueError as exc:
            err(str(exc), out.core_at[key], "NL002")
            del core[key]
            continue
        weird = _memo(interface_name_problem, str(opt.values[0]))
        if weird is not None:
            out.problems.append(_weird_interface(weird, opt.invert, out.core_at[key]))
    if "fragment" in core and family == 6:
        err("-f is for IPv4 only: use '-m frag' in ip6tables", out.core_at['fragment'])
    return ParseContext(family, protocol, inverted)


def _build_extension(
    ext: _Ext, words: Sequence[str], columns: Sequence[int], ctx: ParseContext, problems: list[BindProblem]
) -> tuple[Option, ...]:
    options: dict[str, Option] = {}
    where: dict[str, int] = {}
    failed = False
    for name, item in ext.items:
        spelling = words[item.at]
        if name in options:
            problems.append(BindProblem("NL001", f"'{spelling}' may be given only once", item.at))
            continue
        args = [words[i] for i in item.args]
        spec_opt = ext.spec.option(name) if ext.spec is not None else None
        if ext.spec is None or spec_opt is None:
            options[name] = Option(name, tuple(args), item.negated, columns[item.at])
            where[name] = item.at
            continue
        if item.negated and not spec_opt.invertible:
            problems.append(BindProblem("NL001", f"'{spelling}' cannot be negated with '!'", item.neg_at))
        try:
            values = _memo(spec_opt.parse, tuple(args), ctx) if spec_opt.parse is not None else ()
        except ValueError as exc:
            problems.append(BindProblem("NL002", str(exc), item.args[0] if item.args else item.at))
            failed = True
            continue
        options[name] = Option(name, values, item.negated, columns[item.at])
        where[name] = item.at
    # A value that did not parse is already reported: the module's cross-option checks would
    # only add a misleading "needs --x" for the option that was dropped.
    if ext.spec is not None and ext.spec.validate is not None and not failed:
        for problem in ext.spec.validate(options, ctx):
            at = where.get(problem.option, ext.at) if problem.option else ext.at
            problems.append(BindProblem(problem.code, problem.message, at, final=True))
    return tuple(options.values())


# ---- abbreviations -------------------------------------------------------------------------

_LONG_OPTION_WORD = re.compile(r"--[A-Za-z0-9][A-Za-z0-9_.+-]*")
_CORE_NAMES = frozenset({
    "source", "destination", "in_interface", "out_interface", "protocol", "fragment", "match",
    "jump", "goto", "set_counters", "ipv4", "ipv6", "table", "wait", "wait_interval", "verbose",
    "numeric", "exact",
})
_ALLOWED: dict[tuple[str, ...], frozenset[str]] = {}
_RESOLVED: dict[tuple[str, tuple[str, ...], str | None, bool], str | tuple[str, ...] | None] = {}
Ambiguity = tuple[int, tuple[str, ...]]


def expand_abbreviations(texts: Sequence[str]) -> tuple[tuple[tuple[int, str], ...], Ambiguity | None]:
    """The getopt unique-prefix abbreviations of a line (``--dp`` -> ``--dport``): the words
    to replace (index, full spelling), and the first ambiguous word with its candidates.

    As in iptables, the option table grows while the line is read: at a word, it holds the
    core options and those of the modules loaded by ``-m``/``-j`` before that word. Only an
    option unknown there makes iptables load the protocol's match (``-p tcp``) and look again.
    An exact name always wins over an abbreviation.
    """
    if not any(w[:2] == "--" and _LONG_OPTION_WORD.fullmatch(w) for w in texts):
        return (), None
    words = list(texts)
    expansions: list[tuple[int, str]] = []
    loaded: tuple[str, ...] = ()
    proto_module: str | None = None
    opaque = False  # a module natlint has no spec for is loaded: its options are unknown
    allowed = _allowed(loaded)
    for i, w in enumerate(words):
        if w[:2] == "--" and SPELLINGS.get(w) not in allowed and _LONG_OPTION_WORD.fullmatch(w):
            found = _resolve(w, loaded, proto_module, opaque)
            if isinstance(found, str):
                words[i] = w = found
                expansions.append((i, found))
            elif isinstance(found, tuple):
                return tuple(expansions), (i, found)
        if i + 1 >= len(words):
            break
        nxt = words[i + 1]
        if w in ("-m", "--match") or w in ("-j", "--jump"):
            name = MODULE_ALIASES.get(nxt, nxt)
            if MATCHES.get(name) if w in ("-m", "--match") else TARGETS.get(name):
                loaded += (name,)
                allowed = _allowed(loaded)
            elif w in ("-m", "--match") or name in KNOWN_TARGET_NAMES:
                opaque = True
        elif w in ("-p", "--protocol"):
            proto_module = IMPLICIT_BY_PROTOCOL.get(nxt.lower())
    return tuple(expansions), None


def _allowed(loaded: tuple[str, ...]) -> frozenset[str]:
    """The option names getopt knows once the modules ``loaded`` are."""
    found = _ALLOWED.get(loaded)
    if found is None:
        names = set(_CORE_NAMES) | set(COMMANDS)
        for mod in loaded:
            spec = MATCHES.get(mod) or TARGETS.get(mod)
            if spec is not None:
                names.update(spec.option_index)
        found = frozenset(names)
        if len(_ALLOWED) < 10_000:
            _ALLOWED[loaded] = found
    return found


def _resolve(
    word: str, loaded: tuple[str, ...], proto_module: str | None, opaque: bool
) -> str | tuple[str, ...] | None:
    """The full spelling ``word`` abbreviates (None: leave it), or the candidates if ambiguous."""
    key = (word, loaded, proto_module, opaque)
    if key in _RESOLVED:
        return _RESOLVED[key]
    allowed = set(_allowed(loaded))
    result: str | tuple[str, ...] | None = None
    for extra in ((), (proto_module,) if proto_module and proto_module not in loaded else None):
        if extra is None:
            break
        for mod in extra:
            spec = MATCHES.get(mod)
            if spec is not None:
                allowed.update(spec.option_index)
        if SPELLINGS.get(word) in allowed:
            break  # an exact option name
        hits = {alias: sp for sp, alias in SPELLINGS.items() if sp.startswith(word) and alias in allowed}
        if len(hits) == 1:
            result = next(iter(hits.values()))
            break
        if len(hits) > 1:
            result = tuple(sorted(hits.values()))
            break
    if word in SPELLINGS and opaque and isinstance(result, tuple):
        result = None  # may be an option of the module natlint does not know
    if len(_RESOLVED) < 100_000:
        _RESOLVED[key] = result
    return result


# ---- line plans ----------------------------------------------------------------------------
#
# What the option loop decides (which word is the command, a core option, a module load, the
# target, and which loaded module owns each extension option) and the problems it finds depend
# only on the line's shape and on the words after -m, -j, -g and -p. A dump of 100k rules has a
# few dozen such combinations: each is classified once into a LinePlan, and every line of it is
# bound by bind_planned(), which only parses values (memoized per option) and builds the model
# objects. Lines whose classification finds a problem have no plan and take bind().

_CONTROL = {"-m": False, "--match": False, "-p": False, "--protocol": False,
            "-j": True, "--jump": True, "-g": True, "--goto": True}
# A word after -j/-g that is none of these is bound the same way whatever it is (a chain).
_TARGET_WORDS = frozenset(TARGETS) | KNOWN_TARGET_NAMES | VERDICTS | frozenset(MODULE_ALIASES)
_ANY_CHAIN = "\x00"  # never a word of a line: iptables-restore cuts lines at a NUL
_NO_PLAN = object()


class _OptionStep:
    __slots__ = ("args", "at", "name", "negated", "parse", "raw", "values")

    def __init__(self, name: str, at: int, args: tuple[int, ...], negated: bool, parse: Parser | None) -> None:
        self.name = name
        self.at = at
        self.args = args
        self.negated = negated
        self.parse = parse  # None: a flag, or an option natlint has no spec for (raw)
        self.raw = False  # an option natlint has no spec for: its words are its values
        self.values: dict[object, object] = {}  # by argument word(s): the parsed values, or a _Failure


class _ExtensionStep:
    __slots__ = ("after", "at", "built", "implicit", "key", "known", "name", "options", "target", "validate")

    def __init__(self, ext: _Ext, target: bool, options: tuple[_OptionStep, ...], after: tuple[BindProblem, ...],
                 key: Callable[[Sequence[object]], object]) -> None:
        self.name = ext.name
        self.at = ext.at
        self.implicit = ext.implicit
        self.known = ext.spec is not None
        self.target = target
        self.options = options
        self.validate: Validator | None = ext.spec.validate if ext.spec is not None else None
        self.after = after  # NL004 (not modelled) or not available for the family
        # What is built depends only on some words and columns: ``key`` picks them from the line's
        # words followed by its columns. ``built``: the options (or the Match) and the problems found.
        self.key = key
        self.built: dict[object, tuple[object, tuple[BindProblem, ...]]] = {}


class _CoreStep:
    __slots__ = ("arg", "at", "built", "name", "negated", "value")

    def __init__(self, name: str, item: Item, value: object = None) -> None:
        self.name = name
        self.arg = item.args[0] if item.args else -1  # the word of its value (-f has none)
        self.negated = item.negated
        self.at = item.at
        self.value = value  # -p: the protocol (the plan fixes it)
        # By (value word, column): the Option (None: the value is refused), the problems, and for
        # -s/-d every address of the list.
        self.built: dict[tuple[str, int], tuple[Option | None, tuple[BindProblem, ...], tuple[Prefix, ...]]] = {}


class LinePlan:
    """How every line of one shape (and the same -m/-j/-g/-p words) is bound."""

    __slots__ = (
        "addresses", "command", "command_args", "command_at", "core_at", "ctx", "expansions", "extensions",
        "fragment", "interfaces", "protocol", "target_after", "target_arg", "target_at", "target_goto",
        "target_step", "targets",
    )

    def __init__(self, c: _Classified, expansions: tuple[tuple[int, str], ...], ctx: ParseContext,
                 extensions: tuple[_ExtensionStep, ...], target_after: tuple[BindProblem, ...],
                 protocol: object) -> None:
        assert c.out.command is not None and c.command_item is not None
        self.expansions = expansions  # abbreviations to expand first
        self.command: str = c.out.command
        self.command_args = c.command_item.args
        self.command_at = c.out.command_at
        self.core_at = dict(c.out.core_at)
        self.ctx = ctx
        self.extensions = extensions
        self.target_arg = c.target_arg if c.target_name is not None else -1  # -1: no target
        self.target_goto = c.target_goto
        self.target_at = c.target_at
        self.target_step = next((e for e in extensions if e.target), None)
        self.target_after = target_after
        # The core options, in the order _core() checks them.
        items = c.core_items
        self.protocol = _CoreStep("protocol", items["protocol"], protocol) if "protocol" in items else None
        self.addresses = tuple(_CoreStep(n, items[n]) for n in ("source", "destination") if n in items)
        self.interfaces = tuple(_CoreStep(n, items[n]) for n in ("in_interface", "out_interface") if n in items)
        self.fragment = _CoreStep("fragment", items["fragment"]) if "fragment" in items else None
        # Targets without options (a verdict or a chain), by name and column.
        self.targets: dict[tuple[str, int], Target] = {}


_CACHE_LIMIT = 20_000  # entries per plan or extension step; a dump rarely repeats more


def _getter(words: Sequence[int], columns: Sequence[int], size: int) -> Callable[[Sequence[Any]], object] | None:
    """Picks the given words and columns from ``words + columns`` (``size`` words)."""
    indices = [*words, *(size + c for c in columns)]
    return itemgetter(*indices) if indices else None


class _ShapePlans:
    __slots__ = ("plans", "selectors", "targets")

    def __init__(self, shape: tuple[str, ...]) -> None:
        selectors: list[int] = []  # the words after -m, -p (or what may abbreviate an option)
        targets: list[int] = []  # the words after -j, -g
        last = len(shape) - 1
        for i, word in enumerate(shape):
            if i == last:
                break
            target = _CONTROL.get(word)
            if target is not None:
                (targets if target else selectors).append(i + 1)
            elif word[:2] == "--" and (word not in SPELLINGS or any(c.startswith(word) for c in _CONTROL)):
                selectors.append(i + 1)  # may abbreviate --match, --jump, --goto or --protocol
        # itemgetter with one index returns the word, with several a tuple: either is a key
        self.selectors: Callable[[Sequence[str]], object] | None = itemgetter(*selectors) if selectors else None
        self.targets = tuple(targets)
        self.plans: dict[tuple[object, ...], LinePlan | object] = {}


_PLANS: dict[tuple[str, ...], _ShapePlans] = {}


def clear_caches() -> None:
    """Forget every plan, parsed value and shape: the next read starts as in a new process
    (except for the lark parser, which is kept). For benchmarks."""
    _PLANS.clear()
    _MEMO.clear()
    _ALLOWED.clear()
    _RESOLVED.clear()
    grammar_clear_caches()


def line_plan(words: list[str], family: int) -> LinePlan | None:
    """The plan for a line of these words, or None when the line must be bound by :func:`bind`
    (the option loop finds a problem in it)."""
    shape = shape_of(words)
    plans = _PLANS.get(shape)
    if plans is None:
        if len(_PLANS) >= 20_000:
            _PLANS.clear()
        plans = _PLANS[shape] = _ShapePlans(shape)
    selected = plans.selectors(words) if plans.selectors is not None else None
    targets = plans.targets
    if len(targets) == 1:
        word = words[targets[0]]
        key: tuple[object, ...] = (family, selected, word if word in _TARGET_WORDS else _ANY_CHAIN)
    else:
        key = (family, selected, *(words[i] if words[i] in _TARGET_WORDS else _ANY_CHAIN for i in targets))
    found = plans.plans.get(key)
    if found is None:
        found = _compile(shape, words, family)
        if len(plans.plans) < 1000:
            plans.plans[key] = _NO_PLAN if found is None else found
        if found is not None and not found.expansions:
            remember_shape(shape)
    return None if found is _NO_PLAN else found  # type: ignore[return-value]


def _compile(shape: tuple[str, ...], texts: Sequence[str], family: int) -> LinePlan | None:
    expansions, ambiguous = expand_abbreviations(texts)
    if ambiguous is not None:
        return None
    words = list(texts)
    for i, full in expansions:
        words[i] = full
    try:
        items = parse_words(words) if expansions else parse_shape(shape)
    except LineSyntaxError:
        return None
    c = _classify(items, words, [0] * len(words), family, None)
    out = c.out
    if out.problems or out.skipped or c.counters_given or out.command is None or c.command_item is None:
        return None
    protocol: str | None = None
    inverted = False
    popt = c.core_items.get("protocol")
    if popt is not None:
        try:
            proto = parse_protocol(words[popt.args[0]])
        except ValueError:
            return None
        if proto.number == 0 and popt.negated:
            return None
        protocol = proto.name
        inverted = popt.negated
    if "fragment" in c.core_items and family == 6:
        return None
    if c.target_goto and c.target_name in VERDICTS:
        return None
    ctx = ParseContext(family, protocol, inverted)
    steps: list[_ExtensionStep] = []
    target_after: tuple[BindProblem, ...] = ()
    for ext in c.exts:
        options: list[_OptionStep] = []
        for name, item in ext.items:
            if any(o.name == name for o in options):
                return None  # "may be given only once"
            spec_opt = ext.spec.option(name) if ext.spec is not None else None
            if spec_opt is not None and item.negated and not spec_opt.invertible:
                return None  # "cannot be negated"
            option = _OptionStep(name, item.at, item.args, item.negated, spec_opt.parse if spec_opt else None)
            option.raw = spec_opt is None
            options.append(option)
        after: tuple[BindProblem, ...] = ()
        is_target = ext is c.target_ext
        if is_target:
            if ext.spec is None:
                target_after = (BindProblem(
                    "NL004", f"natlint does not model the {c.target_name} target: what it does to packets"
                    " is treated as unknown", c.target_at, "info"),)
            elif family not in ext.spec.families:
                target_after = (BindProblem(
                    "NL001", f"the {c.target_name} target is not available for IPv{family}", c.target_at),)
        elif ext.spec is None:
            after = (BindProblem(
                "NL004", f"natlint does not model the '{ext.name}' match: rules using it are analysed as"
                " 'may or may not match'", ext.at, "info"),)
        elif family not in ext.spec.families:
            after = (BindProblem("NL001", f"the '{ext.name}' match is not available for IPv{family}", ext.at),)
        key = _getter([i for o in options for i in o.args], [ext.at, *(o.at for o in options)], len(words))
        assert key is not None  # the extension's own column is always in it
        steps.append(_ExtensionStep(ext, is_target, tuple(options), after, key))
    return LinePlan(c, expansions, ctx, tuple(steps), target_after, proto if popt is not None else None)


def _remember(cache: dict[Any, Any], key: object, value: Any) -> Any:
    """Store a built value in a bounded per-plan cache and return it."""
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def bind_planned(plan: LinePlan, words: list[str], columns: list[int], family: int) -> Bound:
    """Bind a line that has a plan (its abbreviations already expanded): the same result as
    :func:`bind`, without deciding again what each word is."""
    problems: list[BindProblem] = []
    both = words + columns  # type: ignore[operator]
    # The core options, as _core() checks them, each built once per (word, column).
    core: dict[str, Option] = {}
    sources: tuple[Prefix, ...] = ()
    destinations: tuple[Prefix, ...] = ()
    source = destination = in_interface = out_interface = protocol = fragment = None
    cs = plan.protocol
    if cs is not None:
        col = columns[cs.at]
        built_core = cs.built.get(("", col))
        if built_core is None:
            built_core = cs.built[("", col)] = (Option("protocol", (cs.value,), cs.negated, col), (), ())
        core["protocol"] = protocol = built_core[0]  # type: ignore[assignment]
    for cs in plan.addresses:
        ckey = (words[cs.arg], columns[cs.at])
        built_core = cs.built.get(ckey) or _remember(cs.built, ckey, _address(cs, ckey[0], ckey[1], family))
        if built_core[1]:
            problems.extend(built_core[1])
        option = built_core[0]
        if option is not None:
            core[cs.name] = option
            if cs.name == "source":
                source = option
                sources = built_core[2]
            else:
                destination = option
                destinations = built_core[2]
    if len(sources) > 1 or len(destinations) > 1:
        negated = [k for k in ("source", "destination") if k in core and core[k].invert]
        if negated:
            problems.append(BindProblem("NL001", _NEGATED_LIST, plan.core_at[negated[0]], final=True))
    for cs in plan.interfaces:
        ckey = (words[cs.arg], columns[cs.at])
        built_core = cs.built.get(ckey) or _remember(cs.built, ckey, _interface(cs, ckey[0], ckey[1]))
        if built_core[1]:
            problems.extend(built_core[1])
        option = built_core[0]
        if option is not None:
            core[cs.name] = option
            if cs.name == "in_interface":
                in_interface = option
            else:
                out_interface = option
    cs = plan.fragment
    if cs is not None:
        col = columns[cs.at]
        built_core = cs.built.get(("", col))
        if built_core is None:
            built_core = cs.built[("", col)] = (Option("fragment", (), cs.negated, col), (), ())
        core["fragment"] = fragment = built_core[0]  # type: ignore[assignment]
    ctx = plan.ctx
    matches: list[Match] = []
    target_options: tuple[Option, ...] = ()
    for step in plan.extensions:
        key = step.key(both)
        built = step.built.get(key)
        if built is None:
            first = len(problems)
            options = _build_step(step, words, columns, ctx, problems)
            result: object = options if step.target else Match(
                step.name, options, step.known, step.implicit, columns[step.at]
            )
            built = (result, tuple(problems[first:]))
            if len(step.built) >= _CACHE_LIMIT:
                step.built.clear()
            step.built[key] = built
        elif built[1]:
            problems.extend(built[1])
        if step.target:
            target_options = built[0]  # type: ignore[assignment]
            continue
        matches.append(built[0])  # type: ignore[arg-type]
        if step.after:
            problems.extend(step.after)
    target: Target | None = None
    if plan.target_arg >= 0:
        name = words[plan.target_arg]
        if plan.target_step is not None:
            if plan.target_after:
                problems.extend(plan.target_after)
            target = Target(
                name, "extension" if plan.target_step.known else "unknown", target_options, plan.target_goto,
                columns[plan.target_at],
            )
        else:
            tkey = (name, columns[plan.target_at])
            target = plan.targets.get(tkey)
            if target is None:
                target = Target(name, "verdict" if name in VERDICTS else "chain", (), plan.target_goto, tkey[1])
                if len(plan.targets) >= _CACHE_LIMIT:
                    plan.targets.clear()
                plan.targets[tkey] = target
    return Bound(
        plan.command, tuple([words[i] for i in plan.command_args]), plan.command_at, core, plan.core_at,
        sources, destinations, tuple(matches), target, None, False, problems,
        (source, destination, in_interface, out_interface, protocol, fragment),
    )


def _address(
    step: _CoreStep, word: str, column: int, family: int
) -> tuple[Option | None, tuple[BindProblem, ...], tuple[Prefix, ...]]:
    """-s or -d, as _core() reads it."""
    try:
        prefixes: tuple[Prefix, ...] = _memo(parse_prefix_list, word, family)
    except ValueError as exc:
        return None, (BindProblem("NL002", str(exc), step.arg, final=True),), ()
    problems: tuple[BindProblem, ...] = ()
    if step.negated and any(p.mask == 0 for p in prefixes):
        problems = (BindProblem("NL002", _matches_nothing(step.name, word), step.arg, final=True),)
    return Option(step.name, (prefixes[0],), step.negated, column), problems, prefixes


def _interface(step: _CoreStep, word: str, column: int) -> tuple[Option | None, tuple[BindProblem, ...], tuple[()]]:
    """-i or -o, as _core() reads it."""
    try:
        option = Option(step.name, (_memo(parse_interface, word),), step.negated, column)
    except ValueError as exc:
        return None, (BindProblem("NL002", str(exc), step.arg),), ()
    weird = _memo(interface_name_problem, word)
    return option, (() if weird is None else (_weird_interface(weird, step.negated, step.arg),)), ()


def _build_step(
    step: _ExtensionStep, words: Sequence[str], columns: Sequence[int], ctx: ParseContext, problems: list[BindProblem]
) -> tuple[Option, ...]:
    options: dict[str, Option] = {}
    failed = False
    for o in step.options:
        args = [words[i] for i in o.args]
        if o.raw:
            options[o.name] = Option(o.name, tuple(args), o.negated, columns[o.at])
            continue
        values: object = ()
        if o.parse is not None:
            # The plan fixes the parse context: the words alone decide the values.
            key: object = args[0] if len(args) == 1 else tuple(args)
            values = o.values.get(key, _MISSING)
            if values is _MISSING:
                try:
                    values = o.parse(tuple(args), ctx)
                except ValueError as exc:
                    values = _Failure(str(exc))
                if len(o.values) >= _CACHE_LIMIT:
                    o.values.clear()
                o.values[key] = values
            if type(values) is _Failure:
                problems.append(BindProblem("NL002", values.message, o.args[0] if o.args else o.at))
                failed = True
                continue
        options[o.name] = Option(o.name, values, o.negated, columns[o.at])  # type: ignore[arg-type]
    if step.validate is not None and not failed:
        found = list(step.validate(options, ctx))
        if found:
            where = {o.name: o.at for o in step.options if o.name in options}
            for problem in found:
                at = where.get(problem.option, step.at) if problem.option else step.at
                problems.append(BindProblem(problem.code, problem.message, at, final=True))
    return tuple(options.values())
