"""Targets that change the packet or its conntrack entry and continue: MARK, CONNMARK, CT,
NOTRACK, TCPMSS, DSCP, TOS, TTL, HL, SET, SECMARK, CONNSECMARK; and TPROXY (terminal).

How canonical forms are represented
-----------------------------------
Several targets accept many spellings that iptables-save prints as one:

* **MARK**: ``--set-mark``, ``--and-mark``, ``--or-mark``, ``--xor-mark`` and ``--set-xmark``
  each parse to the same typed value, a :class:`~natlint.model.values.MarkMask` ``(value, mask)``
  meaning ``mark = (mark & ~mask) ^ value`` (``--set-mark 0x1`` is ``0x1/0xffffffff``,
  ``--or-mark 0x4`` is ``0x4/0x4``, ``--and-mark 0xfffe`` is ``0x0/0xffff0001``, ``--xor-mark 3``
  is ``0x3/0x0``; ``--set-mark V/M`` is ``V/(V|M)``). Only ``set_xmark`` is ``printed``; the
  others are ``printed=False``. :func:`mark_action` returns the rule's MarkMask.
* **CONNMARK**: the same five options give the ctmark ``(value, ctmask)``; ``--save-mark`` and
  ``--restore-mark`` copy with ``--nfmask``/``--ctmask`` (``--mask`` sets both; default
  0xffffffff, always printed). iptables applies the options in command-line order, so
  ``--set-xmark 1/0xff --ctmask 0xf`` is ``1/0xf`` but ``--ctmask 0xf --set-xmark 1/0xff`` is
  ``1/0xff``. :func:`connmark_action` replays them by column into a :class:`ConnmarkAction`.
* **TOS**: ``--set-tos`` (number[/mask] or a name, which gets mask 0x3f), ``--and-tos``,
  ``--or-tos``, ``--xor-tos`` all parse to a :class:`TosMask`; only ``set_tos`` is printed.
* **DSCP**: ``--set-dscp-class`` parses to the DSCP number and prints as ``--set-dscp``.
* **TCPMSS**: ``--set-mss`` and ``--clamp-mss-to-pmtu`` may both be given; the later one wins.
* **CT**: ``--zone``, ``--zone-orig`` and ``--zone-reply`` share one zone id; the direction
  flags accumulate (``--zone-orig 1 --zone-reply 2`` prints as ``--zone 2``).

A printer cannot express these with "print each present option with its fmt"; it must call
:func:`canonical_options`, which returns exactly what iptables-save prints for a target of this
module (defaults included, such as TPROXY's ``--on-ip 0.0.0.0 --tproxy-mark 0x0/0x0``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from natlint.extensions.spec import ExtensionSpec, OptionSpec, ParseContext, Problem, flag, one, two
from natlint.extensions.targets_core import (
    KERNEL_CHECKS,
    default_canonical,
    hidden,
    option_order,
    parse_xt_uint,
    plain_protocol,
    protocol_number,
    strtoui_prefix,
    truncate_bytes,
)
from natlint.extensions.targets_nat import format_address, parse_host
from natlint.model.ruleset import Option
from natlint.model.values import MarkMask, parse_port

__all__ = [
    "SPECS",
    "TosMask",
    "ConnmarkAction",
    "parse_markmask",
    "mark_action",
    "connmark_action",
    "canonical_options",
    "DSCP_CLASSES",
    "TOS_NAMES",
]

_U32 = 0xFFFFFFFF


def parse_markmask(word: str, *, what: str = "mark") -> tuple[int, int]:
    """``VALUE[/MASK]`` as ``xtables_parse_val_mask`` reads it; the mask defaults to 0xffffffff."""
    first = strtoui_prefix(word, 0, _U32)
    if first is None:
        raise ValueError(f"'{word}' is not a valid {what}: write VALUE[/MASK] with 32-bit numbers, e.g. 0x10/0xff")
    value, rest = first
    if rest == "":
        return value, _U32
    if rest[0] != "/":
        raise ValueError(f"unexpected '{rest}' after the {what} value in '{word}'")
    second = strtoui_prefix(rest[1:], 0, _U32)
    if second is None:
        raise ValueError(f"'{rest[1:]}' is not a valid {what} mask: give a 32-bit number, e.g. 0xff")
    mask, tail = second
    if tail:
        raise ValueError(f"unexpected '{tail}' after the {what} mask in '{word}'")
    return value, mask


def _u32(what: str):  # type: ignore[no-untyped-def]
    return lambda w, c: parse_xt_uint(w, _U32, what=what)


def _u8(what: str, minimum: int = 0, maximum: int = 255):  # type: ignore[no-untyped-def]
    return lambda w, c: parse_xt_uint(w, maximum, minimum=minimum, what=what)


def _fmt_xmark(value: object) -> str:
    assert isinstance(value, MarkMask)
    return f"{value.value:#x}/{value.mask:#x}"


def _xmark(word: str, ctx: ParseContext) -> MarkMask:
    return MarkMask(*parse_markmask(word))


def _set_mark(word: str, ctx: ParseContext) -> MarkMask:
    value, mask = parse_markmask(word)
    return MarkMask(value, value | mask)


def _and_mark(word: str, ctx: ParseContext) -> MarkMask:
    return MarkMask(0, ~parse_xt_uint(word, _U32, what="mark") & _U32)


def _or_mark(word: str, ctx: ParseContext) -> MarkMask:
    value = parse_xt_uint(word, _U32, what="mark")
    return MarkMask(value, value)


def _xor_mark(word: str, ctx: ParseContext) -> MarkMask:
    return MarkMask(parse_xt_uint(word, _U32, what="mark"), 0)


_MARK_OPS = ("set_xmark", "set_mark", "and_mark", "or_mark", "xor_mark")
_MARK_SPELL = {name: "--" + name.replace("_", "-") for name in _MARK_OPS}


def _mark_option_specs() -> tuple[OptionSpec, ...]:
    return (
        hidden(one("set_mark", _set_mark)),
        hidden(one("and_mark", _and_mark)),
        hidden(one("or_mark", _or_mark)),
        hidden(one("xor_mark", _xor_mark)),
    )


def _exclusive(options: Mapping[str, Option], names: Sequence[str], spell: Mapping[str, str]) -> Iterable[Problem]:
    given = [n for n in names if n in options]
    for other in given[1:]:
        yield Problem(f"{spell[given[0]]} cannot be used together with {spell[other]}", other)


def _spell(names: Iterable[str]) -> dict[str, str]:
    return {n: "--" + n.replace("_", "-") for n in names}


def mark_action(options: Mapping[str, Option]) -> MarkMask | None:
    """The MARK target's effect ``mark = (mark & ~mask) ^ value`` (None if no option)."""
    for name in _MARK_OPS:
        opt = options.get(name)
        if opt is not None:
            assert isinstance(opt.value, MarkMask)
            return opt.value
    return None


