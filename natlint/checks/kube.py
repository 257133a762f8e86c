"""NL404-NL405: kube-proxy's iptables layout, and dumps that show only part of the rules.

* NL404: kube-proxy (iptables mode) integrity: the KUBE-NODEPORTS jump not last in
  KUBE-SERVICES, the masquerade mark set by KUBE-MARK-MASQ not the one KUBE-POSTROUTING /
  KUBE-FORWARD test, jumps to KUBE-SVC/SEP/EXT/FW/SVL chains that are empty or a service chain
  with no endpoint left, KUBE-SERVICES / KUBE-POSTROUTING / KUBE-FORWARD without their jumps.
  Research "docker-and-kube-proxy-rules" section 2 has the layout (1.25+; older markers too).
* NL405: iptables-nft says legacy tables exist, or a table holds nft rules it cannot print:
  the dump is not the whole ruleset the kernel runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from natlint.checks.context import CheckContext
from natlint.checks.docker import group_finding, mixed_backend_lines, related, rule_finding, tool
from natlint.findings import Code, Finding, Related, register
from natlint.graph.chains import ChainGraph, build_graphs
from natlint.model.ruleset import Rule, Ruleset
from natlint.model.values import MarkMask

__all__ = ["check"]

register(Code(
    "NL404", "kube-proxy-integrity", "warning",
    "kube-proxy's rules are inconsistent: a rule after the KUBE-NODEPORTS jump in KUBE-SERVICES, a"
    " masquerade mark that KUBE-POSTROUTING or KUBE-FORWARD does not test, a jump to an empty"
    " KUBE-SVC/KUBE-SEP/KUBE-EXT/KUBE-FW chain or a service chain without endpoints, KUBE-SERVICES"
    " not jumped to from PREROUTING/OUTPUT.",
    why="kube-proxy writes KUBE-SERVICES with the NodePort jump last and tests the same mark bit"
    " (--iptables-masquerade-bit, 0x4000 by default) everywhere. A rule someone appended, two components"
    " configured with different bits, or a partial restore breaks Service traffic: connections are not"
    " masqueraded (replies go astray), NodePorts capture traffic meant for later rules, a ClusterIP"
    " black-holes. kube-proxy repairs its own chains at its next full sync; a restore from a stale file"
    " or a hand edit does not.",
    example="*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
    ":KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n"
    "-A POSTROUTING -j KUBE-POSTROUTING\n-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n"
    "-A KUBE-POSTROUTING -m mark ! --mark 0x8000/0x8000 -j RETURN\n"
    "-A KUBE-POSTROUTING -j MARK --set-xmark 0x8000/0x0\n-A KUBE-POSTROUTING -j MASQUERADE\nCOMMIT",
    fixed="*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
    ":KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n"
    "-A POSTROUTING -j KUBE-POSTROUTING\n-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n"
    "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n"
    "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n-A KUBE-POSTROUTING -j MASQUERADE\nCOMMIT",
))
register(Code(
    "NL405", "mixed-backends", "warning",
    "The dump says part of the ruleset is not in it: iptables-nft found iptables-legacy tables"
    " ('# Warning: iptables-legacy tables present') or a table with nft rules it cannot print"
    " ('# Table `x' is incompatible, use 'nft' tool.').",
    why="The kernel runs the rules of both backends (and every nft table), but this file shows only one"
    " view: what natlint (or anyone) concludes from it may be wrong. Typical cause: Docker, kube-proxy or a"
    " firewall script using iptables-legacy while the rest uses iptables-nft, or rules added with 'nft'.",
    example="# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n"
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT",
    fixed="(check iptables-legacy-save as well, and move every tool to one backend: update-alternatives"
    " --set iptables /usr/sbin/iptables-nft, then flush the legacy tables)",
))

_INCOMPATIBLE = re.compile(r"# Table `([^']*)' is incompatible")
# kube-proxy's per-service chains; a jump to one that is empty does nothing.
_SERVICE_PREFIXES = ("KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SVL-", "KUBE-XLB-")
# Chains that must be reached from these hooks: (table, chain, hooks).
_STATIC_JUMPS = (
    ("nat", "KUBE-SERVICES", ("PREROUTING", "OUTPUT"), '-m comment --comment "kubernetes service portals"'),
    ("nat", "KUBE-POSTROUTING", ("POSTROUTING",), '-m comment --comment "kubernetes postrouting rules"'),
    ("filter", "KUBE-FORWARD", ("FORWARD",), '-m comment --comment "kubernetes forwarding rules"'),
)


def check(ctx: CheckContext) -> Iterator[Finding]:
    ruleset = ctx.ruleset
    yield from _mixed_backends(ruleset)
    nat = ruleset.table("nat")
    if nat is None or not any(n in nat.chains for n in ("KUBE-SERVICES", "KUBE-MARK-MASQ", "KUBE-POSTROUTING")):
        return
    graphs = build_graphs(ruleset)
    yield from _nodeports_tail(ruleset, graphs["nat"])
    yield from _masquerade_mark(ruleset)
    yield from _dangling(ruleset, graphs["nat"])
    yield from _static_jumps(ruleset, graphs)


# ---- NL405 ----------------------------------------------------------------------------------

def _mixed_backends(ruleset: Ruleset) -> Iterator[Finding]:
    v6 = ruleset.family == 6
    legacy_save = "ip6tables-legacy-save" if v6 else "iptables-legacy-save"
    for line, text in mixed_backend_lines(ruleset):
        incompatible = _INCOMPATIBLE.match(text)
        if incompatible:
            table = incompatible.group(1)
            message = (f"table '{table}' holds nft rules that iptables-nft cannot show, so none of its rules are in"
                       f" this dump (and natlint cannot check them), yet the kernel runs them. See them with 'nft list"
                       f" table {'ip6' if v6 else 'ip'} {table}'; keep rules of this table in one tool (either only"
                       " iptables or only nft)")
        else:
            table = None
            message = ("iptables-legacy tables are loaded too: the kernel runs their rules as well as the ones in this"
                       f" dump, which shows only the nf_tables backend. Dump them with '{legacy_save}' and check that"
                       " file too; then move every tool (Docker, kube-proxy, the firewall) to one backend"
                       " ('update-alternatives --config iptables') and flush the other")
        yield Finding("NL405", "warning", message, ruleset.path, line, 1, table, None, source_line=text)


# ---- NL404 ----------------------------------------------------------------------------------

def _nodeports_tail(ruleset: Ruleset, graph: ChainGraph) -> Iterator[Finding]:
    table = graph.table
    services = table.chains.get("KUBE-SERVICES")
    nodeports = table.chains.get("KUBE-NODEPORTS")
    if services is None:
        return
    rules = services.rules
    tail = next((i for i, r in enumerate(rules) if _target(r) == "KUBE-NODEPORTS"), None)
    if tail is not None:
        after = [r for r in rules[tail + 1:] if _target(r) != "KUBE-NODEPORTS"]
        if after:
            yield rule_finding(
                "NL404",
                "this rule comes after the KUBE-NODEPORTS jump in KUBE-SERVICES, which kube-proxy always writes last"
                " ('NOTE: this must be the last rule in this chain'): kube-proxy did not write it (a hand edit or a"
                " stale restore), and for local destinations the NodePort rules decide first. Move it into its own"
                " chain jumped to from PREROUTING/OUTPUT, or let kube-proxy rewrite KUBE-SERVICES (restart it)",
                after[0], (*related(after[1:], "another rule after the KUBE-NODEPORTS jump"),
                           Related(rules[tail].pos.path, rules[tail].pos.line, "the KUBE-NODEPORTS jump")))
    elif nodeports is not None and nodeports.rules:
        cmd = tool(ruleset)
        yield group_finding(
            "NL404",
            "nat KUBE-NODEPORTS holds NodePort rules but KUBE-SERVICES does not jump to it: no NodePort of this"
            f" node is DNATed. Restore kube-proxy's last rule: '{cmd} -t nat -A KUBE-SERVICES -m addrtype --dst-type"
            " LOCAL -j KUBE-NODEPORTS' (or restart kube-proxy)",
            nodeports.rules, "another NodePort rule that never runs")


def _target(rule: Rule) -> str | None:
    return rule.target.name if rule.target is not None else None


def _mark_value(rule: Rule, option: str) -> MarkMask | None:
    target = rule.target
    opt = target.option(option) if target is not None else None
    return opt.value if opt is not None and isinstance(opt.value, MarkMask) else None


def _set_bits(rule: Rule) -> int:
    """The mark bits a MARK rule forces to 1."""
    xmark = _mark_value(rule, "set_xmark")
    if xmark is not None:
        return xmark.value & xmark.mask
    for name in ("or_mark", "set_mark"):
        value = _mark_value(rule, name)
        if value is not None:
            return value.value
    return 0


def _masquerade_mark(ruleset: Ruleset) -> Iterator[Finding]:
    nat = ruleset.table("nat")
    assert nat is not None
    chain = nat.chains.get("KUBE-MARK-MASQ")
    if chain is None:
        return
    setters = [r for r in chain.rules if _target(r) == "MARK"]
    bits = 0
    for rule in setters:
        bits |= _set_bits(rule)
    checked = [r for name in ("KUBE-POSTROUTING",) for r in (nat.chains[name].rules if name in nat.chains else ())]
    filt = ruleset.table("filter")
    if filt is not None and "KUBE-FORWARD" in filt.chains:
        checked += list(filt.chains["KUBE-FORWARD"].rules)
    if not setters or not bits:
        users = [r for r in checked if _mark_test(r) is not None]
        if users:
            yield group_finding(
                "NL404",
                "KUBE-MARK-MASQ sets no mark, but this rule tests kube-proxy's masquerade mark: Service traffic that"
                " needs SNAT is never masqueraded (replies bypass the node and the connection fails). Restore"
                f" '{tool(ruleset)} -t nat -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000' (or restart kube-proxy)",
                users, "another rule testing the masquerade mark")
        return
    anchor = Related(setters[0].pos.path, setters[0].pos.line, f"KUBE-MARK-MASQ sets {bits:#x}")
    for rule in checked:
        problem = _mark_problem(rule, bits)
        if problem:
            yield rule_finding(
                "NL404",
                f"{problem}, but KUBE-MARK-MASQ sets {bits:#x}: kube-proxy's masquerade mark is not the one tested"
                " here, so Service traffic is not masqueraded (or not accepted) as kube-proxy intends. Use the same"
                f" --iptables-masquerade-bit for every component (here '--mark {bits:#x}/{bits:#x}'; default bit 14 is"
                " 0x4000), or restart kube-proxy after fixing its configuration",
                rule, (anchor,))


def _mark_test(rule: Rule) -> tuple[MarkMask, bool] | None:
    for match in rule.matches:
        if match.name == "mark":
            opt = match.option("mark")
            if opt is not None and isinstance(opt.value, MarkMask):
                return opt.value, opt.invert
    return None


def _mark_problem(rule: Rule, bits: int) -> str | None:
    if _target(rule) == "MARK":
        xmark = _mark_value(rule, "set_xmark")
        if xmark is not None and xmark.mask == 0 and xmark.value != bits:
            return f"this rule clears mark bits {xmark.value:#x} (xor)"
        return None
    test = _mark_test(rule)
    if test is None:
        return None
    mark, invert = test
    if mark.mask == 0 or mark.mask & ~bits:
        return f"this rule tests mark {mark}"
    matches_marked = (mark.value == mark.mask) != invert
    if matches_marked != (_target(rule) != "RETURN"):
        return f"this rule tests mark {'! ' if invert else ''}{mark} the wrong way round"
    return None


def _dangling(ruleset: Ruleset, graph: ChainGraph) -> Iterator[Finding]:
    table = graph.table
    jumps: dict[str, list[Rule]] = {}
    for chain in table:
        for rule in chain.rules:
            name = _target(rule)
            if name is not None and name.startswith(_SERVICE_PREFIXES) and name in table.chains:
                jumps.setdefault(name, []).append(rule)
    for name, rules in jumps.items():
        chain = table.chains[name]
        if not chain.rules:
            what = "endpoint's DNAT" if name.startswith("KUBE-SEP-") else "service's rules"
            yield rule_finding(
                "NL404",
                f"this rule jumps to {name}, which is declared but empty: the {what} are missing, so the jump does"
                " nothing and the connection goes on as if unmatched (no DNAT: the Service address black-holes)."
                " A partial restore or a hand edit left it; restart kube-proxy to rewrite its chains",
                rules[0], (*related(rules[1:], f"another jump to the empty {name}"),
                           *((Related(ruleset.path, chain.pos.line, f"{name} declared here"),) if chain.pos else ())))
        elif name.startswith(("KUBE-SVC-", "KUBE-SVL-")):
            seps = [r for r in chain.rules if (_target(r) or "").startswith("KUBE-SEP-")]
            live = [r for r in seps if (t := table.chains.get(_target(r) or "")) is not None and t.rules]
            if not live:
                why = "all its endpoint chains (KUBE-SEP-*) are missing or empty" if seps else "it jumps to no endpoint"
                yield rule_finding(
                    "NL404",
                    f"this rule jumps to {name}, but {why}: the Service is not DNATed to any backend and its"
                    " connections go nowhere. kube-proxy writes a REJECT in filter KUBE-SERVICES for a Service without"
                    " endpoints, never an endpoint-less chain: restart kube-proxy",
                    rules[0], related(seps, "a jump to a missing endpoint chain"))


def _static_jumps(ruleset: Ruleset, graphs: dict[str, ChainGraph]) -> Iterator[Finding]:
    cmd = tool(ruleset)
    for table, name, hooks, comment in _STATIC_JUMPS:
        graph = graphs.get(table)
        if graph is None or name not in graph.table.chains or not graph.table.chains[name].rules:
            continue
        rules = graph.table.chains[name].rules
        reached = graph.hooks.get(name, frozenset())
        for hook in hooks:
            if hook in reached or hook not in graph.table.chains:
                continue
            flag = "" if table == "filter" else "-t nat "
            yield group_finding(
                "NL404",
                f"{table} chain {name} holds kube-proxy's rules but {hook} does not jump to it: they never run for"
                f" {hook} traffic{_effect(name, hook)}. Restore kube-proxy's jump: '{cmd} {flag}-I {hook} {comment}"
                f" -j {name}' (or restart kube-proxy)",
                rules, f"another rule of {name} that {hook} never reaches")


def _effect(name: str, hook: str) -> str:
    if name == "KUBE-SERVICES":
        if hook == "PREROUTING":
            return " (Service IPs are not DNATed for connections arriving from other hosts and pods)"
        return " (Service IPs are not DNATed for connections from this node and host-network pods)"
    if name == "KUBE-POSTROUTING":
        return " (marked Service traffic is never masqueraded)"
    return " (with a FORWARD policy DROP, pod and Service traffic marked for forwarding is dropped)"
