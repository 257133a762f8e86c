"""Other matches: comment, limit, hashlimit, recent, statistic, length, tos, dscp, string, u32,
nfacct, ttl, hl, frag, ipv6header, esp, ah, tcpmss, quota, time, ecn, cpu.

Behaviour checked against iptables-restore / iptables-save 1.8.9 (nf_tables) in a throwaway
network namespace, and against the iptables extension sources for the number formats.
"""

from __future__ import annotations

import calendar
import ipaddress
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from natlint.extensions.matches_state import (
    UINT8,
    UINT16,
    UINT32,
    UINT64,
    UIntRange,
    any_of,
    exclusive,
    fmt_save_string,
    fmt_str,
    requires,
    xt_host,
    xt_plen,
    xt_uint,
    xt_uint_prefix,
    xt_uint_range,
)
from natlint.extensions.spec import ExtensionSpec, ParseContext, Problem, Validator, flag, one, save_string
from natlint.model.ruleset import Option

__all__ = [
    "SPECS",
    "COMMENT_MAX_BYTES",
    "LimitRate",
    "HashlimitRate",
    "Probability",
    "TosValue",
    "U32Test",
    "U32Match",
    "parse_limit_rate",
    "parse_hashlimit_rate",
    "parse_hex_string",
    "format_string_pattern",
    "DSCP_CLASSES",
]


def _requires_protocol(options: Mapping[str, Option], ctx: ParseContext, proto: str, module: str) -> Iterable[Problem]:
    # xt_check_match: a match bound to a protocol needs "-p PROTO" (not negated) in the rule.
    if ctx.protocol != proto or ctx.protocol_inverted:
        yield Problem(f"the {module} match needs '-p {proto}' in the same rule: the kernel refuses the rule without it")


# ============================================================================ comment

# xt_comment keeps 256 bytes with the NUL: longer comments are cut without a word.
COMMENT_MAX_BYTES = 255


def _fmt_comment(value: object) -> str:
    raw = str(value).encode("utf-8", "surrogateescape")[:COMMENT_MAX_BYTES]
    return save_string(raw.decode("utf-8", "ignore"))


def _comment_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    yield from any_of(options, ("comment",), "the comment match needs --comment TEXT")


COMMENT = ExtensionSpec(
    "comment",
    "match",
    # The value keeps the whole text; iptables stores (and saves) only its first 255 bytes.
    (one("comment", lambda w, c: w, fmt=_fmt_comment),),
    validate=_comment_validate,
    doc="A comment; always matches. Longer than 255 bytes is silently truncated by iptables.",
)

# ============================================================================ limit


def _atoll(text: str) -> int:
    """C ``atoll``/``atoi``: leading blanks, a sign, then digits; 0 when there are none."""
    m = re.match(r"[ \t\n\v\f\r]*([+-]?[0-9]+)", text)
    return int(m.group(1)) if m else 0


_RATE_UNITS = (("second", 1), ("minute", 60), ("hour", 3600), ("day", 86400))


def _rate_unit(text: str) -> int | None:
    """The seconds per unit after ``/``: any case-insensitive prefix of second/minute/hour/day."""
    slash = text.find("/")
    if slash < 0:
        return 1
    unit = text[slash + 1:].lower()
    if not unit:
        return None
    for name, seconds in _RATE_UNITS:
        if name.startswith(unit):
            return seconds
    return None


def _print_rate(period: int, scale: int) -> str:
    # libxt_limit / libxt_hashlimit print_rate: the largest unit that divides well.
    rates = (("day", scale * 86400), ("hour", scale * 3600), ("min", scale * 60), ("sec", scale))
    if period == 0:
        return "inf"
    i = 1
    while i < len(rates):
        mult = rates[i][1]
        if period > mult or mult // period < mult % period:
            break
        i += 1
    name, mult = rates[i - 1]
    return f"{mult // period}/{name}"


XT_LIMIT_SCALE = 10000


@dataclass(frozen=True, slots=True)
class LimitRate:
    """A ``limit`` rate as the kernel stores it: ``period`` in 1/10000 s between packets."""

    period: int

    @property
    def per_second(self) -> float:
        return XT_LIMIT_SCALE / self.period

    def __str__(self) -> str:
        return _print_rate(self.period, XT_LIMIT_SCALE)


def parse_limit_rate(text: str) -> LimitRate:
    """``N[/second|/minute|/hour|/day]`` (any unit prefix, any case; per second by default).

    Like libxt_limit, the number is read with ``atoi``: ``5abc`` is 5/sec.
    """
    seconds = _rate_unit(text)
    number = _atoll(text) & UINT32  # atoi into a uint32_t
    if seconds is None or number == 0:
        raise ValueError(f"bad rate {text!r}: use N/sec, N/min, N/hour or N/day with N > 0")
    period = XT_LIMIT_SCALE * seconds // number
    if period == 0:
        raise ValueError(f"rate {text!r} is too fast: at most 10000/sec")
    return LimitRate(period)


LIMIT = ExtensionSpec(
    "limit",
    "match",
    (
        # Without --limit the rate is 3/hour, and iptables-save prints it.
        one("limit", lambda w, c: parse_limit_rate(w), fmt=fmt_str),
        # The default burst 5 is not printed back.
        one("limit_burst", lambda w, c: xt_uint(w, 10000, what="--limit-burst"), fmt=fmt_str),
    ),
    opaque=True,
    doc="Token-bucket rate limit shared by every packet of the rule.",
)

# ============================================================================ hashlimit

XT_HASHLIMIT_SCALE_V2 = 1000000
XT_HASHLIMIT_BYTE_SHIFT = 4
XT_HASHLIMIT_BURST_MAX = 1000000


