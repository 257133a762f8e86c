"""Target specs: value parsers, cross-option checks and the canonical iptables-save form.

Every expectation below was first observed with iptables 1.8.9 (nf_tables): the input restored
with ``iptables-restore`` into a throwaway namespace and read back with ``iptables-save``. The
``kernel`` test at the end replays the canonical table against the real tool.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import TypeVar

import oracle
import pytest

from natlint.extensions import targets_core, targets_mangle, targets_nat
from natlint.extensions.spec import ExtensionSpec, ParseContext, Problem
from natlint.extensions.targets_core import kernel_problems
from natlint.extensions.targets_mangle import ConnmarkAction, TosMask, connmark_action, mark_action
from natlint.extensions.targets_nat import NatRange, parse_nat_range
from natlint.model.ruleset import Option
from natlint.model.values import AddressRange, MarkMask, PortRange

_MODULES = (targets_core, targets_nat, targets_mangle)
SPECS: dict[str, ExtensionSpec] = {s.name: s for m in _MODULES for s in m.SPECS}

Opt = tuple[str, ...]  # (option alias, word, word...)


def bind(target: str, *opts: Opt, family: int = 4, proto: str | None = None, inverted: bool = False
         ) -> tuple[dict[str, Option], list[Problem]]:
    """Parse ``opts`` as the binder does: each option's words through its spec, then validate."""
    spec = SPECS[target]
    ctx = ParseContext(family, proto, inverted)
    options: dict[str, Option] = {}
    for column, (name, *words) in enumerate(opts, start=1):
        ospec = spec.option(name)
        assert ospec is not None, f"{target} has no option {name}"
        values = ospec.parse(words, ctx) if ospec.parse is not None else ()
        options[name] = Option(name, values, False, column * 10)
    problems = list(spec.validate(options, ctx)) if spec.validate is not None else []
    return options, problems


def canonical(target: str, options: dict[str, Option], family: int = 4) -> str:
    """The target's options as iptables-save prints them."""
    for module in _MODULES:
        try:
            pairs = module.canonical_options(target, options, family=family)
        except KeyError:
            continue
        return " ".join(" ".join(["--" + name.replace("_", "-"), *words]) for name, words in pairs)
    raise KeyError(target)


def save_form(target: str, *opts: Opt, family: int = 4, proto: str | None = None) -> str:
    options, problems = bind(target, *opts, family=family, proto=proto)
    assert problems == []
    return canonical(target, options, family)


def rejects(target: str, *opts: Opt, family: int = 4, proto: str | None = None, inverted: bool = False) -> str:
    """The message natlint gives for a rule iptables refuses (a parse error or a Problem)."""
    try:
        _, problems = bind(target, *opts, family=family, proto=proto, inverted=inverted)
    except ValueError as exc:
        return str(exc)
    assert problems, f"{target} {opts} should be refused"
    return "; ".join(p.message for p in problems)


# ---- (family, table, chain, -p, target, input options, what iptables-save prints) ------------------

