"""NL401-NL403: Docker's iptables layout, checked against what each Docker version installs.

Structural checks: they read the rules Docker writes (research "docker-and-kube-proxy-rules",
sections 1.3-1.10) and compare the pieces with each other. Nothing here fires on a dump of a
Docker host as Docker leaves it (legacy 18.05-27.x, 28.0.0, 28.x, 29.x, IPv4 and IPv6,
userland proxy on or off); every finding names the orphaned rule and how to restore the rest.

* NL401: Docker state only partly present (after a firewall reload or an iptables-restore).
* NL402: ``-j DOCKER-USER`` missing from FORWARD, or a rule before it decides container traffic.
* NL403: the pre-28 layout with FORWARD policy ACCEPT and no DROP for a bridge: every
  container port is reachable by hosts that route the bridge subnet to this machine.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from natlint.checks.context import CheckContext
from natlint.findings import Code, Finding, Related, register
from natlint.graph.chains import ChainGraph, build_graphs
from natlint.model.ruleset import Chain, Option, Rule, Ruleset
from natlint.model.values import Interface, PortRange, Prefix

__all__ = [
    "check",
    "DockerInventory",
    "iface_may_match",
    "mixed_backend_lines",
    "prefix_overlap",
    "related",
    "group_finding",
    "rule_finding",
    "tool",
]

register(Code(
    "NL401", "docker-partial-state", "warning",
    "Docker's chains or rules are only partly there: raw endpoint DROPs without the nat/filter"
    " rules, a DOCKER chain nothing jumps to, a published port (DNAT) without its filter ACCEPT,"
    " a bridge without its MASQUERADE. Typically left by a firewall reload or an iptables-restore"
    " that replaced the tables under a running Docker daemon.",
    why="iptables-restore (ufw reload, netfilter-persistent, firewalld, fail2ban, a hand-made"
    " restore) replaces every table in its file: Docker's DNAT, MASQUERADE and DOCKER chains vanish"
    " while the tables it did not touch (often raw) keep theirs. Published ports then time out and"
    " containers lose Internet access until Docker re-creates its rules (systemctl restart docker).",
    example="*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    "-A PREROUTING -d 172.17.0.2/32 ! -i docker0 -j DROP\nCOMMIT\n"
    "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
    "-A POSTROUTING -o eth0 -s 10.8.0.0/24 -j MASQUERADE\nCOMMIT",
    fixed="(restart Docker after the firewall reload: systemctl restart docker; or have the firewall"
    " tool leave Docker's tables alone, e.g. iptables-restore --noflush)",
))
register(Code(
    "NL402", "docker-user-not-first", "warning",
    "FORWARD does not start with '-j DOCKER-USER': a rule before it accepts or drops container"
    " traffic, or the jump is missing, so the rules in DOCKER-USER do not see all the traffic they"
    " were written for.",
    why="DOCKER-USER is where Docker tells administrators to filter container traffic; Docker keeps"
    " its jump first in FORWARD (28+: DOCKER-USER then DOCKER-FORWARD). A rule placed before it"
    " (a firewall tool's catch-all, a rule inserted with -I FORWARD) decides first: an ACCEPT there"
    " bypasses every restriction in DOCKER-USER, a DROP/REJECT there breaks published ports. Rules"
    " that decide nothing (LOG, MARK, comments), that cannot see container traffic (interfaces or"
    " addresses of other networks), that only accept ESTABLISHED/RELATED or only drop INVALID"
    " packets, and kube-proxy's own KUBE-* jumps (it prepends them; they decide only Kubernetes"
    " service traffic) are not counted.",
    example="*filter\n:FORWARD DROP [0:0]\n:DOCKER - [0:0]\n:DOCKER-USER - [0:0]\n"
    "-A FORWARD -j ACCEPT\n-A FORWARD -j DOCKER-USER\n-A FORWARD -o docker0 -j DOCKER\n"
    "-A DOCKER-USER -i eth0 -p tcp --dport 80 -j DROP\nCOMMIT",
    fixed="*filter\n:FORWARD DROP [0:0]\n:DOCKER - [0:0]\n:DOCKER-USER - [0:0]\n"
    "-A FORWARD -j DOCKER-USER\n-A FORWARD -o docker0 -j DOCKER\n-A FORWARD -j ACCEPT\n"
    "-A DOCKER-USER -i eth0 -p tcp --dport 80 -j DROP\nCOMMIT",
))
register(Code(
    "NL403", "direct-routing-exposure", "warning",
    "Docker before 28 with FORWARD policy ACCEPT and no DROP for a bridge: every port of every"
    " container on it, published or not, is reachable by any host that routes the bridge subnet"
    " through this machine.",
    why="Docker up to 27.x adds no per-network DROP: unpublished ports are protected only by the"
    " FORWARD policy, which Docker sets to DROP only when it had to enable IP forwarding itself. On a"
    " router, VPN gateway or Kubernetes node (forwarding already on) the policy stays ACCEPT, and a"
    " neighbour with 'ip route add 172.17.0.0/16 via <host>' reaches the containers directly."
    " Docker 28 closes this with '-A DOCKER ! -i docker0 -o docker0 -j DROP' and raw PREROUTING DROPs.",
    example="*filter\n:FORWARD ACCEPT [0:0]\n:DOCKER - [0:0]\n-A FORWARD -o docker0 -j DOCKER\n"
    "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT\n"
    "-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp --dport 80 -j ACCEPT\nCOMMIT",
    fixed="*filter\n:FORWARD ACCEPT [0:0]\n:DOCKER - [0:0]\n-A FORWARD -o docker0 -j DOCKER\n"
    "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT\n-A FORWARD ! -i docker0 -o docker0 -j DROP\n"
    "-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp --dport 80 -j ACCEPT\nCOMMIT",
))

# The filter chains only the Docker daemon creates (DOCKER-USER is Docker's too, but admins and
# tools such as ufw-docker create it in their own rule files: it is no evidence of a daemon).
DOCKER_FILTER_CHAINS = frozenset({
    "DOCKER", "DOCKER-FORWARD", "DOCKER-CT", "DOCKER-BRIDGE", "DOCKER-INTERNAL", "DOCKER-ISOLATION",
    "DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2",
})
# Names Docker gives its bridges (com.docker.network.bridge.name can choose any other).
_BRIDGE_NAME = re.compile(r"(docker0|docker_gwbridge|br-[0-9a-f]{12})\Z")
_MIXED = re.compile(r"# (Warning: ip6?tables-legacy tables present|Table `[^']*' is incompatible)")
# Targets that end a packet's walk through the filter table.
_TERMINAL = frozenset({"ACCEPT", "DROP", "REJECT", "QUEUE", "NFQUEUE", "TARPIT", "SYNPROXY"})
_ESTABLISHED = frozenset({"ESTABLISHED", "RELATED"})
_MAX_RELATED = 8


# ---- small helpers shared with the kube-proxy checks ----------------------------------------

def tool(ruleset: Ruleset) -> str:
    return "iptables" if ruleset.family == 4 else "ip6tables"


def iface_may_match(opt: Option | None, name: str) -> bool:
    """Whether an ``-i``/``-o`` test can match a packet on interface ``name``."""
    if opt is None:
        return True
    value = opt.value
    return isinstance(value, Interface) and value.matches(name) != opt.invert


def _plain_iface(opt: Option | None, invert: bool) -> str | None:
    """The interface name of ``-i X`` (``invert`` False) or ``! -i X`` (True), no wildcard."""
    if opt is None or opt.invert != invert or not isinstance(opt.value, Interface) or opt.value.is_wildcard:
        return None
    return opt.value.name


def _prefix(opt: Option | None) -> Prefix | None:
    """The address of a positive ``-s``/``-d`` test."""
    if opt is None or opt.invert or not isinstance(opt.value, Prefix):
        return None
    return opt.value


def prefix_overlap(a: Prefix, b: Prefix) -> bool:
    return a.version == b.version and ((a.address ^ b.address) & a.mask & b.mask) == 0


def _is_host(p: Prefix) -> bool:
    return p.mask == (1 << p.bits) - 1


def _dports(rule: Rule) -> list[PortRange] | None:
    """The destination ports a rule tests (None: any)."""
    for match in rule.matches:
        for name in ("dport", "dports", "ports"):
            opt = match.option(name)
            if opt is None or opt.invert:
                continue
            ranges = [v for value in opt.values for v in (value if isinstance(value, tuple) else (value,))]
            found = [r for r in ranges if isinstance(r, PortRange)]
            if found:
                return found
    return None


def _ctstates(rule: Rule) -> frozenset[str] | None:
    """The positive conntrack states a rule requires (None: it does not test them)."""
    for match in rule.matches:
        opt = match.option("ctstate") if match.name == "conntrack" else (
            match.option("state") if match.name == "state" else None)
        if opt is not None and not opt.invert and isinstance(opt.value, frozenset):
            return frozenset(str(s) for s in opt.value)
    return None


def related(rules: Iterable[Rule], why: str) -> tuple[Related, ...]:
    return tuple(Related(r.pos.path, r.pos.line, why) for r in list(rules)[:_MAX_RELATED])


def rule_finding(code: str, message: str, rule: Rule, rel: tuple[Related, ...] = ()) -> Finding:
    return Finding(code, "warning", message, rule.pos.path, rule.pos.line, rule.pos.column,
                   rule.table, rule.chain, rel, source_line=rule.text)


def group_finding(code: str, message: str, rules: Sequence[Rule], why: str) -> Finding:
    """A finding at the first of ``rules``, the others related with ``why``."""
    return rule_finding(code, message, rules[0], related(rules[1:], why))


def chain_finding(code: str, message: str, ruleset: Ruleset, table: str, chain: Chain,
                  rel: tuple[Related, ...] = ()) -> Finding:
    line = chain.pos.line if chain.pos else 1
    return Finding(code, "warning", message, ruleset.path, line, 1, table, chain.name, rel)


def mixed_backend_lines(ruleset: Ruleset) -> list[tuple[int, str]]:
    """The comment lines by which iptables-nft says part of the rules is not in this dump."""
    return [(i, line) for i, line in enumerate(ruleset.lines, 1) if line.startswith("# ") and _MIXED.match(line)]


def _chain_rules(ruleset: Ruleset, table: str, chain: str) -> tuple[Rule, ...]:
    t = ruleset.table(table)
    c = t.chains.get(chain) if t is not None else None
    return c.rules if c is not None else ()


def _target(rule: Rule) -> str | None:
    return rule.target.name if rule.target is not None else None


# ---- what Docker left in the dump -----------------------------------------------------------

@dataclass
class Bridge:
    name: str
    subnets: list[tuple[Prefix, Rule]] = field(default_factory=list)  # from -s SUBNET ! -o BR -j MASQUERADE
    containers: set[int] = field(default_factory=set)
    nat_return: Rule | None = None  # nat '-A DOCKER -i BR -j RETURN' (masquerade + userland proxy on)
    egress: list[Rule] = field(default_factory=list)  # filter '-i BR [! -o BR] -j ACCEPT'
    filter_rules: list[Rule] = field(default_factory=list)  # filter Docker rules naming the bridge


@dataclass
class DockerInventory:
    """Docker's objects as the rules name them (research 1.10)."""

    ruleset: Ruleset

    @cached_property
    def graphs(self) -> dict[str, ChainGraph]:
        return build_graphs(self.ruleset)

    def has_table(self, name: str) -> bool:
        return name in self.ruleset.tables

    @cached_property
    def filter_docker(self) -> bool:
        t = self.ruleset.table("filter")
        return t is not None and any(name in t.chains for name in DOCKER_FILTER_CHAINS)

    @cached_property
    def nat_docker(self) -> bool:
        t = self.ruleset.table("nat")
        return t is not None and "DOCKER" in t.chains

    @cached_property
    def bridges(self) -> dict[str, Bridge]:
        found: dict[str, Bridge] = {}

        def bridge(name: str) -> Bridge:
            return found.setdefault(name, Bridge(name))

        rs = self.ruleset
        filt = rs.table("filter")
        if filt is not None and self.filter_docker:
            for chain in filt:
                docker_chain = chain.name in DOCKER_FILTER_CHAINS
                for rule in chain.rules:
                    if not (docker_chain or (chain.name == "FORWARD" and _target(rule) in DOCKER_FILTER_CHAINS)):
                        if chain.name == "FORWARD" and _target(rule) == "ACCEPT":
                            self._legacy_forward(rule, bridge)
                        continue
                    for opt in (rule.in_interface, rule.out_interface):
                        name = _plain_iface(opt, opt.invert) if opt is not None else None
                        if name is not None:
                            bridge(name).filter_rules.append(rule)
                    if chain.name in ("DOCKER-FORWARD", "FORWARD") and _target(rule) == "ACCEPT":
                        self._legacy_forward(rule, bridge)
                    out = _plain_iface(rule.out_interface, False)
                    dst = _prefix(rule.destination)
                    if chain.name == "DOCKER" and out and dst is not None and _is_host(dst):
                        bridge(out).containers.add(dst.address)
        for rule in _chain_rules(rs, "nat", "DOCKER"):
            name = _plain_iface(rule.in_interface, True)
            if _target(rule) == "RETURN" and (ret := _plain_iface(rule.in_interface, False)):
                bridge(ret).nat_return = rule
            elif _target(rule) == "DNAT" and name is not None:
                addr = _dnat_address(rule)
                if addr is not None:
                    bridge(name).containers.add(addr)
        for rule in _chain_rules(rs, "nat", "POSTROUTING"):
            name = _plain_iface(rule.out_interface, True)
            src = _prefix(rule.source)
            if _target(rule) in ("MASQUERADE", "SNAT") and name and src is not None and (
                    name in found or _BRIDGE_NAME.match(name)):
                bridge(name).subnets.append((src, rule))
        for _rule, name, dst in self.raw_endpoints:
            bridge(name).containers.add(dst.address)
        return found

    @staticmethod
    def _legacy_forward(rule: Rule, bridge: Callable[[str], Bridge]) -> None:
        """``-i BR ! -o BR -j ACCEPT`` / ``-i BR -j ACCEPT``: the bridge's outgoing traffic."""
        name = _plain_iface(rule.in_interface, False)
        out = rule.out_interface
        if name is None or rule.source is not None or rule.destination is not None or rule.matches:
            return
        own = _BRIDGE_NAME.match(name) or rule.chain == "DOCKER-FORWARD"
        if own and (out is None or (out.invert and _plain_iface(out, True) == name)):
            bridge(name).egress.append(rule)

    @cached_property
    def raw_endpoints(self) -> list[tuple[Rule, str, Prefix]]:
        """raw ``-d <ctr>/32 ! -i <br> [-p P --dport N] -j DROP`` (Docker 28+), with its bridge."""
        out: list[tuple[Rule, str, Prefix]] = []
        for rule in _chain_rules(self.ruleset, "raw", "PREROUTING"):
            name = _plain_iface(rule.in_interface, True)
            dst = _prefix(rule.destination)
            if (_target(rule) != "DROP" or name is None or name == "lo" or dst is None or not _is_host(dst)
                    or rule.source is not None or any(m.name not in ("tcp", "udp", "sctp") for m in rule.matches)):
                continue
            if _BRIDGE_NAME.match(name):
                out.append((rule, name, dst))
        return out

    @cached_property
    def dnats(self) -> list[tuple[Rule, int, str | None]]:
        """nat DOCKER DNATs to one address: (rule, container address, bridge if known)."""
        result = []
        for rule in _chain_rules(self.ruleset, "nat", "DOCKER"):
            if _target(rule) != "DNAT":
                continue
            addr = _dnat_address(rule)
            if addr is None:
                continue
            name = _plain_iface(rule.in_interface, True)
            if name is None:
                name = next((b.name for b in self.bridges.values()
                             if any(s.contains(addr & s.mask) for s, _ in b.subnets)), None)
            result.append((rule, addr, name))
        return result

    @cached_property
    def docker_subnets(self) -> list[Prefix] | None:
        """Every Docker bridge's subnet, or None when some bridge's subnet is unknown."""
        nets = [s for b in self.bridges.values() for s, _ in b.subnets]
        if not self.bridges or any(not b.subnets for b in self.bridges.values()):
            return None
        return nets

    @cached_property
    def mixed_backend(self) -> bool:
        return bool(mixed_backend_lines(self.ruleset))

    def note(self) -> str:
        if self.mixed_backend:
            return (" (this dump also says that part of the rules lives in another backend, see NL405:"
                    " the missing rules may be there)")
        return ""