def _bytes_to_cost(nbytes: int) -> int:
    r = (nbytes >> XT_HASHLIMIT_BYTE_SHIFT) & UINT32
    return UINT32 // ((r + 1) & UINT32 or 1)


def _cost_to_bytes(cost: int) -> int:
    r = UINT32 // cost if cost else UINT32
    return ((r - 1) << XT_HASHLIMIT_BYTE_SHIFT) & UINT64


@dataclass(frozen=True, slots=True)
class HashlimitRate:
    """A hashlimit rate: packets (``avg`` in 1e-6 s between packets) or bytes (``avg`` a cost)."""

    avg: int
    bytes: bool = False

    def __str__(self) -> str:
        if not self.bytes:
            return _print_rate(self.avg, XT_HASHLIMIT_SCALE_V2)
        r = _cost_to_bytes(self.avg)
        for thresh, unit in ((1024 * 1024, "m"), (1024, "k")):
            if r >= thresh and _bytes_to_cost(r & ~(thresh - 1)) == self.avg:
                return f"{r // thresh}{unit}b/s"
        return f"{r}b/s"


def parse_hashlimit_rate(text: str) -> HashlimitRate:
    """Packets (``N[/unit]`` as for limit) or bytes (``Nb/s``, ``Nkb/s``, ``Nmb/s``)."""
    at = text.find("b/s")
    if at > 0:
        number = _atoll(text) & UINT64
        if number:
            factor = {"m": 1024 * 1024, "k": 1024}.get(text[at - 1], 1)
            cost = _bytes_to_cost((number * factor) & UINT64)
            if cost == 0:
                raise ValueError(f"rate {text!r} is too high")
            return HashlimitRate(cost, bytes=True)
    seconds = _rate_unit(text)
    number = _atoll(text) & UINT64
    if seconds is None or number == 0:
        raise ValueError(f"bad rate {text!r}: use N/sec, N/min, N/hour, N/day, or Nb/s, Nkb/s, Nmb/s for bytes")
    avg = XT_HASHLIMIT_SCALE_V2 * seconds // number
    if avg == 0:
        raise ValueError(f"rate {text!r} is too fast: at most 1000000/sec")
    return HashlimitRate(avg)


def _hashlimit_burst(word: str, ctx: ParseContext) -> int:
    # parse_burst: a number (base 0) >= 1, optionally followed by k or m (bytes); any other
    # trailing text is ignored by iptables.
    parsed = xt_uint_prefix(word)
    if parsed is None or parsed[0] < 1 or (parsed[1] == "" and parsed[0] > XT_HASHLIMIT_BURST_MAX):
        raise ValueError(f"bad --hashlimit-burst {word!r}: use 1 to {XT_HASHLIMIT_BURST_MAX}, or a byte size like 2mb")
    value, rest = parsed
    factor = {"m": 1024 * 1024, "k": 1024}.get(rest[:1], 1)
    if value * factor > UINT64:
        raise ValueError(f"--hashlimit-burst {word!r} is too large")
    return value * factor


_HASHLIMIT_MODES = ("srcip", "srcport", "dstip", "dstport")  # save order


def _hashlimit_mode(word: str, ctx: ParseContext) -> frozenset[str]:
    tokens = [t for t in re.split(r"[,|]", word) if t]
    for token in tokens:
        if token not in _HASHLIMIT_MODES:
            raise ValueError(f"bad --hashlimit-mode {word!r}: use a comma list of srcip, srcport, dstip, dstport")
    return frozenset(tokens)


def _fmt_hashlimit_mode(value: object) -> str:
    assert isinstance(value, frozenset)
    return ",".join(m for m in _HASHLIMIT_MODES if m in value)


def _hashlimit_name(word: str, ctx: ParseContext) -> str:
    if not word:
        raise ValueError("--hashlimit-name must not be empty")
    return word


def _rate_interval(word: str, ctx: ParseContext) -> int:
    value = _atoll(word)
    if value <= 0 or value > 0x7FFFFFFF:
        raise ValueError(f"bad --hashlimit-rate-interval {word!r}: use a number of seconds > 0")
    return value


def _hashlimit_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    yield from any_of(options, ("hashlimit_name",), "hashlimit needs --hashlimit-name NAME")
    yield from any_of(options, ("hashlimit_upto", "hashlimit_above"),
                      "hashlimit needs --hashlimit-upto or --hashlimit-above RATE")
    yield from exclusive(options, "hashlimit_upto", "hashlimit_above")
    rate_opt = options.get("hashlimit_upto") or options.get("hashlimit_above")
    burst_opt = options.get("hashlimit_burst")
    rate = rate_opt.value if rate_opt is not None else None
    if isinstance(rate, HashlimitRate) and burst_opt is not None and isinstance(burst_opt.value, int):
        if rate.bytes and burst_opt.value < _cost_to_bytes(rate.avg):
            yield Problem(f"--hashlimit-burst cannot be smaller than {_cost_to_bytes(rate.avg)}b", "hashlimit_burst")
        if not rate.bytes and burst_opt.value > XT_HASHLIMIT_BURST_MAX:
            yield Problem(f"--hashlimit-burst is out of range (1-{XT_HASHLIMIT_BURST_MAX})", "hashlimit_burst")


def _u32(what: str) -> Callable[[str, ParseContext], int]:
    def parse(word: str, ctx: ParseContext) -> int:
        return xt_uint(word, UINT32, what=what)

    return parse


def _plen(what: str) -> Callable[[str, ParseContext], int]:
    def parse(word: str, ctx: ParseContext) -> int:
        return xt_plen(word, ctx.family, what=what)

    return parse