CANONICAL: list[tuple[int, str, str, str | None, str, tuple[Opt, ...], str]] = [
    # REJECT
    (4, "filter", "INPUT", None, "REJECT", (), "--reject-with icmp-port-unreachable"),
    (4, "filter", "INPUT", None, "REJECT", (("reject_with", "icmp-h"),), "--reject-with icmp-host-unreachable"),
    (4, "filter", "INPUT", None, "REJECT", (("reject_with", ""),), "--reject-with icmp-net-unreachable"),
    (4, "filter", "INPUT", "tcp", "REJECT", (("reject_with", "tcp-rst"),), "--reject-with tcp-reset"),
    (4, "filter", "INPUT", None, "REJECT", (("reject_with", "admin-prohib"),), "--reject-with icmp-admin-prohibited"),
    (6, "filter", "INPUT", None, "REJECT", (), "--reject-with icmp6-port-unreachable"),
    (6, "filter", "INPUT", None, "REJECT", (("reject_with", "a"),), "--reject-with icmp6-adm-prohibited"),
    # LOG
    (4, "filter", "INPUT", None, "LOG", (("log_level", "warning"),), ""),
    (4, "filter", "INPUT", None, "LOG", (("log_level", "0x7"),), "--log-level 7"),
    (4, "filter", "INPUT", None, "LOG", (("log_prefix", "123456789012345678901234567890123"),),
     "--log-prefix 12345678901234567890123456789"),
    (4, "filter", "INPUT", None, "LOG",
     (("log_uid",), ("log_tcp_sequence",), ("log_level", "panic"), ("log_prefix", "IN DROP: ")),
     '--log-prefix "IN DROP: " --log-level 0 --log-tcp-sequence --log-uid'),
    (4, "filter", "INPUT", None, "LOG", (("log_prefix", "x'y"),), '--log-prefix "x\\\'y"'),
    # NFLOG
    (4, "filter", "INPUT", None, "NFLOG", (("nflog_group", "0"), ("nflog_threshold", "0")), ""),
    (4, "filter", "INPUT", None, "NFLOG",
     (("nflog_threshold", "1"), ("nflog_size", "0"), ("nflog_group", "5"), ("nflog_prefix", "nf log")),
     '--nflog-prefix "nf log" --nflog-group 5 --nflog-size 0 --nflog-threshold 1'),
    (4, "filter", "INPUT", None, "NFLOG", (("nflog_range", "100"),), ""),
    # NFQUEUE, SYNPROXY, TRACE, AUDIT, CHECKSUM, CLASSIFY, IDLETIMER
    (4, "filter", "INPUT", None, "NFQUEUE", (), "--queue-num 0"),
    (4, "filter", "INPUT", None, "NFQUEUE", (("queue_cpu_fanout",), ("queue_bypass",), ("queue_balance", "2:")),
     "--queue-balance 2:65535 --queue-bypass --queue-cpu-fanout"),
    (4, "filter", "INPUT", "tcp", "SYNPROXY", (("ecn",), ("mss", "1460"), ("wscale", "256"), ("sack_perm",)),
     "--sack-perm --wscale 0 --mss 1460 --ecn"),
    (4, "filter", "INPUT", None, "TRACE", (), ""),
    (4, "mangle", "PREROUTING", None, "AUDIT", (("type", "DROP"),), "--type drop"),
    (4, "mangle", "PREROUTING", None, "CHECKSUM", (("checksum_fill",),), "--checksum-fill"),
    (4, "mangle", "POSTROUTING", None, "CLASSIFY", (("set_class", "1:10"),), "--set-class 0001:0010"),
    (4, "mangle", "POSTROUTING", None, "CLASSIFY", (("set_class", "10000:-1"),), "--set-class 0000:ffff"),
    (4, "mangle", "PREROUTING", None, "IDLETIMER", (("alarm",), ("label", "foo"), ("timeout", "10")),
     "--timeout 10 --label foo --alarm"),
    # DNAT, SNAT, MASQUERADE, REDIRECT, NETMAP
    (4, "nat", "PREROUTING", "tcp", "DNAT", (("to_destination", "10.0.0.2-10.0.0.9:3000-3999"),),
     "--to-destination 10.0.0.2-10.0.0.9:3000-3999"),
    (4, "nat", "PREROUTING", "tcp", "DNAT", (("to_destination", "10.0.0.1:5000-6000/1000"),),
     "--to-destination 10.0.0.1:5000-6000/1000"),
    (4, "nat", "PREROUTING", "tcp", "DNAT", (("to_destination", ":3000-3999/http"),), "--to-destination :3000-3999/80"),
    (4, "nat", "PREROUTING", "tcp", "DNAT", (("to", "10.0.0.1:0x50"), ("persistent",), ("random",)),
     "--to-destination 10.0.0.1:80 --random --persistent"),
    (4, "nat", "PREROUTING", "icmp", "DNAT", (("to_destination", "10.0.0.1:5"),), "--to-destination 10.0.0.1:5"),
    (4, "nat", "PREROUTING", "tcp", "DNAT", (("to_destination", "10:80"),), "--to-destination :80"),
    (4, "nat", "PREROUTING", None, "DNAT", (("to_destination", "10.0.0.9-10.0.0.1"),),
     "--to-destination 10.0.0.9-10.0.0.1"),
    (6, "nat", "PREROUTING", "tcp", "DNAT", (("to_destination", "[fd00::2]junk:8080"),),
     "--to-destination [fd00::2]:8080"),
    (6, "nat", "PREROUTING", None, "DNAT", (("to_destination", "[FD00::2]"),), "--to-destination fd00::2"),
    (6, "nat", "PREROUTING", "tcp", "DNAT", (("to_destination", "[::ffff:1.2.3.4]:80"),),
     "--to-destination [::ffff:1.2.3.4]:80"),
    (4, "nat", "POSTROUTING", "tcp", "SNAT",
     (("to_source", "198.51.100.1-198.51.100.4:1024-2048"), ("persistent",), ("random_fully",), ("random",)),
     "--to-source 198.51.100.1-198.51.100.4:1024-2048 --random --random-fully --persistent"),
    (4, "nat", "POSTROUTING", "udp", "SNAT", (("to_source", "1.2.3.4:2000-3000/2500"),),
     "--to-source 1.2.3.4:2000-3000/0"),
    (6, "nat", "POSTROUTING", "udp", "SNAT", (("to_source", "[2001:db8::1-2001:db8::9]:1000-2000"),),
     "--to-source [2001:db8::1-2001:db8::9]:1000-2000"),
    (4, "nat", "POSTROUTING", None, "MASQUERADE", (), ""),
    (4, "nat", "POSTROUTING", "tcp", "MASQUERADE", (("random",), ("random_fully",), ("to_ports", "1024-65535")),
     "--to-ports 1024-65535 --random --random-fully"),
    (4, "nat", "POSTROUTING", "tcp", "MASQUERADE", (("to", "1000-2000/1500"),), "--to-ports 1000-2000/0"),
    (4, "nat", "PREROUTING", "tcp", "REDIRECT", (("to_ports", "ssh"),), "--to-ports 22"),
    (4, "nat", "PREROUTING", None, "NETMAP", (("to", "10.5.1.2/16"),), "--to 10.5.0.0/16"),
    (4, "nat", "PREROUTING", None, "NETMAP", (("to", "10.5"),), "--to 10.0.0.5/32"),
    (4, "nat", "PREROUTING", None, "NETMAP", (("to", "10.5.0.0/255.0.255.0"),), "--to 10.5.0.0/32"),
    (4, "nat", "PREROUTING", None, "NETMAP", (("to", "10.5.0.0/016"),), "--to 10.4.0.0/14"),
    (6, "nat", "POSTROUTING", None, "NETMAP", (("to", "fd00::1/ffff::"),), "--to fd00::/16"),
    # MARK, CONNMARK
    (4, "mangle", "PREROUTING", None, "MARK", (("set_mark", "0x1"),), "--set-xmark 0x1/0xffffffff"),
    (4, "mangle", "PREROUTING", None, "MARK", (("set_mark", "0x5/0xf0"),), "--set-xmark 0x5/0xf5"),
    (4, "mangle", "PREROUTING", None, "MARK", (("or_mark", "0x4"),), "--set-xmark 0x4/0x4"),
    (4, "mangle", "PREROUTING", None, "MARK", (("and_mark", "0xfffe"),), "--set-xmark 0x0/0xffff0001"),
    (4, "mangle", "PREROUTING", None, "MARK", (("xor_mark", "3"),), "--set-xmark 0x3/0x0"),
    (4, "mangle", "PREROUTING", None, "MARK", (("set_xmark", "+16"),), "--set-xmark 0x10/0xffffffff"),
    (4, "mangle", "PREROUTING", None, "CONNMARK", (("save_mark",),),
     "--save-mark --nfmask 0xffffffff --ctmask 0xffffffff"),
    (4, "mangle", "PREROUTING", None, "CONNMARK", (("restore_mark",), ("mask", "0xff")),
     "--restore-mark --nfmask 0xff --ctmask 0xff"),
    (4, "mangle", "PREROUTING", None, "CONNMARK", (("set_xmark", "0x1/0xff"), ("ctmask", "0xf")),
     "--set-xmark 0x1/0xf"),
    (4, "mangle", "PREROUTING", None, "CONNMARK", (("ctmask", "0xf"), ("set_xmark", "0x1/0xff")),
     "--set-xmark 0x1/0xff"),
    (4, "mangle", "PREROUTING", None, "CONNMARK",
     (("set_mark", "0x5/0xf0"), ("right_shift_mark", "3"), ("left_shift_mark", "2")),
     "--set-xmark 0x5/0xf5 --left-shift-mark 2"),
    # TOS, DSCP, TTL, HL, TCPMSS
    (4, "mangle", "PREROUTING", None, "TOS", (("set_tos", "0x10"),), "--set-tos 0x10/0xff"),
    (4, "mangle", "PREROUTING", None, "TOS", (("set_tos", "minimize-delay"),), "--set-tos 0x10/0x3f"),
    (4, "mangle", "PREROUTING", None, "TOS", (("and_tos", "0x0f"),), "--set-tos 0x00/0xf0"),
    (6, "mangle", "PREROUTING", None, "TOS", (("xor_tos", "0x0f"),), "--set-tos 0x0f/0x00"),
    (4, "mangle", "PREROUTING", None, "DSCP", (("set_dscp", "10"),), "--set-dscp 0x0a"),
    (4, "mangle", "PREROUTING", None, "DSCP", (("set_dscp_class", "efx"),), "--set-dscp 0x2e"),
    (4, "mangle", "PREROUTING", None, "TTL", (("ttl_inc", "1"),), "--ttl-inc 1"),
    (6, "mangle", "PREROUTING", None, "HL", (("hl_set", "64"),), "--hl-set 64"),
    (4, "mangle", "FORWARD", "tcp", "TCPMSS", (("set_mss", "1400"), ("clamp_mss_to_pmtu",)), "--clamp-mss-to-pmtu"),
    (4, "mangle", "FORWARD", "tcp", "TCPMSS", (("clamp_mss_to_pmtu",), ("set_mss", "1400")), "--set-mss 1400"),
    # CT, NOTRACK, TPROXY, CONNSECMARK
    (4, "raw", "PREROUTING", "tcp", "CT", (("helper", "ftp"),), "--helper ftp"),
    (4, "raw", "PREROUTING", None, "CT", (("zone", "0"),), ""),
    (4, "raw", "PREROUTING", None, "CT", (("zone", "MARK"),), "--zone mark"),
    (4, "raw", "PREROUTING", None, "CT", (("zone", "5"), ("zone_orig", "6")), "--zone-orig 6"),
    (4, "raw", "PREROUTING", None, "CT", (("zone_orig", "1"), ("zone_reply", "2")), "--zone 2"),
    (4, "raw", "PREROUTING", None, "CT",
     (("zone", "3"), ("expevents", "new"), ("ctevents", "mark,new"), ("notrack",)),
     "--notrack --ctevents new,mark --expevents new --zone 3"),
    (4, "raw", "PREROUTING", None, "NOTRACK", (), ""),
    (4, "mangle", "PREROUTING", "tcp", "TPROXY", (("on_port", "3128"),),
     "--on-port 3128 --on-ip 0.0.0.0 --tproxy-mark 0x0/0x0"),
    (4, "mangle", "PREROUTING", "tcp", "TPROXY", (("tproxy_mark", "5"), ("on_ip", "10.1"), ("on_port", "70000")),
     "--on-port 4464 --on-ip 10.0.0.1 --tproxy-mark 0x5/0xffffffff"),
    (6, "mangle", "PREROUTING", "udp", "TPROXY", (("on_port", "080"),),
     "--on-port 80 --on-ip :: --tproxy-mark 0x0/0x0"),
    (4, "mangle", "PREROUTING", None, "CONNSECMARK", (("save",),), "--save"),
]