def _dnat_address(rule: Rule) -> int | None:
    target = rule.target
    opt = target.option("to_destination") if target is not None else None
    rng = getattr(opt.value, "addresses", None) if opt is not None else None
    if rng is None or rng.first != rng.last:
        return None
    first: int = rng.first
    return first


def _dnat_port(rule: Rule) -> PortRange | None:
    target = rule.target
    opt = target.option("to_destination") if target is not None else None
    ports = getattr(opt.value, "ports", None) if opt is not None else None
    if isinstance(ports, PortRange):
        return ports
    found = _dports(rule)
    return found[0] if found and len(found) == 1 else None


def check(ctx: CheckContext) -> Iterator[Finding]:
    inv = DockerInventory(ctx.ruleset)
    if not (inv.filter_docker or inv.nat_docker or inv.raw_endpoints):
        return
    yield from _partial_tables(inv)
    yield from _nat_jumps(inv)
    yield from _filter_jumps(inv)
    yield from _dnat_without_accept(inv)
    yield from _bridge_without_masquerade(inv)
    yield from _raw_without_network(inv)
    yield from _docker_user(inv)
    yield from _direct_routing(inv)


# ---- NL401 ----------------------------------------------------------------------------------

def _docker_rules(ruleset: Ruleset, table: str, chains: frozenset[str]) -> list[Rule]:
    t = ruleset.table(table)
    if t is None:
        return []
    return [r for c in t for r in c.rules if c.name in chains or _target(r) in chains]


