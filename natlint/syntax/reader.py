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

from natlint.extensions import TARGETS
from natlint.findings import Finding, Severity
from natlint.model.ruleset import (
    BUILTIN_CHAINS,
    TABLES,
    VERDICTS,
    Chain,
    Family,
    Option,
    Rule,
    Ruleset,
    SourcePos,
    Table,
    make_rule,
    make_source_pos,
)
from natlint.model.values import parse_uint
from natlint.syntax.binder import KNOWN_TARGET_NAMES, Bound, bind, bind_planned, expand_abbreviations, line_plan
from natlint.syntax.grammar import SPELLINGS, Item, LineSyntaxError, parse_words
from natlint.syntax.tokenize import split_texts, split_words

__all__ = ["read", "detect_family", "MAX_LINE_BYTES"]

# iptables-restore reads lines with fgets() into a 10240-byte buffer; a longer line is cut
# in two and both halves fail to parse.
MAX_LINE_BYTES = 10239
# add_param_to_argv() collects a word in a 1024-byte buffer ("Parameter too long!"), and
# add_argv() takes at most 251 words after the program name and "-t TABLE" (measured on 1.8.9).
MAX_WORD_BYTES = 1024
MAX_WORDS = 251
# The fields of '*table' and ':chain' lines: strtok(" \t\n") (a CR or a vertical tab stays in).
_TOKEN = re.compile(r"[^ \t\n]+")
# Options whose free-text value may end in a CR without iptables-restore failing.
_CR_TOLERANT = frozenset({
    "comment", "log_prefix", "nflog_prefix", "in_interface", "out_interface", "physdev_in", "physdev_out",
})
_MAX_CHAIN_NAME = 28
# A user chain declared the way iptables-save writes it, with a name that needs no check but
# the ones in _NOT_PLAIN_CHAIN_NAMES (the counters are not kept for user chains).
_USER_CHAIN_LINE = re.compile(rf":([A-Za-z0-9_][A-Za-z0-9_.-]{{0,{_MAX_CHAIN_NAME - 1}}}) - \[[0-9]+:[0-9]+\]")
_NOT_PLAIN_CHAIN_NAMES = (
    VERDICTS | frozenset(TARGETS) | KNOWN_TARGET_NAMES | frozenset(c for cs in BUILTIN_CHAINS.values() for c in cs)
)
_COUNTERS = re.compile(r"\[(\d+):(\d+)\]")