HASHLIMIT = ExtensionSpec(
    "hashlimit",
    "match",
    (
        # "! --hashlimit-upto R" is saved as "--hashlimit-above R" and the other way round;
        # --hashlimit (old name) is saved as --hashlimit-upto.
        one("hashlimit_upto", lambda w, c: parse_hashlimit_rate(w), invertible=True, fmt=fmt_str),
        one("hashlimit_above", lambda w, c: parse_hashlimit_rate(w), invertible=True, fmt=fmt_str),
        one("hashlimit_burst", _hashlimit_burst, fmt=fmt_str),
        one("hashlimit_mode", _hashlimit_mode, fmt=_fmt_hashlimit_mode),
        one("hashlimit_name", _hashlimit_name, fmt=fmt_str),
        one("hashlimit_htable_size", _u32("--hashlimit-htable-size"), fmt=fmt_str),
        one("hashlimit_htable_max", _u32("--hashlimit-htable-max"), fmt=fmt_str),
        one("hashlimit_htable_gcinterval", _u32("--hashlimit-htable-gcinterval"), fmt=fmt_str),
        one("hashlimit_htable_expire", _u32("--hashlimit-htable-expire"), fmt=fmt_str),
        one("hashlimit_srcmask", _plen("--hashlimit-srcmask"), fmt=fmt_str),
        one("hashlimit_dstmask", _plen("--hashlimit-dstmask"), fmt=fmt_str),
        flag("hashlimit_rate_match"),
        one("hashlimit_rate_interval", _rate_interval, fmt=fmt_str),
    ),
    validate=_hashlimit_validate,
    opaque=True,
    doc="Per-flow (per address/port group) rate limit with a named hash table.",
)

# ============================================================================ recent

XT_RECENT_NAME_LEN = 200


def _recent_name(word: str, ctx: ParseContext) -> str:
    # xt_recent refuses an empty name and one with '/' (it names a /proc file).
    if not word:
        raise ValueError("--name must not be empty: the kernel refuses the rule")
    if "/" in word:
        raise ValueError(f"--name {word!r} contains '/': the kernel refuses the rule")
    return word


def _recent_mask(word: str, ctx: ParseContext) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    value = xt_host(word, ctx.family)
    return ipaddress.IPv4Address(value) if ctx.family == 4 else ipaddress.IPv6Address(value)


_RECENT_OPS = ("set", "rcheck", "update", "remove")


def _recent_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    ops = [op for op in _RECENT_OPS if op in options]
    if not ops:
        yield Problem("recent: you must specify one of --set, --rcheck, --update or --remove")
    for op in ops[1:]:
        yield Problem(f"recent: --{ops[0]} and --{op} cannot be used together", op)
    yield from requires(options, "reap", "seconds")
    if "rttl" in options and ops and ops[0] in ("set", "remove"):
        yield Problem(f"recent: --rttl cannot be used together with --{ops[0]}", "rttl")
    if ops and ops[0] in ("set", "remove"):
        for name in ("seconds", "hitcount", "reap"):
            if name in options:
                yield Problem(
                    f"recent: --{name} only works with --rcheck or --update; with --{ops[0]} the kernel"
                    " refuses the rule", name
                )


RECENT = ExtensionSpec(
    "recent",
    "match",
    (
        flag("set", invertible=True),
        flag("rcheck", invertible=True),
        flag("update", invertible=True),
        flag("remove", invertible=True),
        one("seconds", lambda w, c: xt_uint(w, minimum=1, what="--seconds"), fmt=fmt_str),
        flag("reap"),
        # 0 means "not given" and is not printed back.
        one("hitcount", lambda w, c: xt_uint(w, what="--hitcount"), fmt=fmt_str),
        flag("rttl"),
        # Saved without quotes whatever it contains; the default name DEFAULT is printed.
        one("name", _recent_name, fmt=fmt_str),
        # Always printed (255.255.255.255 by default); the default --rsource is printed too.
        one("mask", _recent_mask, fmt=fmt_str),
        flag("rsource"),
        flag("rdest"),
    ),
    validate=_recent_validate,
    opaque=True,
    doc="Lists of recently seen addresses (port-knocking, brute-force throttling).",
)

# ============================================================================ statistic


@dataclass(frozen=True, slots=True)
class Probability:
    """A probability as the kernel stores it: ``raw / 2**31``."""

    raw: int

    @property
    def value(self) -> float:
        return self.raw / 0x80000000

    def __str__(self) -> str:
        return f"{self.value:.11f}"


_STRTOD = re.compile(
    r"[ \t\n\v\f\r]*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"|0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?"
    r"|(?i:inf(?:inity)?|nan(?:\([0-9A-Za-z_]*\))?))"
)


def _probability(word: str, ctx: ParseContext) -> Probability:
    if not _STRTOD.fullmatch(word):
        raise ValueError(f"bad --probability {word!r}: use a number from 0 to 1, e.g. 0.25")
    text = word.strip(" \t\n\v\f\r")
    body = text.lstrip("+-")
    if body[:3].lower() == "nan":
        # NaN passes iptables' range check (every comparison is false) and is stored as 0.
        return Probability(0)
    value = float.fromhex(text) if body[:2] in ("0x", "0X") else float(text)
    if not 0 <= value <= 1:
        raise ValueError(f"--probability {word!r} is out of range: use a number from 0 to 1")
    return Probability(math.floor(0x80000000 * value + 0.5))  # lround


def _statistic_mode(word: str, ctx: ParseContext) -> str:
    if word not in ("random", "nth"):
        raise ValueError(f"bad --mode {word!r}: use random or nth (lower case)")
    return word


