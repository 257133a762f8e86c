"""NL305-NL308 (natlint.checks.exposure): published ports, what they expose and break."""

from __future__ import annotations

from pathlib import Path

import pytest

import natlint
from natlint import synth
from natlint.checks import exposure
from natlint.checks.context import CheckContext
from natlint.findings import CODES, Finding
from natlint.syntax.reader import read

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lint" / "nl3xx"
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference-dumps"


def _check(text: str, path: str = "t.rules") -> list[Finding]:
    return list(exposure.check(CheckContext(read(text.encode(), path, None))))


def _fixture(name: str) -> list[Finding]:
    return list(exposure.check(CheckContext(natlint.load(FIXTURES / name))))


LEGACY = """*filter
:INPUT {policy} [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
{input}-A FORWARD -j DOCKER-USER
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
{user}-A DOCKER-USER -j RETURN
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
-A DOCKER {dnat_dst}! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
COMMIT
"""


def _legacy(policy: str = "ACCEPT", input: str = "", user: str = "", dnat_dst: str = "") -> str:
    return LEGACY.format(policy=policy, input=input, user=user, dnat_dst=dnat_dst)


def _line(text: str, marker: str) -> int:
    [n] = [i for i, line in enumerate(text.splitlines(), 1) if marker in line]
    return n


def test_codes_are_documented() -> None:
    for code in ("NL305", "NL306", "NL307", "NL308"):
        entry = CODES[code]
        assert entry.summary and entry.why and entry.example and entry.fixed


def test_nl306_input_policy_drop() -> None:
    text = _legacy("DROP")
    found = _check(text)
    assert [(f.code, f.line) for f in found] == [("NL306", _line(text, "-j DNAT"))]
    f = found[0]
    assert f.severity == "warning" and f.certainty == "exact"
    assert f.witness is not None and f.witness["dport"] == 8080 and f.witness["in_interface"] == "eth0"
    assert f.witness["after_nat"] == {"src": f.witness["src"], "dst": "172.17.0.2", "sport": f.witness["sport"],
                                      "dport": 80, "out_interface": "docker0"}
    assert "--ctorigdstport 8080" in f.message and "127.0.0.1" in f.message
    assert any("policy" in r.message for r in f.related)


def test_nl306_not_when_input_accepts_the_port() -> None:
    assert _check(_legacy("DROP", input="-A INPUT -p tcp -m tcp --dport 8080 -j ACCEPT\n")) == []
    assert _check(_legacy("ACCEPT")) == []


def test_nl306_approximate_when_input_decides_by_an_opaque_match() -> None:
    found = _check(_legacy("ACCEPT", input="-A INPUT -p tcp -m tcp --dport 8080 -m recent --rcheck --name x -j DROP\n"))
    assert [f.code for f in found] == ["NL306"]
    assert found[0].certainty == "approximate" and "Approximate" in found[0].message


def test_nl308_host_port_in_docker_user() -> None:
    text = _legacy(user="-A DOCKER-USER -p tcp -m tcp --dport 8080 -j DROP\n")
    found = _check(text)
    assert [(f.code, f.line, f.chain) for f in found] == [("NL308", _line(text, "8080 -j DROP"), "DOCKER-USER")]
    assert "--ctorigdstport 8080" in found[0].message
    assert [r.line for r in found[0].related] == [_line(text, "-j DNAT")]


@pytest.mark.parametrize("rule", [
    "-A DOCKER-USER -p tcp -m tcp --dport 80 -j DROP",  # the container port: correct
    "-A DOCKER-USER -p tcp -m conntrack --ctorigdstport 8080 --ctdir ORIGINAL -j DROP",  # the fix
    "-A DOCKER-USER ! -d 172.17.0.0/16 -j DROP",  # not a test of the published port
    "-A DOCKER-USER -p tcp -m tcp --dport 9999 -j DROP",  # an unpublished port
])
def test_nl308_near_misses(rule: str) -> None:
    assert _check(_legacy(user=rule + "\n")) == []