def _mark_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    if not any(n in options for n in _MARK_OPS):
        yield Problem("MARK needs one of --set-xmark, --set-mark, --and-mark, --or-mark or --xor-mark")
    yield from _exclusive(options, _MARK_OPS, _MARK_SPELL)


MARK = ExtensionSpec(
    "MARK",
    "target",
    (one("set_xmark", _xmark, fmt=_fmt_xmark), *_mark_option_specs()),
    validate=_mark_validate,
    doc="Set the packet mark (fwmark): mark = (mark & ~mask) ^ value.",
)

# ---- CONNMARK ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnmarkAction:
    """What a CONNMARK rule does.

    * ``set``: ``ctmark = (ctmark & ~ctmask) ^ mark``
    * ``save``: ``ctmark = (ctmark & ~ctmask) ^ (nfmark & nfmask)``
    * ``restore``: ``nfmark = (nfmark & ~nfmask) ^ (ctmark & ctmask)``

    with the copied value shifted by ``shift_bits`` (kernel revision 2).
    """

    mode: Literal["set", "save", "restore"]
    mark: int = 0
    ctmask: int = _U32
    nfmask: int = _U32
    shift_dir: Literal["left", "right"] = "left"
    shift_bits: int = 0


_CONNMARK_OPS = ("set_xmark", "set_mark", "and_mark", "or_mark", "xor_mark", "save_mark", "restore_mark")
_CONNMARK_SPELL = _spell((*_CONNMARK_OPS, "mask", "ctmask", "nfmask"))