def _statistic_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    mode = options.get("mode")
    if mode is None:
        yield Problem("statistic needs --mode random or --mode nth")
    yield from exclusive(options, "probability", "every")
    yield from exclusive(options, "probability", "packet")
    yield from requires(options, "every", "packet")
    yield from requires(options, "packet", "every")
    if mode is not None and mode.value == "random" and "probability" not in options:
        yield Problem("statistic: --probability must be given with --mode random", "mode")
    if mode is not None and mode.value == "nth" and "every" not in options and "packet" not in options:
        yield Problem("statistic: --every and --packet must be given with --mode nth", "mode")
    every, packet = options.get("every"), options.get("packet")
    if (
        every is not None and packet is not None and isinstance(every.value, int) and isinstance(packet.value, int)
        and packet.value > every.value - 1
    ):
        yield Problem("statistic: --packet P must be 0 <= P <= N-1 for --every N", "packet")


STATISTIC = ExtensionSpec(
    "statistic",
    "match",
    (
        one("mode", _statistic_mode, fmt=fmt_str),
        # Printed with 11 decimals of the 31-bit fixed-point value: 0.3 saves as 0.29999999981.
        one("probability", _probability, invertible=True, fmt=fmt_str),
        one("every", lambda w, c: xt_uint(w, minimum=1, what="--every"), invertible=True, fmt=fmt_str),
        # Always printed in nth mode, 0 included.
        one("packet", lambda w, c: xt_uint(w, what="--packet"), fmt=fmt_str),
    ),
    validate=_statistic_validate,
    opaque=True,
    doc="Random sampling (--mode random) or every Nth packet (--mode nth).",
)

# ============================================================================ length, quota, cpu


def _mandatory(option: str, module: str) -> Validator:
    def validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
        yield from any_of(options, (option,), f"the {module} match needs --{option.replace('_', '-')}")

    return validate


LENGTH = ExtensionSpec(
    "length",
    "match",
    (one("length", lambda w, c: xt_uint_range(w, UINT16, what="--length"), invertible=True, fmt=fmt_str),),
    validate=_mandatory("length", "length"),
    doc="IP packet length (layer 3 total length), N or FROM:TO.",
)

QUOTA = ExtensionSpec(
    "quota",
    "match",
    (one("quota", lambda w, c: xt_uint(w, UINT64, what="--quota bytes"), invertible=True, fmt=fmt_str),),
    validate=_mandatory("quota", "quota"),
    opaque=True,
    doc="Matches until the rule has seen QUOTA bytes.",
)

CPU = ExtensionSpec(
    "cpu",
    "match",
    (one("cpu", lambda w, c: xt_uint(w, what="--cpu"), invertible=True, fmt=fmt_str),),
    validate=_mandatory("cpu", "cpu"),
    opaque=True,
    doc="The CPU handling the packet.",
)

# ============================================================================ tos, dscp


@dataclass(frozen=True, slots=True)
class TosValue:
    """``(tos & mask) == value`` on the IPv4 TOS / IPv6 traffic class byte."""

    value: int
    mask: int = 0xFF

    def __str__(self) -> str:
        return f"{self.value:#04x}/{self.mask:#04x}"


_TOS_NAMES = {"minimize-delay": 0x10, "maximize-throughput": 0x08, "maximize-reliability": 0x04,
              "minimize-cost": 0x02, "normal-service": 0x00}


def _tos(word: str, ctx: ParseContext) -> TosValue:
    bad = ValueError(f"bad --tos {word!r}: use VALUE[/MASK] (0-255) or Minimize-Delay, Maximize-Throughput,"
                     " Maximize-Reliability, Minimize-Cost, Normal-Service")
    parsed = xt_uint_prefix(word)
    if parsed is not None and parsed[0] <= UINT8:
        value, rest = parsed
        mask = 0xFF
        if rest.startswith("/"):
            masked = xt_uint_prefix(rest[1:])
            if masked is None or masked[0] > UINT8:
                raise bad
            mask, rest = masked
        if rest:
            raise bad
        return TosValue(value, mask)
    named = _TOS_NAMES.get(word.lower())
    if named is None:
        raise bad
    return TosValue(named, 0x3F)  # a symbolic name compares only the low 6 bits


def _tos_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    yield from any_of(options, ("tos",), "the tos match needs --tos VALUE[/MASK]")


TOS = ExtensionSpec(
    "tos",
    "match",
    (one("tos", _tos, invertible=True, fmt=fmt_str),),
    validate=_tos_validate,
    doc="The IPv4 TOS / IPv6 traffic class byte under a mask.",
)

DSCP_CLASSES: dict[str, int] = {
    "CS0": 0x00, "CS1": 0x08, "CS2": 0x10, "CS3": 0x18, "CS4": 0x20, "CS5": 0x28, "CS6": 0x30,
    "CS7": 0x38, "BE": 0x00, "AF11": 0x0A, "AF12": 0x0C, "AF13": 0x0E, "AF21": 0x12,
    "AF22": 0x14, "AF23": 0x16, "AF31": 0x1A, "AF32": 0x1C, "AF33": 0x1E, "AF41": 0x22,
    "AF42": 0x24, "AF43": 0x26, "EF": 0x2E,
}


def _dscp_class(word: str, ctx: ParseContext) -> int:
    value = DSCP_CLASSES.get(word.upper())
    if value is None:
        raise ValueError(f"invalid DSCP class {word!r}: use CS0-CS7, AF11-AF43, EF or BE")
    return value


def _fmt_dscp(value: object) -> str:
    assert isinstance(value, int)
    return f"{value:#04x}"


def _dscp_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    yield from any_of(options, ("dscp", "dscp_class"), "the dscp match needs --dscp or --dscp-class")
    yield from exclusive(options, "dscp", "dscp_class")


DSCP = ExtensionSpec(
    "dscp",
    "match",
    (
        one("dscp", lambda w, c: xt_uint(w, 63, what="--dscp value"), invertible=True, fmt=_fmt_dscp),
        # Saved as --dscp 0x..: --dscp-class EF becomes --dscp 0x2e.
        one("dscp_class", _dscp_class, invertible=True, fmt=_fmt_dscp),
    ),
    validate=_dscp_validate,
    doc="The 6-bit DSCP field.",
)

