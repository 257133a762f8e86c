"""From a rule's tests to the set of packets it matches.

:func:`compile_rule` gives the packets matching *all* of a rule's tests (its core options and
every match module; the target is not looked at). Modules natlint can decide from the header
fields of a :class:`~natlint.packets.space.PacketSpace` are compiled exactly, following the
kernel's match functions (e.g. every layer-4 match refuses non-first fragments; the
conntrack match on a packet without a connection only looks at ``--ctstate``). What cannot
be decided becomes an *opaque predicate*, a fresh boolean variable, and the result is
marked ``approximate`` with a reason:

* same test, same variable: a stateless test keys its variable on what it tests, so
  ``-m set --match-set bad src`` in two rules is one predicate and ``! --match-set bad src``
  its complement (when the kernel's negation really is the complement);
* stateful or random tests (limit, hashlimit, recent, statistic, quota, connlimit, nfacct,
  set counters) and modules natlint does not know get one variable per rule;
* an opaque predicate is never "always" or "never": a rule whose test is opaque is neither
  shadowed by nor shadows anything unless that holds for both values.

Notes for evaluators: per-rule predicates have keys starting with ``"rule"``; a traversal that
evaluates the same rule twice (a user chain jumped to from two places) should
``forget_opaque`` them in between, as each evaluation of a random or rate test is a new draw.
Shared predicates assume the tested thing does not change during one packet's traversal
(ipset contents, the payload...); a target that changes it (``SET``, ``TTL``, ``DSCP``...)
should ``forget_opaque`` the keys of that module (``key[0]`` is the module name). Each
predicate declares the fields it depends on, so NAT and MARK transforms forget them by
themselves.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from natlint.extensions.matches_l4 import SYN_COMP, SYN_MASK
from natlint.model.ruleset import Match, Option, Rule, Ruleset
from natlint.model.values import AddressRange, Interface, MarkMask, PortRange, Prefix
from natlint.model.values import Protocol as IpProtocol
from natlint.packets.space import PacketSet, PacketSpace

__all__ = ["Compiled", "HostLike", "compile_rule", "compile_interfaces", "OPAQUE_MODULES"]

_TCP, _UDP, _ICMP, _DCCP, _ICMPV6, _SCTP, _UDPLITE = 6, 17, 1, 33, 58, 132, 136
_MULTIPORT_PROTOCOLS = (_TCP, _UDP, _UDPLITE, _SCTP, _DCCP)
_ADDRTYPE_NARROWED = frozenset({"LOCAL", "BROADCAST", "MULTICAST", "ANYCAST", "UNSPEC"})


class HostLike(Protocol):
    """What compile needs from the host model (natlint.host.HostModel)."""

    def addresses_of_type(self, t: str) -> list[Prefix]: ...

    def interface_names(self) -> Iterable[str]: ...


@dataclass(frozen=True, slots=True)
class Compiled:
    """The packets a rule's tests match; ``approximate`` when opaque predicates or
    heuristics were involved (``reasons`` says which, one sentence each)."""

    set: PacketSet
    approximate: bool
    reasons: tuple[str, ...]


class _Undecidable(Exception):
    """A value natlint did not expect: the module falls back to a per-rule predicate."""


# ----------------------------------------------------------------------------- opaque modules

OpaqueMode = Literal["options", "whole", "rule"]


@dataclass(frozen=True, slots=True)
class _OpaqueSpec:
    mode: OpaqueMode
    why: str
    tests: tuple[str, ...] = ()  # mode "options": options that are independent tests
    depends: tuple[str, ...] | None = None  # fields whose transforms change the answer (None: all)


_NONE: tuple[str, ...] = ()

# How each module natlint cannot decide from header fields becomes opaque predicates:
#   options: each test option is one predicate keyed by (module, option, value, other options)
#            and its "!" is the complement (the kernel computes ``test ^ invert``);
#   whole:   one predicate for the whole module keyed by all its options, "!" included (the
#            negation is not a plain complement, e.g. a missing header fails both ways);
#   rule:    one predicate per rule (state, randomness, or unknown semantics).
OPAQUE_MODULES: dict[str, _OpaqueSpec] = {
    "set": _OpaqueSpec("options", "ipset contents are not known", ("match_set",),
                       ("src", "dst", "sport", "dport", "proto", "iif", "oif", "mark")),
    "string": _OpaqueSpec("options", "payload contents are not modelled", ("string", "hex_string")),
    "u32": _OpaqueSpec("options", "raw packet bytes are not modelled", ("u32",)),
    "owner": _OpaqueSpec("options", "the sending socket's owner is not modelled",
                         ("socket_exists", "uid_owner", "gid_owner"), _NONE),
    "physdev": _OpaqueSpec("options", "bridge ports are not modelled",
                           ("physdev_is_in", "physdev_in", "physdev_is_out", "physdev_out", "physdev_is_bridged"),
                           _NONE),
    "helper": _OpaqueSpec("options", "the connection's helper is not modelled", ("helper",), _NONE),
    "tos": _OpaqueSpec("options", "the TOS byte is not modelled", ("tos",), _NONE),
    "dscp": _OpaqueSpec("options", "the DSCP field is not modelled", ("dscp", "dscp_class"), _NONE),
    "ttl": _OpaqueSpec("options", "the TTL is not modelled", ("ttl_eq", "ttl_lt", "ttl_gt"), _NONE),
    "hl": _OpaqueSpec("options", "the hop limit is not modelled", ("hl_eq", "hl_lt", "hl_gt"), _NONE),
    "length": _OpaqueSpec("options", "the packet length is not modelled", ("length",), _NONE),
    "devgroup": _OpaqueSpec("options", "device groups are not modelled", ("src_group", "dst_group"), ("iif", "oif")),
    "realm": _OpaqueSpec("options", "routing realms are not modelled", ("realm",)),
    "cpu": _OpaqueSpec("options", "the processing CPU is not modelled", ("cpu",), _NONE),
    "rpfilter": _OpaqueSpec("whole", "the reverse-path lookup is not modelled"),
    "mac": _OpaqueSpec("whole", "MAC addresses are not modelled", depends=_NONE),
    "cgroup": _OpaqueSpec("whole", "the sending socket's cgroup is not modelled", depends=_NONE),
    "connbytes": _OpaqueSpec("whole", "connection byte/packet counters are not modelled"),
    "policy": _OpaqueSpec("whole", "IPsec policies are not modelled"),
    "socket": _OpaqueSpec("whole", "local sockets are not modelled"),
    "time": _OpaqueSpec("whole", "the time of day is not modelled", depends=_NONE),
    "frag": _OpaqueSpec("whole", "the IPv6 fragment header is not modelled", depends=_NONE),
    "ipv6header": _OpaqueSpec("whole", "IPv6 extension headers are not modelled", depends=_NONE),
    "esp": _OpaqueSpec("whole", "ESP SPIs are not modelled", depends=_NONE),
    "ah": _OpaqueSpec("whole", "AH header fields are not modelled", depends=_NONE),
    "tcpmss": _OpaqueSpec("whole", "the TCP MSS option is not modelled", depends=_NONE),
    "ecn": _OpaqueSpec("whole", "ECN bits are not modelled", depends=_NONE),
    "limit": _OpaqueSpec("rule", "a rate limit matches depending on traffic history"),
    "hashlimit": _OpaqueSpec("rule", "a rate limit matches depending on traffic history"),
    "recent": _OpaqueSpec("rule", "the recent list depends on traffic history"),
    "statistic": _OpaqueSpec("rule", "statistic matches randomly or every n-th packet"),
    "quota": _OpaqueSpec("rule", "a quota matches until it is used up"),
    "connlimit": _OpaqueSpec("rule", "connection counts are not modelled"),
    "nfacct": _OpaqueSpec("rule", "nfacct matches unless its accounting object is under quota"),
}
_SET_COUNTERS = frozenset({"packets_eq", "packets_lt", "packets_gt", "bytes_eq", "bytes_lt", "bytes_gt"})
_OPTION_ALIASES = {"dscp_class": "dscp"}  # --dscp-class AF11 is --dscp 10


# ----------------------------------------------------------------------------- the compiler


class _Ctx:
    def __init__(self, space: PacketSpace, rule: Rule, host: HostLike | None) -> None:
        self.space = space
        self.rule = rule
        self.host = host
        self.reasons: list[tuple[str, tuple[Hashable, ...]]] = []  # (reason, opaque keys; () = always)

    def note(self, reason: str, keys: tuple[Hashable, ...] = ()) -> None:
        self.reasons.append((reason, keys))

    def opaque(self, key: Hashable, reason: str, *, label: str, depends: tuple[str, ...] | None = None) -> PacketSet:
        key = _hashable(key)
        self.note(reason, (key,))
        return self.space.opaque(key, label=label, depends=depends)

    def rule_key(self, what: str, index: int) -> tuple[Hashable, ...]:
        r = self.rule
        return ("rule", r.pos.path, r.pos.line, r.table, r.chain, r.index, what, index)


_ORIGINAL_TUPLE_OPTIONS = frozenset({"ctorigsrc", "ctorigdst", "ctorigsrcport", "ctorigdstport"})


def may_read_original_tuple(rule: Rule) -> bool:
    """Whether the rule's tests may read the conntrack original tuple (``orig_*``): only
    ``-m conntrack --ctorig*`` compiles to such tests. A check on the text, before a test of
    the compiled set."""
    return any(m.name == "conntrack" and any(o.name in _ORIGINAL_TUPLE_OPTIONS for o in m.options)
               for m in rule.matches)


def compile_rule(space: PacketSpace, rule: Rule, host: HostLike | None = None) -> Compiled:
    """The packets matching all of ``rule``'s tests (core options and matches).

    ``host`` answers ``-m addrtype`` (``addresses_of_type``); without it addrtype is opaque.
    Raises :class:`~natlint.packets.space.BudgetExceeded` if the space runs out of budget.
    """
    cx = _Ctx(space, rule, host)
    result = _core(cx)
    for index, match in enumerate(rule.matches):
        if result.is_empty():
            break
        result &= _match(cx, match, index)
    keyed = {k for _reason, keys in cx.reasons for k in keys}
    live = {k for k in keyed if space.tests_variables(result, [space.opaque_variable(k)])}
    reasons: list[str] = []
    for reason, keys in cx.reasons:
        if (not keys or any(k in live for k in keys)) and reason not in reasons:
            reasons.append(reason)
    if result.is_empty():
        reasons = [r for r, keys in cx.reasons if not keys and r not in reasons]
    return Compiled(result, bool(reasons), tuple(reasons))


def _core(cx: _Ctx) -> PacketSet:
    sp, rule = cx.space, cx.rule
    result = sp.all()
    for opt, name in ((rule.source, "src"), (rule.destination, "dst")):
        if opt is not None:
            prefix = opt.value
            if not isinstance(prefix, Prefix) or prefix.version != sp.family:
                result &= _fallback(cx, f"-{name[0]} {prefix}", f"core option {name}: unexpected value {prefix!r}")
                continue
            result &= _inv(sp.prefix(name, prefix), opt)
    for opt, name, flag in ((rule.in_interface, "iif", "-i"), (rule.out_interface, "oif", "-o")):
        if opt is not None:
            result &= _inv(_iface(cx, name, opt.value, flag), opt)
    if rule.protocol is not None:
        proto = rule.protocol.value
        if not isinstance(proto, IpProtocol):
            result &= _fallback(cx, "-p", f"unexpected protocol value {proto!r}")
        elif proto.number != 0:  # -p all (0) tests nothing, with or without "!"
            result &= _inv(sp.value("proto", proto.number), rule.protocol)
    if rule.fragment is not None:
        result &= _inv(sp.value("fragment", True), rule.fragment)
    return result


def _iface(cx: _Ctx, field: str, value: object, flag: str) -> PacketSet:
    if not isinstance(value, Interface):
        return _fallback(cx, flag, f"unexpected interface value {value!r}")
    try:
        return cx.space.iface(field, value)
    except ValueError:
        # Not in the universe the space was built with: an opaque "the interface is X".
        return cx.opaque(
            ("iface", field, value.name),
            f"interface {value.name} is not in the analysis' interface universe",
            label=f"{flag} {value.name}",
            depends=(field,),
        )


def _inv(s: PacketSet, opt: Option) -> PacketSet:
    return ~s if opt.invert else s


def _fallback(cx: _Ctx, what: str, why: str) -> PacketSet:
    return cx.opaque(cx.rule_key(what, 0), f"{what}: {why}", label=f"{what} ({cx.rule.location})")


def _match(cx: _Ctx, match: Match, index: int) -> PacketSet:
    if not match.known:
        return cx.opaque(
            cx.rule_key(match.name, index),
            f"-m {match.name}: natlint does not model this match",
            label=f"-m {match.name} ({cx.rule.location})",
        )
    decided = _DECIDED.get(match.name)
    if decided is not None:
        try:
            return decided(cx, match)
        except _Undecidable as err:
            return cx.opaque(
                cx.rule_key(match.name, index),
                f"-m {match.name}: {err}",
                label=f"-m {match.name} ({cx.rule.location})",
            )
    spec = OPAQUE_MODULES.get(match.name)
    if spec is None:
        return cx.opaque(
            cx.rule_key(match.name, index),
            f"-m {match.name}: natlint cannot decide this match from packet headers",
            label=f"-m {match.name} ({cx.rule.location})",
        )
    return _opaque_module(cx, match, index, spec)


def _opaque_module(cx: _Ctx, match: Match, index: int, spec: _OpaqueSpec) -> PacketSet:
    sp = cx.space
    reason = f"-m {match.name}: {spec.why}"
    mode = spec.mode
    if match.name == "set" and any(o.name in _SET_COUNTERS for o in match.options):
        mode = "rule"  # counter checks depend on traffic history
    if mode == "rule":
        return cx.opaque(cx.rule_key(match.name, index), reason, label=f"-m {match.name} ({cx.rule.location})")
    if match.name == "rpfilter":
        flags = tuple((o.name, o.values) for o in match.options if o.name != "invert")
        s = cx.opaque(("rpfilter", flags), reason, label=_label(match.name, flags), depends=spec.depends)
        return ~s if match.option("invert") is not None else s
    if mode == "whole":
        options = tuple((o.name, o.values, o.invert) for o in match.options)
        return cx.opaque((match.name, options), reason, label=_label(match.name, options), depends=spec.depends)
    tests = [o for o in match.options if o.name in spec.tests]
    params = tuple((o.name, o.values, o.invert) for o in match.options if o.name not in spec.tests)
    if not tests:
        return cx.opaque((match.name, params), reason, label=_label(match.name, params), depends=spec.depends)
    result = sp.all()
    for opt in tests:
        name = _OPTION_ALIASES.get(opt.name, opt.name)
        key: Hashable = (match.name, name, opt.values, params)
        text = f"-m {match.name} --{name.replace('_', '-')} {_word(opt.values)}".strip()
        result &= _inv(cx.opaque(key, reason, label=text, depends=spec.depends), opt)
    return result


def _label(module: str, options: Iterable[tuple[object, ...]]) -> str:
    words = [f"-m {module}"]
    for entry in options:
        name, values = entry[0], entry[1]
        invert = len(entry) > 2 and entry[2]
        words.append(("! " if invert else "") + f"--{str(name).replace('_', '-')}")
        if isinstance(values, tuple):
            words.extend(_word(v) for v in values)
    return " ".join(words)


def _word(value: object, *, nested: bool = False) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, frozenset):
        return ",".join(sorted(_word(v, nested=True) for v in value))
    if isinstance(value, tuple) and type(value) is tuple:  # not IcmpType & co, which print themselves
        return ("," if nested else " ").join(_word(v, nested=True) for v in value)
    return str(value)


def _hashable(value: object) -> Hashable:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value  # type: ignore[return-value]


# ----------------------------------------------------------------------------- decided modules


def _port_range(opt: Option) -> PortRange:
    value = opt.value
    if not isinstance(value, PortRange):
        raise _Undecidable(f"unexpected --{opt.name} value {value!r}")
    return value


def _ports(sp: PacketSpace, field: str, opt: Option) -> PacketSet:
    r = _port_range(opt)
    return _inv(sp.range(field, r.first, r.last), opt)


def _l4(cx: _Ctx, match: Match, protocols: Iterable[int]) -> PacketSet:
    """What every layer-4 match shares: the protocol (iptables refuses the rule without the
    matching -p) and no non-first fragment (the kernel's match returns false on those)."""
    sp = cx.space
    wanted = tuple(protocols)

    def build() -> PacketSet:
        proto = sp.none()
        for p in wanted:
            proto |= sp.value("proto", p)
        return proto & sp.value("fragment", False)

    return sp.memo(("l4", wanted), build)  # the same few sets for every -m tcp / -m udp


def _tcp(cx: _Ctx, match: Match) -> PacketSet:
    sp = cx.space
    result = _l4(cx, match, (_TCP,))
    for opt in match.options:
        if opt.name in ("sport", "dport"):
            result &= _ports(sp, opt.name, opt)
        elif opt.name == "tcp_flags":
            if len(opt.values) != 2 or not all(isinstance(v, int) for v in opt.values):
                raise _Undecidable(f"unexpected --tcp-flags values {opt.values!r}")
            mask, comp = opt.values
            assert isinstance(mask, int) and isinstance(comp, int)
            result &= _inv(sp.masked("tcp_flags", comp, mask), opt)  # comp outside mask: never
        elif opt.name == "syn":
            result &= _inv(sp.masked("tcp_flags", SYN_COMP, SYN_MASK), opt)
        elif opt.name == "tcp_option":
            number = opt.value
            result &= _inv(
                cx.opaque(("tcp", "option", number), "--tcp-option: TCP options are not modelled",
                          label=f"tcp option {number}", depends=()),
                opt,
            )
        else:
            raise _Undecidable(f"unexpected option --{opt.name}")
    return result


def _ports_module(protocol: int, extra: Callable[[_Ctx, Option], PacketSet] | None = None) -> Callable[
    [_Ctx, Match], PacketSet
]:
    def compile_module(cx: _Ctx, match: Match) -> PacketSet:
        sp = cx.space
        result = _l4(cx, match, (protocol,))
        for opt in match.options:
            if opt.name in ("sport", "dport"):
                result &= _ports(sp, opt.name, opt)
            elif extra is not None:
                result &= _inv(extra(cx, opt), opt)
            else:
                raise _Undecidable(f"unexpected option --{opt.name}")
        return result

    return compile_module


def _sctp_extra(cx: _Ctx, opt: Option) -> PacketSet:
    if opt.name != "chunk_types":
        raise _Undecidable(f"unexpected option --{opt.name}")
    return cx.opaque(("sctp", "chunk-types", opt.values), "--chunk-types: SCTP chunks are not modelled",
                     label=f"sctp chunk-types {' '.join(_word(v) for v in opt.values)}", depends=())


def _dccp_extra(cx: _Ctx, opt: Option) -> PacketSet:
    if opt.name not in ("dccp_types", "dccp_option"):
        raise _Undecidable(f"unexpected option --{opt.name}")
    what = "types" if opt.name == "dccp_types" else "option"
    return cx.opaque(("dccp", what, opt.values), f"--dccp-{what}: DCCP {what} are not modelled",
                     label=f"dccp {what} {_word(opt.values)}", depends=())


def _icmp_module(protocol: int, option: str, any_type: bool) -> Callable[[_Ctx, Match], PacketSet]:
    def compile_module(cx: _Ctx, match: Match) -> PacketSet:
        sp = cx.space
        result = _l4(cx, match, (protocol,))
        for opt in match.options:
            if opt.name != option:
                raise _Undecidable(f"unexpected option --{opt.name}")
            value = opt.value
            if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], int)):
                raise _Undecidable(f"unexpected ICMP type {value!r}")
            icmp_type, icmp_code = value
            if any_type and icmp_type == 0xFF:  # the kernel: type 255 is "any", whatever the code
                test = sp.all()
            else:
                test = sp.value("icmp_type", icmp_type)
                if icmp_code is not None:
                    test &= sp.value("icmp_code", icmp_code)
            result &= _inv(test, opt)
        return result

    return compile_module