def connmark_action(options: Mapping[str, Option]) -> ConnmarkAction | None:
    """Replay the CONNMARK options in command-line order, as iptables does (None: no operation)."""
    mode: Literal["set", "save", "restore"] | None = None
    mark, ctmask, nfmask = 0, _U32, _U32
    shift_dir: Literal["left", "right"] = "left"
    shift_bits = 0
    for opt in option_order(options):
        if opt.name in _MARK_OPS:
            assert isinstance(opt.value, MarkMask)
            mode, mark, ctmask = "set", opt.value.value, opt.value.mask
        elif opt.name == "save_mark":
            mode = "save"
        elif opt.name == "restore_mark":
            mode = "restore"
        elif opt.name == "mask":
            nfmask = ctmask = int(opt.value)  # type: ignore[call-overload]
        elif opt.name == "ctmask":
            ctmask = int(opt.value)  # type: ignore[call-overload]
        elif opt.name == "nfmask":
            nfmask = int(opt.value)  # type: ignore[call-overload]
        elif opt.name in ("left_shift_mark", "right_shift_mark"):
            shift_dir = "left" if opt.name == "left_shift_mark" else "right"
            shift_bits = int(opt.value)  # type: ignore[call-overload]
    if mode is None:
        return None
    return ConnmarkAction(mode, mark, ctmask, nfmask, shift_dir, shift_bits)


def _connmark_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    if not any(n in options for n in _CONNMARK_OPS):
        yield Problem(
            "CONNMARK needs an operation: --set-xmark, --set-mark, --and-mark, --or-mark, --xor-mark,"
            " --save-mark or --restore-mark"
        )
    yield from _exclusive(options, _CONNMARK_OPS, _CONNMARK_SPELL)
    if "mask" in options:
        for other in ("ctmask", "nfmask"):
            if other in options:
                yield Problem(f"--{other} cannot be used together with --mask", other)


_shift = _u8("shift", 0, 32)

CONNMARK = ExtensionSpec(
    "CONNMARK",
    "target",
    (
        one("set_xmark", _xmark, fmt=_fmt_xmark),
        flag("save_mark"),
        flag("restore_mark"),
        one("nfmask", _u32("nfmask"), fmt=lambda v: f"{v:#x}"),
        one("ctmask", _u32("ctmask"), fmt=lambda v: f"{v:#x}"),
        one("left_shift_mark", _shift),
        one("right_shift_mark", _shift),
        *_mark_option_specs(),
        hidden(one("mask", _u32("mask"))),
    ),
    validate=_connmark_validate,
    doc="Set the connection mark, or copy it from/to the packet mark.",
)

# ---- TOS, DSCP --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TosMask:
    """A TOS change ``tos = (tos & ~mask) ^ value`` on the 8-bit TOS / traffic class byte."""

    value: int
    mask: int = 0xFF

    def __str__(self) -> str:
        return f"0x{self.value:02x}/0x{self.mask:02x}"


TOS_NAMES: dict[str, int] = {
    "minimize-delay": 0x10, "maximize-throughput": 0x08, "maximize-reliability": 0x04,
    "minimize-cost": 0x02, "normal-service": 0x00,
}


def _set_tos(word: str, ctx: ParseContext) -> TosMask:
    first = strtoui_prefix(word, 0, 0xFF)
    if first is not None:
        value, rest = first
        mask = 0xFF
        if rest.startswith("/"):
            second = strtoui_prefix(rest[1:], 0, 0xFF)
            if second is None:
                raise ValueError(f"'{word}': the TOS mask must be a number from 0 to 255")
            mask, rest = second
        if rest:
            raise ValueError(f"'{word}' is not a valid TOS value: write VALUE[/MASK] (0-255) or a name")
        return TosMask(value, mask)
    if word.lower() in TOS_NAMES:
        return TosMask(TOS_NAMES[word.lower()], 0x3F)  # a name leaves the precedence bits alone
    raise ValueError(
        f"'{word}' is not a valid TOS value: use a number 0-255 (with an optional /MASK) or Minimize-Delay,"
        " Maximize-Throughput, Maximize-Reliability, Minimize-Cost, Normal-Service"
    )


