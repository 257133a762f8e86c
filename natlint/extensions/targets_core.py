"""Verdict-like and logging targets: REJECT, LOG, NFLOG, NFQUEUE, SYNPROXY, TRACE, AUDIT,
CHECKSUM, CLASSIFY, LED, IDLETIMER.

Every parser accepts what iptables 1.8.9 (nf_tables) accepts, including its quirks, which were
checked against the real tool (``iptables-restore`` then ``iptables-save`` in a throwaway network
namespace):

* ``--reject-with`` takes any case-insensitive *prefix* of a type name or of its alias, the first
  match in iptables' table order winning (``icmp-p`` is ``icmp-proto-unreachable``, ``h`` is
  ``icmp-host-unreachable``, even ``""`` is ``icmp-net-unreachable``);
* ``--log-prefix`` longer than 29 bytes is cut to 29 bytes without a word (the value keeps what
  was written, the printed form is cut: see :data:`LOG_PREFIX_MAX`);
* ``--nflog-range`` is accepted but dropped by the nf_tables backend (never printed);
* ``--set-class`` is read with ``sscanf("%x:%x")``: hexadecimal, trailing garbage ignored,
  the major number keeps only its low 16 bits.

Printing: each option's ``fmt`` gives the words ``iptables-save`` prints for it. Defaults that
iptables-save adds (``--reject-with icmp-port-unreachable``, ``--queue-num 0``) or drops
(``--log-level 4``, ``--nflog-group 0``, ``--nflog-threshold 0``) are handled by
:func:`canonical_options`, which returns the exact option list iptables-save prints for a
target of this module; a printer should use it rather than the spec options alone.

Spec ``validate`` functions report only what iptables-restore itself refuses (missing or
conflicting options). What the kernel refuses at commit because of the rule's ``-p``
(``--reject-with tcp-reset`` without ``-p tcp``, SYNPROXY, TCPMSS, TPROXY, ``CT --helper``) is
answered by :func:`kernel_problems`, for natlint/checks to report as NL104 like the other
commit-time refusals.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

from natlint.extensions.matches_state import xt_uint, xt_uint_prefix
from natlint.extensions.spec import ExtensionSpec, OptionSpec, ParseContext, Problem, flag, one, save_string
from natlint.model.ruleset import Option
from natlint.model.values import PROTOCOL_NUMBERS

__all__ = [
    "SPECS",
    "LOG_PREFIX_MAX",
    "LOG_LEVELS",
    "REJECT_TYPES_V4",
    "REJECT_TYPES_V6",
    "canonical_options",
    "option_order",
    "parse_xt_uint",
    "strtoui_prefix",
    "protocol_number",
    "parse_reject_with",
    "KERNEL_CHECKS",
    "kernel_problems",
    "plain_protocol",
    "hidden",
    "truncate_bytes",
    "spec_words",
    "default_canonical",
]

# ---- helpers shared by the target modules -----------------------------------------------------


def strtoui_prefix(text: str, minimum: int = 0, maximum: int = 0xFFFFFFFF) -> tuple[int, str] | None:
    """``xtables_strtoui(text, &end, ...)``: the leading number and the rest of the text, or None
    when there is no number or it is out of range (``strtoumax`` base 0, see ``xt_uint_prefix``)."""
    parsed = xt_uint_prefix(text)
    if parsed is None or not minimum <= parsed[0] <= maximum:
        return None
    return parsed


def parse_xt_uint(text: str, maximum: int, *, minimum: int = 0, what: str = "value") -> int:
    """An unsigned number as ``xtables_strtoui`` reads it when the whole word must be a number."""
    return xt_uint(text, maximum, minimum=minimum, what=what)


def protocol_number(ctx: ParseContext) -> int | None:
    """The number of the rule's ``-p`` protocol (None without ``-p``), whatever its spelling."""
    name = ctx.protocol
    if name is None:
        return None
    lowered = name.lower()
    if lowered in PROTOCOL_NUMBERS:
        return PROTOCOL_NUMBERS[lowered]
    return int(lowered) if lowered.isdigit() else None


def option_order(options: Mapping[str, Option]) -> list[Option]:
    """The options in command-line order (by column; the mapping's order breaks ties).

    Some targets are order dependent in iptables (CONNMARK ``--set-xmark`` then ``--ctmask``,
    TCPMSS, CT ``--zone*``): the later option overwrites what the earlier one set.
    """
    return [o for _, o in sorted(enumerate(options.values()), key=lambda p: (p[1].column, p[0]))]