_RAW_KEPT = "raw table still holds Docker's per-container DROPs"


def _partial_tables(inv: DockerInventory) -> Iterator[Finding]:
    rs = inv.ruleset
    raw = [r for r, _, _ in inv.raw_endpoints]
    restart = ("Restart Docker so it re-creates them: 'systemctl restart docker'; and make the tool that reloads"
               f" the firewall keep Docker's rules ({tool(rs)}-restore --noflush, or its Docker integration)")
    missing = (
        ("filter", inv.filter_docker, inv.nat_docker, _docker_rules(rs, "nat", frozenset({"DOCKER"})),
         "nat table still has Docker's DOCKER chain",
         "filter chains are gone (no DOCKER, DOCKER-FORWARD or DOCKER-ISOLATION chain)",
         "Containers' forwarded traffic now meets FORWARD without Docker's ACCEPTs and DROPs"
         f" ({_forward_effect(rs)})"),
        ("nat", inv.nat_docker, inv.filter_docker, _docker_rules(rs, "filter", DOCKER_FILTER_CHAINS),
         "filter table still has Docker's chains",
         "nat rules are gone (no DOCKER chain, no DNAT for published ports, no MASQUERADE for its bridges)",
         "Published ports are not forwarded and containers have no outbound NAT"),
    )
    for table, present, other, other_rules, kept, gone, effect in missing:
        evidence = raw or (other_rules if other else [])
        if inv.has_table(table) and not present and evidence:
            yield group_finding(
                "NL401",
                f"Docker's {gone} while the {_RAW_KEPT if raw else kept}: the {table} table was replaced under a"
                f" running Docker daemon. {effect}{inv.note()}. {restart}",
                evidence, f"another Docker rule left without its {table} rules")