def _multiport(cx: _Ctx, match: Match) -> PacketSet:
    sp = cx.space
    result = _l4(cx, match, _MULTIPORT_PROTOCOLS)
    for opt in match.options:
        ranges = opt.value
        if not isinstance(ranges, tuple) or not all(isinstance(r, PortRange) for r in ranges):
            raise _Undecidable(f"unexpected --{opt.name} value {ranges!r}")
        fields = {"sports": ("sport",), "dports": ("dport",), "ports": ("sport", "dport")}.get(opt.name)
        if fields is None:
            raise _Undecidable(f"unexpected option --{opt.name}")
        test = sp.none()
        for r in ranges:
            assert isinstance(r, PortRange)
            for f in fields:
                test |= sp.range(f, r.first, r.last)
        result &= _inv(test, opt)
    return result


def _conntrack(cx: _Ctx, match: Match) -> PacketSet:
    """xt_conntrack: the state test first; a packet without a connection (INVALID,
    UNTRACKED) then matches iff --ctstate was given, whatever the other options say."""
    sp = cx.space
    tracked = sp.tracked()
    rest = sp.all()
    state: PacketSet | None = None
    for opt in match.options:
        if opt.name == "ctstate":
            names = opt.value
            if not isinstance(names, frozenset):
                raise _Undecidable(f"unexpected --ctstate value {names!r}")
            state = _inv(sp.ctstate(names), opt)
        else:
            rest &= _inv(_conntrack_test(cx, opt), opt)
    if state is None:
        return tracked & rest
    return state & (~tracked | rest)


