"""Findings: what natlint reports, and the registry of codes (a public contract).

Codes are never renumbered or reused. Every code carries the documentation that
``natlint rule CODE`` prints: what it finds, why it matters, a failing and a fixed example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Severity", "Code", "Related", "Finding", "CODES", "register", "code", "SEVERITY_RANK"]

Severity = Literal["error", "warning", "info"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2}


@dataclass(frozen=True, slots=True)
class Code:
    """A finding code and its documentation."""

    code: str
    name: str
    severity: Severity
    summary: str
    why: str = ""
    example: str = ""
    fixed: str = ""


CODES: dict[str, Code] = {}


def register(entry: Code) -> Code:
    if entry.code in CODES and CODES[entry.code] != entry:
        raise ValueError(f"finding code {entry.code} registered twice")
    CODES[entry.code] = entry
    return entry


def code(identifier: str) -> Code:
    return CODES[identifier]


@dataclass(frozen=True, slots=True)
class Related:
    """Another place that explains a finding (a shadowing rule, the DNAT it concerns...)."""

    path: str
    line: int
    message: str
    column: int = 1


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    severity: Severity
    message: str
    path: str
    line: int
    column: int = 1
    table: str | None = None
    chain: str | None = None
    related: tuple[Related, ...] = ()
    witness: dict[str, object] | None = None
    certainty: Literal["exact", "approximate"] = "exact"
    source_line: str | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        entry = CODES.get(self.code)
        return entry.name if entry else ""

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.path, self.line, self.column, self.code)

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "code": self.code,
            "name": self.name,
            "severity": self.severity,
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "table": self.table,
            "chain": self.chain,
            "message": self.message,
            "related": [{"path": r.path, "line": r.line, "message": r.message} for r in self.related],
            "certainty": self.certainty,
        }
        if self.witness is not None:
            data["witness"] = self.witness
        return data


# ---- syntax and structure (NL0xx) ----------------------------------------------------------
register(Code(
    "NL001", "invalid-syntax", "error",
    "A line iptables-restore cannot parse: an unknown option, a missing argument, a stray word.",
    why="iptables-restore rejects the whole table (often the whole file) at the first such line,"
    " so none of the rules in it are loaded: the host keeps its old firewall or has none.",
    example="*filter\n-A INPUT -p tcp --dport -j ACCEPT\nCOMMIT",
    fixed="*filter\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT",
))
register(Code(
    "NL002", "invalid-value", "error",
    "An option has a value iptables rejects: a bad address, port, MAC, protocol or state.",
    why="iptables-restore stops at the line and loads nothing of its table.",
    example="*filter\n-A INPUT -s 10.0.0.300 -j DROP\nCOMMIT",
    fixed="*filter\n-A INPUT -s 10.0.0.30 -j DROP\nCOMMIT",
))
register(Code(
    "NL003", "invalid-structure", "error",
    "The file's structure is wrong: a rule outside a table, a missing COMMIT, an unknown table,"
    " a chain declared twice, a rule for an undeclared chain, CRLF line ends.",
    why="iptables-restore refuses such a file (or silently skips part of it).",
    example="*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT",
    fixed="*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT",
))
register(Code(
    "NL004", "unknown-extension", "info",
    "A match module or target natlint does not model; it is kept and treated as unknown.",
    why="natlint cannot tell which packets the rule matches, so findings that depend on it are"
    " approximate. It may also be a typo that iptables-restore will reject.",
    example="*filter\n-A INPUT -m geoip --src-cc CN -j DROP\nCOMMIT",
    fixed="(nothing to fix if the module is installed on the host)",
))
register(Code(
    "NL005", "unused-suppression", "warning",
    "A natlint suppression (# natlint: ignore[...], file-ignore[...], or a 'natlint: ignore[...]' rule"
    " comment) that suppresses nothing, or a natlint comment that is not a suppression natlint understands.",
    why="A stale suppression stays silent until the line changes again, and then hides the next real"
    " finding there without anyone noticing. A misspelt one suppresses nothing. (A warning, so the default"
    " --fail-on error does not break a build over it; --fail-on warning makes it one.)",
    example="*filter\n:INPUT DROP [0:0]\n# natlint: ignore[NL102] the rule below was fixed since\n"
    "-A INPUT -i lo -j ACCEPT\nCOMMIT",
    fixed="*filter\n:INPUT DROP [0:0]\n-A INPUT -i lo -j ACCEPT\nCOMMIT",
))
register(Code(
    "NL006", "ignored-line", "warning",
    "A line iptables-restore skips without an error, so it does not do what it says.",
    why="A rule with -6 in an iptables (IPv4) file, or -4 in an ip6tables file, is silently"
    " dropped by iptables-restore: the rule you wrote is not loaded.",
    example="*filter\n-A INPUT -6 -p tcp --dport 22 -j ACCEPT\nCOMMIT",
    fixed="# put the rule in the ip6tables file instead",
))

register(Code(
    "NL007", "analysis-incomplete", "warning",
    "A semantic check stopped at its budget (the packet classes split too much) and reported nothing.",
    why="The findings that check would give are missing for this file: a clean report does not mean"
    " the file is clean.",
    example="(a ruleset whose packet classes split beyond the budget)",
    fixed="(give a host model with --host, or check the tables separately)",
))


# ---- the chain graph (NL1xx) ----------------------------------------------------------------
register(Code(
    "NL101", "undefined-chain", "error",
    "A jump, goto or rule names a chain that is not declared in its table.",
    why="`iptables-restore --test` on nf_tables accepts this, but loading the file fails with"
    " \"Chain 'X' does not exist\" and the whole table is rejected.",
    example="*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j LOGDROP\nCOMMIT",
    fixed="*filter\n:INPUT ACCEPT [0:0]\n:LOGDROP - [0:0]\n-A INPUT -j LOGDROP\n-A LOGDROP -j DROP\nCOMMIT",
))
register(Code(
    "NL102", "unreferenced-chain", "warning",
    "A user chain that no rule jumps to: its rules never see a packet.",
    why="Usually a forgotten jump after a rename or a half-applied change; the rules in it"
    " protect nothing.",
    example="*filter\n:INPUT ACCEPT [0:0]\n:SSH - [0:0]\n-A SSH -p tcp --dport 22 -j ACCEPT\nCOMMIT",
    fixed="*filter\n:INPUT ACCEPT [0:0]\n:SSH - [0:0]\n-A INPUT -j SSH\n-A SSH -p tcp --dport 22 -j ACCEPT\nCOMMIT",
))
register(Code(
    "NL103", "chain-loop", "error",
    "Chains jump to each other in a cycle that a built-in chain reaches.",
    why="The kernel refuses to load a ruleset with a reachable loop (nf_tables: 'Too many"
    " links', legacy: 'line N failed'): the whole table is rejected.",
    example="*filter\n:INPUT ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\n-A INPUT -j A\n-A A -j B\n-A B -j A\nCOMMIT",
    fixed="*filter\n:INPUT ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\n-A INPUT -j A\n-A A -j B\n-A B -j RETURN\nCOMMIT",
))
register(Code(
    "NL104", "invalid-in-context", "error",
    "A target or option used where the kernel does not allow it: DNAT outside nat"
    " PREROUTING/OUTPUT, MASQUERADE outside POSTROUTING, REJECT outside filter, -o in INPUT...",
    why="The kernel rejects the rule when the table is loaded (nft --test does not notice), or,"
    " for -o/-i in a user chain reached from the wrong hook, the rule can never match.",
    example="*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p tcp --dport 80 -j DNAT --to-destination 10.0.0.2\nCOMMIT",
    fixed="*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp --dport 80 -j DNAT --to-destination 10.0.0.2\nCOMMIT",
))
register(Code(
    "NL105", "chain-too-deep", "error",
    "More than 15 user chains nested below a built-in chain.",
    why="nf_tables (the default iptables backend) refuses jump chains deeper than 16 levels"
    " ('Too many links'), so the table does not load.",
    example="(a built-in chain jumping through 16 user chains in a row)",
    fixed="Flatten the chain structure so that at most 15 user chains are nested.",
))