def _forward_effect(rs: Ruleset) -> str:
    filt = rs.table("filter")
    chain = filt.chains.get("FORWARD") if filt is not None else None
    if chain is not None and chain.policy == "ACCEPT":
        return "policy ACCEPT: every container port is open to routed traffic, published or not"
    return "policy DROP: published ports time out and containers lose the network"


def _nat_jumps(inv: DockerInventory) -> Iterator[Finding]:
    if not inv.nat_docker:
        return
    graph = inv.graphs["nat"]
    dnats = [r for r in _chain_rules(inv.ruleset, "nat", "DOCKER") if _target(r) == "DNAT"]
    if not dnats:
        return
    hooks = graph.hooks.get("DOCKER", frozenset())
    cmd = tool(inv.ruleset)
    proxy_on = any(r.in_interface is not None and r.in_interface.invert for r in dnats)
    loop = "127.0.0.0/8" if inv.ruleset.family == 4 else "::1/128"
    skip = f"! -d {loop} " if proxy_on else ""
    rel = related(dnats[1:], "another published port of the orphaned DOCKER chain")
    if "PREROUTING" not in hooks:
        yield rule_finding(
            "NL401",
            "nat chain DOCKER holds Docker's published ports but PREROUTING does not jump to it: no"
            " connection from another host is forwarded to a container (the port is closed or reaches a"
            f" host service instead){inv.note()}. Restore the jump: '{cmd} -t nat -A PREROUTING -m addrtype"
            " --dst-type LOCAL -j DOCKER' (or 'systemctl restart docker')",
            dnats[0], rel)
    if "OUTPUT" not in hooks:
        yield rule_finding(
            "NL401",
            "nat chain DOCKER holds Docker's published ports but OUTPUT does not jump to it: connections"
            " from this host to its own addresses are not forwarded to the containers"
            f"{' (only docker-proxy still serves them)' if proxy_on else ''}{inv.note()}. Restore the jump:"
            f" '{cmd} -t nat -A OUTPUT {skip}-m addrtype --dst-type LOCAL -j DOCKER' (or 'systemctl restart docker')",
            dnats[0], rel)


