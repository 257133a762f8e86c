"""NL101-NL105: what the chain graph says about a ruleset's structure.

Undefined chains, unreferenced chains, reachable loops, targets and options used where the
kernel refuses them (checked through every hook that reaches a user chain), and nesting
deeper than nf_tables allows.
"""

from __future__ import annotations

from collections.abc import Iterator

from natlint.checks.context import CheckContext
from natlint.checks.tools import generated_by
from natlint.extensions.spec import ParseContext
from natlint.extensions.targets_core import kernel_problems
from natlint.findings import Finding, Related, Severity
from natlint.graph.chains import NFT_MAX_USER_DEPTH, ChainGraph, build_graphs
from natlint.model.ruleset import Rule

__all__ = ["check", "TARGET_CONTEXT"]

# target -> (tables, allowed hooks or None for any); research 3.7, verified in the kernel.
TARGET_CONTEXT: dict[str, tuple[frozenset[str], frozenset[str] | None]] = {
    "DNAT": (frozenset({"nat"}), frozenset({"PREROUTING", "OUTPUT"})),
    "REDIRECT": (frozenset({"nat"}), frozenset({"PREROUTING", "OUTPUT"})),
    "SNAT": (frozenset({"nat"}), frozenset({"POSTROUTING", "INPUT"})),
    "MASQUERADE": (frozenset({"nat"}), frozenset({"POSTROUTING"})),
    "NETMAP": (frozenset({"nat"}), None),
    "REJECT": (frozenset({"filter"}), frozenset({"INPUT", "FORWARD", "OUTPUT"})),
    "CT": (frozenset({"raw"}), None),
    "NOTRACK": (frozenset({"raw"}), None),
    "TPROXY": (frozenset({"mangle"}), frozenset({"PREROUTING"})),
    "DSCP": (frozenset({"mangle"}), None),
    "TOS": (frozenset({"mangle"}), None),
    "TTL": (frozenset({"mangle"}), None),
    "HL": (frozenset({"mangle"}), None),
    "ECN": (frozenset({"mangle"}), None),
    "SECMARK": (frozenset({"mangle", "security"}), None),
    "CONNSECMARK": (frozenset({"mangle", "security"}), None),
    "TCPMSS": (frozenset({"mangle", "filter"}), frozenset({"FORWARD", "OUTPUT", "POSTROUTING"})),
    "CLASSIFY": (frozenset({"mangle"}), frozenset({"FORWARD", "OUTPUT", "POSTROUTING"})),
}
# Matches and options restricted to some hooks: (module, option or None) -> allowed hooks.
MATCH_CONTEXT: dict[tuple[str, str | None], frozenset[str]] = {
    ("owner", None): frozenset({"OUTPUT", "POSTROUTING"}),
    ("mac", None): frozenset({"PREROUTING", "INPUT", "FORWARD"}),
    ("addrtype", "limit_iface_in"): frozenset({"PREROUTING", "INPUT", "FORWARD"}),
    ("addrtype", "limit_iface_out"): frozenset({"OUTPUT", "POSTROUTING", "FORWARD"}),
}
# Empty chains that tools create on purpose, as markers nothing jumps to (kube-proxy and the
# kubelet probe them to detect a firewall flush; KUBE-IPTABLES-HINT tells the backend).
_MARKER_CHAINS = frozenset({"KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY", "KUBE-PROXY-CANARY"})
_NO_OUT = frozenset({"PREROUTING", "INPUT"})
_NO_IN = frozenset({"OUTPUT", "POSTROUTING"})


def _finding(code: str, message: str, rule: Rule, column: int | None = None, severity: Severity = "error",
             related: tuple[Related, ...] = ()) -> Finding:
    return Finding(code, severity, message, rule.pos.path, rule.pos.line, column or rule.pos.column,
                   rule.table, rule.chain, related, source_line=rule.text)


def check(ctx: CheckContext) -> Iterator[Finding]:
    ruleset = ctx.ruleset
    for graph in build_graphs(ruleset).values():
        yield from _undefined(graph)
        yield from _unreferenced(graph, ruleset.path)
        yield from _loops(graph, ruleset.path)
        yield from _context(graph, ruleset.family)
        yield from _depth(graph, ruleset.path)


def _undefined(graph: ChainGraph) -> Iterator[Finding]:
    for rule in graph.undefined_targets():
        assert rule.target is not None
        name = rule.target.name
        how = "-g" if rule.target.goto else "-j"
        yield _finding(
            "NL101",
            f"'{how} {name}' jumps to a chain that is not declared in table '{rule.table}': loading fails"
            f" with \"Chain '{name}' does not exist\" and the whole table is rejected (iptables-restore"
            f" --test on nf_tables does not notice). Declare ':{name} - [0:0]' or fix the name",
            rule, rule.target.column + 1,
        )


def _unreferenced(graph: ChainGraph, path: str) -> Iterator[Finding]:
    for name in graph.unreferenced():
        if name in _MARKER_CHAINS:
            continue
        chain = graph.table.chains[name]
        pos = chain.pos
        line = pos.line if pos else (chain.rules[0].pos.line if chain.rules else 1)
        what = f"its {len(chain.rules)} rule(s) never see a packet" if chain.rules else "it is empty"
        tool = generated_by(name)
        if tool is not None:  # the tool creates it and jumps to it when a feature needs it
            yield Finding(
                "NL102", "info",
                f"chain '{name}' is never jumped to from any chain of table '{graph.table.name}': {what}. It is"
                f" {tool}'s: nothing to fix by hand, reported for information",
                path, line, 1, graph.table.name, name,
            )
            continue
        yield Finding(
            "NL102", "warning" if chain.rules else "info",
            f"chain '{name}' is never jumped to from any chain of table '{graph.table.name}': {what}."
            f" Add a jump from the chain that should use it (e.g. '-A INPUT -j {name}') or delete the chain",
            path, line, 1, graph.table.name, name,
        )