def _conntrack_test(cx: _Ctx, opt: Option) -> PacketSet:
    sp = cx.space
    value = opt.value
    name = opt.name
    if name == "ctproto":
        if not isinstance(value, IpProtocol):
            raise _Undecidable(f"unexpected --ctproto value {value!r}")
        # The connection's protocol is the packet's except for RELATED packets (an ICMP error
        # belongs to the connection it is about): opaque there.
        own = sp.ctstate(("NEW", "ESTABLISHED")) & sp.value("proto", value.number)
        related = sp.ctstate(("RELATED",)) & cx.opaque(
            ("conntrack", "ctproto-related", value.number),
            "--ctproto: the protocol of the connection a RELATED packet belongs to is not modelled",
            label=f"related connection is {value}", depends=(),
        )
        return own | related
    if name in ("ctorigsrc", "ctorigdst"):
        if not isinstance(value, Prefix) or value.version != sp.family:
            raise _Undecidable(f"unexpected --{name} value {value!r}")
        return sp.prefix("orig_src" if name == "ctorigsrc" else "orig_dst", value)
    if name in ("ctorigsrcport", "ctorigdstport"):
        r = _port_range(opt)
        return sp.range("orig_sport" if name == "ctorigsrcport" else "orig_dport", r.first, r.last)
    if name in ("ctreplsrc", "ctrepldst", "ctreplsrcport", "ctrepldstport"):
        return cx.opaque(("conntrack", name, value), f"--{name}: the reply tuple is not modelled",
                         label=f"conntrack {name} {_word(value)}")
    if name == "ctstatus":
        if not isinstance(value, frozenset):
            raise _Undecidable(f"unexpected --ctstatus value {value!r}")
        test = sp.none()  # NONE (no bit) never matches: the kernel tests (status & mask) != 0
        for status in sorted(value):
            test |= cx.opaque(("conntrack", "ctstatus", status), "--ctstatus: connection status bits are not modelled",
                              label=f"ctstatus {status}")
        return test
    if name == "ctexpire":
        first, last = getattr(value, "first", None), getattr(value, "last", None)
        if not isinstance(first, int) or not isinstance(last, int):
            raise _Undecidable(f"unexpected --ctexpire value {value!r}")
        if first > last:
            return sp.none()
        return cx.opaque(("conntrack", "ctexpire", first, last), "--ctexpire: connection timeouts are not modelled",
                         label=f"ctexpire {value}")
    if name == "ctdir":
        reply = cx.opaque(("conntrack", "reply-direction"), "--ctdir: the packet's direction is not modelled",
                          label="reply direction", depends=())
        # A NEW packet is always in the original direction.
        reply_test = reply & ~sp.ctstate(("NEW",))
        if value == "REPLY":
            return reply_test
        if value == "ORIGINAL":
            return ~reply_test
        raise _Undecidable(f"unexpected --ctdir value {value!r}")
    raise _Undecidable(f"unexpected option --{name}")