# The jump Docker uses to reach each of its filter chains.
_PARENT_JUMP = {
    "DOCKER-FORWARD": "-I FORWARD 2 -j DOCKER-FORWARD' (right after -j DOCKER-USER)",
    "DOCKER-CT": "-I DOCKER-FORWARD 1 -j DOCKER-CT'",
    "DOCKER-ISOLATION-STAGE-1": "-I FORWARD 2 -j DOCKER-ISOLATION-STAGE-1' (right after -j DOCKER-USER)",
    "DOCKER-BRIDGE": "-A DOCKER-FORWARD -j DOCKER-BRIDGE'",
    "DOCKER-INTERNAL": "-I DOCKER-FORWARD 2 -j DOCKER-INTERNAL'",
}


def _filter_jumps(inv: DockerInventory) -> Iterator[Finding]:
    if not inv.filter_docker:
        return
    graph = inv.graphs["filter"]
    table = graph.table
    cmd = tool(inv.ruleset)
    orphans = {name for name in DOCKER_FILTER_CHAINS
               if name in table.chains and table.chains[name].rules and "FORWARD" not in graph.hooks.get(name, ())}
    for name in sorted(orphans):
        chain = table.chains[name]
        if any(src in orphans for src, dst, _ in graph.edges() if dst == name):
            continue  # reported at the chain that jumps to it
        if name == "DOCKER":
            names = sorted({n for r in chain.rules for n in [_plain_iface(r.out_interface, False)] if n})
            fix = " or ".join(f"'{cmd} -A FORWARD -o {n} -j DOCKER'" for n in names[:3])
            fix = fix or f"'{cmd} -A FORWARD -j DOCKER'"
        else:
            fix = f"'{cmd} {_PARENT_JUMP.get(name, f'-A FORWARD -j {name}' + chr(39))}"
        yield group_finding(
            "NL401",
            f"filter chain {name} holds Docker's rules but nothing reached from FORWARD jumps to it: they never"
            f" run, so forwarded container traffic misses Docker's ACCEPTs and DROPs{inv.note()}. Restore the"
            f" jump: {fix}, or 'systemctl restart docker'",
            chain.rules, f"another rule of the orphaned chain {name}")
    if "DOCKER" in orphans or "DOCKER" not in table.chains:
        return
    jumps = [r for src, dst, r in graph.edges() if dst == "DOCKER" and "FORWARD" in graph.hooks.get(src, ())]
    per_bridge: dict[str, list[Rule]] = {}
    for rule in table.chains["DOCKER"].rules:
        out = _plain_iface(rule.out_interface, False)
        if out is not None and not any(iface_may_match(j.out_interface, out) for j in jumps):
            per_bridge.setdefault(out, []).append(rule)
    bridge_parent = "DOCKER-BRIDGE" if "DOCKER-BRIDGE" in table.chains else "FORWARD"
    for name, rules in per_bridge.items():
        yield group_finding(
            "NL401",
            f"filter DOCKER has rules for bridge {name} but no jump to DOCKER covers '-o {name}': published"
            f" ports on {name} are not accepted (FORWARD's policy or Docker's DROP decides){inv.note()}."
            f" Restore the jump: '{cmd} -A {bridge_parent} -o {name} -j DOCKER', or 'systemctl restart docker'",
            rules, f"another DOCKER rule for {name} that no jump reaches")


