"""Read a whole iptables-save / iptables-restore file into the model.

This is iptables-restore's line dispatcher (``xtables_restore_parse_line``): ``#`` comments
at column 0, ``*table``, ``:CHAIN POLICY [p:b]``, ``COMMIT``, and command lines in between.
It never stops at a bad line: every problem becomes a finding with its line and column,
and the rest of the file is analysed as the author evidently meant it (a CRLF file is read
without the CRs, ``-s ! x`` as ``! -s x``, a missing COMMIT as if it were there).
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Literal

from natlint.extensions import IMPLICIT_BY_PROTOCOL, MATCHES, TARGETS
from natlint.findings import Finding, Severity
from natlint.model.ruleset import BUILTIN_CHAINS, TABLES, VERDICTS, Chain, Family, Option, Rule, Ruleset, SourcePos, Table
from natlint.syntax.binder import KNOWN_TARGET_NAMES, MODULE_ALIASES, Bound, bind
from natlint.syntax.grammar import COMMANDS, SPELLINGS, LineSyntaxError, parse_words
from natlint.syntax.tokenize import Word, split_words

__all__ = ["read", "detect_family", "MAX_LINE_BYTES"]

# iptables-restore reads lines with fgets() into a 10240-byte buffer; a longer line is cut
# in two and both halves fail to parse.
MAX_LINE_BYTES = 10239
_MAX_CHAIN_NAME = 28
_OPTION_WORD = re.compile(r"--[A-Za-z0-9][A-Za-z0-9_.+-]*")
_COUNTERS = re.compile(r"\[(\d+):(\d+)\]")
_CORE_NAMES = frozenset({
    "source", "destination", "in_interface", "out_interface", "protocol", "fragment", "match",
    "jump", "goto", "set_counters", "ipv4", "ipv6", "table", "wait", "wait_interval", "verbose",
    "numeric", "exact",
})


@dataclass(slots=True)
class _PendingRule:
    bound: Bound
    pos: SourcePos
    text: str
    columns: list[int]


@dataclass(slots=True)
class _ChainBuilder:
    name: str
    builtin: bool
    policy: str | None
    pos: SourcePos | None
    counters: tuple[int, int] | None = None
    rules: list[_PendingRule] = field(default_factory=list)


@dataclass(slots=True)
class _TableBuilder:
    name: str
    pos: SourcePos
    valid: bool
    chains: dict[str, _ChainBuilder] = field(default_factory=dict)


class _Reader:
    def __init__(self, path: str, family: Family, lines: list[str]) -> None:
        self.path = path
        self.family = family
        self.lines = lines
        self.findings: list[Finding] = []
        self.tables: dict[str, Table] = {}
        self.table_lines: dict[str, int] = {}
        self.current: _TableBuilder | None = None
        self._abbrev_cache: dict[tuple[str, frozenset[str]], str | tuple[str, ...] | None] = {}

    # ---- findings -------------------------------------------------------------------------
    def report(
        self,
        code: str,
        message: str,
        line: int,
        column: int = 1,
        severity: Severity = "error",
        chain: str | None = None,
    ) -> None:
        table = self.current.name if self.current is not None else None
        source = self.lines[line - 1] if 0 < line <= len(self.lines) else None
        self.findings.append(Finding(code, severity, message, self.path, line, column, table, chain, source_line=source))

    # ---- the dispatcher ---------------------------------------------------------------------
    def run(self) -> None:
        crlf_reported = False
        for lineno, raw in enumerate(self.lines, 1):
            line = raw
            if line.endswith("\r"):
                line = line.rstrip("\r")
                if not crlf_reported:
                    crlf_reported = True
                    self.report(
                        "NL003",
                        "this file has Windows (CRLF) line ends: iptables-restore fails on them"
                        " (\"Bad argument 'COMMIT'\"). Convert it with 'dos2unix' or 'sed -i s/\\r$//'",
                        lineno, len(line) + 1,
                    )
            if "\x00" in line:
                cut = line.index("\x00")
                self.report("NL001", "this line contains a NUL byte: iptables-restore ignores everything after it", lineno, cut + 1)
                line = line[:cut]
            if len(line) > MAX_LINE_BYTES // 4 and len(line.encode("utf-8", "replace")) > MAX_LINE_BYTES:
                self.report(
                    "NL001",
                    f"this line is longer than {MAX_LINE_BYTES} bytes: iptables-restore reads it in"
                    " pieces and fails. Split the rule or shorten its comment",
                    lineno, MAX_LINE_BYTES + 1,
                )
            self.dispatch(line, lineno)
        if self.current is not None:
            last = len(self.lines)
            self.report(
                "NL003",
                f"table '{self.current.name}' (line {self.current.pos.line}) has no COMMIT: iptables-restore"
                " fails with 'COMMIT expected' and loads nothing of it. Add a COMMIT line",
                max(last, 1),
            )
            self.commit(max(last, 1))

    def dispatch(self, line: str, lineno: int) -> None:
        if not line or line.isspace():
            return
        first = line[0]
        if first == "#":
            return
        cur = self.current
        if cur is not None and line.startswith("COMMIT"):
            if line == "COMMIT":
                self.commit(lineno)
                return
            if line.rstrip(" \t") == "COMMIT":
                self.report(
                    "NL003",
                    "'COMMIT' followed by spaces is not recognised by iptables-restore (\"Bad argument"
                    " 'COMMIT'\"): remove the trailing whitespace",
                    lineno, 7,
                )
                self.commit(lineno)
                return
        if first == "*":
            self.start_table(line, lineno)
            return
        if cur is None:
            self.report(
                "NL003",
                "this line is outside a table: iptables-restore expects '*filter' (or another table)"
                " before rules, and fails here. Is this a shell script rather than an iptables-save dump?",
                lineno,
            )
            return
        if first == ":":
            self.declare_chain(line, lineno)
            return
        self.rule_line(line, lineno)

    # ---- tables -------------------------------------------------------------------------------
    def start_table(self, line: str, lineno: int) -> None:
        if self.current is not None:
            self.report(
                "NL003",
                f"table '{self.current.name}' (line {self.current.pos.line}) is not closed with COMMIT"
                f" before '{line.strip()}': iptables-restore fails here. Add COMMIT before this line",
                lineno,
            )
            self.commit(lineno)
        parts = line[1:].split(None, 1)
        name = parts[0] if parts else ""
        valid = name in TABLES
        if not valid:
            self.report(
                "NL003",
                f"'{name}' is not an iptables table: use raw, mangle, nat, filter or security",
                lineno, 2,
            )
        elif name in self.table_lines:
            self.report(
                "NL003",
                f"table '{name}' was already defined at line {self.table_lines[name]}: iptables-restore"
                " replaces it, so the earlier block has no effect",
                lineno, 1, "warning",
            )
        builder = _TableBuilder(name, SourcePos(self.path, lineno, 1), valid)
        if valid:
            for chain in BUILTIN_CHAINS[name]:
                builder.chains[chain] = _ChainBuilder(chain, True, "ACCEPT", None)
        self.current = builder

    def commit(self, lineno: int) -> None:
        builder = self.current
        self.current = None
        if builder is None or not builder.valid:
            return
        self.table_lines[builder.name] = builder.pos.line
        chains: dict[str, Chain] = {}
        for cb in builder.chains.values():
            rules: list[Rule] = []
            for pending in cb.rules:
                rules.extend(self.materialize(builder.name, cb.name, pending, len(rules) + 1))
            chains[cb.name] = Chain(cb.name, cb.builtin, cb.policy, tuple(rules), cb.pos, cb.counters)
        self.tables[builder.name] = Table(builder.name, chains, builder.pos)

    # ---- chains -------------------------------------------------------------------------------
    def declare_chain(self, line: str, lineno: int) -> None:
        cur = self.current
        assert cur is not None
        parts = line[1:].split()
        if not parts:
            self.report("NL001", "a chain line needs a name: ':NAME POLICY [packets:bytes]'", lineno, 2)
            return
        name = parts[0]
        policy = parts[1] if len(parts) > 1 else None
        if not self.valid_chain_name(name, lineno, 2):
            return
        counters = None
        if len(parts) > 2:
            m = _COUNTERS.fullmatch(parts[2])
            if m is None:
                self.report("NL001", f"'{parts[2]}' is not a counter pair: write [packets:bytes]", lineno, line.index(parts[2]) + 1)
            else:
                counters = (int(m.group(1)), int(m.group(2)))
        if policy is None:
            self.report("NL001", f"chain '{name}' has no policy: write ':{name} ACCEPT [0:0]' for a built-in"
                        f" chain or ':{name} - [0:0]' for a user chain", lineno, len(line) + 1)
            policy = "-"
        builtin = cur.valid and name in BUILTIN_CHAINS[cur.name]
        existing = cur.chains.get(name)
        pcol = line.index(policy, 1 + len(name)) + 1 if policy in line else 1
        if builtin:
            if policy not in ("ACCEPT", "DROP", "-"):
                self.report("NL003", f"'{policy}' is not a valid policy for {name}: a built-in chain's policy"
                            " is ACCEPT or DROP", lineno, pcol, chain=name)
                policy = "ACCEPT"
            assert existing is not None
            existing.pos = SourcePos(self.path, lineno, 1)
            existing.policy = "ACCEPT" if policy == "-" else policy
            existing.counters = counters
            return
        if cur.valid and any(name in chains for t, chains in BUILTIN_CHAINS.items() if t != cur.name):
            self.report("NL003", f"'{name}' is not a built-in chain of the {cur.name} table: it becomes an"
                        " ordinary user chain that no hook calls", lineno, 2, "warning", chain=name)
        if policy != "-":
            self.report("NL003", f"user chain '{name}' cannot have a policy ('{policy}'): legacy iptables"
                        f" rejects this line and nf_tables ignores it. Write ':{name} - [0:0]'",
                        lineno, pcol, "warning", chain=name)
        if existing is not None:
            self.report("NL003", f"chain '{name}' is declared twice (first at line"
                        f" {existing.pos.line if existing.pos else '?'}): legacy iptables-restore fails"
                        " with 'File exists'", lineno, 2, "warning", chain=name)
            existing.rules.clear()  # a ':' line flushes an existing chain
            return
        cur.chains[name] = _ChainBuilder(name, False, None, SourcePos(self.path, lineno, 1))

    def valid_chain_name(self, name: str, lineno: int, column: int) -> bool:
        if len(name) > _MAX_CHAIN_NAME:
            self.report("NL002", f"chain name '{name}' is {len(name)} characters long: at most"
                        f" {_MAX_CHAIN_NAME} are allowed", lineno, column)
            return False
        if name[0] in "-!":
            self.report("NL002", f"chain name '{name}' cannot start with '{name[0]}'", lineno, column)
            return False
        if name in VERDICTS or name in TARGETS or name in KNOWN_TARGET_NAMES:
            self.report("NL002", f"'{name}' is the name of a target and cannot be a chain name", lineno, column)
            return False
        return True

    # ---- rule lines ---------------------------------------------------------------------------
    def rule_line(self, line: str, lineno: int) -> None:
        cur = self.current
        assert cur is not None
        offset = 0
        counters = None
        if line[0] == "[":
            end = line.find("]")
            m = _COUNTERS.fullmatch(line[: end + 1]) if end > 0 else None
            if m is None:
                self.report("NL001", "bad counters at the start of the line: write [packets:bytes]", lineno, 1)
                return
            counters = (int(m.group(1)), int(m.group(2)))
            offset = end + 1
        words = split_words(line[offset:] if offset else line)
        if offset:
            words = [Word(w.text, w.column + offset, w.quoted) for w in words]
        if not words:
            self.report("NL001", "this line has no command", lineno, 1)
            return
        texts = [w.text for w in words]
        columns = [w.column for w in words]
        if not self.expand_abbreviations(texts, columns, lineno):
            return
        try:
            items = parse_words(texts)
        except LineSyntaxError as exc:
            repaired = self.repair_negation(texts)
            if repaired is not None:
                texts, items, bang = repaired
                self.report(
                    "NL001",
                    "'!' must come before the option it negates: write '! -s ADDR', not '-s ! ADDR'."
                    " iptables 1.4.12 and later reject this old form; natlint reads it as meant",
                    lineno, columns[bang] + 1,
                )
            else:
                col = columns[exc.word] + 1 if exc.word is not None else len(line) + 1
                self.report("NL001", exc.message, lineno, col)
                return
        bound = bind(items, texts, columns, self.family)
        for problem in bound.problems:
            col = columns[problem.word] + 1 if problem.word is not None and problem.word < len(columns) else 1
            self.report(problem.code, problem.message, lineno, col, problem.severity)
        if bound.skipped or not bound.ok:
            return
        if counters is not None and bound.counters is None:
            bound.counters = counters
        self.apply(bound, SourcePos(self.path, lineno, 1), line, columns, lineno)

    def expand_abbreviations(self, texts: list[str], columns: list[int], lineno: int) -> bool:
        """Expand getopt unique-prefix abbreviations (``--dp`` -> ``--dport``) in place."""
        unknown = [i for i, w in enumerate(texts) if w[:2] == "--" and w not in SPELLINGS and _OPTION_WORD.fullmatch(w)]
        if not unknown:
            return True
        modules: set[str] = set()
        for i, w in enumerate(texts[:-1]):
            nxt = texts[i + 1]
            if w in ("-m", "--match"):
                modules.add(MODULE_ALIASES.get(nxt, nxt))
            elif w in ("-p", "--protocol"):
                implicit = IMPLICIT_BY_PROTOCOL.get(nxt.lower())
                if implicit:
                    modules.add(implicit)
            elif w in ("-j", "--jump"):
                modules.add(nxt)
        key_modules = frozenset(modules)
        for i in unknown:
            key = (texts[i], key_modules)
            if key not in self._abbrev_cache:
                allowed = set(_CORE_NAMES) | set(COMMANDS)
                for mod in modules:
                    spec = MATCHES.get(mod) or TARGETS.get(mod)
                    if spec is not None:
                        allowed.update(spec.option_index)
                hits = {alias: s for s, alias in SPELLINGS.items() if s.startswith(texts[i]) and alias in allowed}
                if len(hits) == 1:
                    self._abbrev_cache[key] = next(iter(hits.values()))
                elif len(hits) > 1:
                    self._abbrev_cache[key] = tuple(sorted(hits.values()))
                else:
                    self._abbrev_cache[key] = None
            found = self._abbrev_cache[key]
            if isinstance(found, str):
                texts[i] = found
            elif isinstance(found, tuple):
                self.report("NL001", f"'{texts[i]}' is ambiguous: it abbreviates " + " and ".join(found)
                            + ". Write the option in full", lineno, columns[i] + 1)
                return False
        return True

    @staticmethod
    def repair_negation(texts: list[str]) -> tuple[list[str], tuple, int] | None:  # type: ignore[type-arg]
        fixed = list(texts)
        bang = -1
        for i in range(1, len(fixed) - 1):
            if fixed[i] == "!" and fixed[i - 1] in SPELLINGS and fixed[i - 1] != "!":
                fixed[i - 1], fixed[i] = fixed[i], fixed[i - 1]
                bang = i - 1 if bang < 0 else bang
        if bang < 0:
            return None
        try:
            return fixed, parse_words(fixed), bang + 1
        except LineSyntaxError:
            return None

    # ---- commands -------------------------------------------------------------------------------
    def chain_for(self, name: str, lineno: int, column: int, *, create: bool = True) -> _ChainBuilder | None:
        cur = self.current
        assert cur is not None
        chain = cur.chains.get(name)
        if chain is None:
            hint = ""
            if cur.valid and name not in BUILTIN_CHAINS[cur.name] and any(name in c for c in BUILTIN_CHAINS.values()):
                hint = f" ({name} is not a built-in chain of the {cur.name} table)"
            self.report("NL003", f"chain '{name}' is not declared in table '{cur.name}'{hint}: iptables-restore"
                        f" fails with \"Chain '{name}' does not exist\". Declare it with ':{name} - [0:0]'"
                        " before its rules", lineno, column, chain=name)
            if not create:
                return None
            chain = _ChainBuilder(name, False, None, None)
            cur.chains[name] = chain
        return chain

    def apply(self, bound: Bound, pos: SourcePos, line: str, columns: list[int], lineno: int) -> None:
        cur = self.current
        assert cur is not None
        cmd = bound.command
        args = bound.command_args
        col = columns[bound.command_at] + 1
        argcol = columns[bound.command_at + 1] + 1 if bound.command_at + 1 < len(columns) else col
        pending = _PendingRule(bound, pos, line, columns)
        if cmd == "append":
            chain = self.chain_for(args[0], lineno, argcol)
            if chain is not None:
                chain.rules.append(pending)
        elif cmd == "insert":
            chain = self.chain_for(args[0], lineno, argcol)
            if chain is not None:
                index = int(args[1]) if len(args) > 1 else 1
                if index < 1 or index > len(chain.rules) + 1:
                    self.report("NL002", f"cannot insert at position {index}: chain '{args[0]}' has"
                                f" {len(chain.rules)} rules here", lineno, col)
                else:
                    chain.rules.insert(index - 1, pending)
        elif cmd in ("delete", "replace"):
            chain = self.chain_for(args[0], lineno, argcol, create=False)
            if chain is None:
                return
            if len(args) > 1:
                index = int(args[1])
                if not 1 <= index <= len(chain.rules):
                    self.report("NL002", f"there is no rule {index} in chain '{args[0]}' here"
                                f" ({len(chain.rules)} rules)", lineno, col)
                    return
                if cmd == "delete":
                    del chain.rules[index - 1]
                else:
                    chain.rules[index - 1] = pending
                return
            if cmd == "replace":
                return
            key = _spec_key(bound)
            for i, other in enumerate(chain.rules):
                if _spec_key(other.bound) == key:
                    del chain.rules[i]
                    return
            self.report("NL002", f"'-D {args[0]}' deletes nothing: no rule in '{args[0]}' has this"
                        " specification (iptables-restore fails here)", lineno, col)
        elif cmd == "new_chain":
            if self.valid_chain_name(args[0], lineno, argcol):
                if args[0] in cur.chains:
                    self.report("NL003", f"chain '{args[0]}' already exists", lineno, argcol)
                else:
                    cur.chains[args[0]] = _ChainBuilder(args[0], False, None, pos)
        elif cmd == "delete_chain":
            names = list(args) if args else [c.name for c in cur.chains.values() if not c.builtin]
            for name in names:
                existing = cur.chains.get(name)
                if existing is None or existing.builtin:
                    self.report("NL003", f"'-X {name}': no such user chain", lineno, argcol)
                else:
                    del cur.chains[name]
        elif cmd == "flush":
            targets = [cur.chains[a] for a in args if a in cur.chains] if args else list(cur.chains.values())
            for chain in targets:
                chain.rules.clear()
        elif cmd == "policy":
            chain = cur.chains.get(args[0])
            if chain is None or not chain.builtin:
                self.report("NL003", f"'-P {args[0]}': only built-in chains have a policy", lineno, argcol)
            elif args[1] not in ("ACCEPT", "DROP"):
                self.report("NL003", f"'{args[1]}' is not a policy: use ACCEPT or DROP", lineno, argcol)
            else:
                chain.policy = args[1]
        elif cmd == "rename_chain":
            old, new = args
            chain = cur.chains.get(old)
            if chain is None or chain.builtin:
                self.report("NL003", f"'-E {old}': no such user chain", lineno, argcol)
            elif self.valid_chain_name(new, lineno, argcol):
                cur.chains = {(new if k == old else k): v for k, v in cur.chains.items()}
                chain.name = new
                for other in cur.chains.values():
                    for rule in other.rules:
                        tgt = rule.bound.target
                        if tgt is not None and tgt.name == old and tgt.kind == "chain":
                            rule.bound.target = type(tgt)(new, tgt.kind, tgt.options, tgt.goto, tgt.column)
        elif cmd == "zero":
            return
        else:
            self.report("NL006", f"'{line.split()[0]}' has no effect in an iptables-restore file", lineno, col, "warning")

    def materialize(self, table: str, chain: str, pending: _PendingRule, index: int) -> Iterable[Rule]:
        bound = pending.bound
        core = bound.core
        base = {
            "in_interface": core.get("in_interface"),
            "out_interface": core.get("out_interface"),
            "protocol": core.get("protocol"),
            "fragment": core.get("fragment"),
        }
        sources: tuple[Option | None, ...] = (None,)
        if bound.sources:
            s = core["source"]
            sources = tuple(Option("source", (p,), s.invert, s.column) for p in bound.sources)
        dests: tuple[Option | None, ...] = (None,)
        if bound.destinations:
            d = core["destination"]
            dests = tuple(Option("destination", (p,), d.invert, d.column) for p in bound.destinations)
        for src in sources:
            for dst in dests:
                yield Rule(
                    table, chain, index, pending.pos, pending.text, src, dst,
                    matches=bound.matches, target=bound.target, counters=bound.counters, **base,
                )
                index += 1


def _spec_key(bound: Bound) -> tuple[object, ...]:
    return (
        tuple(sorted((k, v.values, v.invert) for k, v in bound.core.items())),
        bound.sources, bound.destinations,
        tuple((m.name, tuple((o.name, o.values, o.invert) for o in m.options)) for m in bound.matches),
        (bound.target.name, tuple((o.name, o.values) for o in bound.target.options)) if bound.target else None,
    )


_V6_HINT = re.compile(r"(?m)^\S.* (?:-[sd]|--to-destination|--to-source) \[?[0-9A-Fa-f]*:[0-9A-Fa-f:.]*[\]/ ]|ipv6-icmp|icmp6|icmpv6")


def detect_family(text: str, path: str | None = None) -> Family:
    """IPv6 when the header says ip6tables-save, the file name says v6, or rules hold v6 addresses."""
    head = text[:4096]
    if "ip6tables-save" in head or "ip6tables-restore" in head:
        return 6
    if "iptables-save" in head:
        return 4
    if path:
        name = PurePath(path).name.lower()
        if "ip6tables" in name or name.endswith((".v6", "rules6", ".ip6tables.rules")) or "ipv6" in name:
            return 6
        if "iptables" in name or name.endswith(".v4"):
            return 4
    if _V6_HINT.search(text[:1_000_000]):
        return 6
    return 4


def read(source: str | bytes, path: str = "<text>", family: Literal[4, 6] | None = None) -> Ruleset:
    """Read a dump (text or raw bytes) into a :class:`Ruleset` with its findings."""
    if isinstance(source, bytes):
        text = source.decode("utf-8", "replace")
    else:
        text = source
    if text.startswith("\ufeff"):
        text = text[1:]
    fam: Family = family if family is not None else detect_family(text, path)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    reader = _Reader(path, fam, lines)
    enabled = gc.isenabled()
    gc.disable()  # the collector is half of the parse time on large dumps (measured)
    try:
        reader.run()
    finally:
        if enabled:
            gc.enable()
    reader.findings.sort(key=Finding.sort_key)
    return Ruleset(path, fam, reader.tables, tuple(reader.findings), tuple(lines))