@dataclass(slots=True)
class _PendingRule:
    bound: Bound
    pos: SourcePos
    text: str


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
    def __init__(
        self,
        path: str,
        family: Family,
        lines: list[str],
        *,
        bom: bool = False,
        line_bytes: list[int] | None = None,
        ends_with_newline: bool = True,
        plain: bool = False,
    ) -> None:
        self.ends_with_newline = ends_with_newline
        self.plain = plain  # no CR, no NUL and no line that may be too long anywhere in the file
        self.newline = True  # the current line ends with a newline in the file
        self.path = path
        self.family = family
        self.lines = lines
        self.bom = bom
        self.line_bytes = line_bytes  # each line's length in the original bytes, when read from bytes
        self.crlf_reported = False
        self.findings: list[Finding] = []
        self.tables: dict[str, Table] = {}
        self.table_lines: dict[str, int] = {}
        self.current: _TableBuilder | None = None

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
        self.findings.append(
            Finding(code, severity, message, self.path, line, column, table, chain, source_line=source)
        )

    # ---- the dispatcher ---------------------------------------------------------------------
    def run(self) -> None:
        if self.bom:
            self.report(
                "NL003",
                "the file starts with a UTF-8 byte order mark (BOM): iptables-restore does not skip it and"
                " fails on line 1. Save the file without BOM",
                1, 1,
            )
        last = len(self.lines)
        if self.plain:
            self.run_plain()
        else:
            for lineno, raw in enumerate(self.lines, 1):
                self.read_line(lineno, raw)
        if self.current is not None:
            self.report(
                "NL003",
                f"table '{self.current.name}' (line {self.current.pos.line}) has no COMMIT: iptables-restore"
                " fails with 'COMMIT expected' and loads nothing of it. Add a COMMIT line",
                max(last, 1),
            )
            self.commit(max(last, 1))

    def run_plain(self) -> None:
        """The lines of a file without CR, NUL or overlong lines: rule and chain lines go straight
        to their readers (most of a dump), any other line through :meth:`read_line`."""
        lines = self.lines
        rule_line = self.rule_line
        declare_chain = self.declare_chain
        # The last line is read with the care its missing newline may need.
        stop = len(lines) if self.ends_with_newline else len(lines) - 1
        for lineno, line in enumerate(lines[:stop], 1):
            if not line:
                continue
            first = line[0]
            if first == "-":
                if self.current is not None:
                    rule_line(line, lineno)
                    continue
            elif first == ":":
                if self.current is not None:
                    declare_chain(line, lineno)
                    continue
            elif first == "#":
                continue
            self.read_line(lineno, line)
        if stop < len(lines):
            self.read_line(len(lines), lines[-1])

    def read_line(self, lineno: int, raw: str) -> None:
        """One line of the file, as it is there (with its CR, if any)."""
        line = raw
        self.newline = lineno < len(self.lines) or self.ends_with_newline
        cr = line.endswith("\r")
        if cr:
            line = line.rstrip("\r")
        if "\x00" in line:
            # iptables-restore reads lines with fgets() and then treats them as C strings:
            # whatever follows a NUL byte is never seen.
            cut = line.index("\x00")
            line = line[:cut]
            self.newline = False
            cr = False
            if line and not line.isspace():
                self.report("NL006", "this line contains a NUL byte: iptables-restore ignores everything"
                            " after it", lineno, cut + 1, "warning")
            else:
                self.blank_line(lineno, cut + 1, "a line that starts with a NUL byte")
                return
        size = self.line_bytes[lineno - 1] if self.line_bytes is not None else None
        if size is None and len(line) > MAX_LINE_BYTES // 4:
            size = len(raw.encode("utf-8", "replace"))
        if size is not None and size > MAX_LINE_BYTES:
            self.report(
                "NL001",
                f"this line is longer than {MAX_LINE_BYTES} bytes: iptables-restore reads it in"
                " pieces and fails. Split the rule or shorten its comment",
                lineno, MAX_LINE_BYTES + 1,
            )
        if not line and not cr:
            return
        if not line or line.isspace():
            if cr:
                self.crlf(lineno, len(line) + 1)
                return
            self.blank_line(lineno, 1, "a line of only spaces or tabs")
            return
        self.dispatch(line, lineno, raw if cr else None)

    def blank_line(self, lineno: int, column: int, what: str) -> None:
        # Only a line that is exactly empty is skipped; iptables-restore parses any other line
        # (inside a table as a command with no words, "no command specified"; outside as
        # "line N failed").
        self.report("NL001", f"{what}: iptables-restore fails on it (only a truly empty line is skipped)."
                    " Delete the whitespace", lineno, column)

    def crlf(self, lineno: int, column: int) -> None:
        """Report the Windows line ends once, at the first line where iptables-restore trips on the CR."""
        if self.crlf_reported:
            return
        self.crlf_reported = True
        self.report(
            "NL003",
            "this file has Windows (CRLF) line ends and iptables-restore fails on this line: it keeps the"
            " CR as part of the last word. Convert the file with 'dos2unix' or 'sed -i s/\\r$//'",
            lineno, column,
        )

    def dispatch(self, line: str, lineno: int, raw: str | None = None) -> None:
        """One line without its CR; ``raw`` is the line with its CR when it had one."""
        first = line[0]
        if first == "#":
            return
        cur = self.current
        if cur is not None and line.startswith("COMMIT"):
            if line == "COMMIT":
                if raw is not None:
                    self.crlf(lineno, 7)
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
            if raw is not None:
                name = _TOKEN.search(raw, 1)
                if name is None or "\r" in name.group():
                    self.crlf(lineno, len(line) + 1)  # "table name 'filter\r' invalid"
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
            if raw is not None and self.chain_line_cr_fatal(raw):
                self.crlf(lineno, len(line) + 1)
            self.declare_chain(line, lineno)
            return
        if raw is not None and not self.crlf_reported and self.rule_line_cr_fatal(raw):
            self.crlf(lineno, len(line) + 1)
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
        parts = _TOKEN.findall(line, 1)
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
        table = builder.name
        for cb in builder.chains.values():
            rules: list[Rule] = []
            chain = cb.name
            for pending in cb.rules:
                bound = pending.bound
                if len(bound.sources) > 1 or len(bound.destinations) > 1:
                    rules.extend(self.materialize(table, chain, pending, len(rules) + 1))
                    continue
                # One rule: its -s and -d are the core options themselves.
                rule_core = bound.rule_core
                if rule_core is None:
                    core = bound.core
                    rule_core = bound.rule_core = (
                        core.get("source") if bound.sources else None,
                        core.get("destination") if bound.destinations else None,
                        core.get("in_interface"), core.get("out_interface"), core.get("protocol"), core.get("fragment"),
                    )
                rules.append(make_rule(
                    table, chain, len(rules) + 1, pending.pos, pending.text, *rule_core,
                    bound.matches, bound.target, bound.counters,
                ))
            chains[chain] = Chain(chain, cb.builtin, cb.policy, tuple(rules), cb.pos, cb.counters)
        self.tables[builder.name] = Table(builder.name, chains, builder.pos)

    # ---- chains -------------------------------------------------------------------------------
    def declare_chain(self, line: str, lineno: int) -> None:
        cur = self.current
        assert cur is not None
        simple = _USER_CHAIN_LINE.fullmatch(line)
        if simple is not None:
            name = simple.group(1)
            if name not in cur.chains and name not in _NOT_PLAIN_CHAIN_NAMES:
                # ':NAME - [p:b]' for a new user chain with an unremarkable name: nothing to report.
                cur.chains[name] = _ChainBuilder(name, False, None, make_source_pos(self.path, lineno, 1))
                return
        parts = _TOKEN.findall(line, 1)
        if not parts:
            self.report("NL001", "a chain line needs a name: ':NAME POLICY [packets:bytes]'", lineno, 2)
            return
        name = parts[0]
        policy = parts[1] if len(parts) > 1 else None
        if not self.valid_chain_name(name, lineno, 2, declared=True):
            return
        counters = None
        if len(parts) > 2:
            m = _COUNTERS.fullmatch(parts[2])
            if m is None:
                # Only 'iptables-restore -c' reads these (and then only for built-in chains).
                self.report("NL002", f"'{parts[2]}' is not a counter pair: iptables-restore ignores it, but"
                            " 'iptables-restore -c' fails. Write [packets:bytes]",
                            lineno, line.index(parts[2]) + 1, "warning")
            else:
                counters = (int(m.group(1)), int(m.group(2)))
        if policy is None:
            self.report("NL001", f"chain '{name}' has no policy: write ':{name} ACCEPT [0:0]' for a built-in"
                        f" chain or ':{name} - [0:0]' for a user chain", lineno, len(line) + 1)
            policy = "-"
        builtin = cur.valid and name in BUILTIN_CHAINS[cur.name]
        existing = cur.chains.get(name)
        pcol = line.find(policy, 1 + len(name)) + 1 or 1  # (no policy written: "-", found nowhere)
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

    def valid_chain_name(self, name: str, lineno: int, column: int, *, declared: bool = False) -> bool:
        """iptables' assert_valid_chain_name(). A ':NAME' line only looks up the targets already
        loaded (the standard verdicts), '-N NAME' loads the extension of that name."""
        size = len(name.encode("utf-8", "surrogateescape"))
        if size > _MAX_CHAIN_NAME:
            self.report("NL002", f"chain name '{name}' is {size} characters long: at most"
                        f" {_MAX_CHAIN_NAME} are allowed", lineno, column)
            return False
        if not name or name[0] in "-!":
            self.report("NL002", f"chain name '{name}' cannot start with '{name[:1]}'", lineno, column)
            return False
        if name in VERDICTS or (not declared and (name in TARGETS or name in KNOWN_TARGET_NAMES)):
            self.report("NL002", f"'{name}' is the name of a target and cannot be a chain name", lineno, column)
            return False
        if any(c.isspace() for c in name if c.isascii()):
            self.report("NL002", f"chain name {name!r} contains whitespace: iptables refuses it ('Invalid chain"
                        " name')", lineno, column)
            return False
        if name in TARGETS or name in KNOWN_TARGET_NAMES:
            self.report("NL002", f"chain '{name}' has the name of a target: '-j {name}' reaches the {name} target,"
                        f" never this chain, and '-N {name}' is refused. Rename the chain", lineno, column, "warning")
        return True

    # ---- rule lines ---------------------------------------------------------------------------
    def rule_line(self, line: str, lineno: int) -> None:
        cur = self.current
        assert cur is not None
        offset = 0
        counters = None
        if line[0] == "[":
            prefix = _rule_counters(line)
            if isinstance(prefix, str):
                self.report("NL001", f"bad counters at the start of the line ({prefix}): write [packets:bytes]",
                            lineno, 1)
                return
            offset, cut, packets, nbytes = prefix
            if cut is not None:
                self.report("NL006", "the counters prefix has no ':' before its ']': iptables-restore cuts this"
                            f" line at column {cut + 1} and loads only what comes before", lineno, cut + 1, "warning")
                line = line[:cut]
            try:
                counters = (parse_uint(packets, 2**64 - 1), parse_uint(nbytes, 2**64 - 1))
            except ValueError:
                self.report("NL002", f"'[{packets}:{nbytes}]' are not counters: iptables-restore ignores them, but"
                            " 'iptables-restore -c' fails. Write [packets:bytes]", lineno, 1, "warning")
        texts, columns = split_texts(line[offset:] if offset else line, newline=self.newline)
        if offset:
            columns = [c + offset for c in columns]
        if not texts:
            self.report("NL001", "this line has no command", lineno, 1)
            return
        if len(texts) > MAX_WORDS:
            self.report("NL001", f"this line has {len(texts)} words: iptables-restore handles at most {MAX_WORDS}"
                        " ('Parser cannot handle more arguments'). Split the rule", lineno, columns[MAX_WORDS] + 1)
            return
        if len(line) >= MAX_WORD_BYTES // 4:
            for text, column in zip(texts, columns, strict=True):
                if len(text) < MAX_WORD_BYTES // 4:
                    continue
                size = len(text.encode("utf-8", "surrogateescape"))
                if size >= MAX_WORD_BYTES:
                    self.report("NL001", f"this word is {size} bytes long: iptables-restore takes words of at most"
                                f" {MAX_WORD_BYTES - 1} ('Parameter too long!')", lineno, column + 1)
                    return
        plan = line_plan(texts, self.family)
        bound: Bound | None
        if plan is not None:
            for i, full in plan.expansions:
                texts[i] = full
            bound = bind_planned(plan, texts, columns, self.family)
        else:
            bound = self.bind_line(texts, columns, line, lineno)
            if bound is None:
                return
        if bound.problems:
            for problem in bound.problems:
                col = columns[problem.word] + 1 if problem.word is not None and problem.word < len(columns) else 1
                self.report(problem.code, problem.message, lineno, col, problem.severity)
            if not bound.ok:
                return
        if bound.skipped:
            return
        if counters is not None and bound.counters is None:
            bound.counters = counters
        if bound.command == "append":
            # The common case, when it has nothing to report: the chain exists, and the rule does
            # not jump to a built-in chain.
            chain = cur.chains.get(bound.command_args[0])
            target = bound.target
            if chain is not None and (
                target is None or target.kind != "chain" or not (
                    (called := cur.chains.get(target.name)) is not None and called.builtin
                )
            ):
                chain.rules.append(_PendingRule(bound, make_source_pos(self.path, lineno, 1), line))
                return
        self.apply(bound, SourcePos(self.path, lineno, 1), line, columns, lineno)

    def bind_line(self, texts: list[str], columns: list[int], line: str, lineno: int) -> Bound | None:
        """Bind a line that has no plan (one with a problem): None when it does not parse."""
        if not self.expand_abbreviations(texts, columns, lineno):
            return None
        skip_at: int | None = None
        try:
            items = parse_words(texts)
        except LineSyntaxError as exc:
            skipped = self.skipped_prefix(texts, exc.word)
            repaired = self.repair_negation(texts) if skipped is None else None
            if skipped is not None:
                skip_at, items = skipped
            elif repaired is not None:
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
                return None
        return bind(items, texts, columns, self.family, skip_at=skip_at)

    def skipped_prefix(self, texts: list[str], error_at: int | None) -> tuple[int, tuple[Item, ...]] | None:
        """A line that does not parse may still be skipped whole by iptables-restore: getopt stops
        at the other family's flag (``-6`` in iptables), so an error after it never happens.
        Returns the flag's word index and the items before it."""
        flags = ("-6", "--ipv6") if self.family == 4 else ("-4", "--ipv4")
        for j, word in enumerate(texts):
            if word not in flags or (error_at is not None and j > error_at):
                continue
            try:
                return j, parse_words(texts[:j])
            except LineSyntaxError as exc:
                if exc.word is not None:
                    return None  # an error before the flag: iptables-restore meets it first
                # the prefix ends inside an option: this word is that option's argument
        return None

    def rule_line_cr_fatal(self, raw: str) -> bool:
        """Whether iptables-restore fails on this rule line because of its trailing CR.

        It keeps the CR in the line's last word. That is harmless only in a free-text value
        (a comment, a log prefix, an interface name); a CR alone (after a space or a closing
        quote), in an option name, a number, a chain or a target name makes the line fail.
        """
        words = split_words(raw[raw.find("]") + 1:] if raw[0] == "[" else raw)
        if not words or words[-1].text.strip("\r") == "":
            return True
        texts = [w.text for w in words]
        try:
            items = parse_words(texts)
        except LineSyntaxError:
            return True
        last = len(texts) - 1
        owner = next((it for it in items if last in it.args), None)
        if owner is None or owner.name not in _CR_TOLERANT:
            return True
        bound = bind(items, texts, [w.column for w in words], self.family)
        return not bound.ok

    def chain_line_cr_fatal(self, raw: str) -> bool:
        cur = self.current
        parts = _TOKEN.findall(raw, 1)
        if not parts or "\r" in parts[0]:
            return True  # "Invalid chain name"
        builtin = cur is not None and cur.valid and parts[0] in BUILTIN_CHAINS[cur.name]
        return builtin and len(parts) > 1 and "\r" in parts[1]  # "Bad policy name"

    def expand_abbreviations(self, texts: list[str], columns: list[int], lineno: int) -> bool:
        """Expand getopt unique-prefix abbreviations (``--dp`` -> ``--dport``) in place; False
        (reported) when one is ambiguous."""
        expansions, ambiguous = expand_abbreviations(texts)
        for i, full in expansions:
            texts[i] = full
        if ambiguous is not None:
            i, found = ambiguous
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
        pending = _PendingRule(bound, pos, line)
        target = bound.target
        if cmd in ("append", "insert", "replace") and target is not None and target.kind == "chain":
            called = cur.chains.get(target.name)
            if called is not None and called.builtin:
                how = "-g" if target.goto else "-j"
                self.report("NL003", f"'{how} {target.name}' jumps to a built-in chain: only user chains can be"
                            " jumped to (the kernel refuses: 'Operation not supported')", lineno, target.column + 1)
                return
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
        elif cmd in ("delete", "replace", "check"):
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
            for i, existing_rule in enumerate(chain.rules):
                if _spec_key(existing_rule.bound) == key:
                    if cmd == "delete":
                        del chain.rules[i]
                    return
            what = "deletes nothing" if cmd == "delete" else "finds nothing"
            self.report("NL002", f"'{words_of(line, columns, bound.command_at)}' {what}: no rule in '{args[0]}'"
                        " has this specification here (iptables-restore fails: 'Bad rule')", lineno, col)
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
                    continue
                users = [c.name for c in cur.chains.values() for r in c.rules
                         if c.name != name and r.bound.target is not None and r.bound.target.name == name]
                if users or (args and existing.rules):
                    why = (f"rules in {', '.join(sorted(set(users)))} still jump to it" if users
                           else f"it still has {len(existing.rules)} rule(s): flush it first with '-F {name}'")
                    self.report("NL003", f"'-X {name}' fails: {why} (the kernel answers 'Device or resource"
                                " busy')", lineno, argcol)
                    continue
                del cur.chains[name]
        elif cmd == "flush":
            missing = [a for a in args if a not in cur.chains]
            if missing:
                self.report("NL003", f"'-F {missing[0]}': chain '{missing[0]}' does not exist in table"
                            f" '{cur.name}' (iptables-restore fails here)", lineno, argcol)
                return
            targets = [cur.chains[a] for a in args] if args else list(cur.chains.values())
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
            elif new in cur.chains:
                self.report("NL003", f"'-E {old} {new}': chain '{new}' already exists", lineno, argcol)
            elif self.valid_chain_name(new, lineno, argcol):
                if chain.pos is not None:
                    # Measured on iptables-nft 1.8.9: CHAIN_RENAME of a chain created in the same
                    # transaction fails, and later lines cannot use the new name; legacy renames.
                    self.report("NL003", f"'-E {old} {new}' renames a chain this file creates: iptables-nft-restore"
                                " fails on it (CHAIN_RENAME failed), only the legacy backend renames."
                                f" Declare ':{new} - [0:0]' directly", lineno, argcol, "warning")
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
            self.report("NL006", f"'{line.split()[0]}' has no effect in an iptables-restore file", lineno, col,
                        "warning")

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