def test_nl307_loopback_publish_and_its_guard() -> None:
    text = _legacy(dnat_dst="-d 127.0.0.1/32 ")
    found = _check(text)
    assert [(f.code, f.line) for f in found] == [("NL307", _line(text, "-j DNAT"))]
    assert found[0].witness is not None and found[0].witness["dst"] == "127.0.0.1"
    guard = ("*raw\n:PREROUTING ACCEPT [0:0]\n"
             "-A PREROUTING -d 127.0.0.1/32 ! -i lo -p tcp -m tcp --dport 8080 -j DROP\nCOMMIT\n")
    assert _check(guard + _legacy(dnat_dst="-d 127.0.0.1/32 ")) == []


def test_nl307_not_for_ipv6_loopback() -> None:
    text = """*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d ::1/128 -p tcp -m tcp --dport 8443 -j DNAT --to-destination [fd00::2]:443
-A POSTROUTING -s fd00::/64 ! -o br0 -j MASQUERADE
COMMIT
"""
    found = exposure.check(CheckContext(read(text.encode(), "t6.rules", 6)))
    assert [f for f in found if f.code == "NL307"] == []


@pytest.mark.parametrize(("name", "expected"), [
    ("nl305_self_hairpin.rules", {"NL305"}),
    ("nl305_loopback_source.rules", {"NL305"}),
    ("nl305_ok_noproxy.rules", set()),
    ("nl305_ok_proxy.rules", set()),
    ("nl306_policy_drop.rules", {"NL306"}),
    ("nl306_explicit_drop.rules", {"NL306"}),
    ("nl306_ok_router.rules", set()),
    ("nl307_ok_all_addresses.rules", set()),
])
def test_fixture_codes(name: str, expected: set[str]) -> None:
    assert {f.code for f in _fixture(name)} == expected


def test_nl305_self_hairpin_witness() -> None:
    [f] = _fixture("nl305_self_hairpin.rules")
    w = f.witness
    assert w is not None and w["in_interface"] == "docker0"
    after = w["after_nat"]
    assert isinstance(after, dict) and after["src"] == after["dst"] == w["src"] == "172.17.0.2"


def test_nl305_loopback_source_witness() -> None:
    [f] = _fixture("nl305_loopback_source.rules")
    assert f.witness is not None and str(f.witness["src"]).startswith("127.")
    assert "--src-type LOCAL -j MASQUERADE" in f.message


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="the shared reference dumps are absent")
def test_reference_dumps() -> None:
    for path in sorted(REFERENCE.glob("*.rules")):
        found = {(f.code, f.line) for f in exposure.check(CheckContext(natlint.load(path)))}
        expected = {("NL307", 39)} if path.name == "docker-legacy-2containers.rules" else set()
        assert found == expected, path.name


def test_nothing_without_dnat() -> None:
    assert _check("*filter\n:INPUT DROP [0:0]\nCOMMIT\n") == []


@pytest.mark.parametrize(("name", "make"), [
    ("kube_proxy(60,5)", lambda: synth.kube_proxy(60, 5)),
    ("docker_host(20,3)", lambda: synth.docker_host(20, 3)),
])
def test_synthetic_hosts_are_clean(name: str, make: object) -> None:
    assert _check(make(), name) == []  # type: ignore[operator]


def test_trusted_interfaces_and_networks_are_not_outside() -> None:
    """The configuration's trusted-interfaces / trusted-networks narrow what 'from outside'
    means for NL306: a port reachable only from trusted places is not a finding."""
    import ipaddress

    ruleset = natlint.load(FIXTURES / "nl306_policy_drop.rules")
    assert {f.code for f in exposure.check(CheckContext(ruleset))} == {"NL306"}
    outside = [i.name for i in CheckContext(ruleset).host.interfaces if not i.loopback and not i.bridge]
    trusted = CheckContext(ruleset, trusted_interfaces=tuple(outside))
    assert "NL306" not in {f.code for f in exposure.check(trusted)}
    everyone = CheckContext(ruleset, trusted_networks=(ipaddress.ip_network("0.0.0.0/0"),))
    assert "NL306" not in {f.code for f in exposure.check(everyone)}
    some = CheckContext(ruleset, trusted_networks=(ipaddress.ip_network("10.0.0.0/8"),))
    assert "NL306" in {f.code for f in exposure.check(some)}