def _and_tos(word: str, ctx: ParseContext) -> TosMask:
    return TosMask(0, ~parse_xt_uint(word, 0xFF, what="TOS bits") & 0xFF)


def _or_tos(word: str, ctx: ParseContext) -> TosMask:
    value = parse_xt_uint(word, 0xFF, what="TOS bits")
    return TosMask(value, value)


def _xor_tos(word: str, ctx: ParseContext) -> TosMask:
    return TosMask(parse_xt_uint(word, 0xFF, what="TOS bits"), 0)


_TOS_OPS = ("set_tos", "and_tos", "or_tos", "xor_tos")


def _tos_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    if not any(n in options for n in _TOS_OPS):
        yield Problem("TOS needs one of --set-tos, --and-tos, --or-tos or --xor-tos")
    yield from _exclusive(options, _TOS_OPS, _spell(_TOS_OPS))


TOS = ExtensionSpec(
    "TOS",
    "target",
    (
        one("set_tos", _set_tos, fmt=str),
        hidden(one("and_tos", _and_tos)),
        hidden(one("or_tos", _or_tos)),
        hidden(one("xor_tos", _xor_tos)),
    ),
    validate=_tos_validate,
    doc="Change the IPv4 TOS / IPv6 traffic class byte (mangle table).",
)

DSCP_CLASSES: tuple[tuple[str, int], ...] = (
    ("CS0", 0x00), ("CS1", 0x08), ("CS2", 0x10), ("CS3", 0x18), ("CS4", 0x20), ("CS5", 0x28),
    ("CS6", 0x30), ("CS7", 0x38), ("BE", 0x00), ("AF11", 0x0A), ("AF12", 0x0C), ("AF13", 0x0E),
    ("AF21", 0x12), ("AF22", 0x14), ("AF23", 0x16), ("AF31", 0x1A), ("AF32", 0x1C), ("AF33", 0x1E),
    ("AF41", 0x22), ("AF42", 0x24), ("AF43", 0x26), ("EF", 0x2E),
)


def _dscp_class(word: str, ctx: ParseContext) -> int:
    # class_to_dscp compares strncasecmp(word, class, strlen(class)): "AF111" and "efx" match too.
    lowered = word.lower()
    for name, value in DSCP_CLASSES:
        if lowered.startswith(name.lower()):
            return value
    names = ", ".join(name for name, _ in DSCP_CLASSES)
    raise ValueError(f"unknown DSCP class '{word}': use one of {names}")


def _dscp_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    if "set_dscp" not in options and "set_dscp_class" not in options:
        yield Problem("DSCP needs --set-dscp VALUE or --set-dscp-class CLASS")
    yield from _exclusive(options, ("set_dscp", "set_dscp_class"), _spell(("set_dscp", "set_dscp_class")))


_fmt_dscp = "0x{:02x}".format

DSCP = ExtensionSpec(
    "DSCP",
    "target",
    (
        one("set_dscp", _u8("DSCP value", 0, 0x3F), fmt=_fmt_dscp),
        hidden(one("set_dscp_class", _dscp_class, fmt=_fmt_dscp)),
    ),
    validate=_dscp_validate,
    doc="Set the DSCP bits of the TOS / traffic class byte (mangle table).",
)

# ---- TTL, HL ----------------------------------------------------------------------------------


def _ttl_spec(name: str, prefix: str, family: int, label: str) -> ExtensionSpec:
    ops = (f"{prefix}_set", f"{prefix}_dec", f"{prefix}_inc")

    def validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
        if not any(n in options for n in ops):
            yield Problem(f"{name} needs one of --{prefix}-set, --{prefix}-dec or --{prefix}-inc")
        yield from _exclusive(options, ops, _spell(ops))

    return ExtensionSpec(
        name,
        "target",
        (
            one(ops[0], _u8(label)),
            one(ops[1], _u8(f"{label} decrement", 1)),
            one(ops[2], _u8(f"{label} increment", 1)),
        ),
        families=frozenset({family}),
        validate=validate,
        doc=f"Set, decrease or increase the {label} (mangle table).",
    )


TTL = _ttl_spec("TTL", "ttl", 4, "IPv4 TTL")
HL = _ttl_spec("HL", "hl", 6, "IPv6 hop limit")

