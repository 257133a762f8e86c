"""NAT targets: DNAT, SNAT, MASQUERADE, REDIRECT, NETMAP.

The NAT range syntax (``--to-destination``, ``--to-source``, ``--to-ports``) is parsed into a
:class:`NatRange` exactly as libxt_NAT's ``parse_to``/``parse_ports`` read it in iptables 1.8.9;
``str(range)`` is what iptables-save prints after ``--to-destination``/``--to-source`` and
:meth:`NatRange.ports_text` what it prints after ``--to-ports``. Quirks kept on purpose (all
checked against the real tool):

* addresses go through ``inet_pton``: no host names, no ``10.1`` short forms, no leading zeros;
  IPv6 needs ``[...]`` only when a port follows (``fd00::1-fd00::9`` is an address range);
* a range whose first address is above the last is accepted (the kernel does not check it);
* ``--to-destination 10:80``: a colon at position 0 or 2 means "no address" (a 2-character
  address is silently dropped);
* text between ``]`` and ``:`` is ignored (``[fd00::1]x:80``), so is text after a ``/BASE`` number;
* a port needs ``-p tcp|udp|sctp|dccp`` or ``-p icmp`` in the rule (a ``!`` before ``-p`` does
  not matter), else "Need TCP, UDP, SCTP or DCCP with port specification";
* a shifted range (``:5000-6000/1000``) keeps its base only for DNAT. SNAT and MASQUERADE accept
  it but the kernel interface they use has no base field: the kernel gets base 0 and
  iptables-save prints ``/0`` (which iptables-restore then refuses). Their NatRange has
  ``base == 0``. REDIRECT refuses a base.
* ``--to`` is accepted as the abbreviation of ``--to-destination``/``--to-source``/``--to-ports``:
  each NAT target has a hidden ``to`` option for it (NETMAP's own option is ``--to``).

NETMAP's ``--to`` is read with ``getaddrinfo`` (so ``10.5`` is 10.0.0.5 as in ``inet_aton``) and
a mask that is not a valid CIDR length or a contiguous mask silently means ``/32`` (``/128``).

Printing: :func:`canonical_options` gives the options iptables-save prints for a target of this
module (``--to`` written as ``--to-destination``...), in iptables-save's order.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from natlint.extensions.spec import ExtensionSpec, OptionSpec, ParseContext, Problem, flag, one
from natlint.extensions.targets_core import default_canonical, hidden, protocol_number, strtoui_prefix
from natlint.model.ruleset import Option
from natlint.model.values import AddressRange, PortRange, Prefix, parse_port

__all__ = [
    "SPECS",
    "NatRange",
    "PORT_PROTOCOLS",
    "parse_nat_range",
    "parse_nat_ports",
    "parse_host",
    "parse_netmap",
    "format_address",
    "canonical_options",
]

# libxt_NAT portok: the protocol numbers whose "port" a NAT range may set. ICMP (its id) is
# accepted too although the message does not say so; IPv6 uses the same list (58 is not in it).
PORT_PROTOCOLS = frozenset({6, 17, 132, 33, 1})
_NEED_PROTOCOL = (
    "Need TCP, UDP, SCTP or DCCP with port specification: a NAT port needs '-p tcp', '-p udp', '-p sctp' or"
    " '-p dccp' in the rule, before the target"
)


@dataclass(frozen=True, slots=True)
class NatRange:
    """What a NAT target maps to: optional addresses, optional ports, optional shift base.

    ``addresses`` None: the address is not changed (``:2000-3000``). ``ports`` None: the port is
    not changed. ``base`` not None: a shifted port map (DNAT ``:5000-6000/1000`` maps port
    ``p`` to ``5000 + (p - 1000) % 1001``); 0 for SNAT/MASQUERADE, which lose the base.
    """

    version: int
    addresses: AddressRange | None = None
    ports: PortRange | None = None
    base: int | None = None

    @property
    def maps_addresses(self) -> bool:
        return self.addresses is not None

    @property
    def maps_ports(self) -> bool:
        return self.ports is not None

    @property
    def shifted(self) -> bool:
        return self.base is not None

    def addresses_text(self) -> str:
        if self.addresses is None:
            return ""
        first = format_address(self.version, self.addresses.first)
        if self.addresses.first == self.addresses.last:
            return first
        return f"{first}-{format_address(self.version, self.addresses.last)}"

    def ports_text(self) -> str:
        """The ports as ``--to-ports`` prints them: ``p``, ``p-q`` or ``p-q/base``."""
        if self.ports is None:
            return ""
        text = str(self.ports.first)
        if self.ports.last != self.ports.first:
            text += f"-{self.ports.last}"
        if self.base is not None:
            text += f"/{self.base}"
        return text

    def __str__(self) -> str:
        addresses = self.addresses_text()
        if self.ports is None:
            return addresses
        if addresses and self.version == 6:
            addresses = f"[{addresses}]"
        return f"{addresses}:{self.ports_text()}"


def format_address(version: int, value: int) -> str:
    """An address as iptables-save prints it: glibc ``inet_ntop`` ("::ffff:1.2.3.4" stays dotted)."""
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))


def _pton(version: int, text: str) -> int:
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    try:
        return int.from_bytes(socket.inet_pton(family, text), "big")
    except (OSError, ValueError):
        fam = "IPv4" if version == 4 else "IPv6"
        hint = " (host names are not allowed here)" if re.search(r"[g-zG-Z]", text) else ""
        raise ValueError(f"'{text}' is not a valid {fam} address{hint}") from None


# ---- ports ------------------------------------------------------------------------------------

def _service(text: str) -> int:
    try:
        return parse_port(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a valid port: use a number from 0 to 65535 or a service name") from None


def parse_nat_ports(text: str, *, keep_base: bool = True) -> tuple[PortRange, int | None]:
    """``PORT[-PORT[/BASE]]`` as libxt_NAT's ``parse_ports`` reads it (no protocol check)."""
    first = strtoui_prefix(text, 0, 65535)
    if first is None:
        port, rest = _service(text), ""
    else:
        port, rest = first
    if rest == "":
        return PortRange(port, port), None
    if rest[0] == ":":
        raise ValueError(f"'{text}': write a NAT port range with a dash (1000-2000), not a colon")
    if rest[0] != "-":
        raise ValueError(f"unexpected '{rest}' after the port in '{text}'")
    last_text = rest[1:]
    last = strtoui_prefix(last_text, 0, 65535)
    if last is None:  # service names are not allowed after the dash
        raise ValueError(f"'{last_text}' is not a valid port: the end of a range must be a number from 0 to 65535")
    maxport, rest = last
    if maxport < port:
        raise ValueError(f"the port range {port}-{maxport} is empty: {port} is above {maxport}")
    ports = PortRange(port, maxport)
    if rest == "":
        return ports, None
    if rest[0] != "/":
        raise ValueError(f"unexpected '{rest}' after the port range in '{text}'")
    base_text = rest[1:]
    parsed_base = strtoui_prefix(base_text, 1, 65535)  # text after the number is ignored
    bad_base = f"'{base_text}' is not a valid base port: after '/' give a port from 1 to 65535 or a service name"
    if parsed_base is not None:
        base = parsed_base[0]
    elif strtoui_prefix(base_text, 0, 1 << 64) is not None:  # a number out of range (0, 70000): no service lookup
        raise ValueError(bad_base)
    else:
        try:
            base = parse_port(base_text)
        except ValueError:
            raise ValueError(bad_base) from None
    return ports, base if keep_base else 0