Case = tuple[int, str, str, str | None, str, tuple[Opt, ...], str]


def _case_id(case: Case) -> str:
    family, _, _, _, target, opts, _ = case
    return f"v{family}-{target}-" + "-".join(o[0] for o in opts)


@pytest.mark.parametrize("case", CANONICAL, ids=[_case_id(c) for c in CANONICAL])
def test_canonical_save_form(case: Case) -> None:
    family, _, _, proto, target, opts, expected = case
    assert save_form(target, *opts, family=family, proto=proto) == expected


# ---- REJECT, LOG, NFLOG, NFQUEUE -----------------------------------------------------------------


def test_reject_refusals() -> None:
    assert "no longer supported" in rejects("REJECT", ("reject_with", "echo-reply"))
    assert "IPv6 reject type" in rejects("REJECT", ("reject_with", "icmp6-port-unreachable"))
    assert "IPv4 reject type" in rejects("REJECT", ("reject_with", "icmp-port-unreachable"), family=6)
    assert "unknown reject type" in rejects("REJECT", ("reject_with", "icmp-port-unreachablex"))


def kernel(target: str, *opts: Opt, family: int = 4, proto: str | None = None, inverted: bool = False) -> str:
    """Why the kernel refuses the rule at commit ('' if it accepts): NL104 for natlint/checks."""
    options, problems = bind(target, *opts, family=family, proto=proto, inverted=inverted)
    assert problems == []
    return "; ".join(kernel_problems(target, options, ParseContext(family, proto, inverted)))


