"""The host model: inferred from each reference dump, read from a file, read live, and what it answers.

Inference on the reference dumps asserts the concrete facts the README of
``../shared/reference-dumps`` states (bridges, subnets, containers; for kube-proxy the pod CIDR
and local pods). The tests that need ``../shared`` skip when it is absent.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import itertools
import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

import natlint
from natlint.host import (
    READ_ONLY_COMMANDS,
    Endpoint,
    HostFileError,
    HostModel,
    IfAddress,
    Interface,
    Route,
    RouteDecision,
    dump_host_toml,
    infer,
    parse_host_toml,
    read_host_file,
    read_live,
    to_kernelcheck_topology,
)
from natlint.host import live as live_module
from natlint.host.model import cidr

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "reference-dumps"
CORPUS_README = SHARED / "corpus" / "README.md"
KERNELCHECK = SHARED / "tools" / "kernelcheck" / "kernelcheck.py"

needs_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"{REFERENCE} is absent")


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


def pfx(text: str) -> Any:
    net = ipaddress.ip_network(text)
    return cidr(net.version, int(net.network_address), net.prefixlen)


def addrs(host: HostModel, name: str) -> list[str]:
    iface = host.interface(name)
    assert iface is not None, f"no interface {name}: {host.interface_names()}"
    return [str(a) for a in iface.addresses]


def containers(host: HostModel) -> set[tuple[str, str]]:
    return {(str(ipaddress.ip_address(c.address)), c.bridge) for c in host.containers}


def load_reference(name: str) -> natlint.Ruleset:
    return natlint.load(REFERENCE / name)


# ---------------------------------------------------------------- inference on the reference dumps

DOCKER0_ONLY = {"docker0": ["172.17.0.1/16"]}
TWO_BRIDGES = {"docker0": ["172.17.0.1/16"], "br-3f2a9c1d7e45": ["172.18.0.1/16"]}
WEB_DB = {("172.17.0.2", "docker0"), ("172.17.0.3", "docker0")}
API_DNS = {("172.18.0.2", "br-3f2a9c1d7e45"), ("172.18.0.3", "br-3f2a9c1d7e45")}

DOCKER_EXPECTED: dict[str, tuple[dict[str, list[str]], set[tuple[str, str]]]] = {
    "docker-legacy-2containers.rules": (DOCKER0_ONLY, WEB_DB),
    "docker-28.0.0-2containers.rules": (DOCKER0_ONLY, WEB_DB),
    "docker-28-2containers.rules": (DOCKER0_ONLY, WEB_DB),
    "docker-28-noproxy-2containers.rules": (DOCKER0_ONLY, WEB_DB),
    "docker-29-2containers.rules": (DOCKER0_ONLY, WEB_DB),
    "docker-legacy-userdefined.rules": (TWO_BRIDGES, API_DNS),
    "docker-28-userdefined.rules": (TWO_BRIDGES, API_DNS),
}


@needs_reference
@pytest.mark.parametrize("name", sorted(DOCKER_EXPECTED))
def test_infer_docker_ipv4(name: str) -> None:
    bridges, expected_containers = DOCKER_EXPECTED[name]
    host = infer(load_reference(name))
    assert host.family == 4 and host.source == "inferred"
    assert {b.name for b in host.bridges()} == set(bridges)
    for bridge, addresses in bridges.items():
        assert addrs(host, bridge) == addresses
    assert containers(host) == expected_containers
    assert [c.name for c in host.containers] == ["c1", "c2"]
    assert addrs(host, "lo") == ["127.0.0.1/8"]
    # no rule names the uplink: eth0 with a placeholder, said so
    ext = host.external
    assert ext is not None and ext.name == "eth0" and [str(a) for a in ext.addresses] == ["198.51.100.1/24"]
    assert host.routes == (Route(pfx("0.0.0.0/0"), "eth0", ip("198.51.100.254")),)
    assert host.br_netfilter is True
    assert any("eth0 is assumed external" in n for n in host.inferred)
    assert any("placeholder" in n for n in host.inferred)
    # every fact taken from a rule names its line
    masq = [n for n in host.inferred if "is masqueraded" in n]
    assert masq and all("line " in n and "MASQUERADE" in n for n in masq)
    assert all("line " in n for n in host.inferred if n.startswith("container "))


@needs_reference
def test_infer_docker_ipv6() -> None:
    host = infer(load_reference("docker-28-userdefined-ipv6.ip6tables.rules"))
    assert host.family == 6
    assert addrs(host, "lo") == ["::1/128"]
    assert addrs(host, "br-3f2a9c1d7e45") == ["fd00:dead:beef::1/64"]
    assert host.interface("docker0") is None  # the IPv6 side has only the user network
    assert containers(host) == {("fd00:dead:beef::2", "br-3f2a9c1d7e45")}
    assert addrs(host, "eth0") == ["2001:db8::1/64"]
    assert host.route(ip("fd00:dead:beef::2")) == RouteDecision("forward", "br-3f2a9c1d7e45")
    assert host.route(ip("2001:db8:ffff::1")).oif == "eth0"


@needs_reference
def test_infer_kube_proxy() -> None:
    host = infer(load_reference("kube-proxy-small.rules"))
    # flannel: this node's pod CIDR 10.244.1.0/24 on cni0, the cluster CIDR through flannel.1
    assert addrs(host, "cni0") == ["10.244.1.1/24"]
    assert host.interface("cni0").bridge  # type: ignore[union-attr]
    assert addrs(host, "flannel.1") == ["10.244.1.0/32"]
    assert Route(pfx("10.244.0.0/16"), "flannel.1") in host.routes
    # local pods (DNAT targets inside the pod CIDR); remote ones are routed
    assert containers(host) == {("10.244.1.14", "cni0"), ("10.244.1.15", "cni0"), ("10.244.1.20", "cni0")}
    assert host.route(ip("10.244.2.10")) == RouteDecision("forward", "flannel.1")
    assert host.route(ip("10.244.1.15")) == RouteDecision("forward", "cni0")
    assert any("cluster CIDR 10.244.0.0/16" in n and "line " in n for n in host.inferred)
    # The node IP (192.168.10.21) is not in this dump: node ports use --dst-type LOCAL. The
    # placeholder avoids the ranges the rules name (LB source range 198.51.100.0/24, LB IP
    # 203.0.113.50).
    assert any("node IP is not in the rules" in n for n in host.inferred)
    assert addrs(host, "eth0") == ["192.0.2.1/24"]
    assert host.br_netfilter is True


@needs_reference
def test_infer_kube_proxy_node_ip_from_nodeport_addresses() -> None:
    # --nodeport-addresses: the tail rule of KUBE-SERVICES names the node IP
    text = (REFERENCE / "kube-proxy-small.rules").read_text()
    tail = '-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS'
    assert tail in text
    text = text.replace(tail, "-d 192.168.10.21/32 -j KUBE-NODEPORTS")
    host = infer(natlint.load(text, path="nodeport-addresses.rules"))
    assert addrs(host, "eth0") == ["192.168.10.21/24"]
    assert pfx("192.168.10.21/32") in host.addresses_of_type("LOCAL")
    assert host.route(ip("192.168.10.21")) == RouteDecision("local", "lo")
    assert host.primary_address("eth0") == ip("192.168.10.21")
    assert any("node IP" in n and "192.168.10.21" in n and "line " in n for n in host.inferred)
    assert not any("node IP is not in the rules" in n for n in host.inferred)


def test_infer_masquerade_out_interface_and_published_host_ip() -> None:
    rules = """*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A POSTROUTING -s 192.168.1.0/24 -o ppp0 -j MASQUERADE
