"""Infer a host model from the rules themselves.

Docker and kube-proxy name their bridges, subnets, containers and node addresses in the rules
they install (``../shared/research/docker-and-kube-proxy-rules.md`` 1.3-1.10, 2.1-2.3):

* ``-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE``: bridge docker0 holds 172.17.0.0/16, and
  Docker gives the bridge the subnet's first address (172.17.0.1/16);
* internal networks: ``! -s S -o br -j DROP`` / ``! -d S -i br -j DROP`` in
  DOCKER-ISOLATION-STAGE-1 or DOCKER-INTERNAL;
* containers: DNAT ``--to-destination`` addresses inside a bridge subnet, raw
  ``-d C/32 ! -i br -j DROP`` (28.x+) and filter ``DOCKER -d C/32 ! -i br -o br ... -j ACCEPT``;
* host addresses: ``-d A/32 ... -j DNAT`` (``-p A:8080:80``), ``-d A/32 -j KUBE-NODEPORTS``
  (``--nodeport-addresses``), ``SNAT --to-source A``, filter INPUT ``-d A/32``;
* kube-proxy's cluster CIDR from ``! -s C ... -j KUBE-MARK-MASQ``; flannel's pod CIDR from
  ``FLANNEL-POSTRTG -s P -d C -j RETURN`` (cni0 gets P's first address, flannel.1 P/32 and a
  route for C);
* the external interface: the ``-o`` of a MASQUERADE/SNAT that is not a bridge, else the
  ``-i`` of a DNAT, else an uplink-looking name used in a rule, else ``eth0``;
* host settings (research 1.6, P8, P11): Docker without the userland proxy
  (``-A POSTROUTING -o <br> -m addrtype --src-type LOCAL -j MASQUERADE``) sets
  ``route_localnet`` on that bridge and hairpin mode on its ports; kube-proxy in iptables mode
  (``KUBE-FIREWALL`` / ``KUBE-SERVICES``) sets ``net.ipv4.conf.all.route_localnet=1`` (every
  interface), and a Kubernetes node's bridge CNI (kubenet, flannel: ``hairpinMode``) puts
  its bridges' ports in hairpin mode so that a pod reaches its own Service.

What the rules do not say is filled with placeholders from the documentation ranges
(198.51.100.0/24, 203.0.113.0/24, 192.0.2.0/24; 2001:db8::/32) that collide with nothing the
rules name. Every fact and every assumption is written to :attr:`HostModel.inferred` with the
line it comes from. :func:`infer` never raises: whatever it cannot read it leaves out, and says so.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from natlint.extensions.targets_nat import NatRange
from natlint.host.model import Endpoint, HostModel, IfAddress, Interface, Route, cidr, format_ip, prefix_hosts
from natlint.model.ruleset import Option, Rule, Ruleset
from natlint.model.values import Interface as IfaceName
from natlint.model.values import Prefix, interface_name_problem

__all__ = ["infer"]

_BITS = {4: 32, 6: 128}
# Interface names that are Linux bridges wherever they appear (Docker, Kubernetes CNIs,
# libvirt, LXC/LXD, podman, OpenWrt's br-lan, the conventional br0).
_BRIDGE_NAME = re.compile(
    r"^(docker0|docker_gwbridge|br-.+|cni0|cbr0|kube-bridge|virbr\d+|lxcbr\d+|lxdbr\d+|podman\d+|br\d.*|vmbr\d+)$"
)
# Names that look like an uplink, for choosing the external interface when nothing else tells.
_UPLINK_NAME = re.compile(r"^(eth\d|en[ops]|eno|wl|ppp|wan|bond|em\d|ens)")
_MAX_LOCAL_ADDRESSES = 64
_MAX_DNAT_ENDPOINTS = 16
_MAX_CONTAINER_NOTES = 20


@dataclass
class _Draft:
    name: str
    order: int
    addresses: list[IfAddress] = field(default_factory=list)
    bridge: bool = False
    external: bool = False
    ports: list[str] = field(default_factory=list)
    route_localnet: bool = False
    hairpin: bool = False

    def holds(self, address: int) -> bool:
        return any(a.prefix.contains(address) for a in self.addresses)

    def freeze(self) -> Interface:
        return Interface(self.name, tuple(self.addresses), self.bridge, self.external, tuple(self.ports),
                         route_localnet=self.route_localnet, hairpin=self.hairpin and self.bridge)


def _where(rule: Rule) -> str:
    return f"line {rule.pos.line}: {rule.text.strip()}"


def _prefix(opt: Option | None) -> tuple[Prefix, bool] | None:
    if opt is None or not isinstance(opt.value, Prefix):
        return None
    return opt.value, opt.invert


def _ifname(opt: Option | None) -> tuple[str, bool] | None:
    """A concrete interface name (no ``+`` wildcard) and whether it is negated."""
    if opt is None or not isinstance(opt.value, IfaceName) or opt.value.is_wildcard:
        return None
    return opt.value.name, opt.invert


def _plen(p: Prefix) -> int:
    plen = p.prefix_length
    return plen if plen is not None else -1


def _is_host(p: Prefix) -> bool:
    return _plen(p) == _BITS[p.version]


def _nat_range(rule: Rule, *names: str) -> NatRange | None:
    if rule.target is None:
        return None
    for name in names:
        opt = rule.target.option(name)
        if opt is not None and isinstance(opt.value, NatRange):
            return opt.value
    return None


def _loopback(version: int, address: int) -> bool:
    return address >> 24 == 127 if version == 4 else address == 1


def _special(version: int, address: int) -> bool:
    """Addresses that are never an interface's own: loopback, multicast, broadcast, unspecified."""
    if _loopback(version, address) or address == 0:
        return True
    if version == 4:
        return address >> 28 >= 0xE or (address & 0xFF) in (0, 255) or address >> 24 == 0
    return address >> 120 == 0xFF