def test_kernel_protocol_requirements() -> None:
    assert "needs '-p tcp'" in kernel("REJECT", ("reject_with", "tcp-reset"))
    assert "needs '-p tcp'" in kernel("REJECT", ("reject_with", "tcp-reset"), proto="tcp", inverted=True)
    assert kernel("REJECT", ("reject_with", "tcp-reset"), family=6, proto="tcp") == ""
    assert "needs '-p tcp'" in kernel("SYNPROXY")
    assert "needs '-p tcp'" in kernel("TCPMSS", ("set_mss", "1400"), proto="udp")
    assert "'-p tcp' or '-p udp'" in kernel("TPROXY", ("on_port", "1"))
    assert kernel("TPROXY", ("on_port", "1"), proto="udp") == ""
    assert "needs '-p tcp' or '-p udp'" in kernel("CT", ("helper", "ftp"))
    assert "works with -p tcp" in kernel("CT", ("helper", "ftp"), proto="udp")
    assert kernel("CT", ("helper", "sip"), proto="udp") == "" and kernel("CT", ("helper", ""),) == ""


def test_log_values() -> None:
    assert "unknown log level" in rejects("LOG", ("log_level", "err"))  # names are case-sensitive, no "err"
    assert "unknown log level" in rejects("LOG", ("log_level", "8"))
    assert "cannot be empty" in rejects("LOG", ("log_prefix", ""))
    assert "newlines" in rejects("LOG", ("log_prefix", "a\nb"))


