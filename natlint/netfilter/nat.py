"""What NAT targets do to a packet set (research 3.4; nf_nat_core.c).

* DNAT rewrites the destination address (one of the range: the kernel picks by a hash of the
  addresses, natlint keeps every candidate) and, when a port range is given, the destination
  port: a port already inside the range is kept, another becomes one of the range.
* SNAT likewise on the source; without a port range the source port is kept.
  ``--random``/``--random-fully`` always pick the port (nf_nat_l4proto_unique_tuple skips
  its "keep the original port" step): one of the range, or for a source port without a
  range one of its class (1-511, 600-1023, 1024-65535); a destination port is only changed
  when a range is given.
* MASQUERADE is SNAT to the address the kernel selects for the outgoing interface
  (``inet_select_addr``): its first address of global scope; for an interface with only
  host-scope addresses (``lo``: 127.0.0.0/8, ::1) the first global address of the other
  interfaces, in interface order. A packet leaving an interface without an address is dropped.
  IPv6 differs (``nf_nat_masquerade_ipv6`` asks ``ipv6_dev_get_saddr`` for the packet's
  destination, RFC 6724 source selection): a destination that is one of the host's own
  addresses is its own source (rule 1, "prefer the same address"; e.g. the host's connection
  to its own bridge address, out of ``lo``); other destinations get the outgoing interface's
  address as above (rule 5, "prefer the outgoing interface").
* REDIRECT is DNAT to the primary address of the incoming interface (PREROUTING; no address:
  dropped) or to 127.0.0.1 / ::1 (OUTPUT).
* NETMAP maps a prefix 1:1, keeping the host part (destination in PREROUTING/OUTPUT,
  source in POSTROUTING/INPUT).

The conntrack virtual states DNAT/SNAT become true for the rewritten packets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from natlint.model.ruleset import Option
from natlint.model.values import Interface, Prefix

__all__ = ["NAT_TARGETS", "apply", "real_interfaces"]

NAT_TARGETS = frozenset({"DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP"})
Verdict = Literal["ACCEPT", "DROP"]
Result = list[tuple[object, Verdict, tuple[str, ...]]]


def real_interfaces(sp: object) -> list[str]:
    """The interface names of the space (not its 'other'/'none' classes)."""
    return [label for label in sp.interfaces if not label.endswith(")")]  # type: ignore[attr-defined]


def _range_of(options: Mapping[str, Option], *names: str) -> object | None:
    for name in names:
        opt = options.get(name)
        if opt is not None:
            return opt.value
    return None


def apply(sp: object, host: object, target: str, options: Mapping[str, Option], hook: str, packets: object, *,
          record: Sequence[tuple[str, str]] = ()) -> Result:
    """What the NAT target makes of the packets: (packets, verdict, reasons) parts.

    ``record``: (orig_X, X) pairs of the conntrack original tuple to record (equate) before
    the rewrite, for a set of NEW packets whose tuple is still implicit; with one address
    and port, in the same pass as the rewrite.
    """
    rand = "random" in options or "random_fully" in options
    fixed = _fixed_of(target, options)
    if fixed is not None:  # one address (and one port): a single ∃ and ∧
        return [(sp.assign_fields(packets, fixed, record=record), "ACCEPT", ())]  # type: ignore[attr-defined]
    if record:
        packets = sp.equate_fields(packets, record)  # type: ignore[attr-defined]
    if target == "DNAT":
        nat_range = _range_of(options, "to_destination", "to")
        out, reasons = _map(sp, packets, nat_range, "dst", "dport", rand)
        return [(sp.assign(out, "ct_dnat", True), "ACCEPT", reasons)]  # type: ignore[attr-defined]
    if target == "SNAT":
        nat_range = _range_of(options, "to_source", "to")
        out, reasons = _map(sp, packets, nat_range, "src", "sport", rand)
        return [(sp.assign(out, "ct_snat", True), "ACCEPT", reasons)]  # type: ignore[attr-defined]
    if target == "MASQUERADE":
        ports = _range_of(options, "to_ports", "to")
        return _per_interface(sp, host, packets, "oif", "src", "sport", ports, "ct_snat", masquerade=True,
                              random=rand)
    if target == "REDIRECT":
        ports = _range_of(options, "to_ports", "to")
        if hook == "OUTPUT":
            loopback = 0x7F000001 if getattr(sp, "family", 4) == 4 else 1
            out = sp.assign(packets, "dst", loopback)  # type: ignore[attr-defined]
            out, reasons = _map_ports(sp, out, ports, "dport", rand)
            return [(sp.assign(out, "ct_dnat", True), "ACCEPT", reasons)]  # type: ignore[attr-defined]
        return _per_interface(sp, host, packets, "iif", "dst", "dport", ports, "ct_dnat", random=rand)
    if target == "NETMAP":
        prefix = _range_of(options, "to")
        field = "dst" if hook in ("PREROUTING", "OUTPUT") else "src"
        if not isinstance(prefix, Prefix):
            return [(sp.forget(packets, field), "ACCEPT", ("NETMAP without a prefix",))]  # type: ignore[attr-defined]
        out = sp.xmark(packets, field, prefix.address & prefix.mask, prefix.mask)  # type: ignore[attr-defined]
        flag = "ct_dnat" if field == "dst" else "ct_snat"
        return [(sp.assign(out, flag, True), "ACCEPT", ())]  # type: ignore[attr-defined]
    raise KeyError(target)


def is_fixed(target: str, options: Mapping[str, Option]) -> bool:
    """Whether :func:`apply` rewrites to one address (or keeps it) and one port (or keeps it):
    then it reports no reason, whatever the packets."""
    return _fixed_of(target, options) is not None


def _fixed_of(target: str, options: Mapping[str, Option]) -> dict[str, object] | None:
    """A DNAT's or SNAT's {field: value} when it maps to one address and one port."""
    if target not in ("DNAT", "SNAT"):
        return None
    rand = "random" in options or "random_fully" in options
    nat_range = _range_of(options, "to_destination" if target == "DNAT" else "to_source", "to")
    fields = ("dst", "dport", "ct_dnat") if target == "DNAT" else ("src", "sport", "ct_snat")
    return _fixed_mapping(nat_range, fields, rand)


def _fixed_mapping(nat_range: object, fields: tuple[str, str, str], random: bool) -> dict[str, object] | None:
    """{field: value} when the range maps to one address (or keeps it) and one port (or keeps
    it) with no reason to report: what _map then the flag assignment do, at once."""
    addr_field, port_field, flag = fields
    values: dict[str, object] = {}
    addresses = getattr(nat_range, "addresses", None)
    if addresses is not None:
        if addresses.first != addresses.last:
            return None
        values[addr_field] = addresses.first
    ports = getattr(nat_range, "ports", None)
    if ports is None:
        if random and port_field == "sport":
            return None
    else:
        if random or getattr(nat_range, "base", None) not in (None, 0) or ports.first != ports.last:
            return None
        values[port_field] = ports.first
    values[flag] = True
    return values


def _map(sp: object, packets: object, nat_range: object, addr_field: str, port_field: str, random: bool = False
         ) -> tuple[object, tuple[str, ...]]:
    reasons: list[str] = []
    out = packets
    addresses = getattr(nat_range, "addresses", None)
    if addresses is not None:
        if addresses.first == addresses.last:
            out = sp.assign(out, addr_field, addresses.first)  # type: ignore[attr-defined]
        else:
            out = sp.assign_range(out, addr_field, addresses.first, addresses.last)  # type: ignore[attr-defined]
            reasons.append(f"the kernel picks one address of {addresses} per connection (by hash)")
    out, port_reasons = _map_ports(sp, out, nat_range, port_field, random)
    return out, tuple(reasons) + port_reasons


# Without a range, a source port that must change stays in its class (nf_nat_l4proto_unique_tuple).
_PORT_CLASSES = ((1, 511, 1, 511), (512, 1023, 600, 1023), (1024, 65535, 1024, 65535))


def _map_ports(sp: object, packets: object, nat_range: object, port_field: str, random: bool = False
               ) -> tuple[object, tuple[str, ...]]:
    ports = getattr(nat_range, "ports", None)
    if ports is None:
        if not random or port_field != "sport":
            return packets, ()
        reason = "--random: the kernel picks the source port at random (in the original port's class)"
        if "orig_sport" in sp.fields and packets.issubset(_same_sport(sp)):  # type: ignore[attr-defined]
            # Conntrack recorded the original port (orig_sport = sport, as for every new
            # connection before SNAT): forget the port and tie the new one to the class of the
            # recorded one. Two operations on a big set instead of a dozen.
            return sp.forget(packets, port_field) & _random_sport_map(sp), (reason,)  # type: ignore[attr-defined]
        out = packets & sp.value(port_field, 0)  # type: ignore[attr-defined, operator]
        for first, last, lo, hi in _PORT_CLASSES:
            part = packets & sp.range(port_field, first, last)  # type: ignore[attr-defined, operator]
            out = out | sp.assign_range(part, port_field, lo, hi)  # type: ignore[attr-defined, operator]
        return out, (reason,)
    lo, hi = ports.first, ports.last
    if random:
        out = sp.assign_range(packets, port_field, lo, hi)  # type: ignore[attr-defined]
        return out, (f"--random: the kernel picks the port in {lo}-{hi} at random",)
    if getattr(nat_range, "base", None) not in (None, 0):
        out = sp.assign_range(packets, port_field, lo, hi)  # type: ignore[attr-defined]
        return out, (f"shifted port map to {lo}-{hi}: natlint keeps the whole range",)
    if lo == hi:
        return sp.assign(packets, port_field, lo), ()  # type: ignore[attr-defined]
    inside = packets & sp.range(port_field, lo, hi)  # type: ignore[attr-defined, operator]
    outside = packets - inside  # type: ignore[operator]
    moved = sp.assign_range(outside, port_field, lo, hi)  # type: ignore[attr-defined]
    reasons: tuple[str, ...] = ()
    if not outside.is_empty():  # type: ignore[attr-defined]
        reasons = (f"a port outside {lo}-{hi} becomes one of that range (the kernel picks a free one)",)
    return inside | moved, reasons  # type: ignore[operator]


def _same_sport(sp: object) -> object:
    return sp.memo(("nat", "same-sport"), lambda: sp.equate(sp.all(), "orig_sport", "sport"))  # type: ignore[attr-defined]


def _random_sport_map(sp: object) -> object:
    """orig_sport's class -> the new sport's range (port 0 stays 0), built once per space."""
    def build() -> object:
        mapping = sp.value("orig_sport", 0) & sp.value("sport", 0)  # type: ignore[attr-defined]
        for first, last, lo, hi in _PORT_CLASSES:
            mapping = mapping | (sp.range("orig_sport", first, last) & sp.range("sport", lo, hi))  # type: ignore[attr-defined]
        return mapping

    return sp.memo(("nat", "random-sport-map"), build)  # type: ignore[attr-defined]


def _host_scope(version: int, address: int) -> bool:
    """127.0.0.0/8 and ::1 get scope host (iproute2 and the kernel's ioctl path set it)."""
    return address >> 24 == 127 if version == 4 else address == 1


def masquerade_address(host: object, ifname: str) -> int | None:
    """The source address MASQUERADE gives a packet leaving ``ifname`` (``inet_select_addr``
    with scope universe): the interface's first address that is not host-scoped, else the
    first such address of any interface of the host (in interface order, as ifindex)."""
    version = getattr(host, "family", 4)
    iface = host.interface(ifname)  # type: ignore[attr-defined]
    if iface is None or not iface.addresses:
        return None
    for a in iface.addresses:
        if not _host_scope(version, a.address):
            return int(a.address)
    for other in host.interfaces:  # type: ignore[attr-defined]
        for a in other.addresses:
            if not _host_scope(version, a.address):
                return int(a.address)
    return None


def _own_addresses(host: object) -> list[int]:
    """Every address of the host's interfaces, once, in interface order."""
    seen: list[int] = []
    for iface in host.interfaces:  # type: ignore[attr-defined]
        for a in iface.addresses:
            if int(a.address) not in seen:
                seen.append(int(a.address))
    return seen


def _per_interface(sp: object, host: object, packets: object, iface_field: str, addr_field: str, port_field: str,
                   ports: object, flag: str, *, masquerade: bool = False, random: bool = False) -> Result:
    results: Result = []
    names = real_interfaces(sp)
    for name in _present(sp, packets, iface_field, names):
        part = packets & sp.iface(iface_field, Interface(name))  # type: ignore[attr-defined, operator]
        if part.is_empty():
            continue
        if masquerade and getattr(host, "family", 4) == 6:
            for own in _own_addresses(host):  # RFC 6724 rule 1: the destination itself
                same = part & sp.value("dst", own)  # type: ignore[attr-defined, operator]
                if not same.is_empty():
                    out = sp.assign_fields(same, {addr_field: own, flag: True})  # type: ignore[attr-defined]
                    out, reasons = _map_ports(sp, out, ports, port_field, random)
                    results.append((out, "ACCEPT", reasons))
                    part = part - same  # type: ignore[operator]
            if part.is_empty():
                continue
        address = masquerade_address(host, name) if masquerade else host.primary_address(name)  # type: ignore[attr-defined]
        if address is None:
            results.append((part, "DROP", (f"interface {name} has no address in the host model: the kernel"
                                           " drops what it cannot translate",)))
            continue
        # the address and the NAT flag at once (the flag is last: see PacketSpace.assign_fields)
        out = sp.assign_fields(part, {addr_field: address, flag: True})  # type: ignore[attr-defined]
        out, reasons = _map_ports(sp, out, ports, port_field, random)
        results.append((out, "ACCEPT", reasons))
    def union() -> object:
        known = sp.none()  # type: ignore[attr-defined]
        for name in names:
            known = known | sp.iface(iface_field, Interface(name))  # type: ignore[attr-defined]
        return known

    known = sp.memo(("nat", "known", iface_field, tuple(names)), union)  # type: ignore[attr-defined]
    rest = packets - known  # type: ignore[operator]
    if not rest.is_empty():  # type: ignore[attr-defined]
        out = sp.forget(rest, addr_field)  # type: ignore[attr-defined]
        results.append((sp.assign(out, flag, True), "ACCEPT",  # type: ignore[attr-defined]
                        ("an interface the host model does not know: its address is unknown",)))
    return results


def _present(sp: object, packets: object, iface_field: str, names: list[str]) -> list[str]:
    """The interfaces among ``names`` that packets of the set use (one projection of a big
    set instead of one intersection per interface)."""
    values = packets.values(iface_field, limit=len(names) + 4)  # type: ignore[attr-defined]
    if values is None:
        return names
    labels = sp.interfaces  # type: ignore[attr-defined]
    used = {labels[v] for lo, hi in values for v in range(lo, hi + 1) if v < len(labels)}
    return [name for name in names if name in used]