class _Inference:
    def __init__(self, ruleset: Ruleset) -> None:
        self.rs = ruleset
        self.v: int = ruleset.family
        self.bits = _BITS[self.v]
        self.rules = sorted(ruleset.rules(), key=lambda r: (r.pos.line, r.pos.column))
        self.ifaces: dict[str, _Draft] = {}
        self.notes: list[str] = []
        self.routes: list[Route] = []
        self.endpoints: dict[int, tuple[str, str]] = {}  # address -> (interface, evidence)
        self.chains = {c.name for t in ruleset.tables.values() for c in t}
        self.docker = bool(self.chains & {"DOCKER", "DOCKER-USER", "DOCKER-FORWARD", "DOCKER-ISOLATION-STAGE-1"})
        self.kube = any(c.startswith("KUBE-") for c in self.chains)
        self.flannel = bool(self.chains & {"FLANNEL-POSTRTG", "FLANNEL-FWD"})
        self.physdev = False
        self.named = self._mentioned_prefixes()
        # (address, rule, why): addresses the rules treat as the host's own
        self.local_candidates: list[tuple[int, Rule, str]] = []

    # ---- small helpers

    def note(self, text: str, rule: Rule | None = None) -> None:
        self.notes.append(f"{text} ({_where(rule)})" if rule is not None else text)

    def iface(self, name: str) -> _Draft:
        draft = self.ifaces.get(name)
        if draft is None:
            draft = self.ifaces[name] = _Draft(name, len(self.ifaces))
        return draft

    def fmt(self, address: int) -> str:
        return format_ip(self.v, address)

    def _mentioned_prefixes(self) -> list[Prefix]:
        found: list[Prefix] = []
        for rule in self.rules:
            for opt in (rule.source, rule.destination):
                p = _prefix(opt)
                if p is not None and _plen(p[0]) >= 12:
                    found.append(p[0])
            nat = _nat_range(rule, "to_destination", "to_source", "to")
            if nat is not None and nat.addresses is not None:
                found.append(Prefix.host(self.v, nat.addresses.first))
        return found

    def owner_of(self, address: int) -> _Draft | None:
        best: tuple[int, _Draft] | None = None
        for d in self.ifaces.values():
            for a in d.addresses:
                if a.prefix.contains(address) and (best is None or _plen(a.prefix) > best[0]):
                    best = (_plen(a.prefix), d)
        return best[1] if best else None

    def give_subnet(self, draft: _Draft, subnet: Prefix, rule: Rule | None, why: str) -> bool:
        """Give ``draft`` the subnet's first address (Docker's and most tools' convention)."""
        if any(a.prefix == subnet for a in draft.addresses) or _is_host(subnet) or _plen(subnet) < 1:
            return False
        others = (d for d in self.ifaces.values() if d is not draft)
        other = next((d for d in others if any(_overlap(a.prefix, subnet) for a in d.addresses)), None)
        if other is not None:
            self.note(f"{subnet} overlaps a subnet of {other.name}: not given to {draft.name} as well", rule)
            return False
        hosts = prefix_hosts(subnet)
        taken = set(self.endpoints)
        gateway = next((h for h in hosts[:8] if h not in taken), hosts[0])
        address = IfAddress(gateway, subnet)
        draft.addresses.append(address)
        self.note(f"{draft.name} has {address} ({why}; assumed: the interface holds the subnet's first address)", rule)
        return True

    def placeholder_subnet(self) -> Prefix:
        """A documentation subnet that overlaps nothing the rules name nor any interface."""
        if self.v == 4:
            candidates = [cidr(4, a, 24) for a in (0xC6336400, 0xCB007100, 0xC0000200)]
            candidates += [cidr(4, 0x64400000 + (n << 8), 24) for n in range(256)]
        else:
            candidates = [cidr(6, (0x20010DB8 << 96) | (n << 64), 64) for n in range(256)]
        used = [a.prefix for d in self.ifaces.values() for a in d.addresses]
        for c in candidates:
            if not any(_overlap(c, p) for p in [*self.named, *used]):
                return c
        return candidates[-1]

    # ---- passes

    def run(self) -> HostModel:
        lo = self.iface("lo")
        lo.addresses.append(_loopback_address(self.v))
        self.note(f"lo has {lo.addresses[0]} (every Linux host)")
        self.masquerade_subnets()
        self.internal_subnets()
        self.docker_endpoints()
        self.kubernetes()
        self.named_interfaces()
        self.accept_subnets()
        self.guess_bridge_subnets()
        self.dnat_endpoints()
        external = self.external_interface()
        self.local_addresses(external)
        self.address_externals(external)
        self.host_settings()
        br_netfilter = self.br_netfilter()
        return self.build(br_netfilter)

    def masquerade_subnets(self) -> None:
        """``-s S ! -o X -j MASQUERADE|SNAT``: S lives behind X (Docker, libvirt, LXC...)."""
        for rule in self.rules:
            if rule.target is None or rule.target.name not in ("MASQUERADE", "SNAT"):
                continue
            src, out = _prefix(rule.source), _ifname(rule.out_interface)
            if src is None or out is None or src[1] or not out[1] or out[0] == "lo":
                continue
            draft = self.iface(out[0])
            if self.docker or _BRIDGE_NAME.match(draft.name):
                draft.bridge = True
            why = f"its subnet {src[0]} is masqueraded when leaving through another interface"
            self.give_subnet(draft, src[0], rule, why)

    def internal_subnets(self) -> None:
        """Docker internal networks: ``! -s S -o br -j DROP`` / ``! -d S -i br -j DROP``."""
        for rule in self.rules:
            if rule.chain not in ("DOCKER-ISOLATION-STAGE-1", "DOCKER-INTERNAL") or rule.target is None:
                continue
            if rule.target.name != "DROP":
                continue
            for addr_opt, if_opt in ((rule.source, rule.out_interface), (rule.destination, rule.in_interface)):
                addr, name = _prefix(addr_opt), _ifname(if_opt)
                if addr is None or name is None or not addr[1] or name[1]:
                    continue
                draft = self.iface(name[0])
                draft.bridge = True
                self.give_subnet(draft, addr[0], rule, f"Docker internal network {addr[0]}")

    def add_endpoint(self, address: int, bridge: str, rule: Rule, why: str) -> None:
        if address in self.endpoints:
            return
        self.endpoints[address] = (bridge, f"{why} ({_where(rule)})")

    def docker_endpoints(self) -> None:
        """raw ``-d C/32 ! -i br -j DROP`` and filter ``DOCKER -d C/32 ! -i br -o br ... -j ACCEPT``."""
        for rule in self.rules:
            dst, inn = _prefix(rule.destination), _ifname(rule.in_interface)
            if dst is None or inn is None or dst[1] or not inn[1] or not _is_host(dst[0]) or rule.target is None:
                continue
            address, bridge = dst[0].address, inn[0]
            if bridge == "lo" or _loopback(self.v, address):
                continue
            raw_guard = rule.table == "raw" and rule.chain == "PREROUTING" and rule.target.name == "DROP"
            out = _ifname(rule.out_interface)
            docker_accept = (
                rule.table == "filter" and rule.chain == "DOCKER" and rule.target.name == "ACCEPT"
                and out is not None and not out[1] and out[0] == bridge
            )
            if (raw_guard and (self.docker or _BRIDGE_NAME.match(bridge))) or docker_accept:
                self.iface(bridge).bridge = True
                what = "Docker's direct-access guard" if raw_guard else "Docker's published-port ACCEPT"
                self.add_endpoint(address, bridge, rule, what)

    def kubernetes(self) -> None:
        if not self.kube and not self.flannel:
            return
        cluster: Counter[Prefix] = Counter()
        cluster_rule: dict[Prefix, Rule] = {}
        pod: Prefix | None = None
        pod_rule: Rule | None = None
        for rule in self.rules:
            src = _prefix(rule.source)
            dst = _prefix(rule.destination)
            target = rule.target.name if rule.target is not None else ""
            if src is not None and src[1] and target == "KUBE-MARK-MASQ" and rule.chain.startswith("KUBE-SVC-"):
                cluster[src[0]] += 1
                cluster_rule.setdefault(src[0], rule)
            if (
                rule.chain == "FLANNEL-POSTRTG" and target == "RETURN" and src is not None and dst is not None
                and not src[1] and not dst[1] and _plen(src[0]) > _plen(dst[0]) and dst[0].contains(src[0].address)
            ):
                pod, pod_rule = src[0], rule  # -s <pod CIDR> -d <cluster CIDR> -j RETURN
                cluster[dst[0]] += 1
                cluster_rule.setdefault(dst[0], rule)
            if (
                rule.chain == "KUBE-SERVICES" and target == "KUBE-NODEPORTS" and dst is not None
                and not dst[1] and _is_host(dst[0]) and not _loopback(self.v, dst[0].address)
            ):
                self.local_candidates.append((dst[0].address, rule, "a kube-proxy node IP (--nodeport-addresses)"))
        if cluster:
            cidr_, _ = cluster.most_common(1)[0]
            self.note(f"Kubernetes cluster CIDR {cidr_}", cluster_rule[cidr_])
            if pod is not None and pod_rule is not None:
                cni = self.iface("cni0")
                cni.bridge = True
                self.give_subnet(cni, pod, pod_rule, f"this node's pod CIDR {pod} (flannel)")
                if self.flannel:
                    tunnel = self.iface("flannel.1")
                    tunnel.addresses.append(IfAddress(pod.address, Prefix.host(self.v, pod.address)))
                    self.routes.append(Route(cidr_, "flannel.1"))
                    self.note(
                        f"flannel.1 has {self.fmt(pod.address)}/{self.bits} and the other nodes' pods ({cidr_})"
                        " are routed through it (flannel installs one route per node; modelled as one)",
                        pod_rule,
                    )
            else:
                self.note(f"this node's pod CIDR is not in the rules: pods in {cidr_} have no interface in the model")
        if self.kube and not any(c[2].startswith("a kube-proxy node IP") for c in self.local_candidates):
            self.note(
                "kube-proxy matches node ports with --dst-type LOCAL (no --nodeport-addresses): the node IP is"
                " not in the rules, so the external interface gets a placeholder; give the real one with --host"
            )

    def named_interfaces(self) -> None:
        """Every concrete interface a rule names (-i, -o, --physdev-in/out)."""
        patterns: dict[str, Rule] = {}
        for rule in self.rules:
            names: list[IfaceName] = []
            for opt in (rule.in_interface, rule.out_interface):
                if opt is not None and isinstance(opt.value, IfaceName):
                    names.append(opt.value)
            physdev = rule.match("physdev")
            if physdev is not None:
                self.physdev = True
                for key in ("physdev_in", "physdev_out"):
                    opt = physdev.option(key)
                    if opt is not None and isinstance(opt.value, IfaceName):
                        names.append(opt.value)
                        if not opt.value.is_wildcard:
                            for bopt in (rule.in_interface, rule.out_interface):
                                b = _ifname(bopt)
                                if b is not None and not b[1]:
                                    bridge = self.iface(b[0])
                                    bridge.bridge = True
                                    if opt.value.name not in bridge.ports:
                                        bridge.ports.append(opt.value.name)
            for name in names:
                if name.is_any:
                    continue
                if name.is_wildcard:
                    patterns.setdefault(name.name, rule)
                    continue
                if interface_name_problem(name.name) is not None:
                    continue
                draft = self.iface(name.name)
                if _BRIDGE_NAME.match(draft.name):
                    draft.bridge = True
        for pattern, rule in patterns.items():
            self.note(f"interface pattern {pattern} names no single interface: none added for it", rule)

    def accept_subnets(self) -> None:
        """``-i X -s S -j ACCEPT`` / ``-o X -d S -j ACCEPT`` with a private S: S behind X.

        Only for interfaces that have no subnet yet, only private ranges, only ACCEPT: anti-
        spoofing rules (``-i eth0 -s 10.0.0.0/8 -j DROP``) say the opposite.
        """
        for rule in self.rules:
            if rule.target is None or rule.target.name != "ACCEPT" or rule.table != "filter":
                continue
            if "FORWARD" not in rule.chain.upper() and "FWD" not in rule.chain.upper():
                continue
            for addr_opt, if_opt in ((rule.source, rule.in_interface), (rule.destination, rule.out_interface)):
                addr, name = _prefix(addr_opt), _ifname(if_opt)
                if addr is None or name is None or addr[1] or name[1] or name[0] == "lo":
                    continue
                subnet = addr[0]
                if not (8 <= _plen(subnet) <= self.bits - 2) or not _private(subnet):
                    continue
                draft = self.iface(name[0])
                if not draft.addresses:
                    self.give_subnet(draft, subnet, rule, f"rules forward {subnet} through it")

    def guess_bridge_subnets(self) -> None:
        """Bridges with containers but no subnet; docker0 with no subnet at all."""
        for address, (bridge, evidence) in list(self.endpoints.items()):
            draft = self.iface(bridge)
            if draft.holds(address):
                continue
            # Docker's default pools: 172.17-31.0.0/16, then 192.168.0.0/16 in /20s
            length = 64 if self.v == 6 else 16 if address >> 20 == 0xAC1 else 20 if address >> 16 == 0xC0A8 else 24
            subnet = cidr(self.v, address, length)
            if not draft.addresses:
                why = f"guessed /{length} around its container {self.fmt(address)}, {evidence}"
                self.give_subnet(draft, subnet, None, why)
        docker0 = self.ifaces.get("docker0")
        if docker0 is not None and not docker0.addresses and self.v == 4:
            self.give_subnet(docker0, cidr(4, 0xAC110000, 16), None, "Docker's default bridge subnet: no rule names it")

    def dnat_endpoints(self) -> None:
        outside: list[tuple[int, Rule]] = []
        for rule in self.rules:
            nat = _nat_range(rule, "to_destination", "to") if rule.target and rule.target.name == "DNAT" else None
            if nat is None or nat.addresses is None:
                continue
            first, last = nat.addresses.first, nat.addresses.last
            if last < first:
                continue
            count = min(last - first + 1, _MAX_DNAT_ENDPOINTS)
            for address in range(first, first + count):
                owner = self.owner_of(address)
                if owner is not None and owner.bridge and not any(a.address == address for a in owner.addresses):
                    self.add_endpoint(address, owner.name, rule, "a DNAT target")
                elif owner is None and not _loopback(self.v, address):
                    outside.append((address, rule))
        if outside:
            names = [self.fmt(a) for a in sorted({a for a, _ in outside})]
            shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
            self.note(f"DNAT targets outside every known subnet are reached through routes: {shown}", outside[0][1])

    def external_interface(self) -> _Draft:
        """The ``-o`` of a MASQUERADE (or of an SNAT to a public address) that is no bridge of
        the model, else a DNAT's ``-i``, else an uplink-like name, else ``eth0``."""
        chosen: _Draft | None = None
        for rule in self.rules:
            if rule.target is None or rule.target.name not in ("MASQUERADE", "SNAT"):
                continue
            out = _ifname(rule.out_interface)
            if out is None or out[1] or out[0] == "lo":
                continue
            draft = self.iface(out[0])
            if draft.addresses and draft.bridge:
                continue  # -o docker0 --src-type LOCAL (hairpin): a bridge of the model
            if rule.target.name == "SNAT":
                # SNAT also maps VPN clients onto internal networks: only a public address
                # (or none) marks an uplink
                nat = _nat_range(rule, "to_source", "to")
                if nat is not None and nat.addresses is not None and _private(Prefix.host(self.v, nat.addresses.first)):
                    continue
            if not draft.external:
                draft.external = True
                verb = "masqueraded" if rule.target.name == "MASQUERADE" else "SNATed to a public address"
                self.note(f"{draft.name} is external: traffic leaving through it is {verb}", rule)
            chosen = chosen or draft
        if chosen is None:
            for rule in self.rules:
                if rule.target is None or rule.target.name != "DNAT":
                    continue
                inn = _ifname(rule.in_interface)
                if inn is None or inn[1] or inn[0] == "lo" or self.iface(inn[0]).bridge:
                    continue
                chosen = self.iface(inn[0])
                chosen.external = True
                self.note(f"{chosen.name} is external: ports are forwarded from it", rule)
                break
        if chosen is None:
            uplinks = [d for d in self.ifaces.values() if not d.bridge and _UPLINK_NAME.match(d.name)]
            if uplinks:
                chosen = uplinks[0]
                self.note(
                    f"{chosen.name} is assumed external: no MASQUERADE or DNAT names one, and it is the first"
                    " uplink-like name in the rules"
                )
            else:
                chosen = self.iface("eth0")
                self.note("eth0 is assumed external: the rules name no external interface")
        chosen.external = True
        return chosen

    def local_addresses(self, external: _Draft) -> None:
        """Addresses the rules treat as the host's own."""
        candidates = list(self.local_candidates)
        for rule in self.rules:
            if rule.target is None:
                continue
            dst = _prefix(rule.destination)
            target = rule.target.name if rule.target is not None else ""
            host_dst = dst is not None and not dst[1] and _is_host(dst[0])
            if dst is not None and host_dst and target == "DNAT" and rule.table == "nat":
                candidates.append((dst[0].address, rule, "a DNAT rule's destination (a published or forwarded port)"))
            elif dst is not None and host_dst and rule.table == "filter" and rule.chain == "INPUT":
                candidates.append((dst[0].address, rule, "a filter INPUT rule's destination"))
            if target == "SNAT":
                nat = _nat_range(rule, "to_source", "to")
                if nat is not None and nat.addresses is not None and nat.addresses.last - nat.addresses.first < 4:
                    for a in range(nat.addresses.first, nat.addresses.last + 1):
                        candidates.append((a, rule, "an SNAT source address"))
        added = 0
        # Candidates that name their interface first, so that a guessed subnet goes where it belongs.
        candidates.sort(key=lambda c: self._side(c[1]) is None)
        for address, rule, why in candidates:
            known = {a.address for d in self.ifaces.values() for a in d.addresses}
            if _special(self.v, address) or address in known:
                continue
            if added >= _MAX_LOCAL_ADDRESSES:
                self.note(f"more than {_MAX_LOCAL_ADDRESSES} host addresses in the rules: the rest are left out", rule)
                break
            owner = self.owner_of(address)
            target_if = owner
            if target_if is None:
                side = self._side(rule)
                target_if = self.iface(side) if side is not None else external
            if owner is not None:
                prefix = next(a.prefix for a in owner.addresses if a.prefix.contains(address))
            elif not target_if.addresses:
                length = 24 if self.v == 4 else 64
                prefix = cidr(self.v, address, length)
                why += f"; its /{length} is a guess"
            else:
                prefix = Prefix.host(self.v, address)
            target_if.addresses.append(IfAddress(address, prefix))
            added += 1
            self.note(f"{target_if.name} has {self.fmt(address)}/{_plen(prefix)} ({why})", rule)

    @staticmethod
    def _side(rule: Rule) -> str | None:
        """The interface a local address of this rule sits on: SNAT's ``-o``, else ``-i``."""
        snat = rule.target is not None and rule.target.name == "SNAT"
        named = _ifname(rule.out_interface if snat else rule.in_interface)
        return named[0] if named is not None and not named[1] and named[0] != "lo" else None

    def address_externals(self, primary: _Draft) -> None:
        for draft in sorted(self.ifaces.values(), key=lambda d: (d is not primary, d.order)):
            if not draft.external or draft.addresses:
                continue
            subnet = self.placeholder_subnet()
            hosts = prefix_hosts(subnet)
            draft.addresses.append(IfAddress(hosts[0], subnet))
            self.note(
                f"{draft.name} has the placeholder address {self.fmt(hosts[0])}/{_plen(subnet)}: the rules do not say;"
                " give the real one with --host"
            )
        if not primary.addresses:
            return
        subnet = primary.addresses[0].prefix
        hosts = prefix_hosts(subnet)
        taken = {a.address for a in primary.addresses}
        preferred = hosts[-1] if self.v == 4 else subnet.address | 0xFFFE  # .254 / ::fffe by habit
        gateway = next((h for h in (preferred, hosts[0], *hosts[1:4]) if h not in taken), None)
        default = cidr(self.v, 0, 0)
        if not any(r.dst == default for r in self.routes):
            self.routes.append(Route(default, primary.name, gateway))
            via = f" via {self.fmt(gateway)}" if gateway is not None else ""
            self.note(f"the default route goes out of {primary.name}{via} (assumed)")

    def host_settings(self) -> None:
        """route_localnet and hairpin mode, from Docker's userland-proxy-off signature and
        from kube-proxy (see the module documentation)."""
        for rule in self.rules:
            if rule.table != "nat" or rule.chain != "POSTROUTING" or rule.target is None:
                continue
            out = _ifname(rule.out_interface)
            addrtype = rule.match("addrtype")
            src_type = addrtype.option("src_type") if addrtype is not None else None
            if (
                rule.target.name != "MASQUERADE" or out is None or out[1] or out[0] == "lo" or src_type is None
                or src_type.invert or src_type.value != frozenset({"LOCAL"}) or rule.source is not None
            ):
                continue
            draft = self.iface(out[0])
            if not draft.bridge:
                continue
            if self.v == 4 and not draft.route_localnet:
                draft.route_localnet = True
                self.note(f"{draft.name} has route_localnet on (Docker without the userland proxy masquerades"
                          " the host's own addresses, 127.0.0.1 included, onto it)", rule)
            if not draft.hairpin:
                draft.hairpin = True
                self.note(f"{draft.name}'s ports are in hairpin mode (Docker without the userland proxy)", rule)
        if not self.kube:
            return
        marker = next((r for r in self.rules if r.chain == "KUBE-FIREWALL"), None) or next(
            (r for r in self.rules if r.chain == "KUBE-SERVICES"), None)
        if marker is None:
            return
        if self.v == 4:
            names = [d.name for d in self.ifaces.values() if d.name != "lo"]
            for d in self.ifaces.values():
                d.route_localnet = d.name != "lo"
            self.note("route_localnet is on for every interface (" + ", ".join(names) + "): kube-proxy in iptables"
                      " mode sets net.ipv4.conf.all.route_localnet=1", marker)
        for d in self.ifaces.values():
            if d.bridge and not d.hairpin:
                d.hairpin = True
                self.note(f"{d.name}'s ports are assumed in hairpin mode (a Kubernetes node: kubelet and the"
                          " bridge CNI set it so that a pod reaches its own Service)", marker)

    def br_netfilter(self) -> bool:
        reasons = [r for r, on in (
            ("Docker loads br_netfilter", self.docker),
            ("Kubernetes requires bridge-nf-call-iptables=1", self.kube),
            ("physdev matches need br_netfilter", self.physdev),
        ) if on]
        if reasons:
            self.note(f"br_netfilter is on: {'; '.join(reasons)}")
            return True
        if any(d.bridge for d in self.ifaces.values()):
            self.note(
                "br_netfilter is assumed off (no Docker, Kubernetes or physdev rule): bridged traffic skips iptables;"
                " set br_netfilter = true in a host file if the module is loaded"
            )
        return False

    def build(self, br_netfilter: bool) -> HostModel:
        drafts = sorted(self.ifaces.values(), key=lambda d: (d.name != "lo", not d.external, not d.bridge, d.order))
        containers: list[Endpoint] = []
        bridge_order = {d.name: i for i, d in enumerate(drafts)}
        usable = [
            (a, b, why) for a, (b, why) in self.endpoints.items()
            if b in self.ifaces and self.ifaces[b].bridge
        ]
        usable.sort(key=lambda e: (bridge_order.get(e[1], 0), e[0]))
        for n, (address, bridge, why) in enumerate(usable, 1):
            name = f"c{n}"
            containers.append(Endpoint(address, bridge, name))
            if n <= _MAX_CONTAINER_NOTES:
                self.notes.append(f"container {name} at {self.fmt(address)} on {bridge}: {why}")
        if len(usable) > _MAX_CONTAINER_NOTES:
            rest = len(usable) - _MAX_CONTAINER_NOTES
            self.notes.append(f"and {rest} more containers (c{_MAX_CONTAINER_NOTES + 1}...), found the same ways")
        return HostModel(
            family=self.rs.family,
            interfaces=tuple(d.freeze() for d in drafts),
            routes=tuple(self.routes),
            br_netfilter=br_netfilter,
            containers=tuple(containers),
            inferred=tuple(self.notes),
            source="inferred",
        )