# ============================================================================ string

XT_STRING_MAX_PATTERN_SIZE = 128
XT_STRING_MAX_ALGO_NAME_SIZE = 16
_STRING_ALGOS = ("bm", "kmp")


def _pattern_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _string(word: str, ctx: ParseContext) -> bytes:
    pattern = _pattern_bytes(word)
    if len(pattern) > XT_STRING_MAX_PATTERN_SIZE:
        raise ValueError(f"--string is too long: at most {XT_STRING_MAX_PATTERN_SIZE} bytes")
    if not pattern:
        raise ValueError("--string must not be empty: the kernel refuses the rule")
    return pattern


def parse_hex_string(text: str) -> bytes:
    """libxt_string ``parse_hex_string``: text with ``|41 42|`` hex blocks and ``\\`` literals."""
    s = _pattern_bytes(text)
    n = len(s)
    if n == 0:
        raise ValueError("--hex-string must contain at least one character")
    out = bytearray()
    i, hex_f, literal_f = 0, False, False

    def at(k: int) -> int:
        return s[k] if k < n else 0

    while i < n:
        if len(out) >= XT_STRING_MAX_PATTERN_SIZE:
            raise ValueError(f"--hex-string is too long: at most {XT_STRING_MAX_PATTERN_SIZE} bytes")
        c = s[i]
        if c == 0x5C and not hex_f:  # backslash
            literal_f = True
        elif c == 0x5C:
            raise ValueError("--hex-string cannot include a \\ literal inside a |hex| block")
        elif c == 0x7C:  # |
            if hex_f:
                hex_f = False
            else:
                hex_f = True
                while at(i + 1) == 0x20:
                    i += 1
            if i + 1 >= n:
                break
            i += 1
        if literal_f:
            if i + 1 >= n:
                raise ValueError("--hex-string has a \\ at its end with nothing to escape")
            out.append(s[i + 1])
            i += 2
            literal_f = False
        elif hex_f:
            if i + 1 >= n:
                raise ValueError("--hex-string has an odd number of hex digits")
            if i + 2 >= n:
                raise ValueError("--hex-string has an invalid hex block: it must end with |")
            pair = bytes(s[i:i + 2])
            if not re.fullmatch(rb"[0-9a-fA-F]{2}", pair):
                raise ValueError(f"--hex-string has an invalid hex character in {pair.decode('latin-1')!r}")
            out.append(int(pair, 16))
            i += 3 if at(i + 2) == 0x20 else 2
        else:
            out.append(s[i])
            i += 1
    if not out:
        raise ValueError("--hex-string must not be empty: the kernel refuses the rule")
    return bytes(out)


def format_string_pattern(pattern: bytes) -> tuple[str, str]:
    """The option and word iptables-save prints for a string pattern.

    Printable patterns are saved as ``--string "..."`` (only ``"`` and ``\\`` escaped), others
    (or ending with ``\\``) as ``--hex-string "|..|"``, whichever option was written.
    """
    printable = all(0x20 <= b <= 0x7E for b in pattern) and not pattern.endswith(b"\\")
    if printable:
        text = "".join("\\" + chr(b) if b in (0x22, 0x5C) else chr(b) for b in pattern)
        return "string", f'"{text}"'
    return "hex_string", '"|' + pattern.hex() + '|"'


def _fmt_pattern(value: object) -> str:
    assert isinstance(value, bytes)
    return format_string_pattern(value)[1]


def _algo(word: str, ctx: ParseContext) -> str:
    name = _pattern_bytes(word)[: XT_STRING_MAX_ALGO_NAME_SIZE - 1].decode("utf-8", "ignore")
    if name not in _STRING_ALGOS:
        raise ValueError(f"unknown --algo {word!r}: use bm or kmp (the kernel refuses other names)")
    return name


def _string_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    yield from any_of(options, ("algo",), "the string match needs --algo bm or --algo kmp")
    yield from any_of(options, ("string", "hex_string"), "the string match needs --string or --hex-string")
    yield from exclusive(options, "string", "hex_string")
    start, stop = options.get("from"), options.get("to")
    if (
        start is not None and stop is not None and isinstance(start.value, int) and isinstance(stop.value, int)
        and start.value > stop.value
    ):
        yield Problem("string: --from is after --to: the kernel refuses the rule", "from")


STRING = ExtensionSpec(
    "string",
    "match",
    (
        one("string", _string, invertible=True, fmt=_fmt_pattern),
        one("hex_string", lambda w, c: parse_hex_string(w), invertible=True, fmt=_fmt_pattern),
        one("algo", _algo, fmt=fmt_str),
        # --from 0 and --to 65535 are the defaults and are not printed back.
        one("from", lambda w, c: xt_uint(w, UINT16, what="--from offset"), fmt=fmt_str),
        one("to", lambda w, c: xt_uint(w, UINT16, what="--to offset"), fmt=fmt_str),
        flag("icase"),
    ),
    validate=_string_validate,
    opaque=True,
    doc="A byte string in the packet between two offsets (Boyer-Moore or KMP).",
)

# ============================================================================ u32

XT_U32_MAXSIZE = 10


@dataclass(frozen=True, slots=True)
class U32Test:
    """``location = ranges``: ``location`` is a start number then (operator, number) steps."""

    start: int
    steps: tuple[tuple[str, int], ...]
    ranges: tuple[tuple[int, int], ...]

    def __str__(self) -> str:
        loc = f"{self.start:#x}" + "".join(f"{op}{n:#x}" for op, n in self.steps)
        vals = ",".join(f"{lo:#x}" if lo == hi else f"{lo:#x}:{hi:#x}" for lo, hi in self.ranges)
        return f"{loc}={vals}"