-A DOCKER -d 203.0.113.7/32 ! -i docker0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 172.17.0.9:80
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
-A FORWARD -i eth1 -s 192.168.1.0/24 -j ACCEPT
-A INPUT -i vif+ -j ACCEPT
COMMIT
"""
    host = infer(natlint.load(rules, path="router.rules"))
    ext = host.external
    assert ext is not None and ext.name == "ppp0"
    assert addrs(host, "ppp0") == ["203.0.113.7/24"]  # the published host IP (its /24 a guess)
    assert addrs(host, "eth1") == ["192.168.1.1/24"]
    assert addrs(host, "docker0") == ["172.17.0.1/16"]
    assert containers(host) == {("172.17.0.9", "docker0")}
    assert host.routes == (Route(pfx("0.0.0.0/0"), "ppp0", ip("203.0.113.254")),)
    assert any("vif+" in n for n in host.inferred)
    assert "vif+" not in host.interface_names()


def test_infer_without_rules() -> None:
    host = infer(natlint.load("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"))
    assert host.interface_names() == ("lo", "eth0")
    assert host.external is not None and host.external.name == "eth0"
    assert any("eth0 is assumed external" in n for n in host.inferred)


def _corpus() -> list[Any]:
    if not CORPUS_README.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{CORPUS_README} is absent"), id="no-corpus")]
    from oracle import parse_corpus_table

    return [pytest.param(e, id=e.name) for e in parse_corpus_table(CORPUS_README)]


@pytest.mark.parametrize("entry", _corpus())
def test_infer_never_fails_on_the_corpus(entry: Any) -> None:
    ruleset = natlint.load(entry.path, family=entry.family)
    host = infer(ruleset)
    assert not any("inference failed" in n for n in host.inferred), host.inferred
    assert host.interface("lo") is not None and host.external is not None
    assert host.external.addresses
    _assert_partition(host)
    assert parse_host_toml(dump_host_toml(host), host.family) == _as_read(host)


# ---------------------------------------------------------------- the host file


def _as_read(host: HostModel, path: str = "<host file>") -> HostModel:
    return HostModel(host.family, host.interfaces, host.routes, host.br_netfilter, host.containers,
                     (f"read from {path}",), "file", host.ip_forward)


@needs_reference
@pytest.mark.parametrize("name", sorted(p.name for p in REFERENCE.glob("*.rules")) if REFERENCE.is_dir() else [])
def test_toml_round_trip_reference(name: str, tmp_path: Path) -> None:
    host = infer(load_reference(name))
    path = tmp_path / "host.toml"
    path.write_text(dump_host_toml(host))
    assert read_host_file(path, host.family) == _as_read(host, str(path))


def test_toml_example_from_the_issue() -> None:
    text = """