def words_of(line: str, columns: list[int], at: int) -> str:
    """The command word and its first argument, as written (for messages)."""
    parts = line[columns[at]:].split(None, 2)
    return " ".join(parts[:2])


def _spec_key(bound: Bound) -> tuple[object, ...]:
    return (
        tuple(sorted((k, v.values, v.invert) for k, v in bound.core.items())),
        bound.sources, bound.destinations,
        tuple((m.name, tuple((o.name, o.values, o.invert) for o in m.options)) for m in bound.matches),
        (bound.target.name, tuple((o.name, o.values) for o in bound.target.options)) if bound.target else None,
    )


_V6_HINT = re.compile(
    r"(?m)^\S.* (?:-[sd]|--to-destination|--to-source) \[?[0-9A-Fa-f]*:[0-9A-Fa-f:.]*[\]/ ]|ipv6-icmp|icmp6|icmpv6"
)


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
    line_bytes: list[int] | None = None
    if isinstance(source, bytes):
        text = source.decode("utf-8", "replace")
        if len(source) > MAX_LINE_BYTES and not source.isascii():
            line_bytes = list(map(len, source.split(b"\n")))
    else:
        text = source
    bom = text.startswith("\ufeff")
    if bom:
        text = text[1:]
        if line_bytes:
            line_bytes[0] -= 3
    fam: Family = family if family is not None else detect_family(text, path)
    lines = text.split("\n")
    ends_with_newline = bool(lines) and lines[-1] == ""
    if ends_with_newline:
        lines.pop()
    if line_bytes is not None and len(line_bytes) != len(lines):
        line_bytes = line_bytes[: len(lines)]
    if line_bytes is not None:
        short = max(line_bytes, default=0) <= MAX_LINE_BYTES
    else:
        short = max(map(len, lines), default=0) <= MAX_LINE_BYTES // 4
    plain = short and "\r" not in text and "\x00" not in text
    reader = _Reader(
        path, fam, lines, bom=bom, line_bytes=line_bytes, ends_with_newline=ends_with_newline, plain=plain
    )
    enabled = gc.isenabled()
    gc.disable()  # the collector is half of the parse time on large dumps (measured)
    try:
        reader.run()
        reader.findings.sort(key=Finding.sort_key)
        return Ruleset(path, fam, reader.tables, tuple(reader.findings), tuple(lines))
    finally:
        if enabled:
            if not gc.get_freeze_count():
                # Everything allocated meanwhile is the model, long-lived data: hand it to the
                # oldest generation at once (freeze + unfreeze), or the first young collection
                # after this call walks all of it (0.3 s for 90k rules).
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def _rule_counters(line: str) -> tuple[int, int | None, str, str] | str:
    """The ``[packets:bytes]`` prefix of a rule line, read with iptables-restore's strtok() calls.

    Returns (where the command starts, where iptables-restore cuts the line or None, packets,
    bytes), or why iptables-restore fails ("need ]"). It does not check the numbers (only
    ``iptables-restore -c`` does), and a ':' found only after the ']' ends the line there: strtok
    writes a NUL over it.
    """
    end = line.find("]")
    if end < 0:
        return "need ]"
    text = line + "\n"  # fgets() keeps the newline, and strtok sees it
    i = 1
    while i < len(text) and text[i] == ":":
        i += 1
    if i >= len(text):
        return "need :"
    colon = text.find(":", i)
    if colon < 0:
        return "need ]"  # the packets field runs to the end of the line: nothing is left for bytes
    packets = text[i:colon]
    k = colon + 1
    while k < len(text) and text[k] == "]":
        k += 1
    if k >= len(text):
        return "need ]"
    close = text.find("]", k)
    nbytes = text[k:close] if close >= 0 else text[k:].rstrip("\n")
    cuts = [pos for pos in (colon, close) if pos > end and pos < len(line)]
    return end + 1, (min(cuts) if cuts else None), packets, nbytes