def _loops(graph: ChainGraph, path: str) -> Iterator[Finding]:
    for cycle in graph.reachable_cycles():
        members = set(cycle)
        edges = [(s, d, r) for s, d, r in graph.edges() if s in members and d in members]
        first = min(edges, key=lambda e: e[2].pos.line)[2]
        related = tuple(Related(r.pos.path, r.pos.line, f"{s} jumps to {d}") for s, d, r in edges if r is not first)
        yield _finding(
            "NL103",
            f"chains {' -> '.join(cycle)} jump to each other in a loop that a built-in chain reaches: the kernel"
            " refuses the table ('Too many links'). Break the loop",
            first, None, "error", related,
        )


def _context(graph: ChainGraph, family: int) -> Iterator[Finding]:
    table = graph.table.name
    hooks = graph.hooks
    for chain in graph.table:
        chain_hooks = hooks.get(chain.name, frozenset())
        for rule in chain.rules:
            yield from _target_context(rule, table, chain.name, chain_hooks, family)
            yield from _interface_context(rule, chain.name, chain_hooks)
            yield from _match_context(rule, chain_hooks)


def _target_context(
    rule: Rule, table: str, chain: str, chain_hooks: frozenset[str], family: int
) -> Iterator[Finding]:
    target = rule.target
    if target is None:
        return
    col = target.column + 1
    if table == "nat" and target.name == "DROP":
        yield _finding("NL104", "the nat table cannot drop packets ('-j DROP' is refused: \"The nat table is"
                       " not intended for filtering\"). Drop in the filter table (or raw/mangle)", rule, col)
        return
    context = TARGET_CONTEXT.get(target.name)
    if context is None:
        return
    tables, allowed = context
    if table not in tables:
        where = " or ".join(sorted(tables))
        yield _finding("NL104", f"{target.name} is only valid in the {where} table, not in {table}: the kernel"
                       " refuses this rule and the whole table with it", rule, col)
        return
    if allowed is not None:
        bad = sorted(chain_hooks - allowed)
        if bad:
            via = "" if chain in bad else f" (chain {chain} is reached from {', '.join(bad)})"
            yield _finding("NL104", f"{target.name} is only valid in {', '.join(sorted(allowed))}, not in"
                           f" {', '.join(bad)}{via}: the kernel refuses this rule and the whole table with it",
                           rule, col)
    proto = rule.protocol
    ctx = ParseContext(
        family, str(proto.value) if proto is not None else None, proto.invert if proto is not None else False
    )
    for problem in kernel_problems(target.name, {o.name: o for o in target.options}, ctx):
        yield _finding("NL104", problem, rule, col)


def _interface_context(rule: Rule, chain: str, chain_hooks: frozenset[str]) -> Iterator[Finding]:
    for opt, forbidden, flag, word in (
        (rule.out_interface, _NO_OUT, "-o", "output"),
        (rule.in_interface, _NO_IN, "-i", "input"),
    ):
        if opt is None:
            continue
        if chain in forbidden:
            yield _finding("NL104", f"'{flag}' cannot be used in {chain}: packets there have no {word} interface"
                           f" yet (iptables refuses: \"Can't use {flag} with {chain}\")", rule, opt.column + 1)
        elif chain_hooks and chain_hooks <= forbidden:
            never = "always matches" if opt.invert else "never matches"
            yield _finding("NL104", f"'{flag}' in chain {chain}, which only runs from {', '.join(sorted(chain_hooks))}"
                           f" where packets have no {word} interface: this test {never}", rule, opt.column + 1,
                           "warning")


def _match_context(rule: Rule, chain_hooks: frozenset[str]) -> Iterator[Finding]:
    if not chain_hooks:
        return
    for match in rule.matches:
        for (module, option), allowed in MATCH_CONTEXT.items():
            if match.name != module or (option is not None and match.option(option) is None):
                continue
            bad = sorted(chain_hooks - allowed)
            if bad:
                what = f"-m {module}" + (f" --{option.replace('_', '-')}" if option else "")
                yield _finding("NL104", f"'{what}' is only valid in {', '.join(sorted(allowed))}, not in"
                               f" {', '.join(bad)}: the kernel refuses this rule", rule, match.column + 1)


def _depth(graph: ChainGraph, path: str) -> Iterator[Finding]:
    depth, route = graph.max_depth()
    if depth > NFT_MAX_USER_DEPTH:
        deepest = graph.table.chains.get(route[-1])
        line = deepest.pos.line if deepest is not None and deepest.pos else 1
        yield Finding(
            "NL105", "error",
            f"{depth} user chains are nested below {route[0]} ({' -> '.join(route[:4])} ... {route[-1]}):"
            f" nf_tables allows at most {NFT_MAX_USER_DEPTH} and refuses the table ('Too many links')",
            path, line, 1, graph.table.name, route[-1],
        )