def _accept_covers(rule: Rule, addr: int, proto: object, port: PortRange | None, bridge: str | None) -> bool:
    if _target(rule) != "ACCEPT" or (rule.source is not None and not rule.source.invert):
        return False
    if rule.in_interface is not None and not rule.in_interface.invert:
        return False  # '-i br' is traffic from the bridge itself (--link, icc)
    dst = rule.destination
    if dst is not None and isinstance(dst.value, Prefix) and dst.value.contains(addr & dst.value.mask) == dst.invert:
        return False
    if bridge is not None and not iface_may_match(rule.out_interface, bridge):
        return False
    if rule.protocol is not None and proto is not None and (rule.protocol.value != proto) != rule.protocol.invert:
        return False
    ports = _dports(rule)
    return ports is None or port is None or any(r.first <= port.last and port.first <= r.last for r in ports)


def _dnat_without_accept(inv: DockerInventory) -> Iterator[Finding]:
    rs = inv.ruleset
    filt = rs.table("filter")
    if filt is None or "DOCKER" not in filt.chains:
        return
    accepts = filt.chains["DOCKER"].rules
    cmd = tool(rs)
    policy_accept = filt.chains["FORWARD"].policy == "ACCEPT" if "FORWARD" in filt.chains else False
    seen: set[tuple[int, object, str]] = set()
    for rule, addr, bridge in inv.dnats:
        if bridge is None or bridge not in inv.bridges:
            continue
        proto = rule.protocol.value if rule.protocol is not None and not rule.protocol.invert else None
        port = _dnat_port(rule)
        if any(_accept_covers(a, addr, proto, port, bridge) for a in accepts):
            continue
        key = (addr, proto, str(port))
        if key in seen:
            continue
        seen.add(key)
        ip = str(Prefix.host(rs.family, addr)).split("/")[0]
        mask = "/32" if rs.family == 4 else "/128"
        pspec = f" -p {proto} -m {proto}" if proto is not None else ""
        pspec += f" --dport {port}" if port is not None and proto is not None else ""
        effect = ("it still works only because FORWARD's policy is ACCEPT" if policy_accept
                  else "connections to it are dropped in FORWARD (Docker's per-network DROP or the FORWARD policy)")
        yield rule_finding(
            "NL401",
            f"this published port DNATs to container {ip}{f':{port}' if port else ''} on {bridge}, but filter"
            f" DOCKER has no ACCEPT for it: {effect}{inv.note()}. Restore Docker's rule: '{cmd} -I DOCKER"
            f" -d {ip}{mask} ! -i {bridge} -o {bridge}{pspec} -j ACCEPT', or 'systemctl restart docker'",
            rule)


def _covers_masquerade(rule: Rule, bridge: Bridge) -> bool:
    if _target(rule) not in ("MASQUERADE", "SNAT") or _prefix(rule.destination) is not None or (
            rule.protocol is not None and not rule.protocol.invert):
        return False  # a hairpin or per-port rule, not the bridge's outbound NAT
    out = rule.out_interface
    if out is not None and not out.invert:
        return isinstance(out.value, Interface) and not out.value.matches(bridge.name)
    src = rule.source
    if src is None:
        return True
    if not isinstance(src.value, Prefix):
        return False
    return any(src.value.contains(c & src.value.mask) != src.invert for c in bridge.containers) or (
        out is not None and _plain_iface(out, True) == bridge.name)


def _bridge_without_masquerade(inv: DockerInventory) -> Iterator[Finding]:
    rs = inv.ruleset
    if not inv.nat_docker:
        return
    graph = inv.graphs["nat"]
    posts = [r for c in graph.table for r in c.rules if "POSTROUTING" in graph.hooks.get(c.name, ())]
    cmd = tool(rs)
    for bridge in inv.bridges.values():
        if bridge.nat_return is None or bridge.subnets or any(_covers_masquerade(r, bridge) for r in posts):
            continue
        anchor = bridge.egress[0] if bridge.egress else bridge.nat_return
        others = [bridge.nat_return] if anchor is not bridge.nat_return else bridge.egress
        yield rule_finding(
            "NL401",
            f"Docker bridge {bridge.name} has its rules ('-A DOCKER -i {bridge.name} -j RETURN' is only written"
            f" for a masqueraded network) but no MASQUERADE in POSTROUTING: its containers' outbound"
            f" connections leave with their private source address and get no replies{inv.note()}. Restore"
            f" Docker's rule: '{cmd} -t nat -I POSTROUTING -s <subnet of {bridge.name}> ! -o {bridge.name}"
            f" -j MASQUERADE' (subnet: 'docker network inspect'), or 'systemctl restart docker'",
            anchor, related(others, f"a Docker rule for {bridge.name}"))


