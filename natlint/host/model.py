"""The host model: interfaces, their addresses and subnets, bridges, routes, LOCAL addresses.

netfilter's answers depend on the machine the rules run on: whether a packet goes to INPUT or
FORWARD is a routing decision, ``-m addrtype --dst-type LOCAL`` asks the kernel's local table,
MASQUERADE takes the outgoing interface's address and traffic between two ports of one bridge
crosses FORWARD only when ``br_netfilter`` is loaded. :class:`HostModel` is that machine, for
one address family, in the terms the kernel uses:

* the *local table* (``ip route show table local``): every interface address is ``local``, a
  loopback interface's whole subnet is ``local`` (``127.0.0.0/8``), and each IPv4 subnet of
  /30 or shorter has a ``broadcast`` entry for its last address. Kernels since 5.x no longer
  add one for the subnet's first address (checked on 6.18); older ones did.
* the *main table*: a connected route per interface subnet plus :attr:`HostModel.routes`,
  longest prefix first, connected routes before configured ones of the same length.

Everything is an immutable value; methods compute on demand (and cache what is costly).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from natlint.model.values import Prefix

__all__ = [
    "ADDRESS_TYPES",
    "AddressType",
    "Endpoint",
    "HostModel",
    "HostSource",
    "IfAddress",
    "Interface",
    "Route",
    "RouteDecision",
    "RouteKind",
    "cidr",
    "format_ip",
    "prefix_hosts",
]

AddressType = Literal[
    "UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE",
    "UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE",
]
ADDRESS_TYPES: tuple[AddressType, ...] = (
    "UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE",
    "UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE",
)
RouteKind = Literal["unicast", "blackhole", "unreachable", "prohibit"]
HostSource = Literal["inferred", "file", "live"]
DecisionKind = Literal["local", "forward", "unreachable"]

_BITS = {4: 32, 6: 128}


def _bits(version: int) -> int:
    return _BITS[version]


def cidr(version: int, address: int, length: int) -> Prefix:
    """The prefix ``address/length`` (host bits cleared)."""
    bits = _bits(version)
    full = (1 << bits) - 1
    mask = (full << (bits - length)) & full
    return Prefix(version, address & mask, mask)


def format_ip(version: int, address: int) -> str:
    return str(ipaddress.IPv4Address(address) if version == 4 else ipaddress.IPv6Address(address))


def _plen(prefix: Prefix) -> int:
    """The CIDR length of a prefix; a non-contiguous mask counts as its number of set bits
    (host models only hold CIDR prefixes: the readers refuse anything else)."""
    plen = prefix.prefix_length
    return plen if plen is not None else bin(prefix.mask).count("1")


def prefix_hosts(prefix: Prefix) -> range:
    """The usable host addresses of a subnet, in order (IPv4 /31 and /32 and IPv6: all)."""
    bits = _bits(prefix.version)
    plen = _plen(prefix)
    first = prefix.address
    last = prefix.address | (((1 << bits) - 1) >> plen if plen < bits else 0)
    if prefix.version == 4 and plen <= 30:
        return range(first + 1, last)
    if prefix.version == 6 and plen <= 126:
        return range(first + 1, last + 1)  # the subnet-router anycast address is not a host
    return range(first, last + 1)


# ---------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class IfAddress:
    """An interface address with its subnet: ``172.17.0.1/16`` is
    ``IfAddress(0xAC110001, Prefix(172.17.0.0/16))``."""

    address: int
    prefix: Prefix

    @property
    def version(self) -> int:
        return self.prefix.version

    @property
    def host(self) -> Prefix:
        return Prefix.host(self.prefix.version, self.address)

    @property
    def broadcast(self) -> int | None:
        """The IPv4 directed broadcast address of the subnet (None for /31, /32 and IPv6)."""
        plen = _plen(self.prefix)
        if self.version != 4 or plen > 30:
            return None
        return self.prefix.address | (0xFFFFFFFF >> plen)

    def __str__(self) -> str:
        return f"{format_ip(self.version, self.address)}/{_plen(self.prefix)}"

    @classmethod
    def parse(cls, text: str) -> IfAddress:
        """``ADDRESS/LENGTH`` (a bare address is a /32 or /128 as ``ip addr add`` makes it)."""
        try:
            iface = ipaddress.ip_interface(text.strip())
        except ValueError:
            raise ValueError(f"'{text}' is not an interface address: write ADDRESS/LENGTH, e.g. 10.0.0.1/24") from None
        version = iface.version
        return cls(int(iface.ip), cidr(version, int(iface.ip), iface.network.prefixlen))


@dataclass(frozen=True, slots=True)
class Interface:
    """A network interface of the host.

    ``bridge``: a Linux bridge (its ports' traffic is bridged, and crosses FORWARD when
    br_netfilter is on). ``external``: faces the outside world (MASQUERADE's usual ``-o``, the
    default route). ``ports``: the bridge's member interfaces, where known.

    ``route_localnet`` (IPv4, ``net.ipv4.conf.<name>.route_localnet``, or ``conf.all``): the
    kernel routes 127.0.0.0/8 on this interface. Off (the default), routing drops a packet
    arriving here whose destination (after DNAT) or source is in 127.0.0.0/8 (martian), and
    a locally generated packet with a 127.0.0.0/8 source that would leave through here (e.g.
    ``127.0.0.1:PORT`` DNATed in nat OUTPUT to a container). Docker without the userland proxy
    turns it on for its bridges, kube-proxy (iptables mode) for every interface.

    ``hairpin`` (bridges: ``hairpin_mode`` of every port): the bridge may send a frame back
    out of the port it came in on. Off (the default), with br_netfilter a packet DNATed back
    to its own sender (a container reaching its own published port) is dropped by the bridge
    before FORWARD. Docker without the userland proxy turns it on for its veths.
    """

    name: str
    addresses: tuple[IfAddress, ...] = ()
    bridge: bool = False
    external: bool = False
    ports: tuple[str, ...] = ()
    route_localnet: bool = False
    hairpin: bool = False

    @property
    def loopback(self) -> bool:
        return self.name == "lo"

    @property
    def subnets(self) -> tuple[Prefix, ...]:
        return tuple(a.prefix for a in self.addresses)


@dataclass(frozen=True, slots=True)
class Route:
    """A main-table route: ``dst`` through ``dev``, optionally via the gateway ``via``.

    ``kind`` other than ``unicast`` is a route that drops (``ip route add blackhole ...``);
    such a route has no device (``dev == ""``).
    """

    dst: Prefix
    dev: str
    via: int | None = None
    kind: RouteKind = "unicast"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A container (or pod) address behind one of the host's bridges."""

    address: int
    bridge: str
    name: str


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """What routing does with a destination address.

    ``local``: delivered to this host (INPUT, or ``-o lo`` for locally generated packets).
    ``oif`` is ``"lo"`` for the host's own addresses, the subnet's interface for a directed
    broadcast, None for the limited broadcast and multicast.
    ``forward``: sent out of ``oif`` (FORWARD for arriving packets), to the gateway ``via``
    when there is one. ``unreachable``: no route, a blackhole/unreachable/prohibit route, or a
    martian destination (IPv4 ``0.0.0.0/8``): the packet is dropped (or answered with an ICMP
    error) by routing, before FORWARD.
    """

    kind: DecisionKind
    oif: str | None = None
    via: int | None = None