# Rules the kernel refuses at commit because of the rule's -p (checkentry functions). They are
# not spec Problems: 'iptables-restore --test' passes them and the kernel refuses them when the
# table is loaded, which natlint reports as NL104 (invalid-in-context) from natlint/checks.
KernelCheck = Callable[[Mapping[str, Option], ParseContext], Iterable[str]]
KERNEL_CHECKS: dict[str, KernelCheck] = {}


def kernel_problems(target: str, options: Mapping[str, Option], ctx: ParseContext) -> list[str]:
    """Why the kernel would refuse target ``target`` with these options in a rule with ``ctx``'s
    ``-p`` (empty: no objection). Covers REJECT, SYNPROXY, TCPMSS, TPROXY and CT; the target
    modules register their checks in :data:`KERNEL_CHECKS` when ``natlint.extensions`` is imported."""
    check = KERNEL_CHECKS.get(target)
    return list(check(options, ctx)) if check is not None else []


def plain_protocol(ctx: ParseContext, wanted: Sequence[int]) -> bool:
    """True when the rule has ``-p`` one of ``wanted`` without ``!``."""
    return protocol_number(ctx) in wanted and not ctx.protocol_inverted


def hidden(option: OptionSpec) -> OptionSpec:
    """An option iptables accepts but iptables-save never prints (it prints another one instead)."""
    return replace(option, printed=False)


# ---- REJECT -----------------------------------------------------------------------------------

# (name, alias) in iptables' table order: the order decides which type an abbreviation means.
REJECT_TYPES_V4: tuple[tuple[str, str], ...] = (
    ("icmp-net-unreachable", "net-unreach"),
    ("icmp-host-unreachable", "host-unreach"),
    ("icmp-proto-unreachable", "proto-unreach"),
    ("icmp-port-unreachable", "port-unreach"),
    ("icmp-net-prohibited", "net-prohib"),
    ("icmp-host-prohibited", "host-prohib"),
    ("tcp-reset", "tcp-rst"),
    ("icmp-admin-prohibited", "admin-prohib"),
)
REJECT_TYPES_V6: tuple[tuple[str, str], ...] = (
    ("icmp6-no-route", "no-route"),
    ("icmp6-adm-prohibited", "adm-prohibited"),
    ("icmp6-addr-unreachable", "addr-unreach"),
    ("icmp6-port-unreachable", "port-unreach"),
    ("tcp-reset", "tcp-reset"),
    ("icmp6-policy-fail", "policy-fail"),
    ("icmp6-reject-route", "reject-route"),
)
REJECT_DEFAULT = {4: "icmp-port-unreachable", 6: "icmp6-port-unreachable"}


def parse_reject_with(word: str, ctx: ParseContext) -> str:
    """The canonical reject type for ``--reject-with WORD`` (a prefix of a name or alias)."""
    table = REJECT_TYPES_V4 if ctx.family == 4 else REJECT_TYPES_V6
    lowered = word.lower()
    for name, alias in table:
        if name.startswith(lowered) or alias.startswith(lowered):
            return name
    if ctx.family == 4 and ("echo-reply".startswith(lowered) or "echoreply".startswith(lowered)):
        raise ValueError("--reject-with echo-reply is no longer supported by iptables")
    other = REJECT_TYPES_V6 if ctx.family == 4 else REJECT_TYPES_V4
    names = ", ".join(name for name, _ in table)
    for name, alias in other:
        if name.startswith(lowered) or alias.startswith(lowered):
            if name == "tcp-reset":
                raise ValueError(f"'{word}' is not a reject type here: write tcp-reset")
            fam, tool = ("IPv6", "ip6tables") if ctx.family == 4 else ("IPv4", "iptables")
            raise ValueError(f"'{word}' is an {fam} reject type ({tool} only): use one of {names}")
    raise ValueError(f"unknown reject type '{word}': use one of {names}")