def _state(cx: _Ctx, match: Match) -> PacketSet:
    sp = cx.space
    result = sp.all()
    for opt in match.options:
        if opt.name != "state" or not isinstance(opt.value, frozenset):
            raise _Undecidable(f"unexpected --{opt.name} value {opt.value!r}")
        # xt_state has no "!": iptables complements the state mask, the same thing.
        result &= _inv(sp.ctstate(opt.value), opt)
    return result


def _mark_value(opt: Option) -> MarkMask:
    value = opt.value
    if opt.name != "mark" or not isinstance(value, MarkMask):
        raise _Undecidable(f"unexpected --{opt.name} value {value!r}")
    return value


def _mark(cx: _Ctx, match: Match) -> PacketSet:
    return _mark_field(cx, match, "mark", cx.space.all())


def _connmark(cx: _Ctx, match: Match) -> PacketSet:
    """xt_connmark: no connection, no match (with or without "!")."""
    return _mark_field(cx, match, "connmark", cx.space.tracked())


def _mark_field(cx: _Ctx, match: Match, field: str, result: PacketSet) -> PacketSet:
    sp = cx.space
    for opt in match.options:
        mm = _mark_value(opt)
        if not sp.marks:
            raise _Undecidable("the analysis does not model marks")
        result &= _inv(sp.masked(field, mm.value, mm.mask), opt)
    return result