[[interface]]
name = "eth0"
addresses = ["198.51.100.1/24"]
[[interface]]
name = "docker0"
addresses = ["172.17.0.1/16"]
bridge = true
[[route]]
dst = "0.0.0.0/0"
dev = "eth0"
via = "198.51.100.254"
"""
    host = parse_host_toml(text, 4)
    assert host.source == "file" and host.br_netfilter is True
    assert host.interface("docker0") == Interface("docker0", (IfAddress.parse("172.17.0.1/16"),), bridge=True)
    assert host.routes == (Route(pfx("0.0.0.0/0"), "eth0", ip("198.51.100.254")),)
    assert host.route(ip("8.8.8.8")) == RouteDecision("forward", "eth0", ip("198.51.100.254"))


def test_toml_both_families_and_options() -> None:
    text = """
br_netfilter = false
ip_forward = false
[[interface]]
name = "eth0"
addresses = ["198.51.100.1/24", "2001:db8::1/64"]
external = true
[[interface]]
name = "br0"
addresses = ["10.0.0.1/24", "fd00::1/64"]
bridge = true
ports = ["veth0", "veth1"]
[[route]]
dst = "default"
via = "198.51.100.254"
[[route]]
dst = "default"
via = "2001:db8::fffe"
[[route]]
dst = "192.0.2.0/24"
kind = "blackhole"
[[container]]
name = "web"
address = "10.0.0.5"
bridge = "br0"
[[container]]
name = "web"
address = "fd00::5"
bridge = "br0"
"""
    v4 = parse_host_toml(text, 4)
    v6 = parse_host_toml(text, 6)
    assert v4.br_netfilter is False and v4.ip_forward is False
    assert addrs(v4, "eth0") == ["198.51.100.1/24"] and addrs(v6, "eth0") == ["2001:db8::1/64"]
    assert v4.interface("br0").ports == ("veth0", "veth1")  # type: ignore[union-attr]
    assert v4.containers == (Endpoint(ip("10.0.0.5"), "br0", "web"),)
    assert v6.containers == (Endpoint(ip("fd00::5"), "br0", "web"),)
    assert len(v4.routes) == 2 and len(v6.routes) == 1
    # dev-less route: resolved through the connected subnet of the gateway
    assert v4.route(ip("8.8.8.8")) == RouteDecision("forward", "eth0", ip("198.51.100.254"))
    assert v4.route(ip("192.0.2.9")).kind == "unreachable"
    assert v6.route(ip("2001:4860::8888")) == RouteDecision("forward", "eth0", ip("2001:db8::fffe"))
    assert parse_host_toml(dump_host_toml(v4), 4) == _as_read(v4)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[interface]\n", "not valid TOML"),
        ('colour = "red"\n', "unknown key 'colour'"),
        ('[[interface]]\nname = "eth0"\nadresses = ["10.0.0.1/24"]\n', "[[interface]] #1: unknown key 'adresses'"),
        ('[[interface]]\nname = "eth0"\naddresses = ["10.0.0.300/24"]\n', "[[interface]] #1 'eth0', addresses #1"),
        ('[[interface]]\nname = "eth0"\naddresses = "10.0.0.1/24"\n', "key 'addresses': must be a list"),
        ('[[interface]]\nname = "eth0"\nbridge = "yes"\n', "key 'bridge': must be true or false"),
        ('[[interface]]\nname = "a-very-long-interface-name"\n', "key 'name': interface name"),
        ('[[interface]]\nname = "eth+"\n', "is a pattern"),
        ('[[interface]]\nname = "eth0"\n[[interface]]\nname = "eth0"\n', "described twice"),
        ('[[interface]]\naddresses = []\n', "the key 'name' is missing"),
        ('[[route]]\ndst = "0.0.0.0/0"\ndev = "eth9"\n', "[[route]] #1, key 'dev': no [[interface]] is named 'eth9'"),
        ('[[route]]\ndst = "10.0.0.0/33"\nvia = "10.0.0.1"\n', "[[route]] #1, key 'dst'"),
        ('[[route]]\ndst = "10.0.0.0/8"\n', "needs 'dev', 'via'"),
        ('[[route]]\ndst = "10.0.0.0/8"\nvia = "fd00::1"\n', "not of the same address family"),
        ('[[route]]\ndst = "10.0.0.0/8"\nvia = "10.0.0.1"\nkind = "nat"\n', "key 'kind'"),
        ('[[container]]\nname = "c"\naddress = "10.0.0.2"\nbridge = "docker0"\n', "no [[interface]] is named"),
        ('[[container]]\nname = "c"\naddress = "nope"\nbridge = "docker0"\n', "key 'address': 'nope' is not an IP"),
        ("interface = 3\n", "interface: write each one as a [[interface]] table"),
    ],
)
def test_toml_errors_name_file_and_key(text: str, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "bad-host.toml"
    path.write_text(text)
    with pytest.raises(HostFileError) as info:
        read_host_file(path, 4)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message
    assert isinstance(info.value, ValueError)


def test_toml_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HostFileError, match="cannot read"):
        read_host_file(tmp_path / "absent.toml")


def test_toml_quotes_strings() -> None:
    host = HostModel(4, (Interface("lo", (IfAddress.parse("127.0.0.1/8"),)),), inferred=('a "quoted"\\ note\x7f',))
    text = dump_host_toml(host, title='say "hi"\nthere')
    assert parse_host_toml(text, 4) == _as_read(host)


# ---------------------------------------------------------------- routing decisions


def docker_host(*, default_route: bool = True, br_netfilter: bool = True) -> HostModel:
    routes = (Route(pfx("0.0.0.0/0"), "eth0", ip("198.51.100.254")),) if default_route else ()
    return HostModel(
        family=4,
        interfaces=(
            Interface("lo", (IfAddress.parse("127.0.0.1/8"),)),
            Interface("eth0", (IfAddress.parse("198.51.100.1/24"), IfAddress.parse("198.51.100.9/24")), external=True),
            Interface("docker0", (IfAddress.parse("172.17.0.1/16"),), bridge=True),
            Interface("wg0", ()),
        ),
        routes=routes + (
            Route(pfx("10.99.0.0/16"), "", ip("198.51.100.77")),
            Route(pfx("10.99.5.0/24"), "", None, "blackhole"),
        ),
        br_netfilter=br_netfilter,
        containers=(Endpoint(ip("172.17.0.2"), "docker0", "web"),),
        source="file",
    )


def test_route_decisions() -> None:
    host = docker_host()
    local = RouteDecision("local", "lo")
    assert host.route(ip("127.0.0.1")) == local
    assert host.route(ip("127.8.9.10")) == local  # the whole loopback subnet is local
    assert host.route(ip("198.51.100.1")) == local
    assert host.route(ip("198.51.100.9")) == local
    assert host.route(ip("172.17.0.1")) == local  # the bridge's own address
    assert host.route(ip("172.17.0.2")) == RouteDecision("forward", "docker0")  # connected bridge
    assert host.route(ip("198.51.100.50")) == RouteDecision("forward", "eth0")  # connected, no gateway
    assert host.route(ip("8.8.8.8")) == RouteDecision("forward", "eth0", ip("198.51.100.254"))  # default route
    assert host.route(ip("10.99.1.1")) == RouteDecision("forward", "eth0", ip("198.51.100.77"))  # dev from via
    assert host.route(ip("10.99.5.1")) == RouteDecision("unreachable")  # blackhole, longer than /16
    assert host.route(ip("172.17.255.255")) == RouteDecision("local", "docker0")  # directed broadcast
    assert host.route(ip("255.255.255.255")) == RouteDecision("local")
    assert host.route(ip("239.1.2.3")) == RouteDecision("local")
    assert host.route(ip("0.0.0.1")) == RouteDecision("unreachable")  # martian


def test_route_without_default_is_unreachable() -> None:
    host = docker_host(default_route=False)
    assert host.route(ip("8.8.8.8")) == RouteDecision("unreachable")
    assert host.route(ip("172.17.3.4")) == RouteDecision("forward", "docker0")
    unreachable = [p for ps, d in host.route_partition() if d.kind == "unreachable" for p in ps]
    assert pfx("32.0.0.0/3") in unreachable
    assert any(p.contains(ip("0.0.0.1")) for p in unreachable)


def _assert_partition(host: HostModel, samples: int = 300) -> None:
    """The partition covers the space exactly once and agrees with route() everywhere."""
    bits = 32 if host.family == 4 else 128
    spans = []
    for prefixes, decision in host.route_partition():
        for p in prefixes:
            size = 1 << (bits - (p.prefix_length or 0))
            spans.append((p.address, p.address + size - 1, decision))
    spans.sort(key=lambda s: s[0])
    assert spans[0][0] == 0 and spans[-1][1] == (1 << bits) - 1
    for (_, hi, _), (lo, _, _) in itertools.pairwise(spans):
        assert lo == hi + 1
    decisions = [d for _, d in host.route_partition()]
    assert len(decisions) == len(set(decisions))
    rng = random.Random(7)
    probes = [rng.randrange(1 << bits) for _ in range(samples)]
    probes += [a.address for i in host.interfaces for a in i.addresses]
    probes += [a.prefix.address for i in host.interfaces for a in i.addresses]
    probes += [r.dst.address for r in host.routes]
    for address in probes:
        span = next(s for s in spans if s[0] <= address <= s[1])
        assert span[2] == host.route(address), ipaddress.ip_address(address) if bits == 32 else hex(address)


def test_route_partition_matches_route() -> None:
    _assert_partition(docker_host())
    _assert_partition(docker_host(default_route=False))
    host = docker_host()
    groups = dict((d, ps) for ps, d in host.route_partition())
    assert groups[RouteDecision("forward", "docker0")][0] == pfx("172.17.0.0/32")
    assert pfx("127.0.0.0/8") in groups[RouteDecision("local", "lo")]


@needs_reference
def test_route_partition_ipv6() -> None:
    _assert_partition(infer(load_reference("docker-28-userdefined-ipv6.ip6tables.rules")))


# ---------------------------------------------------------------- addrtype


def test_address_types_ipv4() -> None:
    host = docker_host()
    local = host.addresses_of_type("LOCAL")
    assert pfx("198.51.100.1/32") in local and pfx("198.51.100.9/32") in local and pfx("172.17.0.1/32") in local
    assert pfx("127.0.0.0/9") in local
    assert all(not p.contains(ip("127.255.255.255")) for p in local)  # the loopback broadcast is BROADCAST
    assert [str(p) for p in host.addresses_of_type("BROADCAST")] == [
        "0.0.0.0/8", "127.255.255.255/32", "172.17.255.255/32", "198.51.100.255/32", "255.255.255.255/32",
    ]
    assert host.addresses_of_type("MULTICAST") == [pfx("224.0.0.0/4")]
    unicast = host.addresses_of_type("UNICAST")
    assert pfx("8.0.0.0/5") in unicast and any(p.contains(ip("172.17.0.2")) for p in unicast)
    assert not any(p.contains(ip("172.17.0.1")) for p in unicast)
    for other in ("UNSPEC", "ANYCAST", "BLACKHOLE", "UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE"):
        assert host.addresses_of_type(other) == []
    # the four types cut the space in disjoint pieces
    total = sum(1 << (32 - (p.prefix_length or 0))
                for t in ("LOCAL", "BROADCAST", "MULTICAST", "UNICAST") for p in host.addresses_of_type(t))
    assert total == 1 << 32
    assert host.addresses_of_types(["LOCAL", "MULTICAST"]) == sorted(
        host.addresses_of_type("LOCAL") + [pfx("224.0.0.0/4")], key=lambda p: p.address
    )
    assert [str(p) for p in host.local_addresses()] == [
        "127.0.0.0/8", "172.17.0.1/32", "198.51.100.1/32", "198.51.100.9/32",
    ]


def test_address_types_ipv6() -> None:
    host = HostModel(
        family=6,
        interfaces=(
            Interface("lo", (IfAddress.parse("::1/128"),)),
            Interface("eth0", (IfAddress.parse("2001:db8::1/64"),), external=True),
        ),
        routes=(),
    )
    assert host.addresses_of_type("LOCAL") == [pfx("::1/128"), pfx("2001:db8::1/128")]
    assert host.addresses_of_type("MULTICAST") == [pfx("ff00::/8")]
    assert host.addresses_of_type("UNSPEC") == [pfx("::/128")]
    assert host.addresses_of_type("ANYCAST") == [pfx("2001:db8::/128")]  # subnet-router anycast
    assert host.addresses_of_type("BROADCAST") == []  # ip6tables refuses it
    unicast = host.addresses_of_type("UNICAST")
    # match_type6: UNICAST is every address but ::, ff00::/8 and ::ffff:0:0/96, local ones included
    assert any(p.contains(1) for p in unicast) and any(p.contains(ip("2001:db8::1")) for p in unicast)
    assert not any(p.contains(0) or p.contains(ip("ff02::1")) or p.contains(ip("::ffff:10.0.0.1")) for p in unicast)
    # a type list is not a union in IPv6: UNICAST and LOCAL together mean "unicast and local"
    assert host.addresses_of_types(["UNICAST", "LOCAL"]) == host.addresses_of_type("LOCAL")
    assert host.addresses_of_types(["MULTICAST", "LOCAL"]) == []
    # no default route: what is neither connected nor local is UNREACHABLE
    unreachable = host.addresses_of_type("UNREACHABLE")
    assert any(p.contains(ip("2001:4860::8888")) for p in unreachable)
    assert not any(p.contains(ip("2001:db8::5")) or p.contains(1) for p in unreachable)


# ---------------------------------------------------------------- interfaces and bridges


def test_interfaces_primary_address_and_bridges() -> None:
    host = docker_host()
    assert host.interface_names() == ("lo", "eth0", "docker0", "wg0")
    assert host.interface("nope") is None
    assert host.primary_address("eth0") == ip("198.51.100.1")
    assert host.primary_address("wg0") is None  # MASQUERADE out of wg0 would drop
    assert host.primary_address("missing") is None
    assert host.bridge_of(ip("172.17.0.2")) == "docker0"
    assert host.bridge_of(ip("172.17.9.9")) == "docker0"
    assert host.bridge_of(ip("198.51.100.2")) is None
    # container to container on one bridge is bridged (FORWARD -i docker0 -o docker0 with br_netfilter)
    assert host.bridged(ip("172.17.0.2"), ip("172.17.0.3")) == "docker0"
    assert host.bridged(ip("172.17.0.2"), ip("172.17.0.1")) is None  # to the host: routed
    assert host.bridged(ip("172.17.0.2"), ip("8.8.8.8")) is None
    assert docker_host(br_netfilter=False).br_netfilter is False


def test_model_validation() -> None:
    with pytest.raises(ValueError, match="not an IPv6 address"):
        HostModel(6, (Interface("eth0", (IfAddress.parse("10.0.0.1/24"),)),))
    with pytest.raises(ValueError, match="repeat"):
        HostModel(4, (Interface("eth0"), Interface("eth0")))
    with pytest.raises(ValueError, match="not an interface address"):
        IfAddress.parse("10.0.0.1/40")


# ---------------------------------------------------------------- live (read-only)

_LINKS: list[dict[str, Any]] = [
    {"ifname": "lo", "link_type": "loopback"},
    {"ifname": "eth0", "link_type": "ether"},
    {"ifname": "docker0", "linkinfo": {"info_kind": "bridge"}},
    {"ifname": "veth1a2b", "master": "docker0", "linkinfo": {"info_kind": "veth", "info_slave_kind": "bridge"}},
    {"ifname": "wg0", "linkinfo": {"info_kind": "wireguard"}},
]
_ADDRS_V4: list[dict[str, Any]] = [
    {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
    {"ifname": "eth0", "addr_info": [{"family": "inet", "local": "192.0.2.2", "prefixlen": 24}]},
    {"ifname": "docker0", "addr_info": [{"family": "inet", "local": "172.17.0.1", "prefixlen": 16}]},
    {"ifname": "wg0", "addr_info": [{"family": "inet", "local": "10.8.0.1", "address": "10.8.0.2", "prefixlen": 32}]},
]
_ROUTES_V4: list[dict[str, Any]] = [
    {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0", "flags": []},
    {"dst": "192.0.2.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link", "prefsrc": "192.0.2.2"},
    {"dst": "10.50.0.0/16", "nexthops": [{"gateway": "192.0.2.3", "dev": "eth0"},
                                         {"gateway": "192.0.2.4", "dev": "eth0"}]},
    {"dst": "10.66.0.0/16", "type": "blackhole", "flags": []},
    {"dst": "224.0.0.0/4", "type": "multicast", "dev": "eth0"},
]


class _FakeIp:
    """Stands in for subprocess.run: records every command, answers like iproute2."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(tuple(argv))
        answers: dict[tuple[str, ...], list[dict[str, Any]]] = {
            ("ip", "-j", "-d", "link", "show"): _LINKS,
            ("ip", "-j", "-4", "addr", "show"): _ADDRS_V4,
            ("ip", "-j", "-4", "route", "show"): _ROUTES_V4,
            ("ip", "-j", "-6", "addr", "show"): [],
            ("ip", "-j", "-6", "route", "show"): [],
        }
        assert "timeout" in kwargs and kwargs.get("shell") is not True
        return subprocess.CompletedProcess(argv, 0, json.dumps(answers.get(tuple(argv), [])), "")