# ---- TCPMSS -----------------------------------------------------------------------------------


def _set_mss(word: str, ctx: ParseContext) -> int:
    # The MSS plus the IP header must fit in 16 bits: 65515 for IPv4, 65495 for IPv6.
    return parse_xt_uint(word, 0xFFFF - (20 if ctx.family == 4 else 40), what="MSS")


def _tcpmss_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    if "set_mss" not in options and "clamp_mss_to_pmtu" not in options:
        yield Problem("TCPMSS needs --set-mss VALUE or --clamp-mss-to-pmtu")


def _tcpmss_kernel(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[str]:
    if not plain_protocol(ctx, (6,)):
        yield "TCPMSS needs '-p tcp' (not negated) in the same rule: the kernel refuses it otherwise"


TCPMSS = ExtensionSpec(
    "TCPMSS",
    "target",
    (one("set_mss", _set_mss), flag("clamp_mss_to_pmtu")),
    validate=_tcpmss_validate,
    doc="Rewrite the MSS option of TCP SYNs (a fixed value, or the path MTU minus headers).",
)

# ---- CT, NOTRACK ------------------------------------------------------------------------------

CT_EVENTS = ("new", "related", "destroy", "reply", "assured", "protoinfo", "helper", "mark", "natseqinfo", "secmark")
CT_EXPEVENTS = ("new",)
# The L4 protocols of the kernel's conntrack helpers (a helper is looked up by name and protocol).
CT_HELPER_PROTOCOLS: dict[str, tuple[int, ...]] = {
    "ftp": (6,), "tftp": (17,), "irc": (6,), "sip": (6, 17), "pptp": (6,), "sane": (6,),
    "amanda": (17,), "netbios-ns": (17,), "snmp": (17,), "RAS": (17,), "Q.931": (6,),
}


def _events(table: tuple[str, ...], what: str):  # type: ignore[no-untyped-def]
    def parse(word: str, ctx: ParseContext) -> tuple[str, ...]:
        given = word.split(",")
        for name in given:
            if name not in table:
                raise ValueError(f"unknown {what} '{name}': use a comma separated list of " + ", ".join(table))
        return tuple(name for name in table if name in given)

    return parse


def _zone(word: str, ctx: ParseContext) -> int | str:
    if word.lower() == "mark":
        return "mark"
    return parse_xt_uint(word, 0xFFFF, what="zone id (or 'mark')")


def _fmt_events(value: object) -> str:
    assert isinstance(value, tuple)
    return ",".join(value)


def _ct_zone(options: Mapping[str, Option]) -> tuple[str, str] | None:
    """The zone option iptables-save prints, replaying --zone/--zone-orig/--zone-reply in order."""
    orig = reply = mark = False
    zone_id = 0
    for opt in option_order(options):
        if opt.name not in ("zone", "zone_orig", "zone_reply"):
            continue
        orig |= opt.name == "zone_orig"
        reply |= opt.name == "zone_reply"
        zone_id = 0
        if opt.value == "mark":
            mark = True
        else:
            zone_id = int(opt.value)  # type: ignore[call-overload]
    if not mark and zone_id == 0:
        return None
    name = "zone_orig" if orig and not reply else "zone_reply" if reply and not orig else "zone"
    return name, "mark" if mark else str(zone_id)


def _ct_kernel(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[str]:
    helper = options.get("helper")
    if helper is None or helper.value == "":
        return
    proto = protocol_number(ctx)
    if not proto or ctx.protocol_inverted:
        yield ("CT --helper needs '-p tcp' or '-p udp' (not negated) in the same rule: the kernel looks the helper"
               " up by protocol and refuses the rule otherwise")
        return
    wanted = CT_HELPER_PROTOCOLS.get(str(helper.value))
    if wanted is not None and proto not in wanted:
        names = " or ".join("-p tcp" if p == 6 else "-p udp" for p in wanted)
        yield (f"the {helper.value} helper works with {names}: the kernel has no such helper for this protocol"
               " and refuses the rule")


CT = ExtensionSpec(
    "CT",
    "target",
    (
        flag("notrack"),
        one("helper", lambda w, c: truncate_bytes(w, 15)),
        one("timeout", lambda w, c: truncate_bytes(w, 31)),
        one("ctevents", _events(CT_EVENTS, "conntrack event"), fmt=_fmt_events),
        one("expevents", _events(CT_EXPEVENTS, "expectation event"), fmt=_fmt_events),
        one("zone", _zone),
        one("zone_orig", _zone),
        one("zone_reply", _zone),
    ),
    doc="Set conntrack parameters of new connections: no tracking, a helper, a zone (raw table).",
)
NOTRACK = ExtensionSpec("NOTRACK", "target", (), doc="Do not track the packet's connection (raw table): CT --notrack.")

# ---- SET --------------------------------------------------------------------------------------

IPSET_MAXNAMELEN = 31
IPSET_DIM_MAX = 6


def _set_and_dirs(name: str, dirs: str, ctx: ParseContext) -> tuple[object, object]:
    if len(name.encode()) > IPSET_MAXNAMELEN:
        raise ValueError(f"set name '{name}' is too long: at most {IPSET_MAXNAMELEN} characters")
    parts = dirs.split(",")
    if len(parts) > IPSET_DIM_MAX:
        raise ValueError(f"'{dirs}' has more than {IPSET_DIM_MAX} src/dst flags")
    out = []
    for part in parts:
        # libxt_set parse_dirs compares only the first 3 characters.
        if part[:3] not in ("src", "dst"):
            raise ValueError(f"'{dirs}' is not a list of src/dst flags: write e.g. src or src,dst")
        out.append(part[:3])
    return name, tuple(out)


def _fmt_set(values: tuple[object, ...]) -> list[str]:
    name, dirs = values
    assert isinstance(dirs, tuple)
    return [str(name), ",".join(dirs)]


def _set_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    if not any(n in options for n in ("add_set", "del_set", "map_set")):
        yield Problem("SET needs --add-set, --del-set or --map-set NAME FLAGS")
    if "add_set" not in options:
        for name in ("exist", "timeout"):
            if name in options:
                yield Problem(f"--{name} can only be used with --add-set", name)
    if "map_set" not in options:
        for name in ("map_mark", "map_prio", "map_queue"):
            if name in options:
                yield Problem(f"--{name.replace('_', '-')} can only be used with --map-set", name)
    elif not any(n in options for n in ("map_mark", "map_prio", "map_queue")):
        yield Problem("--map-set needs --map-mark, --map-prio or --map-queue", "map_set")


SET = ExtensionSpec(
    "SET",
    "target",
    (
        two("add_set", _set_and_dirs, fmt=_fmt_set),
        flag("exist"),
        one("timeout", lambda w, c: parse_xt_uint(w, _U32 - 1, what="ipset timeout")),
        two("del_set", _set_and_dirs, fmt=_fmt_set),
        two("map_set", _set_and_dirs, fmt=_fmt_set),
        flag("map_mark"),
        flag("map_prio"),
        flag("map_queue"),
    ),
    validate=_set_validate,
    doc="Add the packet's addresses/ports to an ipset, or delete them from one.",
)

# ---- TPROXY -----------------------------------------------------------------------------------


def _tproxy_port(word: str, ctx: ParseContext) -> int:
    # getaddrinfo(NULL, word): decimal only (leading zeros fine), truncated to 16 bits; or a service.
    if re.fullmatch(r"[ \t\n\v\f\r]*\+?[0-9]+", word):
        return int(word.strip().lstrip("+")) & 0xFFFF
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", word) and not word[0].isdigit():
        try:
            return parse_port(word)
        except ValueError:
            pass
    raise ValueError(f"'{word}' is not a valid port: use a decimal number or a service name")


def _tproxy_mark(word: str, ctx: ParseContext) -> MarkMask:
    return MarkMask(*parse_markmask(word))


def _tproxy_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    if "on_port" not in options:
        yield Problem("TPROXY needs --on-port PORT (0 keeps the original port)")


def _tproxy_kernel(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[str]:
    if not plain_protocol(ctx, (6, 17)):
        yield "TPROXY needs '-p tcp' or '-p udp' (not negated) in the same rule: the kernel refuses it otherwise"


TPROXY = ExtensionSpec(
    "TPROXY",
    "target",
    (
        one("on_port", _tproxy_port),
        one("on_ip", lambda w, c: parse_host(w, c.family)),
        one("tproxy_mark", _tproxy_mark, fmt=_fmt_xmark),
    ),
    validate=_tproxy_validate,
    terminal=True,
    doc="Deliver the packet to a local transparent-proxy socket without changing it (mangle PREROUTING).",
)

# ---- SECMARK, CONNSECMARK ---------------------------------------------------------------------

SECMARK = ExtensionSpec(
    "SECMARK",
    "target",
    (one("selctx", lambda w, c: truncate_bytes(w, 255)),),
    validate=lambda o, c: () if "selctx" in o else (Problem("SECMARK needs --selctx CONTEXT"),),
    doc="Set the packet's SELinux security mark (mangle or security table).",
)


def _connsecmark_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    if "save" not in options and "restore" not in options:
        yield Problem("CONNSECMARK needs --save or --restore")
    yield from _exclusive(options, ("save", "restore"), _spell(("save", "restore")))


CONNSECMARK = ExtensionSpec(
    "CONNSECMARK",
    "target",
    (flag("save"), flag("restore")),
    validate=_connsecmark_validate,
    doc="Copy the security mark from the packet to the connection (--save) or back (--restore).",
)

SPECS: tuple[ExtensionSpec, ...] = (
    MARK, CONNMARK, CT, NOTRACK, TCPMSS, DSCP, TOS, TTL, HL, SET, TPROXY, SECMARK, CONNSECMARK,
)
_BY_NAME = {s.name: s for s in SPECS}
KERNEL_CHECKS.update({"TCPMSS": _tcpmss_kernel, "TPROXY": _tproxy_kernel, "CT": _ct_kernel})

# ---- canonical printing -----------------------------------------------------------------------


def canonical_options(name: str, options: Mapping[str, Option], *, family: int = 4) -> list[tuple[str, list[str]]]:
    """The options ``iptables-save`` prints for target ``name`` of this module, in its order.

    Same contract as :func:`natlint.extensions.targets_core.canonical_options`: a list of
    ``(option name as in the grammar alias, words)``. Raises KeyError for a target this module
    does not define.
    """
    spec = _BY_NAME[name]
    if name == "MARK":
        action = mark_action(options)
        return [] if action is None else [("set_xmark", [_fmt_xmark(action)])]
    if name == "CONNMARK":
        ct = connmark_action(options)
        if ct is None:
            return []
        if ct.mode == "set":
            out = [("set_xmark", [f"{ct.mark:#x}/{ct.ctmask:#x}"])]
        else:
            out = [(f"{ct.mode}_mark", []), ("nfmask", [f"{ct.nfmask:#x}"]), ("ctmask", [f"{ct.ctmask:#x}"])]
        if ct.shift_bits:
            out.append((f"{ct.shift_dir}_shift_mark", [str(ct.shift_bits)]))
        return out
    if name == "TOS":
        for op in _TOS_OPS:
            if op in options:
                return [("set_tos", [str(options[op].value)])]
        return []
    if name == "DSCP":
        for op in ("set_dscp", "set_dscp_class"):
            if op in options:
                return [("set_dscp", [_fmt_dscp(options[op].value)])]
        return []
    if name == "TCPMSS":
        last = [o for o in option_order(options) if o.name in ("set_mss", "clamp_mss_to_pmtu")][-1:]
        return [(o.name, [str(v) for v in o.values]) for o in last]
    if name == "CT":
        out = [(n, w) for n, w in default_canonical(spec, options)
               if n not in ("zone", "zone_orig", "zone_reply") and not (n == "helper" and w == [""])
               and not (n == "timeout" and w == [""])]
        zone = _ct_zone(options)
        if zone is not None:
            out.append((zone[0], [zone[1]]))
        return out
    if name == "TPROXY":
        port = options.get("on_port")
        address = options.get("on_ip")
        mark = options.get("tproxy_mark")
        return [
            ("on_port", [str(port.value if port is not None else 0)]),
            ("on_ip", [format_address(family, int(address.value) if address is not None else 0)]),  # type: ignore[call-overload]
            ("tproxy_mark", [_fmt_xmark(mark.value if mark is not None else MarkMask(0, 0))]),
        ]
    return default_canonical(spec, options)