def _iprange(cx: _Ctx, match: Match) -> PacketSet:
    sp = cx.space
    result = sp.all()
    for opt in match.options:
        r = opt.value
        field = {"src_range": "src", "dst_range": "dst"}.get(opt.name)
        if field is None or not isinstance(r, AddressRange) or r.version != sp.family:
            raise _Undecidable(f"unexpected --{opt.name} value {r!r}")
        result &= _inv(sp.addresses(field, r.first, r.last), opt)  # reversed: never matches
    return result


def _addrtype(cx: _Ctx, match: Match) -> PacketSet:
    sp = cx.space
    limit = next((o.name for o in match.options if o.name in ("limit_iface_in", "limit_iface_out")), None)
    result = sp.all()
    for opt in match.options:
        if opt.name in ("limit_iface_in", "limit_iface_out"):
            continue
        field = {"src_type": "src", "dst_type": "dst"}.get(opt.name)
        types = opt.value
        if field is None or not isinstance(types, frozenset):
            raise _Undecidable(f"unexpected --{opt.name} value {types!r}")
        label = f"addrtype {field} {','.join(sorted(types))}" + (f" {limit.replace('_', '-')}" if limit else "")
        key = ("addrtype", field, types, limit)
        known = _host_addresses(cx, types)
        if known is None:
            test = cx.opaque(key, "-m addrtype: no host model to say which addresses are of which type",
                             label=label, depends=(field,))
        else:
            test = sp.none()
            for p in known:
                test |= sp.prefix(field, p)
            if limit is not None:
                why = f"-m addrtype --{limit.replace('_', '-')}: per-interface address types are not modelled"
                per_iface = cx.opaque(key, why, label=label, depends=(field, "iif", "oif"))
                if sp.family == 6:
                    test = per_iface
                elif "UNICAST" in types:
                    # an address typed by another interface reads UNICAST: a superset
                    test |= per_iface
                elif types <= _ADDRTYPE_NARROWED:
                    test &= per_iface  # only the interface's own addresses: a subset
                else:
                    test = per_iface
        result &= _inv(test, opt)
    return result


