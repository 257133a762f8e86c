"""Address, interface and socket matches: addrtype, iprange, mac, physdev, pkttype, devgroup,
realm, set (ipset), policy (IPsec), socket, rpfilter, owner, cgroup.

Behaviour checked against iptables-restore / iptables-save 1.8.9 (nf_tables) in a throwaway
network namespace; the surprising bits are noted where they are handled.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from natlint.extensions.matches_state import (
    UINT32,
    UINT64,
    HostMask,
    UIntRange,
    any_of,
    exclusive,
    fmt_hostmask,
    fmt_save_string,
    fmt_str,
    requires,
    xt_hostmask,
    xt_name_list,
    xt_protocol,
    xt_uint,
    xt_uint_prefix,
)
from natlint.extensions.spec import ExtensionSpec, ParseContext, Problem, flag, one, two
from natlint.model.ruleset import Option
from natlint.model.values import AddressRange, Interface, Protocol, parse_address, parse_interface

__all__ = ["SPECS", "ADDRESS_TYPES", "MacAddress", "GroupValue", "SetMatch"]

# ============================================================================ addrtype

# Bit order of the kernel's RTN_* types: parse (first prefix that fits) and save order.
ADDRESS_TYPES: tuple[str, ...] = (
    "UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE",
    "UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE",
)


def _addr_types(option: str) -> Callable[[str, ParseContext], frozenset[str]]:
    def parse(word: str, ctx: ParseContext) -> frozenset[str]:
        return xt_name_list(word, ADDRESS_TYPES, what="address type", option=option)

    return parse


def _fmt_addr_types(value: object) -> str:
    assert isinstance(value, frozenset)
    return ",".join(t for t in ADDRESS_TYPES if t in value)


def _addrtype_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    yield from any_of(options, ("src_type", "dst_type"), "addrtype: you must specify --src-type or --dst-type")
    yield from exclusive(options, "limit_iface_in", "limit_iface_out")


ADDRTYPE = ExtensionSpec(
    "addrtype",
    "match",
    (
        one("src_type", _addr_types("--src-type"), invertible=True, fmt=_fmt_addr_types),
        one("dst_type", _addr_types("--dst-type"), invertible=True, fmt=_fmt_addr_types),
        # The kernel refuses --limit-iface-in in OUTPUT/POSTROUTING and -out in PREROUTING/INPUT.
        flag("limit_iface_in"),
        flag("limit_iface_out"),
    ),
    validate=_addrtype_validate,
    doc="Routing type of the source/destination address (LOCAL, BROADCAST...), per the host's routes.",
)

# ============================================================================ iprange


def _iprange(option: str) -> Callable[[str, ParseContext], AddressRange]:
    def parse(word: str, ctx: ParseContext) -> AddressRange:
        # xtables_numeric_to_ipaddr (like -s: "10.1" is 10.1.0.0); a reversed range is accepted
        # (the kernel only logs that it never matches), so no order check here.
        first_text, dash, last_text = word.partition("-")
        if "-" in last_text:
            raise ValueError(f"bad {option} {word!r}: use one address or FROM-TO")
        try:
            first = parse_address(first_text, ctx.family)
            last = parse_address(last_text, ctx.family) if dash else first
        except ValueError as err:
            raise ValueError(f"bad {option} {word!r}: {err}") from None
        return AddressRange(ctx.family, first, last)

    return parse


def _fmt_range(value: object) -> str:
    # iptables-save always prints both ends: --dst-range 10.0.1.1-10.0.1.1
    assert isinstance(value, AddressRange)
    cls = ipaddress.IPv4Address if value.version == 4 else ipaddress.IPv6Address
    return f"{cls(value.first)}-{cls(value.last)}"


def _iprange_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    yield from any_of(options, ("src_range", "dst_range"), "iprange needs --src-range or --dst-range")


IPRANGE = ExtensionSpec(
    "iprange",
    "match",
    (
        one("src_range", _iprange("--src-range"), invertible=True, fmt=_fmt_range),
        one("dst_range", _iprange("--dst-range"), invertible=True, fmt=_fmt_range),
    ),
    validate=_iprange_validate,
    doc="Source/destination address in an inclusive range FROM-TO.",
)

# ============================================================================ mac


@dataclass(frozen=True, slots=True)
class MacAddress:
    """An Ethernet address; printed as six lower-case hex pairs."""

    octets: tuple[int, int, int, int, int, int]

    def __str__(self) -> str:
        return ":".join(f"{b:02x}" for b in self.octets)


_HEX_FIELD = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9a-fA-F]*)")


def parse_mac(word: str) -> MacAddress:
    """``XTTYPE_ETHERMAC``: six ``:``-separated fields read by ``strtoul(.., 16)``.

    Each field may be at most two characters (``0:1:2:3:4:5`` is fine, ``000`` is not); an
    empty field reads 0, so ``:::::`` is 00:00:00:00:00:00, as iptables accepts it.
    """
    fields = word.split(":")
    bad = ValueError(f"{word!r} is not a valid MAC address: use six hex pairs such as 00:11:22:aa:bb:cc")
    if len(fields) != 6:
        raise bad
    octets: list[int] = []
    for field in fields:
        m = _HEX_FIELD.fullmatch(field)
        if m is None or len(field) > 2:
            raise bad
        sign, digits = m.groups()
        if not digits:
            if field:  # white space or a sign without digits: strtoul reads nothing
                raise bad
            octets.append(0)
            continue
        value = int(digits, 16)
        octets.append((-value if sign == "-" else value) & 0xFF)
    return MacAddress((octets[0], octets[1], octets[2], octets[3], octets[4], octets[5]))


def _mac_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    yield from any_of(options, ("mac_source",), "the mac match needs --mac-source ADDRESS")


MAC = ExtensionSpec(
    "mac",
    "match",
    (one("mac_source", lambda w, c: parse_mac(w), invertible=True, fmt=fmt_str),),
    validate=_mac_validate,
    doc="Source Ethernet address (the kernel refuses it in OUTPUT and POSTROUTING).",
)

# ============================================================================ physdev


def _interface(word: str, ctx: ParseContext) -> Interface:
    return parse_interface(word)


def _physdev_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    if not options:
        yield Problem("the physdev match needs at least one --physdev-* option")


PHYSDEV = ExtensionSpec(
    "physdev",
    "match",
    (
        flag("physdev_is_in", invertible=True),
        one("physdev_in", _interface, invertible=True, fmt=fmt_str),
        flag("physdev_is_out", invertible=True),
        one("physdev_out", _interface, invertible=True, fmt=fmt_str),
        flag("physdev_is_bridged", invertible=True),
    ),
    validate=_physdev_validate,
    doc="Bridge ports a bridged packet came in on / goes out of.",
)

# ============================================================================ pkttype

_PKT_TYPES = {"unicast": "unicast", "host": "unicast", "broadcast": "broadcast", "bcast": "broadcast",
              "multicast": "multicast", "mcast": "multicast", "otherhost": "otherhost"}


def _pkt_type(word: str, ctx: ParseContext) -> str:
    name = _PKT_TYPES.get(word.lower())
    if name is None:
        raise ValueError(f"bad packet type {word!r}: use unicast, broadcast, multicast or otherhost")
    return name


def _pkttype_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    yield from any_of(options, ("pkt_type",), "the pkttype match needs --pkt-type TYPE")


PKTTYPE = ExtensionSpec(
    "pkttype",
    "match",
    (one("pkt_type", _pkt_type, invertible=True, fmt=fmt_str),),
    validate=_pkttype_validate,
    doc="Link-layer packet type (unicast, broadcast, multicast, otherhost).",
)

# ============================================================================ devgroup, realm


@dataclass(frozen=True, slots=True)
class GroupValue:
    """A ``value[/mask]`` or a name from an iproute2 table (/etc/iproute2/group, rt_realms).

    Names other than the table's entry 0 cannot be resolved offline: ``name`` keeps them.
    """

    value: int | None
    mask: int = UINT32
    name: str | None = None

    def __str__(self) -> str:
        if self.name is not None:
            return self.name
        assert self.value is not None
        if self.mask != UINT32:
            return f"{self.value:#x}/{self.mask:#x}"
        return f"{self.value:#x}"


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def _val_mask(option: str, zero_name: str) -> Callable[[str, ParseContext], GroupValue]:
    """``xtables_parse_val_mask`` with an iproute2 name table whose entry 0 is ``zero_name``."""

    def parse(word: str, ctx: ParseContext) -> GroupValue:
        parsed = xt_uint_prefix(word)
        if parsed is not None and parsed[0] <= UINT32 and (parsed[1] == "" or parsed[1].startswith("/")):
            value, rest = parsed
            if rest == "":
                return GroupValue(value, name=zero_name if value == 0 else None)
            mask = xt_uint_prefix(rest[1:])
            if mask is None or mask[1] != "" or mask[0] > UINT32:
                raise ValueError(f"bad integer value for {option} {word!r}: use VALUE[/MASK] or a name")
            if mask[0] == UINT32:
                return GroupValue(value, name=zero_name if value == 0 else None)
            return GroupValue(value, mask[0])
        if word == zero_name:
            return GroupValue(0, name=zero_name)
        if _NAME.fullmatch(word):
            return GroupValue(None, name=word)
        raise ValueError(f"could not map {word!r} to an integer value for {option}: use VALUE[/MASK] or a name")

    return parse


def _devgroup_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    yield from any_of(options, ("src_group", "dst_group"),
                      "devgroup match: you must specify either '--src-group' or '--dst-group'")


DEVGROUP = ExtensionSpec(
    "devgroup",
    "match",
    (
        one("src_group", _val_mask("--src-group", "default"), invertible=True, fmt=fmt_str),
        # The kernel allows --dst-group only in FORWARD, OUTPUT and POSTROUTING.
        one("dst_group", _val_mask("--dst-group", "default"), invertible=True, fmt=fmt_str),
    ),
    validate=_devgroup_validate,
    opaque=True,
    doc="Device group of the incoming/outgoing interface (ip link set dev X group N).",
)


def _realm_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    yield from any_of(options, ("realm",), "the realm match needs --realm VALUE[/MASK]")


REALM = ExtensionSpec(
    "realm",
    "match",
    (one("realm", _val_mask("--realm", "cosmos"), invertible=True, fmt=fmt_str),),
    families=frozenset({4}),
    validate=_realm_validate,
    opaque=True,
    doc="Routing realm of the route the packet took (IPv4 only).",
)

# ============================================================================ set (ipset)

IPSET_MAXNAMELEN = 32
IPSET_DIM_MAX = 6


@dataclass(frozen=True, slots=True)
class SetMatch:
    """``--match-set NAME src,dst``: the set and which packet address each dimension uses."""

    name: str
    directions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.name} {','.join(self.directions)}"


def _match_set(name: str, dirs: str, ctx: ParseContext) -> tuple[object, object]:
    if dirs.startswith(("-", "!")):
        raise ValueError("--match-set requires two arguments: the set name and src/dst flags")
    if len(name.encode()) > IPSET_MAXNAMELEN - 1:
        raise ValueError(f"set name {name!r} is too long: at most {IPSET_MAXNAMELEN - 1} characters")
    parts = tuple(dirs.split(","))
    if len(parts) > IPSET_DIM_MAX:
        raise ValueError(f"{dirs!r} has more than {IPSET_DIM_MAX} src/dst flags")
    for part in parts:
        if part not in ("src", "dst"):
            raise ValueError(f"{dirs!r} is not a valid list of set flags: use src and dst separated by commas")
    return name, parts


def _fmt_match_set(values: tuple[object, ...]) -> list[str]:
    name, dirs = values
    assert isinstance(name, str) and isinstance(dirs, tuple)
    return [name, ",".join(dirs)]


def _counter(option: str) -> Callable[[str, ParseContext], int]:
    def parse(word: str, ctx: ParseContext) -> int:
        return xt_uint(word, UINT64, what=f"{option} counter value")

    return parse


def _set_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    yield from any_of(options, ("match_set",), "the set match needs --match-set NAME src|dst[,...]")
    for kind in ("packets", "bytes"):
        given = [f"{kind}_{op}" for op in ("eq", "lt", "gt") if f"{kind}_{op}" in options]
        if len(given) > 1:
            yield Problem(f"only one of --{kind}-eq, --{kind}-lt and --{kind}-gt is allowed", given[1])


SET = ExtensionSpec(
    "set",
    "match",
    (
        # The set must exist when the rule is loaded (checked by iptables itself, even --test).
        two("match_set", _match_set, invertible=True, fmt=_fmt_match_set),
        flag("return_nomatch"),
        # Without "!" these two are the default and are not printed back.
        flag("update_counters", invertible=True),
        flag("update_subcounters", invertible=True),
        one("packets_eq", _counter("--packets-eq"), invertible=True, fmt=fmt_str),
        one("packets_lt", _counter("--packets-lt"), fmt=fmt_str),
        one("packets_gt", _counter("--packets-gt"), fmt=fmt_str),
        one("bytes_eq", _counter("--bytes-eq"), invertible=True, fmt=fmt_str),
        one("bytes_lt", _counter("--bytes-lt"), fmt=fmt_str),
        one("bytes_gt", _counter("--bytes-gt"), fmt=fmt_str),
    ),
    validate=_set_validate,
    opaque=True,
    doc="Membership of the packet's addresses/ports in an ipset.",
)

# ============================================================================ policy (IPsec)

_POLICY_PROTOCOLS = (50, 51, 108)  # esp, ah, ipcomp


def _policy_word(option: str, choices: Sequence[str]) -> Callable[[str, ParseContext], str]:
    def parse(word: str, ctx: ParseContext) -> str:
        if word not in choices:
            raise ValueError(f"{word!r} is not a valid {option}: use {' or '.join(choices)} (lower case)")
        return word

    return parse


def _policy_proto(word: str, ctx: ParseContext) -> Protocol:
    proto = xt_protocol(word)
    if proto.number not in _POLICY_PROTOCOLS:
        raise ValueError(f"policy --proto {word!r}: the protocol must be ah, esp or ipcomp")
    return proto


def _tunnel(word: str, ctx: ParseContext) -> HostMask:
    return xt_hostmask(word, ctx.family)


def _policy_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    if "dir" not in options:
        yield Problem("policy match: neither --dir in nor --dir out specified")
    yield from requires(options, "next", "strict")
    pol = options.get("pol")
    element = ("reqid", "spi", "proto", "mode", "tunnel_src", "tunnel_dst")
    if pol is not None and pol.value == "none":
        if "strict" in options:
            yield Problem("policy match: --pol none cannot be used with --strict", "strict")
        if "next" in options:
            yield Problem("policy match: --pol none cannot describe policy elements (--next)", "next")
    elif "strict" in options and not any(n in options for n in element):
        yield Problem(
            "policy match: with --strict each policy element needs one of --reqid, --spi, --proto,"
            " --mode, --tunnel-src or --tunnel-dst", "strict"
        )
    mode = options.get("mode")
    # Options repeat per element (--next); with one element the tunnel check is exact.
    tunnel = "tunnel_src" in options or "tunnel_dst" in options
    if mode is not None and "next" not in options and tunnel and (mode.value == "transport") != mode.invert:
        yield Problem("policy match: --tunnel-src/--tunnel-dst is only valid in tunnel mode", "mode")


POLICY = ExtensionSpec(
    "policy",
    "match",
    (
        # The kernel refuses --dir in in OUTPUT/POSTROUTING and --dir out in PREROUTING/INPUT.
        one("dir", _policy_word("--dir", ("in", "out")), fmt=fmt_str),
        one("pol", _policy_word("--pol", ("none", "ipsec")), fmt=fmt_str),
        flag("strict"),
        one("reqid", lambda w, c: xt_uint(w, what="--reqid"), invertible=True, fmt=fmt_str),
        one("spi", lambda w, c: xt_uint(w, what="--spi"), invertible=True, fmt=lambda v: f"{v:#x}"),
        one("proto", _policy_proto, invertible=True, fmt=fmt_str),
        one("mode", _policy_word("--mode", ("transport", "tunnel")), invertible=True, fmt=fmt_str),
        one("tunnel_dst", _tunnel, invertible=True, fmt=fmt_hostmask),
        one("tunnel_src", _tunnel, invertible=True, fmt=fmt_hostmask),
        flag("next"),
    ),
    validate=_policy_validate,
    opaque=True,
    doc="IPsec policy used for decapsulation (--dir in) or encapsulation (--dir out).",
)

# ============================================================================ socket, rpfilter

SOCKET = ExtensionSpec(
    "socket",
    "match",
    (flag("transparent"), flag("nowildcard"), flag("restore_skmark")),
    opaque=True,
    doc="An open local socket matches the packet (TPROXY setups).",
)

RPFILTER = ExtensionSpec(
    "rpfilter",
    "match",
    # The kernel allows rpfilter only in raw and mangle PREROUTING.
    (flag("loose"), flag("validmark"), flag("accept_local"), flag("invert")),
    opaque=True,
    doc="Reverse-path filter: a route back to the source exists via the incoming interface.",
)

# ============================================================================ owner

_USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\$?")


def _owner_id(option: str) -> Callable[[str, ParseContext], UIntRange | str]:
    """A user/group name (resolved on the host that loads the rules) or ``N`` / ``N-M``."""

    def parse(word: str, ctx: ParseContext) -> UIntRange | str:
        bad = ValueError(
            f"bad value for {option} {word!r}: use a name, an ID or a range FROM-TO (IDs up to 4294967294)"
        )
        first = xt_uint_prefix(word)
        if first is not None:
            last = first
            if first[1][:1] in ("-", ":"):
                last = xt_uint_prefix(first[1][1:]) or (0, "?")
            if last[1] == "" and max(first[0], last[0]) <= UINT32 - 1:
                if first[0] > last[0]:
                    raise ValueError(f"{option} {word!r} is a reversed range: the kernel refuses the rule")
                return UIntRange(first[0], last[0])
            if _USER_NAME.fullmatch(word) is None:
                raise bad
        if _USER_NAME.fullmatch(word):
            # iptables resolves names with getpwnam/getgrnam when loading and saves the number.
            return word
        raise bad

    return parse


def _fmt_owner(value: object) -> str:
    if isinstance(value, UIntRange):
        return str(value.first) if value.first == value.last else f"{value.first}-{value.last}"
    return str(value)


def _owner_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    yield from any_of(options, ("uid_owner", "gid_owner", "socket_exists"),
                      "owner: at least one of --uid-owner, --gid-owner or --socket-exists is required")
    yield from requires(options, "suppl_groups", "gid_owner")


OWNER = ExtensionSpec(
    "owner",
    "match",
    (
        # The kernel allows owner only in OUTPUT and POSTROUTING.
        flag("socket_exists", invertible=True),
        one("uid_owner", _owner_id("--uid-owner"), invertible=True, fmt=_fmt_owner),
        one("gid_owner", _owner_id("--gid-owner"), invertible=True, fmt=_fmt_owner),
        flag("suppl_groups"),
    ),
    validate=_owner_validate,
    opaque=True,
    doc="The local socket's owner (user, group) for locally generated packets.",
)

# ============================================================================ cgroup


def _cgroup_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    # iptables accepts both or neither; the kernel then refuses the rule (EINVAL).
    if "path" in options and "cgroup" in options:
        yield Problem("cgroup: --path and --cgroup cannot be used together (the kernel refuses it)", "cgroup")
    yield from any_of(options, ("path", "cgroup"),
                      "cgroup needs --path (cgroup v2) or --cgroup (net_cls class id): the kernel refuses it bare")


CGROUP = ExtensionSpec(
    "cgroup",
    "match",
    (
        # The path must exist on the host when the rule is loaded.
        one("path", lambda w, c: w, invertible=True, fmt=fmt_save_string),
        one("cgroup", lambda w, c: xt_uint(w, what="--cgroup class id"), invertible=True, fmt=fmt_str),
    ),
    validate=_cgroup_validate,
    opaque=True,
    doc="The local socket's cgroup (v2 path) or net_cls class id.",
)

SPECS: tuple[ExtensionSpec, ...] = (
    ADDRTYPE, IPRANGE, MAC, PHYSDEV, PKTTYPE, DEVGROUP, REALM, SET, POLICY, SOCKET, RPFILTER, OWNER, CGROUP,
)