def test_live_runs_only_read_only_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeIp()
    monkeypatch.setattr(subprocess, "run", fake)
    monkeypatch.setattr(live_module, "_read_sysctl", lambda relative: "1")
    host = read_live(4)
    read_live(6)
    assert fake.calls, "read_live ran nothing"
    for call in fake.calls:
        assert call in READ_ONLY_COMMANDS, f"natlint ran {' '.join(call)}: not a listed read-only command"
    assert host.source == "live" and host.br_netfilter is True and host.ip_forward is True
    assert host.interface_names() == ("lo", "eth0", "docker0", "veth1a2b", "wg0")
    assert host.interface("docker0") == Interface("docker0", (IfAddress.parse("172.17.0.1/16"),), bridge=True,
                                                  ports=("veth1a2b",))
    assert host.external is not None and host.external.name == "eth0"
    assert addrs(host, "wg0") == ["10.8.0.1/32"] and host.route(ip("10.8.0.2")) == RouteDecision("forward", "wg0")
    assert host.routes == (
        Route(pfx("0.0.0.0/0"), "eth0", ip("192.0.2.1")),
        Route(pfx("10.50.0.0/16"), "eth0", ip("192.0.2.3")),
        Route(pfx("10.66.0.0/16"), "", None, "blackhole"),
    )
    assert host.route(ip("10.66.1.1")).kind == "unreachable"