def test_nflog_and_nfqueue_checks() -> None:
    assert "cannot be used together" in rejects("NFLOG", ("nflog_range", "1"), ("nflog_size", "5"))
    assert "out of range" in rejects("NFLOG", ("nflog_group", "65536"))
    assert "below the last" in rejects("NFQUEUE", ("queue_balance", "3:3"))
    assert "more than 65535 queues" in rejects("NFQUEUE", ("queue_balance", "0:65535"))
    assert "needs --queue-balance" in rejects("NFQUEUE", ("queue_cpu_fanout",))
    assert "cannot be used together" in rejects("NFQUEUE", ("queue_num", "1"), ("queue_balance", "1:2"))


def test_small_targets_mandatory_options() -> None:
    assert "needs --type" in rejects("AUDIT")
    assert "accept, drop or reject" in rejects("AUDIT", ("type", "rej"))
    assert "needs --checksum-fill" in rejects("CHECKSUM")
    assert "MAJOR:MINOR" in rejects("CLASSIFY", ("set_class", "10"))
    assert "needs --label" in rejects("IDLETIMER", ("timeout", "10"))
    assert "longer than 16" in rejects("LED", ("led_trigger_id", "12345678901234567"))


def test_led_save_form() -> None:
    options, problems = bind("LED", ("led_trigger_id", 'a"b'), ("led_delay", "infinity"), ("led_always_blink",))
    assert problems == []
    assert canonical("LED", options) == '--led-trigger-id "a\\"b" --led-delay inf --led-always-blink'
    options, _ = bind("LED", ("led_trigger_id", "x"), ("led_delay", "0"))
    assert canonical("LED", options) == '--led-trigger-id "x"'