def _host_addresses(cx: _Ctx, types: frozenset[str]) -> list[Prefix] | None:
    host = cx.host
    if host is None:
        return None
    try:
        several = getattr(host, "addresses_of_types", None)
        if several is not None:
            found = list(several(sorted(types)))
        elif cx.space.family == 6 and len(types) > 1:
            return None  # IPv6 type lists are not a union (match_type6)
        else:
            found = [p for t in sorted(types) for p in host.addresses_of_type(t)]
    except (KeyError, ValueError, NotImplementedError):
        return None
    if not all(isinstance(p, Prefix) and p.version == cx.space.family for p in found):
        return None
    return found


def _pkttype(cx: _Ctx, match: Match) -> PacketSet:
    """pkttype tests the link-layer frame type: approximated by the destination address
    class (multicast, broadcast, else unicast); "otherhost" is opaque."""
    sp = cx.space
    result = sp.all()
    for opt in match.options:
        kind = opt.value
        if opt.name != "pkt_type" or kind not in ("unicast", "broadcast", "multicast", "otherhost"):
            raise _Undecidable(f"unexpected --{opt.name} value {kind!r}")
        if kind == "otherhost":
            test = cx.opaque(("pkttype", "otherhost"), "-m pkttype otherhost: link-layer addresses are not modelled",
                             label="pkttype otherhost", depends=())
        else:
            cx.note("-m pkttype: the link-layer packet type is approximated by the destination address class")
            multicast = sp.prefix("dst", _net(sp.family, "224.0.0.0/4" if sp.family == 4 else "ff00::/8"))
            broadcast = sp.none()
            if sp.family == 4:
                broadcast = sp.prefix("dst", _net(4, "255.255.255.255/32"))
                subnet = _host_addresses(cx, frozenset({"BROADCAST"}))
                for p in subnet or ():
                    if p.prefix_length == 32:
                        broadcast |= sp.prefix("dst", p)
            test = {"multicast": multicast, "broadcast": broadcast}.get(str(kind), ~(multicast | broadcast))
        result &= _inv(test, opt)
    return result