def _reject_kernel(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[str]:
    opt = options.get("reject_with")
    if opt is not None and opt.value == "tcp-reset" and not plain_protocol(ctx, (6,)):
        yield "'--reject-with tcp-reset' needs '-p tcp' (not negated) in the same rule: the kernel refuses it otherwise"


REJECT = ExtensionSpec(
    "REJECT", "target", (one("reject_with", parse_reject_with),),
    terminal=True,
    doc="Drop the packet and answer with an ICMP error or a TCP RST (filter table only).",
)

# ---- LOG --------------------------------------------------------------------------------------

# Syslog level names as xtopt_parse_sysloglevel knows them (case-sensitive; "error" and "panic"
# are the deprecated spellings of 3 and 0).
LOG_LEVELS: dict[str, int] = {
    "alert": 1, "crit": 2, "debug": 7, "emerg": 0, "error": 3, "info": 6, "notice": 5, "panic": 0, "warning": 4,
}
LOG_DEFAULT_LEVEL = 4
LOG_PREFIX_MAX = 29  # bytes: struct xt_log_info.prefix is char[30]


def _log_level(word: str, ctx: ParseContext) -> int:
    try:
        return parse_xt_uint(word, 7, what="log level")
    except ValueError:
        pass
    if word in LOG_LEVELS:
        return LOG_LEVELS[word]
    raise ValueError(
        f"unknown log level '{word}': use 0-7 or emerg, alert, crit, error, warning, notice, info, debug (lower case)"
    )


def _log_prefix(word: str, ctx: ParseContext) -> str:
    if word == "":
        raise ValueError("--log-prefix cannot be empty")
    if "\n" in word:
        raise ValueError("newlines are not allowed in --log-prefix")
    return word


def truncate_bytes(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` UTF-8 bytes, as a C ``strncpy`` into a fixed buffer does."""
    raw = text.encode("utf-8", "surrogateescape")
    return text if len(raw) <= limit else raw[:limit].decode("utf-8", "ignore")


def _fmt_log_prefix(value: object) -> str:
    return save_string(truncate_bytes(str(value), LOG_PREFIX_MAX))


LOG = ExtensionSpec(
    "LOG",
    "target",
    (
        one("log_prefix", _log_prefix, fmt=_fmt_log_prefix),
        one("log_level", _log_level),
        flag("log_tcp_sequence"),
        flag("log_tcp_options"),
        flag("log_ip_options"),
        flag("log_uid"),
        flag("log_macdecode"),
    ),
    doc="Log the packet to the kernel log (syslog level 4, warning, by default).",
)

# ---- NFLOG ------------------------------------------------------------------------------------


def _nflog_prefix(word: str, ctx: ParseContext) -> str:
    if word == "":
        raise ValueError("--nflog-prefix cannot be empty")
    if "\n" in word:
        raise ValueError("newlines are not allowed in --nflog-prefix")
    return word


def _u16(what: str):  # type: ignore[no-untyped-def]
    return lambda w, c: parse_xt_uint(w, 0xFFFF, what=what)


def _u32(what: str):  # type: ignore[no-untyped-def]
    return lambda w, c: parse_xt_uint(w, 0xFFFFFFFF, what=what)


def _nflog_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    if "nflog_range" in options and "nflog_size" in options:
        yield Problem("--nflog-range cannot be used together with --nflog-size", "nflog_range")


NFLOG = ExtensionSpec(
    "NFLOG",
    "target",
    (
        one("nflog_prefix", _nflog_prefix, fmt=lambda v: save_string(str(v))),
        one("nflog_group", _u16("NFLOG group")),
        one("nflog_size", _u32("NFLOG copy size")),
        one("nflog_threshold", _u16("NFLOG queue threshold")),
        # Accepted with a warning; it never worked and iptables-nft does not keep it.
        hidden(one("nflog_range", _u32("NFLOG range"))),
    ),
    validate=_nflog_validate,
    doc="Pass the packet to nfnetlink_log (ulogd, tcpdump -i nflog:N).",
)

# ---- NFQUEUE ----------------------------------------------------------------------------------


def _queue_balance(word: str, ctx: ParseContext) -> tuple[int, int]:
    # XTTYPE_UINT16RC: "a:b", an empty side is 0 / 65535.
    if ":" not in word:
        raise ValueError(f"'{word}' is not a queue range: write FIRST:LAST, e.g. 0:3")
    lo_text, _, hi_text = word.partition(":")
    lo = parse_xt_uint(lo_text, 0xFFFF, what="queue number") if lo_text else 0
    hi = parse_xt_uint(hi_text, 0xFFFF, what="queue number") if hi_text else 0xFFFF
    if lo >= hi:
        raise ValueError(f"in --queue-balance {word} the first queue ({lo}) must be below the last ({hi})")
    if hi - lo + 1 > 0xFFFF:
        raise ValueError(f"--queue-balance {word} spans more than 65535 queues: the kernel refuses it")
    return lo, hi


def _fmt_queue_range(value: object) -> str:
    assert isinstance(value, tuple)
    return f"{value[0]}:{value[1]}"


def _nfqueue_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    if "queue_num" in options and "queue_balance" in options:
        yield Problem("--queue-num cannot be used together with --queue-balance", "queue_balance")
    if "queue_cpu_fanout" in options and "queue_balance" not in options:
        yield Problem("--queue-cpu-fanout needs --queue-balance", "queue_cpu_fanout")


NFQUEUE = ExtensionSpec(
    "NFQUEUE",
    "target",
    (
        one("queue_num", _u16("queue number")),
        one("queue_balance", _queue_balance, fmt=_fmt_queue_range),
        flag("queue_bypass"),
        flag("queue_cpu_fanout"),
    ),
    validate=_nfqueue_validate,
    terminal=True,
    doc="Hand the packet to a userspace queue; the program's verdict decides (queue 0 by default).",
)

# ---- SYNPROXY ---------------------------------------------------------------------------------


def _synproxy_kernel(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[str]:
    if not plain_protocol(ctx, (6,)):
        yield "SYNPROXY needs '-p tcp' (not negated) in the same rule: the kernel refuses it otherwise"


SYNPROXY = ExtensionSpec(
    "SYNPROXY",
    "target",
    (
        flag("sack_perm"),
        flag("timestamp"),
        # Read as 32-bit numbers and stored in 8/16 bits without a check (256 becomes 0).
        one("wscale", lambda w, c: parse_xt_uint(w, 0xFFFFFFFF, what="window scale") & 0xFF),
        one("mss", lambda w, c: parse_xt_uint(w, 0xFFFFFFFF, what="MSS") & 0xFFFF),
        flag("ecn"),
    ),
    terminal=True,
    doc="Answer TCP SYNs with SYN cookies and open the connection to the server only when the handshake completes.",
)

# ---- TRACE, AUDIT, CHECKSUM -------------------------------------------------------------------

TRACE = ExtensionSpec("TRACE", "target", (), doc="Mark the packet for rule tracing (xtables-monitor --trace).")

AUDIT_TYPES = ("accept", "drop", "reject")


def _audit_type(word: str, ctx: ParseContext) -> str:
    if word.lower() in AUDIT_TYPES:
        return word.lower()
    raise ValueError(f"unknown audit type '{word}': use accept, drop or reject")


def _require(option: str, text: str):  # type: ignore[no-untyped-def]
    def validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
        if option not in options:
            yield Problem(text)

    return validate


AUDIT = ExtensionSpec(
    "AUDIT", "target", (one("type", _audit_type),),
    validate=_require("type", "AUDIT needs --type accept, --type drop or --type reject"),
    doc="Record an audit event for the packet.",
)
CHECKSUM = ExtensionSpec(
    "CHECKSUM", "target", (flag("checksum_fill"),),
    validate=_require("checksum_fill", "CHECKSUM needs --checksum-fill"),
    doc="Compute a missing UDP/TCP checksum (mangle table, for old DHCP clients).",
)

# ---- CLASSIFY ---------------------------------------------------------------------------------

_SCANF_HEX = re.compile(r"[ \t\n\v\f\r]*([+-]?)(?:0[xX](?=[0-9a-fA-F]))?([0-9a-fA-F]+)")


def _scanf_hex(text: str, pos: int) -> tuple[int, int] | None:
    m = _SCANF_HEX.match(text, pos)
    if m is None:
        return None
    value = int(m.group(2), 16)
    value = 0xFFFFFFFFFFFFFFFF if value > 0xFFFFFFFFFFFFFFFF else value  # strtoul saturates
    if m.group(1) == "-":
        value = -value
    return value & 0xFFFFFFFF, m.end()


def _set_class(word: str, ctx: ParseContext) -> int:
    """``MAJOR:MINOR`` (hexadecimal) as the 32-bit priority ``TC_H_MAKE(major << 16, minor)``."""
    first = _scanf_hex(word, 0)
    second = None
    if first is not None and first[1] < len(word) and word[first[1]] == ":":
        second = _scanf_hex(word, first[1] + 1)
    if first is None or second is None:
        raise ValueError(f"'{word}' is not a class: write MAJOR:MINOR in hexadecimal, e.g. 1:10")
    return ((first[0] << 16) & 0xFFFF0000) | (second[0] & 0xFFFF)


def _fmt_class(value: object) -> str:
    assert isinstance(value, int)
    return f"{value >> 16:04x}:{value & 0xFFFF:04x}"


CLASSIFY = ExtensionSpec(
    "CLASSIFY", "target", (one("set_class", _set_class, fmt=_fmt_class),),
    validate=_require("set_class", "CLASSIFY needs --set-class MAJOR:MINOR"),
    doc="Set the packet's traffic-control class (skb->priority).",
)

# ---- LED, IDLETIMER ---------------------------------------------------------------------------


def _led_id(word: str, ctx: ParseContext) -> str:
    if word == "":
        raise ValueError("--led-trigger-id cannot be empty")
    if len(word.encode()) > 16:
        raise ValueError(f"--led-trigger-id '{word}' is longer than 16 characters")
    return word


def _led_delay(word: str, ctx: ParseContext) -> int:
    """Milliseconds, or -1 for ``inf`` (any word starting with "inf")."""
    if word[:3].lower() == "inf":
        return -1
    return parse_xt_uint(word, 0xFFFFFFFF, what="LED delay in milliseconds")


def _fmt_led_id(value: object) -> str:
    escaped = "".join("\\" + c if c in '"\\' else c for c in str(value))
    return f'"{escaped}"'


def _fmt_led_delay(value: object) -> str:
    assert isinstance(value, int)
    if value in (-1, 0xFFFFFFFF):
        return "inf"
    return str(value - (1 << 32) if value >= 1 << 31 else value)  # printed with %d


LED = ExtensionSpec(
    "LED",
    "target",
    (
        one("led_trigger_id", _led_id, fmt=_fmt_led_id),
        one("led_delay", _led_delay, fmt=_fmt_led_delay),
        flag("led_always_blink"),
    ),
    validate=_require("led_trigger_id", "LED needs --led-trigger-id NAME"),
    doc="Blink the LED trigger netfilter-NAME.",
)

IDLETIMER_LABEL_MAX = 27  # MAX_IDLETIMER_LABEL_SIZE - 1; longer labels are cut


def _idletimer_validate(options: Mapping[str, Option], ctx: ParseContext) -> Iterable[Problem]:
    for name, spelling in (("timeout", "--timeout SECONDS"), ("label", "--label NAME")):
        if name not in options:
            yield Problem(f"IDLETIMER needs {spelling}")


IDLETIMER = ExtensionSpec(
    "IDLETIMER",
    "target",
    (
        one("timeout", _u32("idle timeout in seconds")),
        one("label", lambda w, c: w, fmt=lambda v: truncate_bytes(str(v), IDLETIMER_LABEL_MAX)),
        flag("alarm"),
    ),
    validate=_idletimer_validate,
    doc="Notify userspace (sysfs) when no packet matched for --timeout seconds.",
)

SPECS: tuple[ExtensionSpec, ...] = (REJECT, LOG, NFLOG, NFQUEUE, SYNPROXY, TRACE, AUDIT, CHECKSUM, CLASSIFY, LED,
                                    IDLETIMER)
_BY_NAME = {s.name: s for s in SPECS}
KERNEL_CHECKS.update({"REJECT": _reject_kernel, "SYNPROXY": _synproxy_kernel})

# ---- canonical printing -----------------------------------------------------------------------


def spec_words(spec: ExtensionSpec, opt: Option) -> list[str]:
    """The words iptables-save prints after ``--name`` for one parsed option of ``spec``."""
    ospec = spec.option(opt.name)
    if ospec is not None and ospec.fmt is not None:
        return ospec.fmt(opt.values)
    return [str(v) for v in opt.values]


def default_canonical(spec: ExtensionSpec, options: Mapping[str, Option]) -> list[tuple[str, list[str]]]:
    """Every printed spec option present, in the spec's (iptables-save's) order."""
    return [
        (o.name, spec_words(spec, options[o.name])) for o in spec.options if o.printed and o.name in options
    ]


def canonical_options(name: str, options: Mapping[str, Option], *, family: int = 4) -> list[tuple[str, list[str]]]:
    """The options ``iptables-save`` prints for target ``name`` of this module, in its order.

    ``options`` are the target's parsed options (``Target.options`` by name). Each entry is
    ``(option name as in the grammar alias, words)``: print ``--`` + name with ``_`` as ``-``,
    then the words. Raises KeyError for a target this module does not define.
    """
    spec = _BY_NAME[name]
    out = default_canonical(spec, options)
    if name == "REJECT" and "reject_with" not in options:
        out = [("reject_with", [REJECT_DEFAULT[family]])]
    elif name == "LOG":
        out = [(n, w) for n, w in out if not (n == "log_level" and w == [str(LOG_DEFAULT_LEVEL)])]
    elif name == "NFLOG":
        out = [(n, w) for n, w in out if (n, w) not in (("nflog_group", ["0"]), ("nflog_threshold", ["0"]))]
    elif name == "NFQUEUE" and "queue_balance" not in options and "queue_num" not in options:
        out.insert(0, ("queue_num", ["0"]))
    elif name == "LED":
        out = [(n, w) for n, w in out if (n, w) != ("led_delay", ["0"])]
    return out