def _port_ok(ctx: ParseContext) -> None:
    if protocol_number(ctx) not in PORT_PROTOCOLS:
        raise ValueError(_NEED_PROTOCOL)


# ---- addresses and ranges ---------------------------------------------------------------------


def parse_nat_range(text: str, ctx: ParseContext, *, keep_base: bool = True) -> NatRange:
    """``[ADDR[-ADDR]][:PORT[-PORT[/BASE]]]`` (IPv6: ``[ADDR[-ADDR]]:PORT...``) as libxt_NAT reads it."""
    version = ctx.family
    bracket = text.find("[")
    if bracket < 0:
        colon = text.find(":")
        if colon >= 0 and ":" in text[colon + 1:]:
            colon = -1  # more than one colon: an IPv6 address without a port
        address_text = text[:colon] if colon >= 0 else text
    else:
        close = text.find("]", bracket + 1)
        if close < 0 or version == 4:
            raise ValueError(
                f"'{text}': square brackets are only for IPv6 addresses, as [ADDR]:PORT"
                if version == 4 else f"'{text}': the '[' has no matching ']'"
            )
        address_text = text[bracket + 1:close]
        colon = text.find(":", close + 1)
    ports: PortRange | None = None
    base: int | None = None
    if colon >= 0:
        _port_ok(ctx)
        ports, base = parse_nat_ports(text[colon + 1:], keep_base=keep_base)
        if colon in (0, 2):  # libxt_NAT: "starts with colon or [] colon? No IP info"
            return NatRange(version, None, ports, base)
    first_text, dash, last_text = address_text.partition("-")
    first = _pton(version, first_text)
    last = _pton(version, last_text) if dash else first
    return NatRange(version, AddressRange(version, first, last), ports, base)