def _raw_without_network(inv: DockerInventory) -> Iterator[Finding]:
    if not inv.filter_docker:
        return
    filter_bridges = {name for name, b in inv.bridges.items() if b.filter_rules}
    orphans: dict[str, list[Rule]] = {}
    for rule, name, _ in inv.raw_endpoints:
        if name not in filter_bridges:
            orphans.setdefault(name, []).append(rule)
    for name, rules in orphans.items():
        yield group_finding(
            "NL401",
            f"raw PREROUTING drops traffic to Docker containers on {name} that does not come from {name}, but"
            f" the filter table has no Docker rule for {name}: the network's filter rules are gone (or these"
            f" raw rules outlived it){inv.note()}. Restart Docker ('systemctl restart docker') so it rebuilds"
            f" or removes them",
            rules, f"another raw endpoint DROP for {name}")


# ---- NL402 ----------------------------------------------------------------------------------

def _docker_user(inv: DockerInventory) -> Iterator[Finding]:
    rs = inv.ruleset
    filt = rs.table("filter")
    if filt is None or "DOCKER-USER" not in filt.chains or "FORWARD" not in filt.chains or not inv.filter_docker:
        return
    graph = inv.graphs["filter"]
    forward = filt.chains["FORWARD"].rules
    reaches = [i for i, r in enumerate(forward)
               if r.target is not None and r.target.is_chain and (
                   r.target.name == "DOCKER-USER" or "DOCKER-USER" in _descendants(graph, r.target.name))]
    cmd = tool(rs)
    if not reaches:
        user = filt.chains["DOCKER-USER"]
        content = [r for r in user.rules if _target(r) != "RETURN" or r.matches or r.core_options]
        docker_jumps = [r for r in forward if _target(r) in DOCKER_FILTER_CHAINS]
        what = (f"its {len(content)} rule(s) never run" if content
                else "rules added to it later will never run")
        message = (f"FORWARD does not jump to DOCKER-USER: {what}, and container traffic is decided by Docker's"
                   f" rules alone{inv.note()}. Restore the jump as FORWARD's first rule: '{cmd} -I FORWARD 1"
                   " -j DOCKER-USER' (Docker re-inserts it when it restarts)")
        rel = related(content, "a DOCKER-USER rule that never runs")
        if docker_jumps:
            yield rule_finding("NL402", message, docker_jumps[0], rel)
        else:
            yield chain_finding("NL402", message, rs, "filter", user, rel)
        return
    jump = forward[reaches[0]]
    if not inv.bridges:
        return  # no container network: DOCKER-USER sees nothing either way
    deciding = [r for r in forward[: reaches[0]] if _decides(r, inv, graph, set())]
    if not deciding:
        return
    first = deciding[0]
    verb = {"ACCEPT": "accepts", "DROP": "drops", "REJECT": "rejects"}.get(_target(first) or "", "decides")
    yield rule_finding(
        "NL402",
        f"this rule comes before '-j DOCKER-USER' in FORWARD and {verb} traffic to or from Docker's containers"
        f" ({', '.join(sorted(inv.bridges)[:4])}): DOCKER-USER never sees it, so restrictions written there do"
        f" not apply{' to what this rule accepts' if verb == 'accepts' else ''}. Move the jump back to the top:"
        f" '{cmd} -D FORWARD -j DOCKER-USER && {cmd} -I FORWARD 1 -j DOCKER-USER' (Docker does so itself when"
        " it restarts), or put this rule into DOCKER-USER",
        first, (*related(deciding[1:], "another rule before -j DOCKER-USER that decides container traffic"),
                Related(jump.pos.path, jump.pos.line, "the jump to DOCKER-USER")))


def _descendants(graph: ChainGraph, name: str) -> set[str]:
    return graph.descendants(name) if name in graph.table.chains else set()


def _can_take_container_traffic(rule: Rule, inv: DockerInventory) -> bool:
    names = list(inv.bridges)
    subnets = inv.docker_subnets

    def none_of(opt: Option | None) -> bool:
        return opt is not None and not any(iface_may_match(opt, n) for n in names)

    def outside(opt: Option | None) -> bool:
        p = _prefix(opt)
        return subnets is not None and p is not None and not any(prefix_overlap(p, s) for s in subnets)

    to_container = not (none_of(rule.out_interface) or outside(rule.destination))
    from_container = not (none_of(rule.in_interface) or outside(rule.source))
    return to_container or from_container