def _net(family: int, text: str) -> Prefix:
    net = ipaddress.ip_network(text)
    full = (1 << net.max_prefixlen) - 1
    return Prefix(family, int(net.network_address), full ^ (full >> net.prefixlen))


def _comment(cx: _Ctx, match: Match) -> PacketSet:
    return cx.space.all()


_DECIDED: dict[str, Callable[[_Ctx, Match], PacketSet]] = {
    "tcp": _tcp,
    "udp": _ports_module(_UDP),
    "udplite": _ports_module(_UDPLITE),
    "sctp": _ports_module(_SCTP, _sctp_extra),
    "dccp": _ports_module(_DCCP, _dccp_extra),
    "icmp": _icmp_module(_ICMP, "icmp_type", any_type=True),
    "icmp6": _icmp_module(_ICMPV6, "icmpv6_type", any_type=False),
    "multiport": _multiport,
    "conntrack": _conntrack,
    "state": _state,
    "mark": _mark,
    "connmark": _connmark,
    "iprange": _iprange,
    "addrtype": _addrtype,
    "pkttype": _pkttype,
    "comment": _comment,
}


# ----------------------------------------------------------------------------- interfaces


def compile_interfaces(ruleset: Ruleset, host: HostLike | None = None) -> tuple[str, ...]:
    """The interface universe for a :class:`PacketSpace`: ``lo``, the host's interfaces and
    every name or wildcard (``eth+``) in ``-i``/``-o`` and ``--physdev-in/out``, sorted."""
    names: set[str] = {"lo"}
    if host is not None:
        names.update(str(n) for n in host.interface_names())
    for rule in ruleset.rules():
        for opt in (rule.in_interface, rule.out_interface):
            if opt is not None and isinstance(opt.value, Interface):
                names.add(opt.value.name)
        for match in rule.matches:
            if match.name == "physdev":
                for opt in match.options:
                    if isinstance(opt.value, Interface):
                        names.add(opt.value.name)
    names.discard("+")
    return tuple(sorted(names))