@dataclass(frozen=True, slots=True)
class U32Match:
    tests: tuple[U32Test, ...]

    def __str__(self) -> str:
        return '"' + "&&".join(str(t) for t in self.tests) + '"'


def _u32_spec(text: str) -> U32Match:
    """libxt_u32 ``u32_parse``: ``tests := location "=" value ["&&" tests]``."""
    pos = 0
    n = len(text)

    def fail(message: str) -> ValueError:
        return ValueError(f"--u32 {text!r}: at char {pos}: {message}")

    def skip_space() -> None:
        nonlocal pos
        while pos < n and text[pos] in " \t\n\v\f\r":
            pos += 1

    def number() -> int:
        nonlocal pos
        parsed = xt_uint_prefix(text[pos:])
        if parsed is None or parsed[0] > UINT32:
            raise fail("not a number or out of range")
        pos = n - len(parsed[1])
        return parsed[0]

    tests: list[U32Test] = []
    more = True
    while more:
        # location: number (op number)*
        skip_space()
        if pos >= n:
            raise ValueError(f"--u32 {text!r}: abrupt end of input after location specifier")
        if text[pos] == "=":
            raise fail("location spec missing")
        start = number()
        steps: list[tuple[str, int]] = []
        while True:
            skip_space()
            if pos >= n:
                raise ValueError(f"--u32 {text!r}: abrupt end of input after location specifier")
            c = text[pos]
            if c == "=":
                pos += 1
                break
            if c == "&":
                op = "&"
            elif c in "<>":
                if text[pos + 1:pos + 2] != c:
                    pos += 1
                    raise fail(f"a second '{c}' was expected")
                pos += 1
                op = c * 2
            elif c == "@":
                op = "@"
            else:
                raise fail("operator expected")
            pos += 1
            steps.append((op, number()))
            if len(steps) + 1 > XT_U32_MAXSIZE:
                raise fail("too many operators")
        # values: range ("," range)*
        ranges: list[tuple[int, int]] = []
        more = False
        while True:
            skip_space()
            if pos >= n:
                if not ranges:
                    raise ValueError(f"--u32 {text!r}: test ended with no value specified")
                break
            if text[pos] == "&":
                pos += 1
                if text[pos:pos + 1] != "&":
                    raise fail("a second '&' was expected")
                if not ranges:
                    raise fail("value spec missing")
                pos += 1
                more = True
                break
            if ranges:
                if text[pos] != ",":
                    raise fail('expected "," or "&&"')
                pos += 1
            low = number()
            skip_space()
            high = low
            if pos < n and text[pos] == ":":
                pos += 1
                high = number()
            ranges.append((low, high))
            if len(ranges) > XT_U32_MAXSIZE:
                raise fail('too many ","s')
        tests.append(U32Test(start, tuple(steps), tuple(ranges)))
        if len(tests) > XT_U32_MAXSIZE:
            raise fail('too many "&&"s')
    return U32Match(tuple(tests))


U32 = ExtensionSpec(
    "u32",
    "match",
    (one("u32", lambda w, c: _u32_spec(w), invertible=True, fmt=fmt_str),),
    validate=_mandatory("u32", "u32"),
    opaque=True,
    doc="Arbitrary 32-bit words of the packet under masks, shifts and pointer moves.",
)

# ============================================================================ nfacct

NFACCT_NAME_MAX_BYTES = 31


NFACCT = ExtensionSpec(
    "nfacct",
    "match",
    # The accounting object must exist (nfacct add NAME) when the rule is loaded.
    (one("nfacct_name", lambda w, c: w, fmt=fmt_save_string),),
    validate=_mandatory("nfacct_name", "nfacct"),
    opaque=True,
    doc="Counts into an extended accounting object; always matches.",
)

# ============================================================================ ttl, hl


def _hop_validate(prefix: str, module: str) -> Validator:
    names = (f"{prefix}_eq", f"{prefix}_lt", f"{prefix}_gt")

    def validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
        given = [n for n in names if n in options]
        if not given:
            yield Problem(f"{module} match: you must specify one of --{prefix}-eq, --{prefix}-lt, --{prefix}-gt")
        for other in given[1:]:
            yield Problem(f"--{given[0].replace('_', '-')} and --{other.replace('_', '-')} cannot be used together",
                          other)

    return validate


def _uint8(what: str) -> Callable[[str, ParseContext], int]:
    def parse(word: str, ctx: ParseContext) -> int:
        return xt_uint(word, UINT8, what=what)

    return parse


TTL = ExtensionSpec(
    "ttl",
    "match",
    (
        one("ttl_eq", _uint8("--ttl-eq"), invertible=True, fmt=fmt_str),
        one("ttl_lt", _uint8("--ttl-lt"), fmt=fmt_str),
        one("ttl_gt", _uint8("--ttl-gt"), fmt=fmt_str),
    ),
    families=frozenset({4}),
    validate=_hop_validate("ttl", "ttl"),
    doc="IPv4 time to live.",
)
HL = ExtensionSpec(
    "hl",
    "match",
    (
        one("hl_eq", _uint8("--hl-eq"), invertible=True, fmt=fmt_str),
        one("hl_lt", _uint8("--hl-lt"), fmt=fmt_str),
        one("hl_gt", _uint8("--hl-gt"), fmt=fmt_str),
    ),
    families=frozenset({6}),
    validate=_hop_validate("hl", "hl"),
    doc="IPv6 hop limit.",
)

# ============================================================================ frag, ipv6header


def _frag_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    yield from exclusive(options, "fragmore", "fraglast")