def _decides(rule: Rule, inv: DockerInventory, graph: ChainGraph, seen: set[str]) -> bool:
    target = rule.target
    if target is None or not _can_take_container_traffic(rule, inv):
        return False
    name = target.name
    if target.is_chain:
        chain = graph.table.chains.get(name)
        if chain is None or name.startswith("KUBE-") or name in seen:
            return False
        seen.add(name)
        return any(
            _decides(r, inv, graph, seen) or (target.goto and _target(r) == "RETURN") for r in chain.rules)
    if name == "RETURN":
        return rule.chain == "FORWARD"
    if name not in _TERMINAL:
        return False
    states = _ctstates(rule)
    if states is not None and name == "ACCEPT" and states <= _ESTABLISHED:
        return False
    return not (states == frozenset({"INVALID"}) and name != "ACCEPT")


# ---- NL403 ----------------------------------------------------------------------------------

_NARROWING_OK = frozenset({"conntrack", "state", "comment", "addrtype"})


def _drops_routed(rule: Rule, bridge: Bridge, subnets: Sequence[Prefix], bridges: Iterable[str],
                  verdict: bool = True) -> bool:
    """A DROP/REJECT that stops routed traffic to the whole bridge (not one port or one source);
    with ``verdict`` False, a jump that passes all such traffic on. Routed traffic comes in on
    an interface that is not a Docker bridge: '-i <a bridge>' is container traffic."""
    if verdict and _target(rule) not in ("DROP", "REJECT"):
        return False
    if rule.protocol is not None and not rule.protocol.invert:
        return False
    if any(m.name not in _NARROWING_OK for m in rule.matches):
        return False
    if rule.source is not None and not rule.source.invert:
        return False
    if not iface_may_match(rule.out_interface, bridge.name):
        return False
    if rule.in_interface is not None and not rule.in_interface.invert and any(
            iface_may_match(rule.in_interface, name) for name in bridges):
        return False
    dst = _prefix(rule.destination)
    if dst is not None and subnets and not any(prefix_overlap(dst, s) for s in subnets):
        return False
    states = _ctstates(rule)
    return states is None or "NEW" in states


def _path_drops(inv: DockerInventory, table: str, chain: str, bridge: Bridge, subnets: Sequence[Prefix],
                seen: set[str]) -> bool:
    """Whether a chain (and the chains it jumps to for such traffic) drops routed traffic to the bridge."""
    seen.add(chain)
    names = list(inv.bridges)
    for rule in _chain_rules(inv.ruleset, table, chain):
        if _drops_routed(rule, bridge, subnets, names):
            return True
        target = rule.target
        if (target is not None and target.is_chain and target.name not in seen
                and _drops_routed(rule, bridge, subnets, names, verdict=False)
                and _path_drops(inv, table, target.name, bridge, subnets, seen)):
            return True
    return False


def _direct_routing(inv: DockerInventory) -> Iterator[Finding]:
    rs = inv.ruleset
    filt = rs.table("filter")
    if filt is None or "DOCKER" not in filt.chains or "FORWARD" not in filt.chains:
        return
    if any(name in filt.chains for name in ("DOCKER-FORWARD", "DOCKER-BRIDGE", "DOCKER-CT", "DOCKER-INTERNAL")):
        return  # Docker 28.0.1+ layout: per-network DROPs
    forward = filt.chains["FORWARD"]
    if forward.policy != "ACCEPT":
        return
    cmd = tool(rs)
    for bridge in inv.bridges.values():
        to_bridge = [r for r in forward.rules if _plain_iface(r.out_interface, False) == bridge.name
                     and _target(r) == "DOCKER"]
        if not to_bridge:
            continue  # not a bridge Docker forwards to (pre-28 writes '-A FORWARD -o BR -j DOCKER')
        subnets = [s for s, _ in bridge.subnets]
        if any(_path_drops(inv, table, chain, bridge, subnets, set())
               for table, chain in (("raw", "PREROUTING"), ("mangle", "PREROUTING"), ("mangle", "FORWARD"),
                                    ("filter", "FORWARD"))):
            continue
        where = f" ({', '.join(str(s) for s in subnets)})" if subnets else ""
        rel = [Related(rs.path, forward.pos.line, "FORWARD's policy is ACCEPT")] if forward.pos else []
        rel += [Related(r.pos.path, r.pos.line, f"{bridge.name}'s subnet") for _, r in bridge.subnets[:2]]
        yield rule_finding(
            "NL403",
            f"Docker before 28 (no per-network DROP), FORWARD policy ACCEPT and no rule dropping forwarded"
            f" traffic to {bridge.name}{where}: any host that routes that subnet via this machine reaches every"
            f" port of every container on {bridge.name}, published or not. Drop what Docker does not publish:"
            f" '{cmd} -A FORWARD ! -i {bridge.name} -o {bridge.name} -j DROP' (after Docker's rules; Docker 28+"
            f" adds the same), or '{cmd} -P FORWARD DROP'",
            to_bridge[0], tuple(rel))