_PRIVATE4 = [cidr(4, 0x0A000000, 8), cidr(4, 0xAC100000, 12), cidr(4, 0xC0A80000, 16), cidr(4, 0x64400000, 10)]
_PRIVATE6 = [cidr(6, 0xFC << 120, 7)]


def _loopback_address(version: int) -> IfAddress:
    return IfAddress(0x7F000001, cidr(4, 0x7F000000, 8)) if version == 4 else IfAddress(1, Prefix.host(6, 1))


def _private(p: Prefix) -> bool:
    ranges = _PRIVATE4 if p.version == 4 else _PRIVATE6
    return any(r.contains(p.address) and _plen(p) >= _plen(r) for r in ranges)


def _overlap(a: Prefix, b: Prefix) -> bool:
    return a.contains(b.address) or b.contains(a.address)


def infer(ruleset: Ruleset) -> HostModel:
    """The host model the rules imply (see the module documentation). Never raises."""
    try:
        return _Inference(ruleset).run()
    except Exception as exc:  # a bug here must not stop the analysis: fall back to defaults
        return HostModel(
            family=ruleset.family,
            interfaces=(Interface("lo", (_loopback_address(ruleset.family),)),),
            inferred=(f"host inference failed ({type(exc).__name__}: {exc}): only the loopback interface is modelled",),
        )
