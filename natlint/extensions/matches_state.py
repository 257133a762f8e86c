"""Connection-tracking matches: conntrack, state, mark, connmark, helper, connbytes, connlimit.

This module also holds the small value parsers that reproduce libxtables' own option types
(``xtables_strtoul``, ``XTTYPE_UINT*RC`` ranges, ``XTTYPE_PORTRC``, ``XTTYPE_HOST[MASK]``,
``XTTYPE_PLEN``, ``XTTYPE_PROTOCOL``) exactly as iptables 1.8.9 applies them. They differ from the
core-option parsers in ``natlint.model.values`` in ways that matter (checked against
iptables-restore 1.8.9 / nf_tables, kernel 6.18):

* extension addresses go through ``getaddrinfo``, i.e. ``inet_aton``: ``--ctorigsrc 10.1`` is
  10.0.0.1, whereas ``-s 10.1`` is 10.1.0.0;
* a ``/mask`` on an extension address keeps the host bits (``--ctorigsrc 10.1.2.3/8`` is saved
  as written) and a non-contiguous dotted mask is silently replaced by the full mask;
* ``XTTYPE_PORTRC`` takes decimal numbers or service names only (``0x50`` is refused), wraps
  numbers above 65535, and accepts reversed ranges; ``XTTYPE_UINT*RC`` accepts reversed ranges
  too (``--ctexpire 5:3`` loads and never matches).

The other ``matches_*`` files import these helpers from here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from natlint.extensions.spec import ExtensionSpec, ParseContext, Problem, Validator, flag, one, save_string
from natlint.model.ruleset import Option
from natlint.model.values import MarkMask, PortRange, Prefix, Protocol, parse_address, parse_port

__all__ = [
    "SPECS",
    "UIntRange",
    "HostMask",
    "CT_STATES",
    "CT_STATUSES",
    "xt_uint",
    "xt_uint_prefix",
    "xt_uint_range",
    "xt_port_range",
    "xt_host",
    "xt_hostmask",
    "xt_plen",
    "xt_protocol",
    "xt_mark",
    "xt_name_list",
    "fmt_hostmask",
    "fmt_str",
    "fmt_save_string",
    "any_of",
    "exclusive",
    "requires",
]

_C_SPACE = " \t\n\v\f\r"
UINT8 = 0xFF
UINT16 = 0xFFFF
UINT32 = 0xFFFFFFFF
UINT64 = 0xFFFFFFFFFFFFFFFF

# ============================================================================ shared parsers

_STRTOUL = re.compile(r"[ \t\n\v\f\r]*\+?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


def xt_uint_prefix(text: str) -> tuple[int, str] | None:
    """``strtoumax(text, &end, 0)`` as ``xtables_strtoul`` calls it: the value and the rest.

    Leading white space and ``+`` are skipped, ``-`` is refused, ``0x`` is hex and a leading
    ``0`` octal (so ``08`` reads ``0`` and leaves ``8``). None when no digit was read.
    """
    m = _STRTOUL.match(text)
    if m is None:
        return None
    digits = m.group(1)
    if digits[:2] in ("0x", "0X"):
        value = int(digits[2:], 16)
    elif digits.startswith("0"):
        value = int(digits, 8)
    else:
        value = int(digits)
    return value, text[m.end():]


def xt_uint(text: str, maximum: int = UINT32, *, minimum: int = 0, what: str = "number") -> int:
    """A strict ``xtables_strtoul``: the whole word is one number in ``minimum..maximum``."""
    parsed = xt_uint_prefix(text)
    if parsed is None or parsed[1] != "":
        raise ValueError(f"{text!r} is not a valid {what}: use a number (decimal, 0x hex or 0 octal)")
    value = parsed[0]
    if not minimum <= value <= maximum:
        raise ValueError(f"{text!r} is out of range for {what}: use {minimum} to {maximum}")
    return value


@dataclass(frozen=True, slots=True)
class UIntRange:
    """An inclusive integer range ``first:last``; iptables accepts ``first > last`` (never matches)."""

    first: int
    last: int

    @property
    def is_empty(self) -> bool:
        return self.first > self.last

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and self.first <= value <= self.last

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}:{self.last}"


def xt_uint_range(text: str, maximum: int, *, what: str = "range") -> UIntRange:
    """``XTTYPE_UINT*RC``: ``a``, ``a:b``, ``:b`` (0:b), ``a:`` (a:max); no order check."""
    parts = text.split(":")
    if len(parts) > 2:
        raise ValueError(f"{text!r} has too many parts for {what}: use N or FROM:TO")
    values: list[int] = []
    for i, part in enumerate(parts):
        if part == "":
            values.append(maximum if i == 1 else 0)
            continue
        parsed = xt_uint_prefix(part)
        if parsed is None or parsed[0] > maximum:
            raise ValueError(f"{part!r} in {text!r} is not a valid {what}: use numbers from 0 to {maximum}")
        if parsed[1] != "":
            raise ValueError(f"{text!r} has unexpected characters {parsed[1]!r} for {what}")
        values.append(parsed[0])
    if len(values) == 1:
        return UIntRange(values[0], values[0])
    return UIntRange(values[0], values[1])


def _service_port(name: str) -> int:
    # libxtables resolves with getaddrinfo(NULL, name): glibc reads a decimal number (strtoul:
    # white space and '+' allowed, no hex) and keeps its low 16 bits ("70000" is 4464);
    # anything else must be a service name (of any protocol) from /etc/services.
    m = re.fullmatch(r"[ \t\n\v\f\r]*\+?([0-9]+)", name)
    if m:
        return int(m.group(1)) & 0xFFFF
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9_.+/-]*", name):
        try:
            return parse_port(name, None)
        except ValueError:
            pass
    raise ValueError(f"port {name!r} is not a decimal port number or a known service name")


def xt_port_range(text: str, what: str = "port") -> PortRange:
    """``XTTYPE_PORTRC``: ``p``, ``a:b``, ``:b``, ``a:``; decimal or service names, no order check."""
    parts = text.split(":")
    if len(parts) > 2:
        raise ValueError(f"{text!r} has too many parts for a {what} range: use PORT or FROM:TO")
    first, last = 0, 65535
    for i, part in enumerate(parts):
        if part == "":
            continue
        port = _service_port(part)
        if i == 0:
            first = port
        else:
            last = port
    if len(parts) == 1:
        last = first
    return PortRange(first, last)


def _inet_aton(text: str) -> int | None:
    # glibc inet_aton (used by getaddrinfo for numeric IPv4): 1 to 4 numbers in base 0; the
    # last one fills the remaining bytes ("10.1" is 10.0.0.1, "167772161" is 10.0.0.1).
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        m = re.fullmatch(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*", part)
        if m is None:
            return None
        if part[:2] in ("0x", "0X"):
            numbers.append(int(part[2:] or "0", 16))
        else:
            numbers.append(int(part, 8) if part.startswith("0") else int(part))
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    value = 0
    for n in head:
        value = (value << 8) | n
    return (value << (8 * (4 - len(head)))) | last


def xt_host(text: str, version: int) -> int:
    """``XTTYPE_HOST``: one address as ``getaddrinfo`` reads it (host names cannot be checked)."""
    if version == 4:
        value = _inet_aton(text)
    else:
        try:
            value = int(ipaddress.IPv6Address(text))
        except ValueError:
            value = None
    if value is not None:
        return value
    return parse_address(text, version)  # localhost, or a clear "host name" / "invalid" error


def xt_plen(text: str, version: int, *, what: str = "prefix length") -> int:
    """``XTTYPE_PLEN``: a prefix length, or a mask address (a non-contiguous mask counts as full)."""
    bits = 32 if version == 4 else 128
    parsed = xt_uint_prefix(text)
    if parsed is not None and parsed[1] == "" and parsed[0] <= bits:
        return parsed[0]
    if version == 4:
        mask = _inet_aton(text)
    else:
        try:
            mask = int(ipaddress.IPv6Address(text))
        except ValueError:
            mask = None
    if mask is None:
        raise ValueError(f"{text!r} is neither a valid network mask nor a prefix length (0-{bits}) for {what}")
    inverse = ~mask & ((1 << bits) - 1)
    if inverse & (inverse + 1):
        # libxtables 1.8.9 cannot express it and silently uses the full length.
        return bits
    return bits - inverse.bit_length()


@dataclass(frozen=True, slots=True)
class HostMask(Prefix):
    """An extension address with a mask (``--ctorigsrc``, ``--tunnel-src``).

    ``address`` is masked (the value the kernel compares); ``written`` is the address as
    written, which iptables keeps and prints (``10.1.2.3/8`` stays ``10.1.2.3/8``).
    """

    written: int

    def __str__(self) -> str:
        return fmt_hostmask(self)


def xt_hostmask(text: str, version: int) -> HostMask:
    """``XTTYPE_HOSTMASK``: ``addr`` or ``addr/plen`` or ``addr/mask`` (see :func:`xt_plen`)."""
    bits = 32 if version == 4 else 128
    addr_text, slash, mask_text = text.partition("/")
    host = xt_host(addr_text, version)
    plen = xt_plen(mask_text, version, what="the address mask") if slash else bits
    full = (1 << bits) - 1
    mask = (full << (bits - plen)) & full
    return HostMask(version, host & mask, mask, host)


def fmt_hostmask(value: object) -> str:
    """What iptables-save prints: the address as written, ``/len`` unless it is a host mask."""
    assert isinstance(value, HostMask)
    cls = ipaddress.IPv4Address if value.version == 4 else ipaddress.IPv6Address
    plen = value.prefix_length
    if plen == value.bits:
        return str(cls(value.written))
    return f"{cls(value.written)}/{plen}"


# /etc/protocols (netbase) names and aliases as getprotobyname matches them (case-sensitive),
# plus the table libxtables adds (xtables_chain_protos).
_PROTOCOLS: dict[str, int] = {
    "ip": 0, "IP": 0, "hopopt": 0, "HOPOPT": 0, "icmp": 1, "ICMP": 1, "igmp": 2, "IGMP": 2,
    "ggp": 3, "GGP": 3, "ipencap": 4, "IP-ENCAP": 4, "st": 5, "ST": 5, "tcp": 6, "TCP": 6,
    "egp": 8, "EGP": 8, "igp": 9, "IGP": 9, "pup": 12, "PUP": 12, "udp": 17, "UDP": 17,
    "hmp": 20, "HMP": 20, "xns-idp": 22, "XNS-IDP": 22, "rdp": 27, "RDP": 27,
    "iso-tp4": 29, "ISO-TP4": 29, "dccp": 33, "DCCP": 33, "xtp": 36, "XTP": 36, "ddp": 37,
    "DDP": 37, "idpr-cmtp": 38, "IDPR-CMTP": 38, "ipv6": 41, "IPv6": 41, "ipv6-route": 43,
    "IPv6-Route": 43, "ipv6-frag": 44, "IPv6-Frag": 44, "idrp": 45, "IDRP": 45, "rsvp": 46,
    "RSVP": 46, "gre": 47, "GRE": 47, "esp": 50, "IPSEC-ESP": 50, "ah": 51, "IPSEC-AH": 51,
    "skip": 57, "SKIP": 57, "ipv6-icmp": 58, "IPv6-ICMP": 58, "ipv6-nonxt": 59,
    "IPv6-NoNxt": 59, "ipv6-opts": 60, "IPv6-Opts": 60, "rspf": 73, "RSPF": 73, "CPHB": 73,
    "vmtp": 81, "VMTP": 81, "eigrp": 88, "EIGRP": 88, "ospf": 89, "OSPFIGP": 89,
    "ax.25": 93, "AX.25": 93, "ipip": 94, "IPIP": 94, "etherip": 97, "ETHERIP": 97,
    "encap": 98, "ENCAP": 98, "pim": 103, "PIM": 103, "ipcomp": 108, "IPCOMP": 108,
    "vrrp": 112, "VRRP": 112, "l2tp": 115, "L2TP": 115, "isis": 124, "ISIS": 124,
    "sctp": 132, "SCTP": 132, "fc": 133, "FC": 133, "mobility-header": 135,
    "Mobility-Header": 135, "udplite": 136, "UDPLite": 136, "mpls-in-ip": 137,
    "MPLS-in-IP": 137, "manet": 138, "hip": 139, "HIP": 139, "shim6": 140, "Shim6": 140,
    "wesp": 141, "WESP": 141, "rohc": 142, "ROHC": 142, "ethernet": 143, "Ethernet": 143,
    # xtables_chain_protos
    "all": 0, "icmpv6": 58, "ipv6-mh": 135, "mh": 135,
}


def xt_protocol(text: str) -> Protocol:
    """``XTTYPE_PROTOCOL`` (``xtables_parse_protocol``): 0-255 or an /etc/protocols name."""
    parsed = xt_uint_prefix(text)
    if parsed is not None and parsed[1] == "" and parsed[0] <= 255:
        return Protocol(parsed[0])
    if text in _PROTOCOLS:
        return Protocol(_PROTOCOLS[text])
    raise ValueError(
        f"unknown protocol {text!r}: use a number 0-255 or a name from /etc/protocols such as tcp,"
        " udp or icmp (names are case-sensitive)"
    )


def xt_mark(text: str, *, what: str = "mark") -> MarkMask:
    """``XTTYPE_MARKMASK32``: ``value[/mask]``, 32-bit numbers in base 0."""
    parsed = xt_uint_prefix(text)
    if parsed is None or parsed[0] > UINT32:
        raise ValueError(f"{text!r} is not a valid {what}: use VALUE[/MASK] with 32-bit numbers")
    value, rest = parsed
    mask = UINT32
    if rest.startswith("/"):
        parsed = xt_uint_prefix(rest[1:])
        if parsed is None or parsed[0] > UINT32:
            raise ValueError(f"{text!r} is not a valid {what}: the mask must be a 32-bit number")
        mask, rest = parsed
    if rest:
        raise ValueError(f"{text!r} is not a valid {what}: unexpected {rest!r} after the value")
    return MarkMask(value, mask)


def xt_name_list(text: str, names: Sequence[str], *, what: str, option: str) -> frozenset[str]:
    """A comma list of names matched like ``strncasecmp(word, NAME, len(word))``.

    conntrack, state and addrtype accept any case-insensitive prefix of a name (``est`` is
    ESTABLISHED); the first name in ``names`` order that the prefix fits wins.
    """
    result: set[str] = set()
    for part in text.split(","):
        found = None
        if part:
            for name in names:
                if name.lower().startswith(part.lower()):
                    found = name
                    break
        if found is None:
            shown = part or "(empty)"
            raise ValueError(
                f"{shown!r} is not a valid {what} in {option} {text!r}: use a comma-separated list"
                f" (no spaces) of {', '.join(names)}"
            )
        result.add(found)
    return frozenset(result)


def fmt_str(value: object) -> str:
    return str(value)


def fmt_save_string(value: object) -> str:
    return save_string(str(value))


# ---- cross-option rule helpers ---------------------------------------------------------------


def any_of(options: Mapping[str, Option], names: Sequence[str], message: str) -> Iterable[Problem]:
    if not any(n in options for n in names):
        yield Problem(message)


def exclusive(options: Mapping[str, Option], a: str, b: str) -> Iterable[Problem]:
    if a in options and b in options:
        yield Problem(
            f"--{a.replace('_', '-')} and --{b.replace('_', '-')} cannot be used together", b
        )


def requires(options: Mapping[str, Option], a: str, b: str) -> Iterable[Problem]:
    if a in options and b not in options:
        yield Problem(f"--{a.replace('_', '-')} also requires --{b.replace('_', '-')}", a)


# ============================================================================ conntrack / state

# Parse order (the first name a prefix fits) and save order differ (libxt_conntrack).
CT_STATES: tuple[str, ...] = ("INVALID", "NEW", "ESTABLISHED", "RELATED", "UNTRACKED", "SNAT", "DNAT")
_CT_STATE_SAVE_ORDER = ("INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT")
CT_STATUSES: tuple[str, ...] = ("NONE", "EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED")


def _ctstate(word: str, ctx: ParseContext) -> frozenset[str]:
    return xt_name_list(word, CT_STATES, what="connection state", option="--ctstate")


def _state(word: str, ctx: ParseContext) -> frozenset[str]:
    return xt_name_list(word, CT_STATES[:5], what="state", option="--state")


def fmt_states(value: object) -> str:
    assert isinstance(value, frozenset)
    return ",".join(s for s in _CT_STATE_SAVE_ORDER if s in value)


def _ctstatus(word: str, ctx: ParseContext) -> frozenset[str]:
    # NONE is the empty set: "NONE,ASSURED" is ASSURED.
    return xt_name_list(word, CT_STATUSES, what="connection status", option="--ctstatus") - {"NONE"}


def fmt_statuses(value: object) -> str:
    assert isinstance(value, frozenset)
    return ",".join(s for s in CT_STATUSES[1:] if s in value) or "NONE"


def _ctdir(word: str, ctx: ParseContext) -> str:
    upper = word.upper()
    if upper not in ("ORIGINAL", "REPLY"):
        raise ValueError(f"{word!r} is not a valid --ctdir: use ORIGINAL or REPLY")
    return upper


def _ct_address(word: str, ctx: ParseContext) -> HostMask:
    return xt_hostmask(word, ctx.family)


def _ct_ports(word: str, ctx: ParseContext) -> PortRange:
    return xt_port_range(word, "conntrack port")


def _fmt_protocol_number(value: object) -> str:
    assert isinstance(value, Protocol)
    return str(value.number)


def _conntrack_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    if not options:
        yield Problem("conntrack needs at least one option, e.g. --ctstate ESTABLISHED,RELATED")


CONNTRACK = ExtensionSpec(
    "conntrack",
    "match",
    (
        one("ctstate", _ctstate, invertible=True, fmt=fmt_states),
        one("ctproto", lambda w, c: xt_protocol(w), invertible=True, fmt=_fmt_protocol_number),
        one("ctorigsrc", _ct_address, invertible=True, fmt=fmt_hostmask),
        one("ctorigdst", _ct_address, invertible=True, fmt=fmt_hostmask),
        one("ctreplsrc", _ct_address, invertible=True, fmt=fmt_hostmask),
        one("ctrepldst", _ct_address, invertible=True, fmt=fmt_hostmask),
        one("ctorigsrcport", _ct_ports, invertible=True, fmt=fmt_str),
        one("ctorigdstport", _ct_ports, invertible=True, fmt=fmt_str),
        one("ctreplsrcport", _ct_ports, invertible=True, fmt=fmt_str),
        one("ctrepldstport", _ct_ports, invertible=True, fmt=fmt_str),
        one("ctstatus", _ctstatus, invertible=True, fmt=fmt_statuses),
        one("ctexpire", lambda w, c: xt_uint_range(w, UINT32, what="--ctexpire seconds"), invertible=True,
            fmt=fmt_str),
        one("ctdir", _ctdir, fmt=fmt_str),
    ),
    validate=_conntrack_validate,
    doc="Connection tracking state, status, original/reply tuple, expiry and direction.",
)


def _state_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    yield from any_of(options, ("state",), "the state match needs --state, e.g. --state ESTABLISHED,RELATED")


STATE = ExtensionSpec(
    "state",
    "match",
    (one("state", _state, invertible=True, fmt=fmt_states),),
    validate=_state_validate,
    doc="Connection state (INVALID, NEW, ESTABLISHED, RELATED, UNTRACKED); kept as -m state on save.",
)

# ============================================================================ marks, helper


def _mark_validate(module: str) -> Validator:
    def validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
        yield from any_of(options, ("mark",), f"the {module} match needs --mark VALUE[/MASK]")

    return validate


MARK = ExtensionSpec(
    "mark",
    "match",
    (one("mark", lambda w, c: xt_mark(w), invertible=True, fmt=fmt_str),),
    validate=_mark_validate("mark"),
    doc="The packet mark: (nfmark & mask) == value.",
)
CONNMARK = ExtensionSpec(
    "connmark",
    "match",
    (one("mark", lambda w, c: xt_mark(w), invertible=True, fmt=fmt_str),),
    validate=_mark_validate("connmark"),
    doc="The connection mark: (ctmark & mask) == value.",
)

# The helper name is a 30-byte field: longer names are cut to 29 bytes without a word.
HELPER_NAME_MAX_BYTES = 29


def _helper_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    yield from any_of(options, ("helper",), "the helper match needs --helper NAME, e.g. --helper ftp")


HELPER = ExtensionSpec(
    "helper",
    "match",
    (one("helper", lambda w, c: w, invertible=True, fmt=fmt_save_string),),
    validate=_helper_validate,
    opaque=True,
    doc="The conntrack helper of the connection (ftp, sip...); names over 29 bytes are truncated.",
)

# ============================================================================ connbytes

_CONNBYTES_DIRS = ("original", "reply", "both")
_CONNBYTES_MODES = ("packets", "bytes", "avgpkt")


def _connbytes(word: str, ctx: ParseContext) -> UIntRange:
    value = xt_uint_range(word, UINT64, what="--connbytes count")
    if value.is_empty:
        raise ValueError(f"--connbytes {word!r}: {value.first} should be less than {value.last}")
    if ":" not in word:  # a single number means "at least N"
        value = UIntRange(value.first, UINT64)
    return value


def _fmt_connbytes(value: object) -> str:
    assert isinstance(value, UIntRange)
    return str(value.first) if value.last == UINT64 else f"{value.first}:{value.last}"


def _choice(option: str, choices: Sequence[str]) -> Callable[[str, ParseContext], str]:
    def parse(word: str, ctx: ParseContext) -> str:
        if word not in choices:
            raise ValueError(f"{word!r} is not a valid {option}: use {', '.join(choices)} (lower case)")
        return word

    return parse


def _connbytes_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    for name in ("connbytes", "connbytes_mode", "connbytes_dir"):
        if name not in options:
            yield Problem(f"the connbytes match needs --{name.replace('_', '-')}")


CONNBYTES = ExtensionSpec(
    "connbytes",
    "match",
    (
        one("connbytes", _connbytes, invertible=True, fmt=_fmt_connbytes),
        one("connbytes_mode", _choice("--connbytes-mode", _CONNBYTES_MODES), fmt=fmt_str),
        one("connbytes_dir", _choice("--connbytes-dir", _CONNBYTES_DIRS), fmt=fmt_str),
    ),
    validate=_connbytes_validate,
    opaque=True,
    doc="Packets or bytes seen so far on the connection (FROM[:TO]).",
)

# ============================================================================ connlimit


def _connlimit_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    yield from any_of(options, ("connlimit_upto", "connlimit_above"),
                      'connlimit needs "--connlimit-above" or "--connlimit-upto"')
    yield from exclusive(options, "connlimit_upto", "connlimit_above")
    yield from exclusive(options, "connlimit_saddr", "connlimit_daddr")


CONNLIMIT = ExtensionSpec(
    "connlimit",
    "match",
    (
        # ! --connlimit-upto N is saved as --connlimit-above N, and the other way round.
        one("connlimit_upto", lambda w, c: xt_uint(w, what="--connlimit-upto count"), invertible=True,
            fmt=fmt_str),
        one("connlimit_above", lambda w, c: xt_uint(w, what="--connlimit-above count"), invertible=True,
            fmt=fmt_str),
        one("connlimit_mask", lambda w, c: xt_plen(w, c.family, what="--connlimit-mask"), fmt=fmt_str),
        flag("connlimit_saddr"),
        flag("connlimit_daddr"),
    ),
    validate=_connlimit_validate,
    opaque=True,
    doc="Number of connections per source (or destination) address group.",
)

SPECS: tuple[ExtensionSpec, ...] = (CONNTRACK, STATE, MARK, CONNMARK, HELPER, CONNBYTES, CONNLIMIT)