# ---- NAT ------------------------------------------------------------------------------------------

TCP4 = ParseContext(4, "tcp")
TCP6 = ParseContext(6, "tcp")


def test_nat_range_model() -> None:
    r = parse_nat_range("10.0.0.2-10.0.0.9:3000-3999", TCP4)
    assert r == NatRange(4, AddressRange(4, 0x0A000002, 0x0A000009), PortRange(3000, 3999), None)
    assert r.maps_addresses and r.maps_ports and not r.shifted
    port_only = parse_nat_range(":2000-3000", TCP4)
    assert port_only.addresses is None and str(port_only) == ":2000-3000"
    shifted = parse_nat_range("[fd00::2-fd00::9]:80-90/85", TCP6)
    assert shifted.base == 85 and shifted.ports_text() == "80-90/85"
    assert str(shifted) == "[fd00::2-fd00::9]:80-90/85"
    assert str(parse_nat_range("fd00::2-fd00::9", ParseContext(6, None))) == "fd00::2-fd00::9"


def test_nat_port_needs_protocol() -> None:
    assert "Need TCP, UDP, SCTP or DCCP" in rejects("DNAT", ("to_destination", "10.0.0.2:80"))
    assert "Need TCP, UDP, SCTP or DCCP" in rejects("DNAT", ("to_destination", "10.0.0.2:80"), proto="udplite")
    assert "Need TCP, UDP, SCTP or DCCP" in rejects("MASQUERADE", ("to_ports", "1000"))
    assert "Need TCP, UDP, SCTP or DCCP" in rejects("DNAT", ("to_destination", "[fd00::2]:5"), family=6,
                                                    proto="ipv6-icmp")
    # libxt_NAT looks at the protocol number only: '! -p tcp' is accepted.
    _, problems = bind("DNAT", ("to_destination", "10.0.0.1:5"), proto="tcp", inverted=True)
    assert problems == []


@pytest.mark.parametrize(
    ("target", "opt", "word", "family", "message"),
    [
        ("DNAT", "to_destination", "10.1", 4, "not a valid IPv4 address"),
        ("DNAT", "to_destination", "010.0.0.1", 4, "not a valid IPv4 address"),
        ("DNAT", "to_destination", "[10.0.0.1]", 4, "square brackets"),
        ("DNAT", "to_destination", "10.0.0.1:80:90", 4, "not a valid IPv4 address"),
        ("DNAT", "to_destination", "10.0.0.1:90-80", 4, "is empty"),
        ("DNAT", "to_destination", "10.0.0.1:80x", 4, "unexpected 'x'"),
        ("DNAT", "to_destination", "10.0.0.1:http-https", 4, "not a valid port"),
        ("DNAT", "to_destination", "10.0.0.1:5000/1000", 4, "unexpected '/1000'"),
        ("DNAT", "to_destination", "10.0.0.1:5000-6000/0", 4, "not a valid base port"),
        ("DNAT", "to_destination", "[fd00::2", 6, "no matching ']'"),
        ("DNAT", "to_destination", "fe80::1%eth0", 6, "not a valid IPv6 address"),
        ("MASQUERADE", "to_ports", "1000:2000", 4, "with a dash"),
        ("MASQUERADE", "to_ports", ":1000", 4, "not a valid port"),
        ("REDIRECT", "to_ports", "3000-3010/3005", 4, "shifted"),
        ("NETMAP", "to", "10.5.0.0/abc", 4, "neither a prefix length"),
        ("NETMAP", "to", "fd00::/129", 6, "neither a prefix length"),
        ("NETMAP", "to", "gateway.example/24", 4, "host name"),
    ],
)
def test_nat_values_refused(target: str, opt: str, word: str, family: int, message: str) -> None:
    assert message in rejects(target, (opt, word), family=family, proto="tcp")