def test_live_refuses_other_commands() -> None:
    with pytest.raises(live_module.LiveHostError, match="refusing"):
        live_module._run(("ip", "link", "set", "eth0", "down"))


def test_live_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    real_run = subprocess.run
    calls: list[tuple[str, ...]] = []

    def recording_run(argv: list[str], **kwargs: Any) -> Any:
        calls.append(tuple(argv))
        assert tuple(argv) in READ_ONLY_COMMANDS
        return real_run(argv, **kwargs)

    monkeypatch.setattr(subprocess, "run", recording_run)
    try:
        host = read_live(4)
    except live_module.LiveHostError as exc:
        pytest.skip(f"cannot read this machine: {exc}")
    assert calls and all(c in READ_ONLY_COMMANDS for c in calls)
    assert "lo" in host.interface_names()
    assert host.route(ip("127.0.0.1")).kind == "local"


# ---------------------------------------------------------------- kernelcheck topology


def _kernelcheck() -> Any:
    spec = importlib.util.spec_from_file_location("kernelcheck_for_tests", KERNELCHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_reference
def test_kernelcheck_topology_of_a_docker_host() -> None:
    host = infer(load_reference("docker-legacy-userdefined.rules"))
    topo = to_kernelcheck_topology(host)
    assert topo["host"] == {
        "ext_if": "eth0", "ext_addr": "198.51.100.1/24", "gw": None, "extra_addrs": [], "routes": [],
        "sysctls": {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "0",
                    "net.ipv4.conf.default.rp_filter": "0", "net.bridge.bridge-nf-call-iptables": "1",
                    "net.ipv4.icmp_ratelimit": "0"},
    }
    # the same peers as kernelcheck's default topology
    assert topo["outside"] == {"addr": "198.51.100.2/24", "gw": "198.51.100.1", "routes": []}
    assert topo["internet"] == {"addr": "198.51.100.3/24", "gw": None, "routes": []}
    assert topo["bridges"] == [
        {"name": "br-3f2a9c1d7e45", "addr": "172.18.0.1/16", "mcast_snooping": 0,
         "containers": [{"name": "c1", "addr": "172.18.0.2"}, {"name": "c2", "addr": "172.18.0.3"}]},
        {"name": "docker0", "addr": "172.17.0.1/16", "mcast_snooping": 0, "containers": []},
    ]
    json.dumps(topo)
    if KERNELCHECK.is_file():
        normalized = _kernelcheck().normalize_topology(topo)  # kernelcheck's own validation
        assert set(normalized["_containers"]) == {"c1", "c2"}


def test_kernelcheck_topology_approximations() -> None:
    host = docker_host(br_netfilter=False)
    host = HostModel(4, host.interfaces + (Interface("eth1", (IfAddress.parse("10.1.0.1/24"),)),), host.routes,
                     False, (Endpoint(ip("172.17.0.2"), "docker0", "outside"),), source="file")
    topo: Any = to_kernelcheck_topology(host)
    assert topo["host"]["sysctls"]["net.bridge.bridge-nf-call-iptables"] == "0"
    assert topo["host"]["extra_addrs"] == [{"dev": "eth0", "addr": "198.51.100.9/24"},
                                           {"dev": "eth0", "addr": "10.1.0.1/32"}]
    assert topo["host"]["routes"] == [{"to": "10.99.0.0/16", "via": "198.51.100.77"}]
    assert topo["bridges"][0]["containers"] == [{"name": "c-outside", "addr": "172.17.0.2"}]  # reserved name
    assert topo["outside"]["addr"] == "198.51.100.2/24" and topo["internet"]["addr"] == "198.51.100.3/24"
    assert any("eth1" in n for n in topo["notes"]) and any("blackhole" in n for n in topo["notes"])
    if KERNELCHECK.is_file():
        _kernelcheck().normalize_topology(topo)
    with pytest.raises(ValueError, match="external interface"):
        to_kernelcheck_topology(HostModel(6))
    with pytest.raises(ValueError, match="external"):
        to_kernelcheck_topology(HostModel(4))


# ---------------------------------------------------------------- route_localnet and hairpin mode

_NOPROXY = "*nat\n" + "".join(f":{c} ACCEPT [0:0]\n" for c in ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")) + """\
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -o docker0 -m addrtype --src-type LOCAL -j MASQUERADE
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
COMMIT
"""


def _rules(text: str) -> natlint.Ruleset:
    from natlint.syntax.reader import read

    return read(text.encode(), "<test>", 4)


def test_infer_docker_without_userland_proxy_sets_localnet_and_hairpin() -> None:
    host = infer(_rules(_NOPROXY))
    docker0 = host.interface("docker0")
    assert docker0 is not None and docker0.route_localnet and docker0.hairpin
    assert host.external is not None and not host.external.route_localnet and not host.external.hairpin
    assert host.localnet("docker0") and host.localnet("lo") and not host.localnet("eth0")
    notes = [n for n in host.inferred if "route_localnet" in n or "hairpin" in n]
    assert len(notes) == 2 and all("line 9: -A POSTROUTING -o docker0 -m addrtype --src-type LOCAL" in n for n in notes)
    proxy_on = infer(_rules(_NOPROXY.replace("-A POSTROUTING -o docker0 -m addrtype --src-type LOCAL"
                                                    " -j MASQUERADE\n", "")))
    assert not any(i.route_localnet or i.hairpin for i in proxy_on.interfaces)


@needs_reference
def test_infer_kube_proxy_sets_route_localnet_everywhere() -> None:
    host = infer(load_reference("kube-proxy-small.rules"))
    assert all(i.route_localnet for i in host.interfaces if i.name != "lo")
    assert all(i.hairpin for i in host.bridges())
    note = next(n for n in host.inferred if "route_localnet is on for every interface" in n)
    assert "KUBE-FIREWALL" in note and "conf.all.route_localnet=1" in note


def test_toml_route_localnet_and_hairpin() -> None:
    text = """
[[interface]]
name = "eth0"
addresses = ["198.51.100.1/24"]
external = true
route_localnet = true

[[interface]]
name = "docker0"
addresses = ["172.17.0.1/16"]
bridge = true
hairpin = true
"""
    host = parse_host_toml(text, 4)
    assert host.interface("eth0") == Interface("eth0", (IfAddress.parse("198.51.100.1/24"),), external=True,
                                               route_localnet=True)
    docker0 = host.interface("docker0")
    assert docker0 is not None and docker0.hairpin and not docker0.route_localnet
    out = dump_host_toml(host)
    assert "route_localnet = true" in out and "hairpin = true" in out and "route_localnet = false" in out
    assert parse_host_toml(out, 4) == _as_read(host)
    assert "eth0: 198.51.100.1/24 [external, route_localnet]" in host.describe()
    with pytest.raises(HostFileError, match="hairpin mode is a bridge's setting"):
        parse_host_toml('[[interface]]\nname = "eth0"\nhairpin = true\n', 4)
    with pytest.raises(HostFileError, match=r"route_localnet.*must be true or false"):
        parse_host_toml('[[interface]]\nname = "eth0"\nroute_localnet = 1\n', 4)


def test_cli_host_prints_the_new_keys(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from natlint.cli import main

    rules = tmp_path / "rules.v4"
    rules.write_text(_NOPROXY)
    result = CliRunner().invoke(main, ["host", str(rules)])
    assert result.exit_code == 0, result.output
    assert "hairpin = true" in result.output and "route_localnet = true" in result.output


def test_live_reads_route_localnet_and_hairpin(monkeypatch: pytest.MonkeyPatch) -> None:
    links = [
        {"ifname": "lo"},
        {"ifname": "eth0"},
        {"ifname": "docker0", "linkinfo": {"info_kind": "bridge"}},
        {"ifname": "veth1", "master": "docker0",
         "linkinfo": {"info_kind": "veth", "info_slave_kind": "bridge", "info_slave_data": {"hairpin": True}}},
        {"ifname": "br1", "linkinfo": {"info_kind": "bridge"}},
        {"ifname": "veth2", "master": "br1",
         "linkinfo": {"info_kind": "veth", "info_slave_kind": "bridge", "info_slave_data": {"hairpin": False}}},
    ]

    def fake(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        answer = links if tuple(argv) == ("ip", "-j", "-d", "link", "show") else []
        return subprocess.CompletedProcess(argv, 0, json.dumps(answer), "")

    read: list[str] = []

    def localnet(name: str) -> bool:
        read.append(name)
        return name == "docker0"

    monkeypatch.setattr(subprocess, "run", fake)
    monkeypatch.setattr(live_module, "_read_sysctl", lambda relative: "1")
    monkeypatch.setattr(live_module, "_read_route_localnet", localnet)
    host = read_live(4)
    assert [i.name for i in host.interfaces if i.route_localnet] == ["docker0"]
    assert [i.name for i in host.interfaces if i.hairpin] == ["docker0"]
    assert "all" in read and "lo" not in read
    monkeypatch.setattr(live_module, "_read_route_localnet", lambda name: name == "all")
    everywhere = read_live(4)
    assert all(i.route_localnet for i in everywhere.interfaces if i.name != "lo")
    assert not any(i.route_localnet for i in read_live(6).interfaces)


def test_kernelcheck_topology_carries_localnet_and_hairpin() -> None:
    host = infer(_rules(_NOPROXY))
    topo = to_kernelcheck_topology(host)
    host_part: Any = topo["host"]
    assert host_part["interface_sysctls"] == {"net/ipv4/conf/docker0/route_localnet": "1"}
    bridges: Any = topo["bridges"]
    assert [b.get("hairpin") for b in bridges] == [True]