FRAG = ExtensionSpec(
    "frag",
    "match",
    (
        one("fragid", lambda w, c: xt_uint_range(w, UINT32, what="--fragid"), invertible=True, fmt=fmt_str),
        one("fraglen", lambda w, c: xt_uint(w, what="--fraglen"), invertible=True, fmt=fmt_str),
        flag("fragres"),
        flag("fragfirst"),
        flag("fragmore"),
        flag("fraglast"),
    ),
    families=frozenset({6}),
    validate=_frag_validate,
    doc="IPv6 fragment header: identification, first/more/last fragment.",
)

# Save order is the bit order; names are case-sensitive.
_IPV6_HEADERS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("hop-by-hop", 0, ("hop", "hop-by-hop", "0")),
    ("ipv6-opts", 60, ("dst", "ipv6-opts", "60")),
    ("ipv6-route", 43, ("route", "ipv6-route", "43")),
    ("ipv6-frag", 44, ("frag", "ipv6-frag", "44")),
    ("ah", 51, ("auth", "ah", "51")),
    ("esp", 50, ("esp", "50")),
    ("ipv6-nonxt", 59, ("none", "ipv6-nonxt", "59")),
    ("protocol", 255, ("prot", "protocol", "255")),
)
_IPV6_HEADER_BY_NAME = {alias: name for name, _, aliases in _IPV6_HEADERS for alias in aliases}


def _ipv6_headers(word: str, ctx: ParseContext) -> frozenset[str]:
    names = set()
    for part in word.split(","):
        name = _IPV6_HEADER_BY_NAME.get(part)
        if name is None:
            raise ValueError(
                f"unknown IPv6 header {part!r} in --header {word!r}: use hop, dst, route, frag, auth, esp,"
                " none, prot (or their protocol names/numbers)"
            )
        names.add(name)
    return frozenset(names)


def _fmt_ipv6_headers(value: object) -> str:
    assert isinstance(value, frozenset)
    return ",".join(name for name, _, _ in _IPV6_HEADERS if name in value)


IPV6HEADER = ExtensionSpec(
    "ipv6header",
    "match",
    (one("header", _ipv6_headers, invertible=True, fmt=_fmt_ipv6_headers), flag("soft")),
    families=frozenset({6}),
    validate=_mandatory("header", "ipv6header"),
    doc="Which IPv6 extension headers the packet has (all of them, or any with --soft).",
)

# ============================================================================ esp, ah, tcpmss


def _esp_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    yield from _requires_protocol(options, ctx, "esp", "esp")


def _spi_range(option: str) -> Callable[[str, ParseContext], UIntRange]:
    def parse(word: str, ctx: ParseContext) -> UIntRange:
        return xt_uint_range(word, UINT32, what=f"{option} SPI")

    return parse


ESP = ExtensionSpec(
    "esp",
    "match",
    (one("espspi", _spi_range("--espspi"), invertible=True, fmt=fmt_str),),
    validate=_esp_validate,
    doc="IPsec ESP security parameter index.",
)


def _ah_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    if ctx.family == 4:
        yield from _requires_protocol(options, ctx, "ah", "ah")
        for name in ("ahlen", "ahres"):
            if name in options:
                yield Problem(f"--{name} exists only in ip6tables", name, "NL002")


AH = ExtensionSpec(
    "ah",
    "match",
    (
        one("ahspi", _spi_range("--ahspi"), invertible=True, fmt=fmt_str),
        one("ahlen", lambda w, c: xt_uint(w, what="--ahlen"), invertible=True, fmt=fmt_str),
        flag("ahres"),
    ),
    validate=_ah_validate,
    doc="IPsec AH security parameter index (IPv6 also length and reserved field).",
)


def _mss(word: str, ctx: ParseContext) -> UIntRange:
    value = xt_uint_range(word, UINT16, what="--mss")
    if value.is_empty:
        raise ValueError(f"--mss {word!r} is an invalid range: the first value is above the last")
    return value


def _tcpmss_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    yield from any_of(options, ("mss",), "the tcpmss match needs --mss VALUE[:VALUE]")
    yield from _requires_protocol(options, ctx, "tcp", "tcpmss")


TCPMSS = ExtensionSpec(
    "tcpmss",
    "match",
    (one("mss", _mss, invertible=True, fmt=fmt_str),),
    validate=_tcpmss_validate,
    doc="The TCP MSS option of SYN packets.",
)

# ============================================================================ time

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _segments(text: str, width: int) -> list[str]:
    # my_strseg: comma segments cut to `width` characters; an empty rest ends the list.
    parts: list[str] = []
    rest: str | None = text
    while rest:
        head, comma, tail = rest.partition(",")
        parts.append(head[:width])
        rest = tail if comma else None
    return parts


def _weekdays(word: str, ctx: ParseContext) -> frozenset[int]:
    days: set[int] = set()
    for day in _segments(word, 3):
        parsed = xt_uint_prefix(day) if day else (0, "")
        if parsed is not None and parsed[1] == "":
            number = parsed[0]
            if number == 0:
                raise ValueError(f"--weekdays {word!r}: 0 is not a day; the week goes from 1 (Mon) to 7 (Sun)")
            if number > 7:
                # iptables accepts it, sets no day and saves "--weekdays " (a broken line).
                raise ValueError(f"--weekdays {word!r}: {number} is not a day; use 1 (Mon) to 7 (Sun)")
            days.add(number)
            continue
        found = [i + 1 for i, name in enumerate(_WEEKDAYS) if day[:2] == name[:2]]
        if not found:
            raise ValueError(f"--weekdays {word!r}: {day!r} is not a valid day; use Mon,Tue,Wed,Thu,Fri,Sat,Sun or 1-7")
        days.update(found)
    return frozenset(days)


def _fmt_weekdays(value: object) -> str:
    assert isinstance(value, frozenset)
    return ",".join(_WEEKDAYS[d - 1] for d in sorted(value))


