"""The match specs (conntrack ... time): what each option accepts, what it refuses, which
options take "!", the cross-option rules, and the canonical form iptables-save prints.

``CANONICAL`` is a table of rules and the match text iptables-save 1.8.9 prints for them; the
plain test renders them through the specs, the kernel test loads them into a throwaway network
namespace and compares with the real iptables-save.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from natlint.extensions import matches_addr, matches_misc, matches_state
from natlint.extensions.spec import ExtensionSpec, OptionSpec, ParseContext, Problem
from natlint.model.ruleset import Option
from natlint.syntax.tokenize import split_words

SPECS: dict[str, ExtensionSpec] = {
    s.name: s for module in (matches_state, matches_addr, matches_misc) for s in module.SPECS
}


def _opt(module: str, option: str) -> OptionSpec:
    spec = SPECS[module].option(option)
    assert spec is not None, f"{module} has no option {option}"
    return spec


def parse(module: str, option: str, *words: str, family: int = 4, protocol: str | None = None) -> tuple[object, ...]:
    spec = _opt(module, option)
    assert spec.parse is not None
    return spec.parse(list(words), ParseContext(family, protocol))


def value(module: str, option: str, word: str, family: int = 4) -> object:
    return parse(module, option, word, family=family)[0]


def fmt(module: str, option: str, *words: str, family: int = 4) -> str:
    spec = _opt(module, option)
    assert spec.fmt is not None
    return " ".join(spec.fmt(parse(module, option, *words, family=family)))


def rejects(module: str, option: str, word: str, family: int = 4) -> str:
    with pytest.raises(ValueError) as info:
        parse(module, option, word, family=family)
    message = str(info.value)
    assert message and message[0] != " ", "a message for a person"
    return message


def invertible(module: str) -> set[str]:
    return {o.name for o in SPECS[module].options if o.invertible}


def problems(
    module: str, *options: tuple[str, Sequence[str]] | str, family: int = 4, protocol: str | None = None,
    inverted: Sequence[str] = (),
) -> list[Problem]:
    """Validate a match given as option names (flags) or (name, words) pairs."""
    ctx = ParseContext(family, protocol)
    bound: dict[str, Option] = {}
    for item in options:
        name, words = (item, ()) if isinstance(item, str) else item
        spec = _opt(module, name)
        values = spec.parse(list(words), ctx) if spec.parse else ()
        bound[name] = Option(name, values, invert=name in inverted)
    validate = SPECS[module].validate
    return list(validate(bound, ctx)) if validate else []


# ============================================================================ conntrack, state


def test_conntrack_states_prefixes_any_case_and_save_order() -> None:
    assert value("conntrack", "ctstate", "e,N,inv") == frozenset({"ESTABLISHED", "NEW", "INVALID"})
    assert fmt("conntrack", "ctstate", "ESTABLISHED,RELATED,dnat,untracked") == "RELATED,ESTABLISHED,UNTRACKED,DNAT"
    for bad in ("NEW,", ",NEW", "NEWX", "NEW ESTABLISHED"):
        rejects("conntrack", "ctstate", bad)
    assert fmt("conntrack", "ctstatus", "n,a") == "ASSURED"
    assert fmt("conntrack", "ctstatus", "NONE") == "NONE"


def test_conntrack_addresses_keep_host_bits_and_read_like_inet_aton() -> None:
    assert fmt("conntrack", "ctorigsrc", "10.1.2.3/8") == "10.1.2.3/8"
    addr = value("conntrack", "ctorigsrc", "10.1.2.3/8")
    assert isinstance(addr, matches_state.HostMask) and addr.contains(0x0A090909)
    assert fmt("conntrack", "ctorigdst", "10.1") == "10.0.0.1"  # getaddrinfo, unlike -s 10.1
    assert fmt("conntrack", "ctrepldst", "1.2.3.4/255.255.0.0") == "1.2.3.4/16"
    # A non-contiguous mask is silently replaced by a host mask in 1.8.9.
    assert fmt("conntrack", "ctorigsrc", "10.0.0.0/255.0.255.0") == "10.0.0.0"
    assert fmt("conntrack", "ctorigsrc", "2001:DB8::1/ffff:ffff::", family=6) == "2001:db8::1/32"


def test_conntrack_ports_protocol_expire_dir() -> None:
    assert fmt("conntrack", "ctorigsrcport", "80:79") == "80:79"  # no order check
    assert fmt("conntrack", "ctorigdstport", ":") == "0:65535"
    assert fmt("conntrack", "ctorigdstport", "70000") == "4464"  # glibc keeps the low 16 bits
    rejects("conntrack", "ctorigdstport", "0x50")  # getaddrinfo reads decimal only
    assert fmt("conntrack", "ctproto", "tcp") == "6"
    assert fmt("conntrack", "ctproto", "TCP") == "6"  # an /etc/protocols alias
    rejects("conntrack", "ctproto", "Tcp")
    rejects("conntrack", "ctproto", "300")
    assert fmt("conntrack", "ctexpire", "0x10:020") == "16"
    assert fmt("conntrack", "ctexpire", "5:") == "5:4294967295"
    rejects("conntrack", "ctexpire", "5-6")
    assert fmt("conntrack", "ctdir", "reply") == "REPLY"
    assert "ctdir" not in invertible("conntrack")
    assert len(invertible("conntrack")) == 12


def test_conntrack_needs_an_option_and_state_needs_state() -> None:
    assert problems("conntrack")
    assert not problems("conntrack", ("ctstate", ["NEW"]))
    assert problems("state")
    assert fmt("state", "state", "established,related") == "RELATED,ESTABLISHED"
    rejects("state", "state", "SNAT")
    assert invertible("state") == {"state"}


# ============================================================================ mark, connmark, helper


def test_mark_and_connmark() -> None:
    assert fmt("mark", "mark", "1/0xff") == "0x1/0xff"
    assert fmt("mark", "mark", "0x10/0xffffffff") == "0x10"
    assert fmt("connmark", "mark", "010") == "0x8"
    for bad in ("4294967296", "0x1/", "/1", "1/2/3"):
        rejects("mark", "mark", bad)
    assert invertible("mark") == invertible("connmark") == {"mark"}
    assert problems("mark") and problems("connmark")


def test_helper() -> None:
    assert fmt("helper", "helper", "ftp-2121") == "ftp-2121"
    assert fmt("helper", "helper", "") == '""'
    assert problems("helper")
    assert SPECS["helper"].opaque


# ============================================================================ connbytes, connlimit


def test_connbytes() -> None:
    assert fmt("connbytes", "connbytes", "10") == "10"  # "at least 10"
    assert fmt("connbytes", "connbytes", "10:") == "10"
    assert fmt("connbytes", "connbytes", ":10") == "0:10"
    assert "should be less" in rejects("connbytes", "connbytes", "10:5")
    rejects("connbytes", "connbytes_dir", "Reply")
    assert [p.message for p in problems("connbytes", ("connbytes", ["1"]), ("connbytes_mode", ["packets"]))] == [
        "the connbytes match needs --connbytes-dir"
    ]
    assert [o.name for o in SPECS["connbytes"].options] == ["connbytes", "connbytes_mode", "connbytes_dir"]


def test_connlimit() -> None:
    assert fmt("connlimit", "connlimit_mask", "255.255.0.0") == "16"
    assert fmt("connlimit", "connlimit_mask", "255.0.255.0") == "32"  # non-contiguous: host
    assert fmt("connlimit", "connlimit_mask", "33") == "32"  # read as the mask 0.0.0.33
    assert fmt("connlimit", "connlimit_mask", "64", family=6) == "64"
    assert problems("connlimit", ("connlimit_mask", ["24"]))
    assert problems("connlimit", ("connlimit_upto", ["1"]), ("connlimit_above", ["2"]))
    assert problems("connlimit", ("connlimit_upto", ["1"]), "connlimit_saddr", "connlimit_daddr")
    assert invertible("connlimit") == {"connlimit_upto", "connlimit_above"}


# ============================================================================ addrtype, iprange, mac, physdev


def test_addrtype() -> None:
    assert fmt("addrtype", "src_type", "local,unicast") == "UNICAST,LOCAL"
    assert fmt("addrtype", "dst_type", "LOC") == "LOCAL"
    assert fmt("addrtype", "dst_type", "U") == "UNSPEC"  # the first name the prefix fits
    rejects("addrtype", "src_type", "LOCALX")
    assert problems("addrtype", "limit_iface_in")
    assert problems("addrtype", ("dst_type", ["LOCAL"]), "limit_iface_in", "limit_iface_out")
    assert invertible("addrtype") == {"src_type", "dst_type"}


def test_iprange() -> None:
    assert fmt("iprange", "src_range", "10.1-10.2") == "10.1.0.0-10.2.0.0"
    assert fmt("iprange", "dst_range", "10.0.1.1") == "10.0.1.1-10.0.1.1"
    assert fmt("iprange", "src_range", "10.0.0.9-10.0.0.1") == "10.0.0.9-10.0.0.1"  # loads, never matches
    assert fmt("iprange", "src_range", "2001:DB8::1-2001:db8::ff", family=6) == "2001:db8::1-2001:db8::ff"
    for bad in ("10.0.0.1-", "10.0.0.1-10.0.0.2-10.0.0.3", "10.0.0.1/24"):
        rejects("iprange", "src_range", bad)
    assert problems("iprange")


def test_mac() -> None:
    assert fmt("mac", "mac_source", "00:11:22:AA:bb:cc") == "00:11:22:aa:bb:cc"
    assert fmt("mac", "mac_source", "0:1:2:3:4:5") == "00:01:02:03:04:05"
    assert fmt("mac", "mac_source", ":::::") == "00:00:00:00:00:00"  # strtoul reads empty as 0
    for bad in ("00-11-22-33-44-55", "00:11:22:33:44:555", "1:2:3:4:5:6:7", "0x:1:2:3:4:5", "g0:1:2:3:4:5"):
        rejects("mac", "mac_source", bad)
    assert invertible("mac") == {"mac_source"}
    assert problems("mac")


def test_physdev() -> None:
    assert [o.name for o in SPECS["physdev"].options] == [
        "physdev_is_in", "physdev_in", "physdev_is_out", "physdev_out", "physdev_is_bridged",
    ]
    assert invertible("physdev") == {o.name for o in SPECS["physdev"].options}
    rejects("physdev", "physdev_in", "0123456789abcdef")
    assert fmt("physdev", "physdev_out", "eth+") == "eth+"
    assert problems("physdev")


# ============================================================================ pkttype, devgroup, realm


def test_pkttype() -> None:
    assert fmt("pkttype", "pkt_type", "BROADCAST") == "broadcast"
    assert fmt("pkttype", "pkt_type", "host") == "unicast"
    assert fmt("pkttype", "pkt_type", "mcast") == "multicast"
    rejects("pkttype", "pkt_type", "3")
    rejects("pkttype", "pkt_type", "outgoing")


def test_devgroup_and_realm_value_mask_or_names() -> None:
    assert fmt("devgroup", "src_group", "1") == "0x1"
    assert fmt("devgroup", "dst_group", "0x2/0xff") == "0x2/0xff"
    assert fmt("devgroup", "src_group", "0/0xffffffff") == "default"
    rejects("devgroup", "src_group", "4294967296")
    rejects("devgroup", "dst_group", "1/")
    assert problems("devgroup")
    assert fmt("realm", "realm", "0") == "cosmos"
    assert fmt("realm", "realm", "0/0xff") == "0x0/0xff"
    assert SPECS["realm"].families == frozenset({4})


# ============================================================================ set


def test_set() -> None:
    assert parse("set", "match_set", "blk", "src,dst") == ("blk", ("src", "dst"))
    assert fmt("set", "match_set", "blk", "src") == "blk src"
    for name, dirs in (("blk", "source"), ("blk", "src,src,src,src,src,src,src"), ("x" * 32, "src"), ("blk", "--x")):
        with pytest.raises(ValueError):
            parse("set", "match_set", name, dirs)
    assert invertible("set") == {"match_set", "update_counters", "update_subcounters", "packets_eq", "bytes_eq"}
    assert problems("set", "return_nomatch")
    assert problems("set", ("match_set", ["a", "src"]), ("packets_lt", ["1"]), ("packets_gt", ["5"]))
    assert SPECS["set"].opaque


# ============================================================================ policy, socket, rpfilter


def test_policy() -> None:
    assert fmt("policy", "spi", "16") == "0x10"
    assert fmt("policy", "proto", "50") == "esp"
    rejects("policy", "proto", "tcp")
    rejects("policy", "dir", "IN")
    assert fmt("policy", "tunnel_src", "10.1") == "10.0.0.1"
    assert "dir" not in invertible("policy") and "pol" not in invertible("policy")
    assert problems("policy", ("pol", ["ipsec"]))
    assert problems("policy", ("dir", ["in"]), "next")
    assert problems("policy", ("dir", ["in"]), ("tunnel_src", ["1.2.3.4"]), ("mode", ["transport"]))
    assert not problems(
        "policy", ("dir", ["in"]), ("tunnel_src", ["1.2.3.4"]), ("mode", ["transport"]), inverted=["mode"]
    )
    order = [o.name for o in SPECS["policy"].options]
    assert order.index("tunnel_dst") < order.index("tunnel_src")


def test_socket_and_rpfilter_flags() -> None:
    assert [o.name for o in SPECS["socket"].options] == ["transparent", "nowildcard", "restore_skmark"]
    assert [o.name for o in SPECS["rpfilter"].options] == ["loose", "validmark", "accept_local", "invert"]
    assert not invertible("socket") and not invertible("rpfilter")


# ============================================================================ owner, cgroup


def test_owner() -> None:
    assert fmt("owner", "uid_owner", "0x10") == "16"
    assert fmt("owner", "uid_owner", "1000:2000") == "1000-2000"
    assert fmt("owner", "gid_owner", "10-10") == "10"
    assert value("owner", "uid_owner", "nobody") == "nobody"  # resolved on the loading host
    for bad in ("4294967295", "5-", "5x", "5-3"):
        rejects("owner", "uid_owner", bad)
    assert problems("owner", "suppl_groups")
    assert [o.name for o in SPECS["owner"].options] == ["socket_exists", "uid_owner", "gid_owner", "suppl_groups"]


def test_cgroup() -> None:
    assert fmt("cgroup", "cgroup", "0x100001") == "1048577"
    assert fmt("cgroup", "path", "/") == '"/"'
    assert problems("cgroup")
    assert problems("cgroup", ("path", ["/"]), ("cgroup", ["1"]))


# ============================================================================ comment, limit, hashlimit


def test_comment_truncated_to_255_bytes_on_save() -> None:
    text = "x" * 300
    assert value("comment", "comment", text) == text  # the model keeps what was written
    assert fmt("comment", "comment", text) == "x" * 255
    assert fmt("comment", "comment", 'say "hi"') == '"say \\"hi\\""'
    assert not invertible("comment")
    assert problems("comment")


def test_limit_rates() -> None:
    assert fmt("limit", "limit", "100/minute") == "100/min"
    assert fmt("limit", "limit", "120/MIN") == "2/sec"
    assert fmt("limit", "limit", "7/h") == "7/hour"
    assert fmt("limit", "limit", "5abc") == "5/sec"  # atoi
    rate = value("limit", "limit", "1/d")
    assert isinstance(rate, matches_misc.LimitRate) and str(rate) == "1/day"
    for bad in ("10001/s", "5/x", "0", "5/", "5/secondsx"):
        rejects("limit", "limit", bad)
    rejects("limit", "limit_burst", "10001")
    assert not invertible("limit")


def test_hashlimit() -> None:
    assert fmt("hashlimit", "hashlimit_upto", "10/s") == "10/sec"
    assert fmt("hashlimit", "hashlimit_upto", "1kb/s") == "1kb/s"
    assert fmt("hashlimit", "hashlimit_above", "1mb/s") == "1mb/s"
    assert fmt("hashlimit", "hashlimit_mode", "dstport|srcip") == "srcip,dstport"
    rejects("hashlimit", "hashlimit_mode", "srcip,foo")
    rejects("hashlimit", "hashlimit_burst", "1000001")
    assert value("hashlimit", "hashlimit_burst", "2mb") == 2 * 1024 * 1024
    assert problems("hashlimit", ("hashlimit_upto", ["1/s"]))  # no --hashlimit-name
    assert problems("hashlimit", ("hashlimit_upto", ["1mb/s"]), ("hashlimit_burst", ["1kb"]), ("hashlimit_name", ["x"]))
    assert invertible("hashlimit") == {"hashlimit_upto", "hashlimit_above"}


# ============================================================================ recent, statistic


def test_recent() -> None:
    assert fmt("recent", "mask", "10.1") == "10.0.0.1"
    assert fmt("recent", "mask", "ffff::", family=6) == "ffff::"
    rejects("recent", "name", "a/b")
    rejects("recent", "seconds", "0")
    assert problems("recent", ("name", ["x"]))
    assert problems("recent", "set", "rcheck")
    assert problems("recent", "rcheck", "reap")
    assert problems("recent", "set", ("seconds", ["5"]))  # refused by the kernel
    assert not problems("recent", "update", ("seconds", ["5"]), "reap", ("hitcount", ["3"]))
    assert invertible("recent") == {"set", "rcheck", "update", "remove"}


def test_statistic() -> None:
    assert fmt("statistic", "probability", "0.3") == "0.29999999981"
    assert fmt("statistic", "probability", "0x1p-2") == "0.25000000000"
    assert fmt("statistic", "probability", "1") == "1.00000000000"
    for bad in ("1.5", "0.5x", "", "-0.1"):
        rejects("statistic", "probability", bad)
    rejects("statistic", "mode", "Random")
    rejects("statistic", "every", "0")
    assert problems("statistic", ("mode", ["random"]))
    assert problems("statistic", ("mode", ["nth"]), ("every", ["3"]))
    assert problems("statistic", ("mode", ["nth"]), ("every", ["3"]), ("packet", ["3"]))
    assert not problems("statistic", ("mode", ["nth"]), ("every", ["3"]), ("packet", ["2"]))
    assert invertible("statistic") == {"probability", "every"}


# ============================================================================ length, quota, cpu, tos, dscp


def test_length_quota_cpu() -> None:
    assert fmt("length", "length", ":100") == "0:100"
    assert fmt("length", "length", "100:50") == "100:50"
    rejects("length", "length", "65536")
    assert fmt("quota", "quota", "0x10") == "16"
    assert problems("length") and problems("quota") and problems("cpu")
    assert invertible("length") == {"length"} and invertible("cpu") == {"cpu"}


def test_tos_and_dscp() -> None:
    assert fmt("tos", "tos", "0x10") == "0x10/0xff"
    assert fmt("tos", "tos", "Minimize-Delay") == "0x10/0x3f"
    assert fmt("tos", "tos", "normal-service") == "0x00/0x3f"
    assert fmt("tos", "tos", "0/0x3") == "0x00/0x03"
    for bad in ("256", "0x10/0x1ff", "8/"):
        rejects("tos", "tos", bad)
    assert fmt("dscp", "dscp", "46") == "0x2e"
    assert fmt("dscp", "dscp_class", "ef") == "0x2e"
    rejects("dscp", "dscp", "64")
    rejects("dscp", "dscp_class", "CS8")
    assert problems("dscp") and problems("dscp", ("dscp", ["1"]), ("dscp_class", ["AF11"]))


# ============================================================================ string, u32


def test_string() -> None:
    assert value("string", "hex_string", "|474554|") == b"GET"
    assert value("string", "hex_string", "|00 01|ab|ff|") == b"\x00\x01ab\xff"
    assert value("string", "hex_string", "a\\|b") == b"a|b"
    for bad in ("|0|", "|474554", "|4g|", "|4"):
        rejects("string", "hex_string", bad)
    assert fmt("string", "string", 'a"b') == '"a\\"b"'
    assert fmt("string", "string", "q'x") == '"q\'x"'  # only " and \ are escaped
    assert matches_misc.format_string_pattern(b"GET") == ("string", '"GET"')
    assert matches_misc.format_string_pattern(b"a\tb") == ("hex_string", '"|610962|"')
    rejects("string", "algo", "BM")
    rejects("string", "string", "")
    assert problems("string", ("string", ["abc"]))
    assert problems("string", ("algo", ["bm"]), ("string", ["a"]), ("from", ["100"]), ("to", ["50"]))
    assert invertible("string") == {"string", "hex_string"}


def test_u32() -> None:
    assert fmt("u32", "u32", "6&0xFF=1 && 4&0x3FFF=0") == '"0x6&0xff=0x1&&0x4&0x3fff=0x0"'
    assert fmt("u32", "u32", "0>>22&0x3C@12>>26&0x3C@0=0x474554") == '"0x0>>0x16&0x3c@0xc>>0x1a&0x3c@0x0=0x474554"'
    assert fmt("u32", "u32", "0=1:2,3 : 4") == '"0x0=0x1:0x2,0x3:0x4"'
    for bad in ("0=0x100000001", "0=-1", "0=1&&", "0=1&", "=1", "0<1=1", "0", "0=", "08=1"):
        rejects("u32", "u32", bad)
    rejects("u32", "u32", "&&".join(["0=1"] * 11))
    assert invertible("u32") == {"u32"}


# ============================================================================ ttl, hl, frag, ipv6header


def test_ttl_and_hl() -> None:
    assert fmt("ttl", "ttl_eq", "64") == "64"
    rejects("ttl", "ttl_gt", "256")
    assert invertible("ttl") == {"ttl_eq"} and invertible("hl") == {"hl_eq"}
    assert problems("ttl") and problems("ttl", ("ttl_gt", ["5"]), ("ttl_lt", ["10"]))
    assert SPECS["ttl"].families == frozenset({4}) and SPECS["hl"].families == frozenset({6})


def test_frag_and_ipv6header() -> None:
    assert fmt("frag", "fragid", ":5", family=6) == "0:5"
    assert problems("frag", "fragmore", "fraglast", family=6)
    assert invertible("frag") == {"fragid", "fraglen"}
    assert fmt("ipv6header", "header", "frag", family=6) == "ipv6-frag"
    assert fmt("ipv6header", "header", "prot,none,esp,auth,frag,route,dst,hop", family=6) == (
        "hop-by-hop,ipv6-opts,ipv6-route,ipv6-frag,ah,esp,ipv6-nonxt,protocol"
    )
    rejects("ipv6header", "header", "tcp", family=6)
    rejects("ipv6header", "header", "HOP", family=6)
    assert SPECS["frag"].families == SPECS["ipv6header"].families == frozenset({6})


# ============================================================================ esp, ah, tcpmss, ecn


def test_protocol_bound_matches() -> None:
    assert problems("esp", ("espspi", ["5"]), protocol="udp")
    assert not problems("esp", ("espspi", ["5"]), protocol="esp")
    assert problems("ah", ("ahspi", ["5"]), family=4)
    assert not problems("ah", ("ahspi", ["5"]), family=6)  # ip6tables' ah needs no -p ah
    assert problems("ah", ("ahlen", ["5"]), family=4, protocol="ah")
    assert problems("tcpmss", ("mss", ["1400"]))
    assert problems("ecn", "ecn_tcp_cwr")
    assert not problems("ecn", ("ecn_ip_ect", ["1"]))
    assert "invalid range" in rejects("tcpmss", "mss", "5:3")
    assert fmt("esp", "espspi", "0x10") == "16"
    assert fmt("ah", "ahspi", "5:4") == "5:4"
    assert [o.name for o in SPECS["ecn"].options] == ["ecn_tcp_ece", "ecn_tcp_cwr", "ecn_ip_ect"]


# ============================================================================ time


def test_time() -> None:
    assert fmt("time", "timestart", "8:00") == "08:00:00"
    rejects("time", "timestart", "25:00")
    rejects("time", "timestart", "8")
    assert fmt("time", "weekdays", "Wed,1,Sunday") == "Mon,Wed,Sun"
    rejects("time", "weekdays", "tue")  # the first two letters are compared, case-sensitively
    rejects("time", "weekdays", "0")
    assert fmt("time", "monthdays", "31,1,123") == "1,12,31"  # iptables reads 2 characters
    rejects("time", "monthdays", "32")
    assert fmt("time", "datestart", "2024-02-30") == "2024-03-01T00:00:00"  # mktime normalises
    assert fmt("time", "datestart", "2024") == "2024-01-01T00:00:00"
    for bad in ("1969-12-31", "2039", "2024-13", "2024-01-01T10:00:00x"):
        rejects("time", "datestart", bad)
    assert problems("time", "contiguous", ("timestart", ["1:00"]))
    assert not problems("time", "contiguous", ("timestart", ["20:00"]), ("timestop", ["6:00"]))
    assert problems("time", "kerneltz", "utc")
    assert invertible("time") == {"monthdays", "weekdays"}


# ============================================================================ every spec


def test_every_spec_is_well_formed() -> None:
    opaque = {"set", "limit", "hashlimit", "recent", "statistic", "string", "u32", "owner", "time", "quota",
              "connbytes", "connlimit", "nfacct", "cgroup", "socket", "policy", "rpfilter", "helper", "devgroup"}
    for name, spec in SPECS.items():
        assert spec.kind == "match"
        assert spec.opaque == (name in opaque or name in {"realm", "cpu"}), name
        for option in spec.options:
            if option.parse is not None:
                assert option.fmt is not None, f"{name} --{option.name} has no canonical form"


# ============================================================================ canonical forms

# (family, table, chain, rule as written, what iptables-save 1.8.9 prints from "-m" on)
CANONICAL: list[tuple[int, str, str, str, str]] = [
    (4, "filter", "INPUT",
     "-m conntrack ! --ctstate e,N --ctproto tcp --ctorigsrc 10.1.2.3/8 --ctorigdst 10.1 --ctorigdstport 80:79"
     " --ctstatus n,a --ctexpire 0x10:020 --ctdir reply",
     "-m conntrack ! --ctstate NEW,ESTABLISHED --ctproto 6 --ctorigsrc 10.1.2.3/8 --ctorigdst 10.0.0.1"
     " --ctorigdstport 80:79 --ctstatus ASSURED --ctexpire 16 --ctdir REPLY"),
    (4, "filter", "INPUT", "-m state --state established,related", "-m state --state RELATED,ESTABLISHED"),
    (4, "filter", "INPUT", "-m mark ! --mark 1/0xff -m connmark --mark 2/0xffffffff",
     "-m mark ! --mark 0x1/0xff -m connmark --mark 0x2"),
    (4, "filter", "INPUT", "-m helper --helper ftp", "-m helper --helper ftp"),
    (4, "filter", "INPUT", "-m connbytes --connbytes 10: --connbytes-dir both --connbytes-mode packets",
     "-m connbytes --connbytes 10 --connbytes-mode packets --connbytes-dir both"),
    (4, "filter", "INPUT", "-m connlimit --connlimit-upto 2 --connlimit-mask 255.255.0.0 --connlimit-daddr",
     "-m connlimit --connlimit-upto 2 --connlimit-mask 16 --connlimit-daddr"),
    (4, "filter", "INPUT", "-m addrtype --src-type local,unicast ! --dst-type LOC --limit-iface-in",
     "-m addrtype --src-type UNICAST,LOCAL ! --dst-type LOCAL --limit-iface-in"),
    (4, "filter", "INPUT", "-m iprange --src-range 10.1-10.2 ! --dst-range 10.0.1.1",
     "-m iprange --src-range 10.1.0.0-10.2.0.0 ! --dst-range 10.0.1.1-10.0.1.1"),
    (4, "filter", "INPUT", "-m mac ! --mac-source 0:1:2:AA:bb:c", "-m mac ! --mac-source 00:01:02:aa:bb:0c"),
    (4, "filter", "INPUT", "-m physdev --physdev-out eth1 --physdev-is-bridged --physdev-in eth0",
     "-m physdev --physdev-in eth0 --physdev-out eth1 --physdev-is-bridged"),
    (4, "filter", "INPUT", "-m pkttype ! --pkt-type host", "-m pkttype ! --pkt-type unicast"),
    (4, "filter", "FORWARD", "-m devgroup --src-group 0 ! --dst-group 2/0xff",
     "-m devgroup --src-group default ! --dst-group 0x2/0xff"),
    (4, "filter", "INPUT", "-m realm --realm 5", "-m realm --realm 0x5"),
    (4, "filter", "INPUT",
     "-m policy --dir in --pol ipsec --strict --reqid 1 --spi 16 --proto 50 --mode tunnel --tunnel-src 1.1.1.1"
     " --tunnel-dst 10.0.0.0/8",
     "-m policy --dir in --pol ipsec --strict --reqid 1 --spi 0x10 --proto esp --mode tunnel"
     " --tunnel-dst 10.0.0.0/8 --tunnel-src 1.1.1.1"),
    (4, "mangle", "PREROUTING", "-m socket --restore-skmark --transparent", "-m socket --transparent --restore-skmark"),
    (4, "raw", "PREROUTING", "-m rpfilter --invert --loose", "-m rpfilter --loose --invert"),
    (4, "filter", "OUTPUT", "-m owner --gid-owner 100 --uid-owner 0x10:2000 --suppl-groups",
     "-m owner --uid-owner 16-2000 --gid-owner 100 --suppl-groups"),
    (4, "filter", "OUTPUT", "-m cgroup ! --cgroup 0x10", "-m cgroup ! --cgroup 16"),
    (4, "filter", "INPUT", '-m comment --comment "a.b"', '-m comment --comment "a.b"'),
    (4, "filter", "INPUT", "-m comment --comment " + "c" * 300, "-m comment --comment " + "c" * 255),
    (4, "filter", "INPUT", "-m limit --limit 120/MIN --limit-burst 10", "-m limit --limit 2/sec --limit-burst 10"),
    (4, "filter", "INPUT",
     "-m hashlimit --hashlimit-upto 50/s --hashlimit-burst 100 --hashlimit-mode dstport|srcip --hashlimit-name hl1"
     " --hashlimit-htable-expire 30000 --hashlimit-srcmask 24",
     "-m hashlimit --hashlimit-upto 50/sec --hashlimit-burst 100 --hashlimit-mode srcip,dstport --hashlimit-name hl1"
     " --hashlimit-htable-expire 30000 --hashlimit-srcmask 24"),
    (4, "filter", "INPUT", "-m hashlimit --hashlimit-above 100kb/s --hashlimit-name b",
     "-m hashlimit --hashlimit-above 100kb/s --hashlimit-name b"),
    (4, "filter", "INPUT",
     "-m recent ! --update --hitcount 3 --seconds 5 --reap --name SSH --mask 255.255.255.255 --rsource",
     "-m recent ! --update --seconds 5 --reap --hitcount 3 --name SSH --mask 255.255.255.255 --rsource"),
    (4, "filter", "INPUT", "-m statistic --mode random ! --probability 0.3",
     "-m statistic --mode random ! --probability 0.29999999981"),
    (4, "filter", "INPUT", "-m statistic --mode nth ! --every 3 --packet 0",
     "-m statistic --mode nth ! --every 3 --packet 0"),
    (4, "filter", "INPUT", "-m length ! --length :100 -m quota --quota 0x10 -m cpu ! --cpu 1",
     "-m length ! --length 0:100 -m quota --quota 16 -m cpu ! --cpu 1"),
    (4, "filter", "INPUT", "-m tos --tos Minimize-Delay -m tos ! --tos 0/0x3 -m dscp ! --dscp 46",
     "-m tos --tos 0x10/0x3f -m tos ! --tos 0x00/0x03 -m dscp ! --dscp 0x2e"),
    (4, "filter", "INPUT", '-m string --string "GET /admin" --algo bm --from 40 --to 200 --icase',
     '-m string --string "GET /admin" --algo bm --from 40 --to 200 --icase'),
    (4, "filter", "INPUT", '-m string ! --hex-string "|00 01|ab|ff|" --algo kmp',
     '-m string ! --hex-string "|00016162ff|" --algo kmp'),
    (4, "filter", "INPUT", '-m u32 ! --u32 "6&0xFF=1 && 4&0x3FFF=0"', '-m u32 ! --u32 "0x6&0xff=0x1&&0x4&0x3fff=0x0"'),
    (4, "filter", "INPUT", "-m ttl ! --ttl-eq 64", "-m ttl ! --ttl-eq 64"),
    (4, "filter", "INPUT", "-p tcp -m ecn --ecn-tcp-cwr ! --ecn-tcp-ece --ecn-ip-ect 2",
     "-m ecn ! --ecn-tcp-ece --ecn-tcp-cwr --ecn-ip-ect 2"),
    (4, "filter", "INPUT", "-p tcp -m tcpmss ! --mss 1400:1500", "-m tcpmss ! --mss 1400:1500"),
    (4, "filter", "INPUT", "-p esp -m esp ! --espspi 0x10", "-m esp ! --espspi 16"),
    (4, "filter", "INPUT", "-p ah -m ah --ahspi 5:4", "-m ah --ahspi 5:4"),
    (4, "filter", "INPUT",
     "-m time --timestart 20:00 --timestop 6:00 --monthdays 31,1 --weekdays Wed,1 --datestart 2024-02-30"
     " --datestop 2024-12-31T23:59:59 --kerneltz --contiguous",
     "-m time --timestart 20:00:00 --timestop 06:00:00 --monthdays 1,31 --weekdays Mon,Wed"
     " --datestart 2024-03-01T00:00:00 --datestop 2024-12-31T23:59:59 --kerneltz --contiguous"),
    (6, "filter", "INPUT", "-m frag --fragmore --fragfirst --fragres ! --fraglen 8 --fragid :5",
     "-m frag --fragid 0:5 ! --fraglen 8 --fragres --fragfirst --fragmore"),
    (6, "filter", "INPUT", "-m ipv6header ! --header frag,hop --soft",
     "-m ipv6header ! --header hop-by-hop,ipv6-frag --soft"),
    (6, "filter", "INPUT", "-m hl --hl-lt 5 -m ah --ahspi 5 ! --ahlen 3 --ahres",
     "-m hl --hl-lt 5 -m ah --ahspi 5 ! --ahlen 3 --ahres"),
    (6, "filter", "INPUT", "-m conntrack --ctorigsrc 2001:DB8::1/ffff:ffff:: --ctreplsrc ::1",
     "-m conntrack --ctorigsrc 2001:db8::1/32 --ctreplsrc ::1"),
    (6, "filter", "INPUT", "-m iprange --src-range 2001:DB8::1-2001:db8::ff",
     "-m iprange --src-range 2001:db8::1-2001:db8::ff"),
]


def render(family: int, rule: str) -> str:
    """The matches of ``rule`` as iptables-save prints them, through the specs alone."""
    words = [w.text for w in split_words(rule)]
    protocol = words[words.index("-p") + 1] if "-p" in words else None
    ctx = ParseContext(family, protocol)
    modules: list[tuple[ExtensionSpec, dict[str, tuple[tuple[object, ...], bool]]]] = []
    i, invert = 0, False
    while i < len(words):
        word = words[i]
        if word == "!":
            invert, i = True, i + 1
            continue
        if word == "-p":
            i += 2
            continue
        if word == "-m":
            modules.append((SPECS[words[i + 1]], {}))
            i += 2
            continue
        spec, given = modules[-1]
        option = spec.option(word[2:].replace("-", "_"))
        assert option is not None, word
        arity = 0 if option.parse is None else 2 if option.name == "match_set" else 1
        values = option.parse(words[i + 1:i + 1 + arity], ctx) if option.parse else ()
        given[option.name] = (values, invert)
        i, invert = i + 1 + arity, False
    out: list[str] = []
    for spec, given in modules:
        out += ["-m", spec.name]
        for option in spec.options:
            if option.name in given:
                values, inv = given[option.name]
                out += (["!"] if inv else []) + ["--" + option.name.replace("_", "-")]
                out += option.fmt(values) if option.fmt else []
    return " ".join(out)


@pytest.mark.parametrize("family,table,chain,rule,saved", CANONICAL, ids=[c[3][:50] for c in CANONICAL])
def test_canonical_form(family: int, table: str, chain: str, rule: str, saved: str) -> None:
    assert render(family, rule) == saved


@pytest.mark.kernel
@pytest.mark.parametrize("family,table", sorted({(c[0], c[1]) for c in CANONICAL}))
def test_canonical_forms_are_what_iptables_save_prints(family: int, table: str) -> None:
    from oracle import kernel_available, restore_and_save

    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    cases = [c for c in CANONICAL if c[:2] == (family, table)]
    text = f"*{table}\n" + "".join(f"-A {chain} {rule}\n" for _, _, chain, rule, _ in cases) + "COMMIT\n"
    result, saved = restore_and_save(text, family)
    assert result.ok, result.message
    assert saved is not None
    for chain in {c[2] for c in cases}:
        lines = [line for line in saved.splitlines() if line.startswith(f"-A {chain} ")]
        expected = [c[4] for c in cases if c[2] == chain]
        assert len(lines) == len(expected)
        for line, match_text in zip(lines, expected, strict=True):
            assert line.endswith(" " + match_text), line