def test_nat_mandatory_and_once() -> None:
    assert "DNAT needs --to-destination" in rejects("DNAT")
    assert "SNAT needs --to-source" in rejects("SNAT")
    assert "NETMAP needs --to" in rejects("NETMAP")
    assert "only be used once" in rejects("DNAT", ("to", "1.2.3.4"), ("to_destination", "1.2.3.5"))
    assert bind("MASQUERADE")[1] == [] and bind("REDIRECT")[1] == []


def test_nat_targets_are_terminal() -> None:
    for name in ("DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP", "REJECT", "NFQUEUE", "TPROXY", "SYNPROXY"):
        assert SPECS[name].terminal, name
    for name in ("LOG", "NFLOG", "MARK", "CONNMARK", "CT", "NOTRACK", "TCPMSS", "TOS", "TTL", "SET", "TRACE"):
        assert not SPECS[name].terminal, name


# ---- MARK, CONNMARK, TOS, DSCP, TTL, TCPMSS -------------------------------------------------------


def test_mark_values_and_semantics() -> None:
    options, _ = bind("MARK", ("and_mark", "0xfffe"))
    action = mark_action(options)
    assert action == MarkMask(0, 0xFFFF0001)
    assert ((0x1234 & ~action.mask) ^ action.value) & 0xFFFFFFFF == 0x1234 & 0xFFFE
    assert "cannot be used together" in rejects("MARK", ("set_mark", "1"), ("or_mark", "2"))
    assert "MARK needs one of" in rejects("MARK")
    for word in ("0x100000000", "1/", "1x", "-1"):
        assert "mark" in rejects("MARK", ("set_mark", word))
    assert "not a valid mark" in rejects("MARK", ("and_mark", "1/2"))


def test_connmark_replays_options_in_order() -> None:
    options, _ = bind("CONNMARK", ("set_xmark", "0x1/0xff"), ("mask", "0xf"))
    assert connmark_action(options) == ConnmarkAction("set", 1, 0xF, 0xF)
    options, _ = bind("CONNMARK", ("save_mark",), ("left_shift_mark", "8"))
    assert connmark_action(options) == ConnmarkAction("save", 0, 0xFFFFFFFF, 0xFFFFFFFF, "left", 8)
    assert "cannot be used together with --mask" in rejects("CONNMARK", ("mask", "0xf"), ("ctmask", "0xf0"),
                                                             ("save_mark",))
    assert "CONNMARK needs an operation" in rejects("CONNMARK", ("nfmask", "0xff"))
    assert "out of range" in rejects("CONNMARK", ("save_mark",), ("right_shift_mark", "33"))


def test_tos_dscp_ttl_values() -> None:
    assert bind("TOS", ("or_tos", "0x0f"))[0]["or_tos"].value == TosMask(0x0F, 0x0F)
    assert "not a valid TOS value" in rejects("TOS", ("set_tos", "0x100"))
    assert "mask" in rejects("TOS", ("set_tos", "0x10/0x100"))
    assert "not a valid TOS value" in rejects("TOS", ("set_tos", "Minimize-Delay/0xff"))
    assert "out of range" in rejects("DSCP", ("set_dscp", "0x40"))
    assert "unknown DSCP class" in rejects("DSCP", ("set_dscp_class", "XX"))
    assert "cannot be used together" in rejects("DSCP", ("set_dscp", "1"), ("set_dscp_class", "EF"))
    assert "out of range" in rejects("TTL", ("ttl_dec", "0"))
    assert "cannot be used together" in rejects("TTL", ("ttl_inc", "1"), ("ttl_set", "3"))
    assert SPECS["TTL"].families == {4} and SPECS["HL"].families == {6}


def test_tcpmss_checks() -> None:
    assert "needs --set-mss" in rejects("TCPMSS", proto="tcp")
    assert "out of range" in rejects("TCPMSS", ("set_mss", "65516"), proto="tcp")
    assert "out of range" in rejects("TCPMSS", ("set_mss", "65496"), family=6, proto="tcp")
    assert bind("TCPMSS", ("set_mss", "65495"), family=6, proto="tcp")[1] == []