def _to_range(keep_base: bool):  # type: ignore[no-untyped-def]
    return lambda word, ctx: parse_nat_range(word, ctx, keep_base=keep_base)


def _to_ports(keep_base: bool):  # type: ignore[no-untyped-def]
    def parse(word: str, ctx: ParseContext) -> NatRange:
        _port_ok(ctx)
        ports, base = parse_nat_ports(word, keep_base=keep_base)
        if base is not None and keep_base:
            raise ValueError(f"'{word}': REDIRECT does not support a shifted port range (/BASE)")
        return NatRange(ctx.family, None, ports, base)

    return parse


def _fmt_ports(value: object) -> str:
    assert isinstance(value, NatRange)
    return value.ports_text()


# ---- hosts and NETMAP -------------------------------------------------------------------------

_ATON_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")


def _inet_aton(text: str) -> int | None:
    """glibc ``inet_aton_exact``: 1 to 4 parts, each decimal, 0x hex or 0 octal; the last part
    fills the remaining bytes (``10.5`` is 10.0.0.5)."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_ATON_PART.fullmatch(p) for p in parts):
        return None
    values = [int(p, 16 if p[:2] in ("0x", "0X") else 8 if p[0] == "0" else 10) for p in parts]
    tail_bits = 8 * (5 - len(values))
    if any(v > 0xFF for v in values[:-1]) or values[-1] >= 1 << tail_bits:
        return None
    result = 0
    for v in values[:-1]:
        result = (result << 8) | v
    return (result << tail_bits) | values[-1]


_LOCALHOST = {4: {"localhost": 0x7F000001}, 6: {"localhost": 1, "ip6-localhost": 1, "ip6-loopback": 1}}


def parse_host(text: str, version: int) -> int:
    """An address as ``getaddrinfo`` reads it (TPROXY ``--on-ip``, NETMAP): IPv4 in any
    ``inet_aton`` form; host names other than localhost depend on DNS and are refused."""
    value: int | None
    if version == 4:
        value = _inet_aton(text)
    else:
        try:
            value = int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
        except (OSError, ValueError):
            value = None
    if value is not None:
        return value
    known = _LOCALHOST[version].get(text)
    if known is not None:
        return known
    if re.search(r"[g-zG-Z]", text):
        raise ValueError(
            f"'{text}' is a host name: iptables-restore resolves it with DNS when the rules are loaded,"
            " so the rule depends on DNS at boot; natlint cannot check it. Write the address instead"
        )
    fam = "IPv4" if version == 4 else "IPv6"
    raise ValueError(f"'{text}' is not a valid {fam} address")


def parse_netmap(text: str, ctx: ParseContext) -> Prefix:
    """NETMAP ``--to ADDR[/LEN|/MASK]`` (host bits cleared)."""
    version = ctx.family
    bits = 32 if version == 4 else 128
    full = (1 << bits) - 1
    address_text, slash, mask_text = text.partition("/")
    address = parse_host(address_text, version)
    mask = full
    if slash:
        plen = strtoui_prefix(mask_text, 0, bits)
        if plen is not None and plen[1] == "":
            mask = (full << (bits - plen[0])) & full
        else:
            if version == 4:
                given = _inet_aton(mask_text)
            else:
                try:
                    given = int.from_bytes(socket.inet_pton(socket.AF_INET6, mask_text), "big")
                except (OSError, ValueError):
                    given = None
            if given is None:
                raise ValueError(
                    f"'{mask_text}' is neither a prefix length (0-{bits}) nor a network mask"
                )
            inverse = ~given & full
            # A mask that is not contiguous (or a number like 33 read as the address 0.0.0.33)
            # silently means a single host.
            mask = given if inverse & (inverse + 1) == 0 else full
    return Prefix(version, address & mask, mask)


# ---- specs ------------------------------------------------------------------------------------


def _nat_validate(target: str, full: str, mandatory: bool):  # type: ignore[no-untyped-def]
    spelling = "--" + full.replace("_", "-")

    def validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
        if full in options and "to" in options:
            yield Problem(f"{spelling} can only be used once ('--to' is its abbreviation)", "to")
        elif mandatory and full not in options and "to" not in options:
            yield Problem(f"{target} needs {spelling} ADDRESS[-ADDRESS][:PORT[-PORT]]")

    return validate


_RANDOM = flag("random")
_RANDOM_FULLY = flag("random_fully")
_PERSISTENT = flag("persistent")


def _nat_option(name: str, parse, fmt=None) -> tuple[OptionSpec, OptionSpec]:  # type: ignore[no-untyped-def]
    return one(name, parse, fmt=fmt), hidden(one("to", parse, fmt=fmt))


DNAT = ExtensionSpec(
    "DNAT",
    "target",
    (*_nat_option("to_destination", _to_range(True), str), _RANDOM, _PERSISTENT),
    validate=_nat_validate("DNAT", "to_destination", True),
    terminal=True,
    doc="Rewrite the destination address and/or port of a new connection (nat PREROUTING/OUTPUT).",
)
SNAT = ExtensionSpec(
    "SNAT",
    "target",
    (*_nat_option("to_source", _to_range(False), str), _RANDOM, _RANDOM_FULLY, _PERSISTENT),
    validate=_nat_validate("SNAT", "to_source", True),
    terminal=True,
    doc="Rewrite the source address and/or port of a new connection (nat POSTROUTING/INPUT).",
)
MASQUERADE = ExtensionSpec(
    "MASQUERADE",
    "target",
    (*_nat_option("to_ports", _to_ports(False), _fmt_ports), _RANDOM, _RANDOM_FULLY),
    validate=_nat_validate("MASQUERADE", "to_ports", False),
    terminal=True,
    doc="SNAT to the address of the outgoing interface (nat POSTROUTING).",
)
REDIRECT = ExtensionSpec(
    "REDIRECT",
    "target",
    (*_nat_option("to_ports", _to_ports(True), _fmt_ports), _RANDOM),
    validate=_nat_validate("REDIRECT", "to_ports", False),
    terminal=True,
    doc="DNAT to the incoming interface's primary address (127.0.0.1 / ::1 for local traffic).",
)


def _netmap_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    if "to" not in options:
        yield Problem("NETMAP needs --to ADDRESS/LENGTH")


NETMAP = ExtensionSpec(
    "NETMAP",
    "target",
    (one("to", parse_netmap),),
    validate=_netmap_validate,
    terminal=True,
    doc="Map a whole network 1:1 onto another (destination in PREROUTING/OUTPUT, source in POSTROUTING/INPUT).",
)

SPECS: tuple[ExtensionSpec, ...] = (DNAT, SNAT, MASQUERADE, REDIRECT, NETMAP)
_BY_NAME = {s.name: s for s in SPECS}
_FULL_NAME = {"DNAT": "to_destination", "SNAT": "to_source", "MASQUERADE": "to_ports", "REDIRECT": "to_ports"}


def canonical_options(name: str, options: Mapping[str, Option], *, family: int = 4) -> list[tuple[str, list[str]]]:
    """The options ``iptables-save`` prints for target ``name`` of this module, in its order.

    Same contract as :func:`natlint.extensions.targets_core.canonical_options`: ``(option name
    as in the grammar alias, words)`` pairs; ``--to`` comes out as the option it abbreviates.
    Raises KeyError for a target this module does not define.
    """
    spec = _BY_NAME[name]
    full = _FULL_NAME.get(name)
    if full is not None and "to" in options and full not in options:
        alias = options["to"]
        options = {**options, full: Option(full, alias.values, alias.invert, alias.column)}
    return default_canonical(spec, options)