_UNREACHABLE = RouteDecision("unreachable")


# ---------------------------------------------------------------- address sets (intervals)

# Sets of addresses as sorted, disjoint, non-adjacent inclusive intervals: enough algebra for
# addrtype (unions, intersections, complements) without a dependency.
_Intervals = list[tuple[int, int]]


def _iv_from_prefixes(prefixes: Iterable[Prefix]) -> _Intervals:
    spans = []
    for p in prefixes:
        bits = _bits(p.version)
        spans.append((p.address, p.address | (((1 << bits) - 1) >> _plen(p) if _plen(p) < bits else 0)))
    return _iv_normalize(spans)


def _iv_normalize(spans: Iterable[tuple[int, int]]) -> _Intervals:
    out: _Intervals = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _iv_union(a: _Intervals, b: _Intervals) -> _Intervals:
    return _iv_normalize([*a, *b])


def _iv_complement(a: _Intervals, bits: int) -> _Intervals:
    out: _Intervals = []
    nxt = 0
    for lo, hi in a:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= (1 << bits) - 1:
        out.append((nxt, (1 << bits) - 1))
    return out


def _iv_intersect(a: _Intervals, b: _Intervals) -> _Intervals:
    out: _Intervals = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _iv_to_prefixes(a: _Intervals, version: int) -> list[Prefix]:
    bits = _bits(version)
    out: list[Prefix] = []
    for lo, hi in a:
        start = lo
        while start <= hi:
            # the largest aligned block starting at `start` that fits in [start, hi]
            size = (start & -start).bit_length() - 1 if start else bits
            while size > 0 and start + (1 << size) - 1 > hi:
                size -= 1
            out.append(cidr(version, start, bits - size))
            start += 1 << size
    return out