# ---- CT, SET, TPROXY, SECMARK, CONNSECMARK --------------------------------------------------------


def test_ct_checks() -> None:
    assert "Cannot" not in rejects("CT", ("zone", "65536"))
    assert "out of range" in rejects("CT", ("zone", "65536"))
    assert "unknown conntrack event 'NEW'" in rejects("CT", ("ctevents", "NEW"))
    options, problems = bind("CT", ("helper", ""))
    assert problems == [] and canonical("CT", options) == ""


def test_set_target() -> None:
    options, problems = bind("SET", ("del_set", "blk", "src,dstx"), ("add_set", "seen", "src"), ("exist",),
                             ("timeout", "60"))
    assert problems == []
    assert canonical("SET", options) == "--add-set seen src --exist --timeout 60 --del-set blk src,dst"
    assert "only be used with --add-set" in rejects("SET", ("del_set", "blk", "src"), ("exist",))
    assert "needs --map-mark" in rejects("SET", ("map_set", "m", "dst"))
    assert "src/dst" in rejects("SET", ("add_set", "s", "source,x"))
    assert "too long" in rejects("SET", ("add_set", "a" * 32, "src"))
    assert "more than 6" in rejects("SET", ("add_set", "s", "src,src,src,src,src,src,src"))


def test_tproxy_and_secmark() -> None:
    assert "needs --on-port" in rejects("TPROXY", proto="tcp")
    assert "not a valid port" in rejects("TPROXY", ("on_port", "0x50"), proto="tcp")
    assert "needs --selctx" in rejects("SECMARK")
    assert "cannot be used together" in rejects("CONNSECMARK", ("save",), ("restore",))
    assert "needs --save or --restore" in rejects("CONNSECMARK")


# ---- the kernel's word ----------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., object])


def needs_kernel(test: F) -> F:
    reason = oracle.kernel_available()
    skip = pytest.mark.skipif(reason is not None, reason=reason or "")
    return pytest.mark.kernel(skip(test))  # type: ignore[no-any-return]


_CHAINS = {"nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"), "raw": ("PREROUTING", "OUTPUT"),
           "filter": ("INPUT", "FORWARD", "OUTPUT"), "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT",
                                                                 "POSTROUTING")}
# Kernel modules this machine may lack: rules that need them are left out of the replay.
_NEEDS_MODULE = {("CT", "helper")}


def _rule_text(chain: str, proto: str | None, target: str, opts: tuple[Opt, ...]) -> str:
    words = ["-A", chain] + (["-p", proto] if proto else []) + ["-j", target]
    for name, *args in opts:
        words += ["--" + name.replace("_", "-"), *(a if a and " " not in a and "'" not in a else
                                                  '"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"'
                                                  for a in args)]
    return " ".join(words)


@needs_kernel
@pytest.mark.parametrize(("family", "table"), sorted({(c[0], c[1]) for c in CANONICAL}))
def test_canonical_table_matches_iptables_save(family: int, table: str) -> None:
    cases = [c for c in CANONICAL if c[:2] == (family, table)
             and not any((c[4], o[0]) in _NEEDS_MODULE for o in c[5])]
    cases.sort(key=lambda c: _CHAINS[table].index(c[2]))  # iptables-save lists rules chain by chain
    text = "\n".join([f"*{table}", *(f":{c} ACCEPT [0:0]" for c in _CHAINS[table]),
                      *(_rule_text(c[2], c[3], c[4], c[5]) for c in cases), "COMMIT", ""])
    result, saved = oracle.restore_and_save(text, family)
    assert result.ok, result.message
    assert saved is not None
    lines = [line for line in saved.splitlines() if line.startswith("-A ")]
    assert len(lines) == len(cases)
    for line, case in zip(lines, cases, strict=True):
        got = line[line.index(" -j ") + 1:]
        want = " ".join(["-j", case[4], case[6]]).rstrip()
        assert got == want, shlex.join([case[4], *(w for o in case[5] for w in o)])
