"""Typed values of rule options, and their parsers.

Every parser takes the word as iptables-restore would see it and either returns a typed,
immutable value or raises :class:`ValueError` with a sentence for a person ("'300' is not a
port: ports go from 0 to 65535"). Parsers accept what iptables 1.8 accepts (including its
quirks: ``strtoul`` base 0 numbers, ``10.1`` meaning ``10.1.0.0``), so that natlint neither
rejects a file the kernel loads nor accepts one it refuses. ``str(value)`` is the canonical
spelling ``iptables-save`` prints.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

__all__ = [
    "Prefix",
    "AddressRange",
    "PortRange",
    "Interface",
    "Protocol",
    "MarkMask",
    "parse_uint",
    "parse_prefix",
    "parse_prefix_list",
    "parse_address",
    "parse_address_range",
    "parse_port",
    "parse_port_range",
    "parse_port_list",
    "parse_interface",
    "interface_name_problem",
    "parse_protocol",
    "parse_mark",
    "PROTOCOL_NAMES",
    "PROTOCOL_NUMBERS",
]

_V4_BITS = 32
_V6_BITS = 128


_HEX = re.compile(r"0[xX][0-9a-fA-F]+")
_OCTAL = re.compile(r"0[0-7]+")
_DECIMAL = re.compile(r"[0-9]+")
_PORT_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")
_DOTTED_QUAD = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")


def parse_uint(text: str, maximum: int = 0xFFFFFFFF, *, what: str = "number") -> int:
    """Parse an unsigned integer like ``strtoul(text, &end, 0)`` with full consumption.

    Accepts decimal, ``0x`` hex and leading-``0`` octal, as libxtables does, and what
    ``xtables_strtoul`` lets ``strtoumax`` skip: leading whitespace and one ``+`` (not ``-``, and
    nothing after the digits).
    """
    try:
        if text.isdigit() and text.isascii() and (text[0] != "0" or len(text) == 1):
            value = int(text)  # plain decimal, the common case
        else:
            t = text.lstrip(" \t\n\v\f\r")
            if t[:1] == "+":
                t = t[1:]
            if _HEX.fullmatch(t):
                value = int(t, 16)
            elif _OCTAL.fullmatch(t):
                value = int(t, 8)
            elif _DECIMAL.fullmatch(t) and (t[0] != "0" or len(t) == 1):
                # strtoul base 0 reads "08" as octal and stops at the 8: not a number
                value = int(t, 10)
            else:
                raise ValueError
    except ValueError:
        raise ValueError(f"{text!r} is not a valid {what}") from None
    if value > maximum:
        raise ValueError(f"{text!r} is too large for a {what} (at most {maximum})")
    return value


# ---------------------------------------------------------------- addresses


@dataclass(frozen=True, slots=True)
class Prefix:
    """An address with a mask: ``10.0.0.0/8``, or a non-contiguous ``10.0.0.0/255.0.255.0``."""

    version: int
    address: int
    mask: int

    @property
    def bits(self) -> int:
        return _V4_BITS if self.version == 4 else _V6_BITS

    @property
    def prefix_length(self) -> int | None:
        """The CIDR length, or None when the mask is not contiguous."""
        inv = ~self.mask & ((1 << self.bits) - 1)
        if inv & (inv + 1):
            return None
        return self.bits - inv.bit_length()

    @property
    def is_any(self) -> bool:
        return self.mask == 0

    def contains(self, address: int) -> bool:
        return address & self.mask == self.address

    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        plen = self.prefix_length
        if plen is None:
            return None
        return ipaddress.ip_network((self.address, plen))

    def __str__(self) -> str:
        addr = ipaddress.ip_address(self.address) if self.version == 4 else ipaddress.IPv6Address(self.address)
        plen = self.prefix_length
        if plen is not None:
            return f"{addr}/{plen}"
        mask = ipaddress.IPv4Address(self.mask) if self.version == 4 else ipaddress.IPv6Address(self.mask)
        return f"{addr}/{mask}"

    @classmethod
    def host(cls, version: int, address: int) -> Prefix:
        bits = _V4_BITS if version == 4 else _V6_BITS
        return cls(version, address, (1 << bits) - 1)


def _ipv4_numeric(text: str, *, is_mask: bool = False) -> int | None:
    # libxtables __numeric_to_ipaddr: 1-4 dotted parts, each strtoul base 0 <= 255; fewer
    # than 4 parts are completed with zeros ("10.1" is 10.1.0.0), but not for masks.
    parts = text.split(".")
    if len(parts) > 4 or (is_mask and len(parts) != 4):
        return None
    if _DOTTED_QUAD.fullmatch(text):
        a, b, c, d = map(int, parts)  # four plain decimal numbers, the common case
        if a < 256 and b < 256 and c < 256 and d < 256:
            return a << 24 | b << 16 | c << 8 | d
        return None
    value = 0
    for i in range(4):
        if i < len(parts):
            try:
                byte = parse_uint(parts[i], 255)
            except ValueError:
                return None
        else:
            byte = 0
        value = (value << 8) | byte
    return value


def _ipv6_numeric(text: str) -> int | None:
    try:
        return int(ipaddress.IPv6Address(text))
    except ValueError:
        return None


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?")
_WELL_KNOWN_HOSTS = {4: {"localhost": 0x7F000001}, 6: {"localhost": 1, "ip6-localhost": 1, "ip6-loopback": 1}}


def parse_address(text: str, version: int) -> int:
    """One address (no mask). Host names other than localhost cannot be checked offline."""
    value = _ipv4_numeric(text) if version == 4 else _ipv6_numeric(text)
    if value is not None:
        return value
    known = _WELL_KNOWN_HOSTS[version].get(text)
    if known is not None:
        return known
    if _HOSTNAME.fullmatch(text) and not text.replace(".", "").isdigit():
        raise ValueError(
            f"'{text}' is a host name: iptables-restore resolves it with DNS when the rules are"
            " loaded, so what the rule matches depends on DNS at boot; natlint cannot check it."
            " Write the address instead"
        )
    fam = "IPv4" if version == 4 else "IPv6"
    raise ValueError(f"'{text}' is not a valid {fam} address")


def parse_prefix(text: str, version: int) -> Prefix:
    """``addr``, ``addr/len`` or ``addr/mask``; host bits are cleared as iptables does."""
    bits = _V4_BITS if version == 4 else _V6_BITS
    full = (1 << bits) - 1
    addr_text, slash, mask_text = text.partition("/")
    if version == 6 and addr_text.startswith("[") and addr_text.endswith("]"):
        addr_text = addr_text[1:-1]
    address = parse_address(addr_text, version)
    if not slash:
        mask = full
    else:
        mask_value: int | None
        if mask_text.isdigit() and mask_text.isascii():
            plen = int(mask_text)
            if plen > bits:
                raise ValueError(f"'/{mask_text}' is not a valid prefix length: at most {bits}")
            mask_value = (full << (bits - plen)) & full
        elif version == 4:
            mask_value = _ipv4_numeric(mask_text, is_mask=True)
        else:
            mask_value = _ipv6_numeric(mask_text)
        if mask_value is None:
            raise ValueError(f"'{mask_text}' is not a valid network mask")
        mask = mask_value
    return Prefix(version, address & mask, mask)


def parse_prefix_list(text: str, version: int) -> tuple[Prefix, ...]:
    """A comma separated list of prefixes (``-s a,b`` makes one rule per address)."""
    if text == "":
        raise ValueError("an empty address is not valid")
    return tuple(parse_prefix(part, version) for part in text.split(","))


@dataclass(frozen=True, slots=True)
class AddressRange:
    """An inclusive address range ``a-b`` (iprange, NAT targets)."""

    version: int
    first: int
    last: int

    def __str__(self) -> str:
        cls = ipaddress.IPv4Address if self.version == 4 else ipaddress.IPv6Address
        if self.first == self.last:
            return str(cls(self.first))
        return f"{cls(self.first)}-{cls(self.last)}"


def parse_address_range(text: str, version: int) -> AddressRange:
    first_text, dash, last_text = text.partition("-")
    first = parse_address(first_text, version)
    last = parse_address(last_text, version) if dash else first
    if last < first:
        raise ValueError(f"'{text}' is an empty range: the first address is above the last")
    return AddressRange(version, first, last)


# ---------------------------------------------------------------- ports

# The services iptables most often sees by name; others are looked up in /etc/services.
_SERVICES: dict[str, int] = {
    "ftp-data": 20, "ftp": 21, "ssh": 22, "telnet": 23, "smtp": 25, "domain": 53,
    "bootps": 67, "bootpc": 68, "tftp": 69, "http": 80, "www": 80, "kerberos": 88,
    "pop3": 110, "sunrpc": 111, "auth": 113, "ntp": 123, "netbios-ns": 137,
    "netbios-dgm": 138, "netbios-ssn": 139, "imap": 143, "imap2": 143, "snmp": 161,
    "snmp-trap": 162, "bgp": 179, "ldap": 389, "https": 443, "microsoft-ds": 445,
    "isakmp": 500, "syslog": 514, "submission": 587, "ldaps": 636, "rsync": 873,
    "imaps": 993, "pop3s": 995, "openvpn": 1194, "ms-sql-s": 1433, "l2tp": 1701,
    "pptp": 1723, "radius": 1812, "radius-acct": 1813, "nfs": 2049, "mysql": 3306,
    "ms-wbt-server": 3389, "ipsec-nat-t": 4500, "sip": 5060, "postgresql": 5432,
    "x11": 6000, "http-alt": 8080, "webcache": 8080, "smtps": 465, "ircd": 6667,
    "squid": 3128, "git": 9418, "dhcpv6-client": 546, "dhcpv6-server": 547,
    "xmpp-client": 5222, "xmpp-server": 5269, "nntp": 119, "ipp": 631, "printer": 515,
    "echo": 7, "discard": 9, "daytime": 13, "chargen": 19, "time": 37, "whois": 43,
    "finger": 79, "epmap": 135, "loc-srv": 135, "socks": 1080, "zabbix-agent": 10050,
    "zabbix-trapper": 10051, "domain-s": 853, "mdns": 5353, "sane-port": 6566,
}


def parse_port(text: str, proto: str | None = None) -> int:
    """A port number or service name (``xtables_parse_port``)."""
    if _PORT_NUMBER.fullmatch(text):
        return parse_uint(text, 65535, what="port")
    known = _SERVICES.get(text)
    if known is not None:
        return known
    try:
        return socket.getservbyname(text, proto) if proto else socket.getservbyname(text)
    except (OSError, TypeError):
        raise ValueError(f"'{text}' is not a port number or a known service name (ports are 0-65535)") from None


@dataclass(frozen=True, slots=True)
class PortRange:
    """An inclusive port range; a single port has ``first == last``."""

    first: int
    last: int

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}:{self.last}"

    @property
    def is_any(self) -> bool:
        return self.first == 0 and self.last == 65535


def parse_port_range(text: str, proto: str | None = None, *, sep: str = ":") -> PortRange:
    """``p``, ``a:b``, ``:b`` (0:b) or ``a:`` (a:65535)."""
    if sep in text:
        lo_text, _, hi_text = text.partition(sep)
        lo = parse_port(lo_text, proto) if lo_text else 0
        hi = parse_port(hi_text, proto) if hi_text else 65535
        if lo > hi:
            raise ValueError(f"'{text}' is an empty port range: {lo} is above {hi}")
        return PortRange(lo, hi)
    port = parse_port(text, proto)
    return PortRange(port, port)


def parse_port_list(text: str, proto: str | None = None, *, limit: int = 15) -> tuple[PortRange, ...]:
    """A multiport list ``80,443,8000:8080`` (at most 15 ports; a range counts as two)."""
    if not text:
        raise ValueError("an empty port list is not valid")
    ranges = tuple(parse_port_range(part, proto) for part in text.split(","))
    used = sum(1 if r.first == r.last else 2 for r in ranges)
    if used > limit:
        raise ValueError(f"too many ports in '{text}': multiport takes at most {limit} (a range counts as 2)")
    return ranges


# ---------------------------------------------------------------- interfaces

_IFNAMSIZ = 16


@dataclass(frozen=True, slots=True)
class Interface:
    """An interface name; a trailing ``+`` matches every name with that prefix."""

    name: str

    @property
    def is_wildcard(self) -> bool:
        return self.name.endswith("+")

    @property
    def stem(self) -> str:
        return self.name[:-1] if self.is_wildcard else self.name

    @property
    def is_any(self) -> bool:
        return self.name == "+"

    def matches(self, ifname: str) -> bool:
        if self.is_wildcard:
            return ifname.startswith(self.stem)
        return ifname == self.name

    def __str__(self) -> str:
        return self.name


def parse_interface(text: str) -> Interface:
    """An interface name as ``xtables_parse_interface`` accepts it: not empty, under 16 bytes.

    Names the kernel can never give an interface (``a/b``, ``a b``, ``.``) are accepted, as
    iptables does (it only prints a warning): see :func:`interface_name_problem`.
    """
    if not text:
        raise ValueError("an empty interface name is not valid (iptables: 'Empty interface is likely to be undesired')")
    if len(text.encode("utf-8", "surrogateescape")) >= _IFNAMSIZ:
        raise ValueError(f"interface name '{text}' is longer than 15 characters")
    return Interface(text)


def interface_name_problem(name: str) -> str | None:
    """Why no interface can have this name (the kernel's ``dev_valid_name``), or None."""
    stem = name[:-1] if name.endswith("+") else name
    if stem in (".", "..") or any(c == "/" or c == ":" or c.isspace() for c in stem):
        return f"no interface can be named '{name}' (the kernel refuses '/', ':', whitespace, '.' and '..')"
    return None


# ---------------------------------------------------------------- protocols

PROTOCOL_NUMBERS: dict[str, int] = {
    "all": 0, "icmp": 1, "igmp": 2, "ipencap": 4, "ipip": 4, "tcp": 6, "egp": 8,
    "pup": 12, "udp": 17, "idp": 22, "ipv6": 41, "ipv6-route": 43, "ipv6-frag": 44,
    "rsvp": 46, "gre": 47, "esp": 50, "ah": 51, "ipv6-icmp": 58, "icmpv6": 58,
    "ipv6-nonxt": 59, "ipv6-opts": 60, "ospf": 89, "ospfigp": 89, "pim": 103,
    "ipcomp": 108, "vrrp": 112, "l2tp": 115, "sctp": 132, "udplite": 136, "mh": 135,
    "ipv6-mh": 135, "mobility-header": 135, "dccp": 33, "hopopt": 0, "ipv4": 4,
    "encap": 98, "etherip": 97, "carp": 112, "isis": 124, "mpls-in-ip": 137,
}
# The names iptables-save prints (its built-in table first, the rest as /etc/protocols).
PROTOCOL_NAMES: dict[int, str] = {
    6: "tcp", 132: "sctp", 17: "udp", 136: "udplite", 1: "icmp", 58: "ipv6-icmp",
    50: "esp", 51: "ah", 135: "mh", 33: "dccp", 108: "ipcomp", 2: "igmp", 4: "ipencap",
    47: "gre", 41: "ipv6", 89: "ospf", 103: "pim", 112: "vrrp", 115: "l2tp", 46: "rsvp",
    43: "ipv6-route", 44: "ipv6-frag", 59: "ipv6-nonxt", 60: "ipv6-opts", 8: "egp",
    12: "pup", 22: "idp", 97: "etherip", 98: "encap", 124: "isis", 137: "mpls-in-ip",
}


@dataclass(frozen=True, slots=True)
class Protocol:
    """An IP protocol number; 0 means any protocol (``-p all``)."""

    number: int

    @property
    def name(self) -> str:
        return PROTOCOL_NAMES.get(self.number, str(self.number))

    def __str__(self) -> str:
        return self.name


def parse_protocol(text: str) -> Protocol:
    lowered = text.lower()
    if lowered in PROTOCOL_NUMBERS:
        return Protocol(PROTOCOL_NUMBERS[lowered])
    if _PORT_NUMBER.fullmatch(text):
        return Protocol(parse_uint(text, 255, what="protocol number"))
    raise ValueError(f"unknown protocol '{text}': use a name such as tcp, udp, icmp or a number 0-255")


# ---------------------------------------------------------------- marks


@dataclass(frozen=True, slots=True)
class MarkMask:
    """A 32-bit ``value/mask`` pair (``--mark``, ``--set-xmark``)."""

    value: int
    mask: int = 0xFFFFFFFF

    def __str__(self) -> str:
        if self.mask == 0xFFFFFFFF:
            return f"{self.value:#x}"
        return f"{self.value:#x}/{self.mask:#x}"


def parse_mark(text: str) -> MarkMask:
    value_text, slash, mask_text = text.partition("/")
    value = parse_uint(value_text, what="mark value")
    mask = parse_uint(mask_text, what="mark mask") if slash else 0xFFFFFFFF
    return MarkMask(value, mask)