# ---------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class _Entry:
    """One routing-table entry, for lookups: ``tier`` 0 is the local table, 1 the main one."""

    prefix: Prefix
    tier: int
    decision: RouteDecision


@dataclass(frozen=True)
class HostModel:
    """The host the rules run on, for one address family.

    ``br_netfilter``: bridged traffic (between two ports of one bridge) traverses the
    iptables FORWARD chain as ``-i br -o br`` (Docker loads the module: on every Docker host).
    ``ip_forward``: the host routes between interfaces (arriving packets for other hosts reach
    FORWARD; otherwise routing drops them).
    ``inferred``: what was assumed and from which line (empty for a model read from a file).
    """

    family: Literal[4, 6]
    interfaces: tuple[Interface, ...] = ()
    routes: tuple[Route, ...] = ()
    br_netfilter: bool = True
    containers: tuple[Endpoint, ...] = ()
    inferred: tuple[str, ...] = ()
    source: HostSource = "inferred"
    ip_forward: bool = True

    def __post_init__(self) -> None:
        for iface in self.interfaces:
            for a in iface.addresses:
                if a.version != self.family:
                    raise ValueError(f"interface {iface.name}: {a} is not an IPv{self.family} address")
        for r in self.routes:
            if r.dst.version != self.family:
                raise ValueError(f"route {r.dst}: not an IPv{self.family} prefix")
        names = [i.name for i in self.interfaces]
        if len(set(names)) != len(names):
            raise ValueError(f"interface names repeat: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")

    # ---- interfaces

    def interface(self, name: str) -> Interface | None:
        for iface in self.interfaces:
            if iface.name == name:
                return iface
        return None

    def interface_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.interfaces)

    def localnet(self, ifname: str) -> bool:
        """Whether routing accepts 127.0.0.0/8 on ``ifname`` (``lo`` always does)."""
        iface = self.interface(ifname)
        return ifname == "lo" or (iface is not None and iface.route_localnet)

    def bridges(self) -> tuple[Interface, ...]:
        return tuple(i for i in self.interfaces if i.bridge)

    def external_interfaces(self) -> tuple[Interface, ...]:
        return tuple(i for i in self.interfaces if i.external)

    @property
    def external(self) -> Interface | None:
        """The (first) external interface."""
        ext = self.external_interfaces()
        return ext[0] if ext else None

    def primary_address(self, ifname: str, toward: int | None = None) -> int | None:
        """The address MASQUERADE uses on ``ifname`` (and REDIRECT on an incoming interface).

        The kernel (``inet_select_addr``) prefers a primary address whose subnet holds the
        next hop ``toward``; otherwise the interface's first address. None: no address, and
        MASQUERADE drops the packet.
        """
        iface = self.interface(ifname)
        if iface is None or not iface.addresses:
            return None
        if toward is not None:
            for a in iface.addresses:
                if a.prefix.contains(toward):
                    return a.address
        return iface.addresses[0].address

    def bridge_of(self, address: int) -> str | None:
        """The bridge whose subnet holds ``address`` (or a listed container's bridge)."""
        for c in self.containers:
            if c.address == address:
                return c.bridge
        best: tuple[int, str] | None = None
        for iface in self.interfaces:
            if not iface.bridge:
                continue
            for a in iface.addresses:
                if a.prefix.contains(address) and (best is None or _plen(a.prefix) > best[0]):
                    best = (_plen(a.prefix), iface.name)
        return best[1] if best else None

    def bridged(self, src: int, dst: int) -> str | None:
        """The bridge that carries ``src -> dst`` at layer 2 (both on its subnet), else None.

        Such traffic is bridged, not routed: iptables sees it in FORWARD as ``-i br -o br``
        only when :attr:`br_netfilter` is on, and not at all otherwise.
        """
        bridge = self.bridge_of(src)
        if bridge is None or bridge != self.bridge_of(dst) or src == dst:
            return None
        iface = self.interface(bridge)
        if iface is not None and any(a.address in (src, dst) for a in iface.addresses):
            return None  # the bridge's own address: routed to/from the host, not bridged
        return bridge

    # ---- the routing tables

    @cached_property
    def _entries(self) -> tuple[_Entry, ...]:
        v = self.family
        bits = _bits(v)
        entries: list[_Entry] = []
        local = RouteDecision("local", "lo")
        # local table: addresses, loopback subnets, broadcasts (kernel fib_add_ifaddr)
        for iface in self.interfaces:
            for a in iface.addresses:
                entries.append(_Entry(a.host, 0, local))
                if iface.loopback and _plen(a.prefix) < bits:
                    entries.append(_Entry(a.prefix, 0, local))
                bcast = a.broadcast
                if bcast is not None:
                    entries.append(_Entry(Prefix.host(4, bcast), 0, RouteDecision("local", iface.name)))
        if v == 4:
            entries.append(_Entry(cidr(4, 0x7F000000, 8), 0, local))
            entries.append(_Entry(Prefix.host(4, 0xFFFFFFFF), 0, RouteDecision("local")))
            entries.append(_Entry(cidr(4, 0xE0000000, 4), 0, RouteDecision("local")))
            entries.append(_Entry(cidr(4, 0, 8), 0, _UNREACHABLE))  # martian destination
        else:
            entries.append(_Entry(Prefix.host(6, 1), 0, local))
            entries.append(_Entry(cidr(6, 0xFF << 120, 8), 0, RouteDecision("local")))
        # main table: connected subnets, then routes (first wins among equal prefixes)
        for iface in self.interfaces:
            if iface.loopback:
                continue
            for a in iface.addresses:
                entries.append(_Entry(a.prefix, 1, RouteDecision("forward", iface.name)))
        for r in self.routes:
            if r.kind != "unicast":
                entries.append(_Entry(r.dst, 1, _UNREACHABLE))
            else:
                entries.append(_Entry(r.dst, 1, RouteDecision("forward", r.dev or self._dev_for(r.via), r.via)))
        return tuple(entries)

    def _dev_for(self, via: int | None) -> str | None:
        if via is None:
            return None
        for iface in self.interfaces:
            if any(a.prefix.contains(via) for a in iface.addresses):
                return iface.name
        return None

    def route(self, address: int) -> RouteDecision:
        """The routing decision for a destination: local table first, then longest match.

        Destination-only, like ``ip route get ADDRESS``: policy routing (``ip rule``), marks
        and rp_filter are not modelled; IPv4 0.0.0.0/8 is unreachable. The martian checks that
        depend on the interface (127.0.0.0/8 without :attr:`Interface.route_localnet`, IPv6
        ``::1`` off lo) are the engine's (natlint.netfilter.engine).
        """
        best: list[tuple[int, int, RouteDecision] | None] = [None, None]
        for order, e in enumerate(self._entries):
            if e.prefix.contains(address):
                plen = _plen(e.prefix)
                cur = best[e.tier]
                if cur is None or plen > cur[0]:
                    best[e.tier] = (plen, -order, e.decision)
        for tier in best:
            if tier is not None:
                return tier[2]
        return _UNREACHABLE

    def route_partition(self) -> list[tuple[tuple[Prefix, ...], RouteDecision]]:
        """The whole address space cut into prefix lists, each with its routing decision.

        Every address is in exactly one list; lists come in a stable order (by their first
        prefix). A symbolic engine routes a packet set by intersecting it with each list.
        """
        return list(self._partition)

    @cached_property
    def _partition(self) -> tuple[tuple[tuple[Prefix, ...], RouteDecision], ...]:
        bits = _bits(self.family)
        indexed = [(e, i) for i, e in enumerate(self._entries)]
        leaves: list[tuple[Prefix, RouteDecision]] = []
        self._split(0, 0, indexed, [None, None], leaves, bits)
        groups: dict[RouteDecision, list[Prefix]] = {}
        for prefix, decision in leaves:
            groups.setdefault(decision, []).append(prefix)
        ordered = sorted(groups.items(), key=lambda kv: kv[1][0].address)
        return tuple((tuple(prefixes), decision) for decision, prefixes in ordered)

    def _split(
        self,
        address: int,
        plen: int,
        entries: list[tuple[_Entry, int]],
        best: list[tuple[int, RouteDecision] | None],
        out: list[tuple[Prefix, RouteDecision]],
        bits: int,
    ) -> None:
        # Longest-prefix match over a binary trie: at each node, entries equal to the node
        # become the best match of their tier; a node with nothing more specific is a leaf.
        best = list(best)
        inside: list[tuple[_Entry, int]] = []
        for e, order in sorted(entries, key=lambda eo: eo[1]):
            if _plen(e.prefix) == plen:
                cur = best[e.tier]
                if cur is None or cur[0] < plen:
                    best[e.tier] = (plen, e.decision)
            else:
                inside.append((e, order))
        decision = next((b[1] for b in best if b is not None), _UNREACHABLE)
        if not inside:
            _append_leaf(out, cidr(self.family, address, plen), decision)
            return
        half = 1 << (bits - plen - 1)
        low = [(e, o) for e, o in inside if not e.prefix.address & half]
        high = [(e, o) for e, o in inside if e.prefix.address & half]
        self._split(address, plen + 1, low, best, out, bits)
        self._split(address | half, plen + 1, high, best, out, bits)

    # ---- address types (-m addrtype)

    def local_addresses(self) -> list[Prefix]:
        """The prefixes of the kernel's local table of type ``local``: every interface address,
        a loopback interface's whole subnet, and 127.0.0.0/8 (IPv4) or ::1 (IPv6)."""
        prefixes: list[Prefix] = []
        for iface in self.interfaces:
            for a in iface.addresses:
                prefixes.append(a.prefix if iface.loopback else a.host)
        prefixes.append(cidr(4, 0x7F000000, 8) if self.family == 4 else Prefix.host(6, 1))
        return _iv_to_prefixes(_iv_from_prefixes(prefixes), self.family)

    def addresses_of_type(self, address_type: str) -> list[Prefix]:
        """The addresses ``-m addrtype --dst-type TYPE`` (or ``--src-type``) matches.

        IPv4 (``inet_addr_type``): 0.0.0.0/8, 255.255.255.255 and each subnet's broadcast are
        BROADCAST, 224.0.0.0/4 MULTICAST, the local table's ``local`` entries LOCAL, every
        other address UNICAST; no address has any other type.
        IPv6 (``match_type6``): MULTICAST ff00::/8, UNSPEC ::, UNICAST every address that is
        neither of those nor IPv4-mapped (local ones included!), LOCAL the host's addresses,
        ANYCAST the subnet-router anycast address of each subnet (when forwarding),
        UNREACHABLE what has no route. The kernel refuses BROADCAST, BLACKHOLE and PROHIBIT and
        above in ip6tables: they give an empty list.

        Approximations: ``--limit-iface-in/out`` (per-device answers) is not modelled; a
        local-table entry added by hand (``ip route add local 10.96.0.0/12 dev lo``, AnyIP) is
        not modelled unless written as an address of ``lo``.
        """
        return self.addresses_of_types((address_type,))

    def addresses_of_types(self, types: Iterable[str]) -> list[Prefix]:
        """What a type list ``--dst-type LOCAL,BROADCAST`` matches.

        IPv4: the union of the types. IPv6 (``match_type6``) is not a union: MULTICAST, UNICAST
        and UNSPEC in the list each *restrict* the address, then, if LOCAL, ANYCAST or
        UNREACHABLE is listed, the route lookup must give one of those.
        """
        wanted = {t.upper() for t in types}
        bits = _bits(self.family)
        everything: _Intervals = [(0, (1 << bits) - 1)]
        if self.family == 4:
            result: _Intervals = []
            for t in wanted:
                result = _iv_union(result, self._v4_type(t))
            return _iv_to_prefixes(result, 4)
        multicast = _iv_from_prefixes([cidr(6, 0xFF << 120, 8)])
        unspec = [(0, 0)]
        mapped = _iv_from_prefixes([cidr(6, 0xFFFF << 32, 96)])
        if wanted & {"BROADCAST", "BLACKHOLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE"}:
            return []  # the kernel refuses these types in ip6tables: the rule never loads
        s = everything
        if "MULTICAST" in wanted:
            s = _iv_intersect(s, multicast)
        if "UNICAST" in wanted:
            not_unicast = _iv_union(_iv_union(multicast, unspec), mapped)
            s = _iv_intersect(s, _iv_complement(not_unicast, bits))
        if "UNSPEC" in wanted:
            s = _iv_intersect(s, unspec)
        routed = wanted & {"LOCAL", "ANYCAST", "UNREACHABLE"}
        if routed:
            by_route: _Intervals = []
            if "LOCAL" in routed:
                by_route = _iv_union(by_route, _iv_from_prefixes(self.local_addresses()))
            if "ANYCAST" in routed:
                by_route = _iv_union(by_route, _iv_from_prefixes(self._v6_anycast()))
            if "UNREACHABLE" in routed:
                dead = [p for prefixes, d in self._partition if d.kind == "unreachable" for p in prefixes]
                by_route = _iv_union(by_route, _iv_from_prefixes(dead))
            s = _iv_intersect(s, by_route)
        return _iv_to_prefixes(s, 6)

    def _v4_type(self, t: str) -> _Intervals:
        broadcast = self._v4_broadcast()
        multicast = _iv_from_prefixes([cidr(4, 0xE0000000, 4)])
        local = _iv_intersect(
            _iv_from_prefixes(self.local_addresses()), _iv_complement(_iv_union(broadcast, multicast), 32)
        )
        if t == "BROADCAST":
            return broadcast
        if t == "MULTICAST":
            return multicast
        if t == "LOCAL":
            return local
        if t == "UNICAST":
            return _iv_complement(_iv_union(_iv_union(broadcast, multicast), local), 32)
        return []

    def _v4_broadcast(self) -> _Intervals:
        prefixes = [cidr(4, 0, 8), Prefix.host(4, 0xFFFFFFFF)]
        for iface in self.interfaces:
            for a in iface.addresses:
                if a.broadcast is not None:
                    prefixes.append(Prefix.host(4, a.broadcast))
        return _iv_from_prefixes(prefixes)

    def _v6_anycast(self) -> list[Prefix]:
        if not self.ip_forward:
            return []
        return [
            Prefix.host(6, a.prefix.address)
            for iface in self.interfaces
            if not iface.loopback
            for a in iface.addresses
            if _plen(a.prefix) < 127
        ]

    # ---- presentation

    def describe(self) -> list[str]:
        """One line per interface, route and container, for people."""
        lines = []
        for iface in self.interfaces:
            flags = [f for f, on in (("bridge", iface.bridge), ("external", iface.external),
                                     ("route_localnet", iface.route_localnet), ("hairpin", iface.hairpin)) if on]
            addrs = ", ".join(str(a) for a in iface.addresses) or "no address"
            lines.append(f"{iface.name}: {addrs}{' [' + ', '.join(flags) + ']' if flags else ''}")
        for r in self.routes:
            kind = f" {r.kind}" if r.kind != "unicast" else ""
            dev = f" dev {r.dev}" if r.dev else ""
            via = f" via {format_ip(self.family, r.via)}" if r.via is not None else ""
            lines.append(f"route {r.dst}{kind}{dev}{via}")
        for c in self.containers:
            lines.append(f"container {c.name}: {format_ip(self.family, c.address)} on {c.bridge}")
        return lines


def _append_leaf(out: list[tuple[Prefix, RouteDecision]], prefix: Prefix, decision: RouteDecision) -> None:
    # merge with the previous leaf when the two are the halves of one prefix with one decision
    while out and out[-1][1] == decision:
        prev = out[-1][0]
        plen = _plen(prev)
        if plen != _plen(prefix) or plen == 0:
            break
        parent = cidr(prefix.version, prev.address, plen - 1)
        if parent.address != prev.address or not parent.contains(prefix.address):
            break
        out.pop()
        prefix = parent
    out.append((prefix, decision))

