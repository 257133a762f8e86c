"""Layer-4 header matches: tcp, udp, udplite, sctp, dccp, icmp, icmp6, multiport.

tcp/udp/udplite/sctp/dccp/icmp/icmp6 are also loaded implicitly by ``-p PROTO`` when one of
their options follows (iptables-save then prints ``-m tcp`` explicitly).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from natlint.extensions.spec import ExtensionSpec, OptionSpec, ParseContext, Problem, flag, one, two
from natlint.model.ruleset import Option
from natlint.model.values import PortRange, parse_port_list, parse_port_range, parse_uint

TCP_FLAGS: tuple[str, ...] = ("FIN", "SYN", "RST", "PSH", "ACK", "URG")
_FLAG_BITS = {name: 1 << i for i, name in enumerate(TCP_FLAGS)}
_ALL_FLAGS = (1 << len(TCP_FLAGS)) - 1


def _port_range(word: str, ctx: ParseContext) -> PortRange:
    return parse_port_range(word, ctx.protocol)


def _port_list(word: str, ctx: ParseContext) -> tuple[PortRange, ...]:
    return parse_port_list(word, ctx.protocol)


def parse_tcp_flag_set(word: str) -> int:
    """``SYN,ACK``, ``ALL`` or ``NONE`` as a bit set (FIN=1 ... URG=32)."""
    bits = 0
    for part in word.split(","):
        upper = part.upper()
        if upper == "ALL":
            bits |= _ALL_FLAGS
        elif upper == "NONE":
            continue
        elif upper in _FLAG_BITS:
            bits |= _FLAG_BITS[upper]
        else:
            raise ValueError(f"unknown TCP flag '{part}': use FIN, SYN, RST, PSH, ACK, URG, ALL or NONE")
    return bits


def format_tcp_flag_set(bits: int) -> str:
    if bits == 0:
        return "NONE"
    return ",".join(name for name in TCP_FLAGS if bits & _FLAG_BITS[name])


def _tcp_flags(mask: str, comp: str, ctx: ParseContext) -> tuple[object, object]:
    return parse_tcp_flag_set(mask), parse_tcp_flag_set(comp)


def _fmt_tcp_flags(values: tuple[object, ...]) -> list[str]:
    mask, comp = values
    assert isinstance(mask, int) and isinstance(comp, int)
    return [format_tcp_flag_set(mask), format_tcp_flag_set(comp)]


def _fmt_port_list(value: object) -> str:
    assert isinstance(value, tuple)
    return ",".join(str(r) for r in value)


def _fmt_port(value: object) -> str:
    return str(value)


# ``--syn`` is stored as the --tcp-flags it stands for, as iptables-save prints it.
SYN_MASK = _FLAG_BITS["FIN"] | _FLAG_BITS["SYN"] | _FLAG_BITS["RST"] | _FLAG_BITS["ACK"]
SYN_COMP = _FLAG_BITS["SYN"]


def _tcp_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    if "syn" in options and "tcp_flags" in options:
        yield Problem("--syn and --tcp-flags cannot be used together: --syn already sets the flags", "syn")


_PORTS = (
    one("sport", _port_range, invertible=True),
    one("dport", _port_range, invertible=True),
)

TCP = ExtensionSpec(
    "tcp",
    "match",
    (
        *_PORTS,
        one("tcp_option", lambda w, c: parse_uint(w, 255, what="TCP option number"), invertible=True),
        two("tcp_flags", _tcp_flags, invertible=True, fmt=_fmt_tcp_flags),
        flag("syn", invertible=True),
    ),
    validate=_tcp_validate,
    doc="TCP header: ports, flags, options.",
)
UDP = ExtensionSpec("udp", "match", _PORTS, doc="UDP ports.")
UDPLITE = ExtensionSpec("udplite", "match", (), doc="UDP-Lite (no options).")

_SCTP_CHUNK_MODES = ("all", "any", "only")


def _chunk_types(mode: str, chunks: str, ctx: ParseContext) -> tuple[object, object]:
    if mode.lower() not in _SCTP_CHUNK_MODES:
        raise ValueError(f"'{mode}' is not a chunk match mode: use all, any or only")
    return mode.lower(), chunks


SCTP = ExtensionSpec(
    "sctp",
    "match",
    (*_PORTS, two("chunk_types", _chunk_types, invertible=True, fmt=lambda v: [str(v[0]), str(v[1])])),
    doc="SCTP ports and chunk types.",
)
DCCP = ExtensionSpec(
    "dccp",
    "match",
    (
        *_PORTS,
        one("dccp_types", lambda w, c: w, invertible=True),
        one("dccp_option", lambda w, c: parse_uint(w, 255, what="DCCP option"), invertible=True),
    ),
    doc="DCCP ports, types and options.",
)

# ---- ICMP -----------------------------------------------------------------------------------

ICMP_TYPES: dict[str, tuple[int, int | None]] = {
    "any": (255, None),
    "echo-reply": (0, None), "pong": (0, None),
    "destination-unreachable": (3, None),
    "network-unreachable": (3, 0), "host-unreachable": (3, 1), "protocol-unreachable": (3, 2),
    "port-unreachable": (3, 3), "fragmentation-needed": (3, 4), "source-route-failed": (3, 5),
    "network-unknown": (3, 6), "host-unknown": (3, 7), "network-prohibited": (3, 9),
    "host-prohibited": (3, 10), "TOS-network-unreachable": (3, 11), "TOS-host-unreachable": (3, 12),
    "communication-prohibited": (3, 13), "host-precedence-violation": (3, 14),
    "precedence-cutoff": (3, 15), "source-quench": (4, None), "redirect": (5, None),
    "network-redirect": (5, 0), "host-redirect": (5, 1), "TOS-network-redirect": (5, 2),
    "TOS-host-redirect": (5, 3), "echo-request": (8, None), "ping": (8, None),
    "router-advertisement": (9, None), "router-solicitation": (10, None),
    "time-exceeded": (11, None), "ttl-exceeded": (11, None), "ttl-zero-during-transit": (11, 0),
    "ttl-zero-during-reassembly": (11, 1), "parameter-problem": (12, None),
    "ip-header-bad": (12, 0), "required-option-missing": (12, 1),
    "timestamp-request": (13, None), "timestamp-reply": (14, None),
    "address-mask-request": (17, None), "address-mask-reply": (18, None),
}
ICMPV6_TYPES: dict[str, tuple[int, int | None]] = {
    "destination-unreachable": (1, None), "no-route": (1, 0), "communication-prohibited": (1, 1),
    "beyond-scope": (1, 2), "address-unreachable": (1, 3), "port-unreachable": (1, 4),
    "failed-policy": (1, 5), "reject-route": (1, 6), "packet-too-big": (2, None),
    "time-exceeded": (3, None), "ttl-exceeded": (3, None), "ttl-zero-during-transit": (3, 0),
    "ttl-zero-during-reassembly": (3, 1), "parameter-problem": (4, None),
    "bad-header": (4, 0), "unknown-header-type": (4, 1), "unknown-option": (4, 2),
    "echo-request": (128, None), "ping": (128, None), "echo-reply": (129, None), "pong": (129, None),
    "mld-listener-query": (130, None), "mld-listener-report": (131, None),
    "mld-listener-done": (132, None), "mld-listener-reduction": (132, None),
    "router-solicitation": (133, None), "router-advertisement": (134, None),
    "neighbour-solicitation": (135, None), "neighbor-solicitation": (135, None),
    "neighbour-advertisement": (136, None), "neighbor-advertisement": (136, None),
    "redirect": (137, None),
}


class IcmpType(tuple[int, int | None]):
    """``(type, code)``; code None means every code; type 255 with no code means any type."""

    def __str__(self) -> str:
        icmp_type, icmp_code = self
        if icmp_type == 255 and icmp_code is None:
            return "any"
        return str(icmp_type) if icmp_code is None else f"{icmp_type}/{icmp_code}"


def _icmp_parser(table: Mapping[str, tuple[int, int | None]], what: str):  # type: ignore[no-untyped-def]
    def parse(word: str, ctx: ParseContext) -> IcmpType:
        if word in table:
            return IcmpType(table[word])
        lowered = {k.lower(): v for k, v in table.items()}
        if word.lower() in lowered:
            return IcmpType(lowered[word.lower()])
        type_text, slash, code_text = word.partition("/")
        try:
            icmp_type = parse_uint(type_text, 255, what=f"{what} type")
            icmp_code = parse_uint(code_text, 255, what=f"{what} code") if slash else None
        except ValueError:
            raise ValueError(
                f"'{word}' is not a valid {what} type: use a name such as echo-request or TYPE[/CODE]"
            ) from None
        return IcmpType((icmp_type, icmp_code))

    return parse


ICMP = ExtensionSpec(
    "icmp", "match", (one("icmp_type", _icmp_parser(ICMP_TYPES, "ICMP"), invertible=True),),
    families=frozenset({4}), doc="ICMP type and code (IPv4).",
)
ICMP6 = ExtensionSpec(
    "icmp6", "match", (one("icmpv6_type", _icmp_parser(ICMPV6_TYPES, "ICMPv6"), invertible=True),),
    families=frozenset({6}), doc="ICMPv6 type and code.",
)

# ---- multiport ------------------------------------------------------------------------------

_MULTIPORT_PROTOCOLS = ("tcp", "udp", "udplite", "sctp", "dccp")


def _multiport_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    if ctx.protocol not in _MULTIPORT_PROTOCOLS or ctx.protocol_inverted:
        yield Problem(
            "multiport needs '-p tcp', '-p udp', '-p udplite', '-p sctp' or '-p dccp' in the same rule"
        )
    given = [name for name in ("sports", "dports", "ports") if name in options]
    if len(given) > 1:
        yield Problem("multiport takes only one of --sports, --dports and --ports", given[1])
    if not given:
        yield Problem("multiport needs one of --sports, --dports or --ports")


MULTIPORT = ExtensionSpec(
    "multiport",
    "match",
    (
        one("sports", _port_list, invertible=True, fmt=_fmt_port_list),
        one("dports", _port_list, invertible=True, fmt=_fmt_port_list),
        one("ports", _port_list, invertible=True, fmt=_fmt_port_list),
    ),
    validate=_multiport_validate,
    doc="Up to 15 ports or port ranges.",
)

SPECS: tuple[ExtensionSpec, ...] = (TCP, UDP, UDPLITE, SCTP, DCCP, ICMP, ICMP6, MULTIPORT)

# -p NAME loads this match when one of its options follows (iptables' implicit match).
IMPLICIT_BY_PROTOCOL: dict[str, str] = {
    "tcp": "tcp", "udp": "udp", "udplite": "udplite", "sctp": "sctp", "dccp": "dccp",
    "icmp": "icmp", "ipv6-icmp": "icmp6", "icmpv6": "icmp6",
}


def option_names(specs: Sequence[ExtensionSpec]) -> set[str]:
    return {o.name for s in specs for o in s.options}


__all__ = ["SPECS", "IMPLICIT_BY_PROTOCOL", "TCP_FLAGS", "SYN_MASK", "SYN_COMP", "ICMP_TYPES", "ICMPV6_TYPES",
           "IcmpType", "parse_tcp_flag_set", "format_tcp_flag_set", "OptionSpec"]
