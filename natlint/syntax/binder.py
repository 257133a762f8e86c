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
from typing import Any, Literal

from natlint.extensions import IMPLICIT_BY_PROTOCOL, MATCHES, TARGETS, ExtensionSpec
from natlint.extensions.spec import ParseContext
from natlint.model.ruleset import VERDICTS, Match, Option, Target
from natlint.model.values import (
    Prefix,
    interface_name_problem,
    parse_interface,
    parse_prefix_list,
    parse_protocol,
    parse_uint,
)
from natlint.syntax.grammar import COMMANDS, SPELLINGS, Item

__all__ = ["BindProblem", "Bound", "bind", "KNOWN_TARGET_NAMES", "MODULE_ALIASES"]

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

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


def _spelling(item: Item, words: Sequence[str]) -> str:
    return words[item.at]


def bind(
    items: Sequence[Item], words: Sequence[str], columns: Sequence[int], family: int, *, skip_at: int | None = None
) -> Bound:
    """Bind a line's items. ``skip_at``: the word index of a ``-6`` (``-4`` in ip6tables) that
    makes iptables-restore skip the line; only the items before it are processed, as getopt does."""
    out = Bound()
    problems = out.problems
    other = ("-6", "--ipv6") if family == 4 else ("-4", "--ipv4")
    if skip_at is None and (other[0] in words or other[1] in words):
        skip_at = next((it.at for it in items if it.name == ("ipv6" if family == 4 else "ipv4")), None)
    if skip_at is not None:
        items = [it for it in items if it.at < skip_at]
    exts: list[_Ext] = []  # in load order; the target (if any) is in here too
    target_ext: _Ext | None = None
    target_name: str | None = None
    target_goto = False
    target_at = 0
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
        elif name in _CORE:
            if name in out.core:
                err(f"{_CORE[name]} can be given only once per rule", item.at)
                continue
            out.core[name] = Option(name, tuple(words[i] for i in item.args), item.negated, columns[item.at])
            out.core_at[name] = item.args[0] if item.args else item.at
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
            if target_name is not None:
                err("a rule can have only one -j or -g", item.at)
                continue
            target_name = words[item.args[0]]
            target_goto = name == "goto"
            target_at = item.at
            if not target_goto:
                spec = TARGETS.get(target_name)
                if spec is not None or (target_name in KNOWN_TARGET_NAMES):
                    target_ext = _Ext(target_name, spec, item.at)
                    exts.append(target_ext)
                    if spec is None:
                        unknown_modules.append(target_ext)
        elif name == "set_counters":
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

    ctx = _core(out, family, err)
    matches: list[Match] = []
    for ext in exts:
        built = _build_extension(ext, words, columns, ctx, problems)
        if ext is target_ext:
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
            options = _build_extension(target_ext, words, columns, ctx, problems)
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
            if target_goto and target_name in VERDICTS:
                err(f"-g needs a user chain, not {target_name}", target_at, final=True)
        out.target = Target(target_name, kind, options, target_goto, columns[target_at])
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
            err(f"'! {_CORE[key]} {opt.values[0]}' matches no packet at all: iptables-nft refuses the rule"
                " ('RULE_APPEND failed (Invalid argument)'; legacy loads a rule that never matches)."
                " Delete the rule", out.core_at[key], "NL002", final=True)
        if key == "source":
            out.sources = prefixes
        else:
            out.destinations = prefixes
        core[key] = Option(key, (prefixes[0],), opt.invert, opt.column)
    negated = [k for k in ("source", "destination") if k in core and core[k].invert]
    if (len(out.sources) > 1 or len(out.destinations) > 1) and negated:
        err("'!' is not allowed when -s or -d lists several addresses (iptables: '! not allowed with multiple"
            " source or destination IP addresses'): write one rule per address", out.core_at[negated[0]], final=True)
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
            never = "always" if opt.invert else "never"
            problem = BindProblem("NL002", f"{weird}: this test {never} matches", out.core_at[key], "warning")
            out.problems.append(problem)
    if "fragment" in core and family == 6:
        err("-f is for IPv4 only: use '-m frag' in ip6tables", out.core_at['fragment'])
    return ParseContext(family, protocol, inverted)


def _build_extension(
    ext: _Ext, words: Sequence[str], columns: Sequence[int], ctx: ParseContext, problems: list[BindProblem]
) -> tuple[Option, ...]:
    options: dict[str, Option] = {}
    where: dict[str, int] = {}
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
            continue
        options[name] = Option(name, values, item.negated, columns[item.at])
        where[name] = item.at
    if ext.spec is not None and ext.spec.validate is not None:
        for problem in ext.spec.validate(options, ctx):
            at = where.get(problem.option, ext.at) if problem.option else ext.at
            problems.append(BindProblem(problem.code, problem.message, at, final=True))
    return tuple(options.values())