def _monthdays(word: str, ctx: ParseContext) -> frozenset[int]:
    days: set[int] = set()
    for day in _segments(word, 2):
        parsed = xt_uint_prefix(day) if day else (0, "")
        if parsed is None or parsed[1] != "" or parsed[0] > 31:
            raise ValueError(f"--monthdays {word!r}: {day!r} is not a valid day; use 1 to 31")
        days.add(parsed[0])
    return frozenset(days)


def _fmt_monthdays(value: object) -> str:
    assert isinstance(value, frozenset)
    return ",".join(str(d) for d in sorted(value) if d > 0)


def _daytime(word: str, ctx: ParseContext) -> int:
    m = re.fullmatch(r"[ \t\n\v\f\r]*\+?([0-9]+):[ \t\n\v\f\r]*\+?([0-9]+)(?::[ \t\n\v\f\r]*\+?([0-9]+))?", word)
    if m is None or int(m.group(1)) > 23 or int(m.group(2)) > 59 or int(m.group(3) or 0) > 59:
        raise ValueError(f"invalid time {word!r}: use hh:mm[:ss] between 00:00:00 and 23:59:59")
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3) or 0)


def _fmt_daytime(value: object) -> str:
    assert isinstance(value, int)
    return f"{value // 3600:02d}:{value // 60 % 60:02d}:{value % 60:02d}"


def _date(word: str, ctx: ParseContext) -> int:
    """``YYYY[-MM[-DD[Thh[:mm[:ss]]]]]`` in UTC, normalised like ``mktime`` (02-30 is 03-01)."""
    bad = ValueError(f"invalid date {word!r}: use YYYY[-MM[-DD[Thh[:mm[:ss]]]]] between 1970 and 2038")
    fields = [1970, 1, 1, 0, 0, 0]
    limits = [(1970, 2038), (0, 12), (0, 31), (0, 23), (0, 59), (0, 59)]
    separators = ("-", "-", "T", ":", ":", "")
    rest = word
    for i in range(6):
        # strtoul(.., 10): an empty field reads 0 ("2024-" is month 0, i.e. December 2023).
        m = re.match(r"[ \t\n\v\f\r]*\+?([0-9]+)", rest)
        value = int(m.group(1)) if m else 0
        rest = rest[m.end():] if m else rest
        lo, hi = limits[i]
        if not lo <= value <= hi:
            raise bad
        fields[i] = value
        if not rest:
            break
        if not separators[i] or not rest.startswith(separators[i]):
            raise bad
        rest = rest[1:]
    year, month, day, hour, minute, second = fields
    # mktime normalises out-of-range months/days (month 0 is December of the year before).
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    stamp = calendar.timegm((year, month, 1, hour, minute, second)) + (day - 1) * 86400
    if stamp < 0:
        raise bad
    return stamp


def _fmt_date(value: object) -> str:
    assert isinstance(value, int)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(value))


def _time_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    yield from exclusive(options, "kerneltz", "utc")
    yield from exclusive(options, "localtz", "utc")
    if "contiguous" in options:
        start, stop = options.get("timestart"), options.get("timestop")
        start_s = start.value if start is not None else 0
        stop_s = stop.value if stop is not None else 86399
        if isinstance(start_s, int) and isinstance(stop_s, int) and start_s < stop_s:
            yield Problem("time: --contiguous only makes sense when --timestop is before --timestart", "contiguous")


TIME = ExtensionSpec(
    "time",
    "match",
    (
        # Save prints --timestart and --timestop as a pair (defaults 00:00:00 and 23:59:59),
        # a negated --monthdays/--weekdays as the complementary list, and always
        # --datestop 2038-01-19T03:14:07 when no --datestop was given.
        one("timestart", _daytime, fmt=_fmt_daytime),
        one("timestop", _daytime, fmt=_fmt_daytime),
        one("monthdays", _monthdays, invertible=True, fmt=_fmt_monthdays),
        one("weekdays", _weekdays, invertible=True, fmt=_fmt_weekdays),
        one("datestart", _date, fmt=_fmt_date),
        one("datestop", _date, fmt=_fmt_date),
        flag("kerneltz"),
        # --localtz is the deprecated spelling of --kerneltz (saved as --kerneltz); --utc is the
        # default and is never printed.
        flag("localtz"),
        flag("utc", printed=False),
        flag("contiguous"),
    ),
    validate=_time_validate,
    opaque=True,
    doc="Time of day, week days, month days and date range (UTC unless --kerneltz).",
)

# ============================================================================ ecn


def _ecn_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    if not options:
        yield Problem("the ecn match needs --ecn-tcp-cwr, --ecn-tcp-ece or --ecn-ip-ect")
    if "ecn_tcp_ece" in options or "ecn_tcp_cwr" in options:
        yield from _requires_protocol(options, ctx, "tcp", "ecn (--ecn-tcp-*)")


ECN = ExtensionSpec(
    "ecn",
    "match",
    (
        flag("ecn_tcp_ece", invertible=True),
        flag("ecn_tcp_cwr", invertible=True),
        one("ecn_ip_ect", lambda w, c: xt_uint(w, 3, what="--ecn-ip-ect"), invertible=True, fmt=fmt_str),
    ),
    validate=_ecn_validate,
    doc="ECN bits of the IP header and the TCP ECE/CWR flags.",
)

SPECS: tuple[ExtensionSpec, ...] = (
    COMMENT, LIMIT, HASHLIMIT, RECENT, STATISTIC, LENGTH, QUOTA, CPU, TOS, DSCP, STRING, U32, NFACCT,
    TTL, HL, FRAG, IPV6HEADER, ESP, AH, TCPMSS, TIME, ECN,
)
