"""NL401-NL403: Docker's layout, every version clean, each broken piece found once.

Clean inputs: the reference dumps (real replays of Docker's command sequences) and
``natlint.synth.docker_host`` in both layouts. Broken inputs are those with one piece removed,
as a firewall reload or a hand edit leaves them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import natlint
from natlint import synth
from natlint.checks import CheckContext, docker
from natlint.cli import main
from natlint.findings import Finding

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference-dumps"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def findings(text: str, family: int | None = None) -> list[Finding]:
    ruleset = natlint.load(text, family=family)  # type: ignore[arg-type]
    return list(docker.check(CheckContext(ruleset)))


def codes(text: str) -> list[tuple[str, int]]:
    return sorted((f.code, f.line) for f in findings(text))


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.split("\n"), 1) if needle in line)


def drop(text: str, *needles: str) -> str:
    return "\n".join(line for line in text.split("\n") if not any(n in line for n in needles))


LEGACY = synth.docker_host(4, 2, seed=1, layout="legacy")
D28 = synth.docker_host(4, 2, seed=1, layout="28")


# ---- clean Docker hosts --------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["legacy", "28"])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("bridges", [1, 3])
def test_synthetic_docker_hosts_are_clean(layout: str, seed: int, bridges: int) -> None:
    assert findings(synth.docker_host(9, bridges, seed=seed, layout=layout)) == []


def shared_files(folder: Path, pattern: str = "*") -> list[Path]:
    """The dumps of a shared folder (reference dumps, corpus), or none when it is absent."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob(pattern) if p.is_file() and p.suffix != ".md" and p.name != "LICENSE")


@pytest.mark.parametrize("path", shared_files(REFERENCE, "*.rules") + shared_files(CORPUS), ids=lambda p: p.name)
def test_shared_dumps_get_no_docker_finding(path: Path) -> None:
    # Reference dumps are clean Docker/kube-proxy hosts; the corpus has no Docker host at all.
    assert list(docker.check(CheckContext(natlint.load(path)))) == []


def test_kube_proxy_and_plain_hosts_get_no_docker_finding() -> None:
    assert findings(synth.kube_proxy(12, 2)) == []
    assert findings(synth.enterprise(300, seed=2)) == []


# ---- NL401 ---------------------------------------------------------------------------------------

RELOADED = """*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -d 172.17.0.2/32 ! -i docker0 -j DROP
COMMIT
*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
"""


def test_raw_endpoint_drops_without_filter_and_nat() -> None:
    found = findings(RELOADED)
    assert [(f.code, f.line) for f in found] == [("NL401", 4), ("NL401", 4)]
    text = " ".join(f.message for f in found)
    assert "filter chains are gone" in text and "nat rules are gone" in text
    assert "systemctl restart docker" in text and "policy ACCEPT" in text


def test_absent_tables_are_not_missing_tables() -> None:
    # 'iptables-save -t raw' prints only raw: nothing says filter and nat lost anything.
    assert findings(RELOADED.split("*filter")[0]) == []


def test_mixed_backend_warning_is_mentioned() -> None:
    text = "# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n" + RELOADED
    assert all("another backend" in f.message for f in findings(text))


def test_nat_flushed_under_running_docker() -> None:
    nat = D28.index("*nat")
    text = D28[:nat] + "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" \
        ":POSTROUTING ACCEPT [0:0]\nCOMMIT\n"
    found = findings(text)
    assert [f.code for f in found] == ["NL401"] and "nat rules are gone" in found[0].message


@pytest.mark.parametrize("hook", ["PREROUTING", "OUTPUT"])
@pytest.mark.parametrize("base", [LEGACY, D28], ids=["legacy", "28"])
def test_missing_nat_jump(hook: str, base: str) -> None:
    text = drop(base, f"-A {hook} ")
    found = findings(text)
    assert [f.code for f in found] == ["NL401"]
    assert found[0].line == line_of(text, "-j DNAT")
    assert f"-t nat -A {hook}" in found[0].message


def test_output_jump_fix_follows_the_userland_proxy_setting() -> None:
    found = findings(drop(D28, "-A OUTPUT "))
    assert "! -d 127.0.0.0/8 -m addrtype" in found[0].message
    noproxy = drop(re.sub(r"! -i \S+ (-p \w+ -m \w+ --dport \d+ -j DNAT)", r"\1", D28), "-A OUTPUT ")
    assert "OUTPUT -m addrtype" in next(f for f in findings(noproxy) if "OUTPUT" in f.message).message


def test_docker_forward_without_jump_is_reported_once() -> None:
    text = drop(D28, "-A FORWARD -j DOCKER-FORWARD")
    found = findings(text)
    assert [(f.code, f.line) for f in found] == [("NL401", line_of(text, "-A DOCKER-FORWARD -j DOCKER-CT"))]
    assert "-j DOCKER-FORWARD" in found[0].message


def test_legacy_bridge_without_its_jump_to_docker() -> None:
    bridge = next(b for b in docker.DockerInventory(natlint.load(LEGACY)).bridges if b.startswith("br-"))
    text = drop(LEGACY, f"-A FORWARD -o {bridge} -j DOCKER")
    found = findings(text)
    assert [f.code for f in found] == ["NL401"]
    assert f"-A FORWARD -o {bridge} -j DOCKER" in found[0].message


def test_dnat_without_accept() -> None:
    text = drop(D28, "-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp")
    found = findings(text)
    dnat = line_of(text, "! -i docker0 -p tcp -m tcp --dport 27015 -j DNAT")
    assert [(f.code, f.line) for f in found] == [("NL401", dnat)]
    assert ("'iptables -I DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 27015 -j ACCEPT'"
            in found[0].message)
    assert "dropped in FORWARD" in found[0].message


def test_nat_unprotected_network_accepts_every_port() -> None:
    text = drop(D28, "-A DOCKER -d 172.17.0.2/32")
    text = text.replace("! -i docker0 -o docker0 -j DROP", "! -i docker0 -o docker0 -j ACCEPT")
    assert [f for f in findings(text) if "docker0" in f.message] == []


def test_bridge_without_masquerade() -> None:
    text = drop(LEGACY, "-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE")
    found = findings(text)
    assert [f.code for f in found] == ["NL401"]
    assert found[0].line == line_of(text, "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT")
    assert "MASQUERADE" in found[0].message


def test_masquerade_off_is_not_partial_state() -> None:
    # ip-masq=false: Docker writes neither the MASQUERADE nor the nat '-i docker0 -j RETURN'.
    text = drop(D28, "-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE", "-A DOCKER -i docker0 -j RETURN")
    assert findings(text) == []


def test_admin_masquerade_covers_the_bridge() -> None:
    text = LEGACY.replace("-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE", "-o eth0 -j MASQUERADE")
    assert findings(text) == []


def test_raw_rules_of_a_network_the_filter_table_forgot() -> None:
    text = D28.replace("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n",
                       "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                       "-A PREROUTING -d 172.30.0.2/32 ! -i br-0123456789ab -j DROP\n")
    found = findings(text)
    assert [(f.code, f.line) for f in found] == [("NL401", line_of(text, "br-0123456789ab"))]


def test_non_docker_raw_and_docker_user_only() -> None:
    # Anti-spoofing DROPs in raw, a DOCKER-USER chain from a ufw-docker rules file, an admin
    # MASQUERADE naming docker0 (--iptables=false): no Docker daemon wrote any of it.
    text = RELOADED.replace("172.17.0.2/32 ! -i docker0", "10.0.0.5/32 ! -i eth1")
    text = text.replace(":OUTPUT ACCEPT [0:0]\n-A INPUT",
                        ":OUTPUT ACCEPT [0:0]\n:DOCKER-USER - [0:0]\n-A DOCKER-USER -i eth0 -j DROP\n-A INPUT")
    text = text.replace(":POSTROUTING ACCEPT [0:0]\n",
                        ":POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\n")
    assert "DOCKER-USER" in text and "docker0 -j MASQUERADE" in text
    assert findings(text) == []


# ---- NL402 ---------------------------------------------------------------------------------------

def _before_user(base: str, *rules: str) -> str:
    return base.replace("-A FORWARD -j DOCKER-USER", "\n".join((*rules, "-A FORWARD -j DOCKER-USER")))


@pytest.mark.parametrize("rule", [
    "-A FORWARD -i eth0 -p tcp -m tcp --dport 8080 -j ACCEPT",
    "-A FORWARD -j REJECT --reject-with icmp-port-unreachable",
    "-A FORWARD -o docker0 -j DROP",
    "-A FORWARD -j RETURN",
])
@pytest.mark.parametrize("base", [LEGACY, D28], ids=["legacy", "28"])
def test_a_deciding_rule_before_docker_user(rule: str, base: str) -> None:
    text = _before_user(base, rule)
    found = findings(text)
    assert [(f.code, f.line) for f in found] == [("NL402", line_of(text, rule))]
    assert found[0].related[-1].line == line_of(text, "-A FORWARD -j DOCKER-USER")
    assert "-I FORWARD 1 -j DOCKER-USER" in found[0].message


def test_docker_forward_before_docker_user() -> None:
    text = drop(D28, "-A FORWARD -j DOCKER-USER").replace(
        "-A FORWARD -j DOCKER-FORWARD", "-A FORWARD -j DOCKER-FORWARD\n-A FORWARD -j DOCKER-USER")
    assert codes(text) == [("NL402", line_of(text, "-A FORWARD -j DOCKER-FORWARD"))]


@pytest.mark.parametrize("rule", [
    "-A FORWARD -j LOG --log-prefix fwd",
    "-A FORWARD -m comment --comment nothing",
    "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "-A FORWARD -m state --state ESTABLISHED -j ACCEPT",
    "-A FORWARD -m conntrack --ctstate INVALID -j DROP",
    "-A FORWARD -i virbr0 -o virbr0 -j ACCEPT",
    "-A FORWARD -i wg0 -o eth0 -j ACCEPT",
    "-A FORWARD -s 10.8.0.0/24 -d 192.168.1.0/24 -j ACCEPT",
    "-A FORWARD -p tcp -j TCPMSS --clamp-mss-to-pmtu",
])
def test_rules_that_decide_no_container_traffic(rule: str) -> None:
    assert findings(_before_user(D28, rule)) == []


def test_kube_proxy_jumps_before_docker_user() -> None:
    text = _before_user(D28, '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD')
    text = text.replace(":DOCKER-USER - [0:0]", ":DOCKER-USER - [0:0]\n:KUBE-FORWARD - [0:0]").replace(
        "-A FORWARD -j DOCKER-FORWARD",
        "-A FORWARD -j DOCKER-FORWARD\n-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT", 1)
    assert findings(text) == []


def test_user_chain_that_only_logs_is_not_deciding() -> None:
    text = _before_user(D28, "-A FORWARD -j AUDIT-FWD").replace(
        ":DOCKER-USER - [0:0]", ":AUDIT-FWD - [0:0]\n:DOCKER-USER - [0:0]").replace(
        "-A FORWARD -j DOCKER-FORWARD", "-A FORWARD -j DOCKER-FORWARD\n-A AUDIT-FWD -j LOG\n-A AUDIT-FWD -j RETURN", 1)
    assert findings(text) == []
    assert codes(text.replace("-A AUDIT-FWD -j RETURN", "-A AUDIT-FWD -j ACCEPT"))[0][0] == "NL402"


def test_docker_user_without_jump() -> None:
    text = drop(LEGACY, "-A FORWARD -j DOCKER-USER").replace(
        "-A DOCKER-USER -j RETURN", "-A DOCKER-USER -i eth0 -p tcp -m tcp --dport 80 -j DROP\n-A DOCKER-USER -j RETURN")
    found = findings(text)
    assert [f.code for f in found] == ["NL402"]
    assert found[0].line == line_of(text, "-A FORWARD -j DOCKER-ISOLATION-STAGE-1")
    assert found[0].related[0].line == line_of(text, "--dport 80 -j DROP")


# ---- NL403 ---------------------------------------------------------------------------------------

def test_legacy_forward_accept_exposes_every_bridge() -> None:
    text = LEGACY.replace(":FORWARD DROP", ":FORWARD ACCEPT")
    found = findings(text)
    bridges = docker.DockerInventory(natlint.load(text)).bridges
    assert sorted(f.code for f in found) == ["NL403"] * len(bridges)
    first = next(f for f in found if "docker0" in f.message)
    assert first.line == line_of(text, "-A FORWARD -o docker0 -j DOCKER")
    assert "172.17.0.0/16" in first.message and "! -i docker0 -o docker0 -j DROP" in first.message


@pytest.mark.parametrize("guard", [
    "-A FORWARD ! -i docker0 -o docker0 -j DROP",
    "-A FORWARD -j DROP",
    "-A FORWARD -j REJECT --reject-with icmp-port-unreachable",
    "-A FORWARD -i eth0 -m conntrack --ctstate NEW -j DROP",
    "-A FORWARD -d 172.17.0.0/16 ! -i docker0 -j DROP",
])
def test_a_drop_for_the_bridge_protects_it(guard: str) -> None:
    text = LEGACY.replace(":FORWARD DROP", ":FORWARD ACCEPT").replace("COMMIT", guard + "\nCOMMIT", 1)
    assert not [f for f in findings(text) if "docker0 " in f.message or "docker0," in f.message
                or "to docker0" in f.message]


def test_isolation_drop_is_not_a_guard() -> None:
    # DOCKER-ISOLATION-STAGE-2 '-o docker0 -j DROP' only runs for traffic from another bridge.
    text = LEGACY.replace(":FORWARD DROP", ":FORWARD ACCEPT")
    assert any("to docker0" in f.message for f in findings(text))


def test_narrow_drops_do_not_protect_the_bridge() -> None:
    text = LEGACY.replace(":FORWARD DROP", ":FORWARD ACCEPT").replace(
        "COMMIT", "-A FORWARD -o docker0 -p tcp -m tcp --dport 22 -j DROP\n"
        "-A FORWARD -s 203.0.113.0/24 -j DROP\nCOMMIT", 1)
    assert any("to docker0" in f.message for f in findings(text))


def test_docker_28_layout_is_protected_with_forward_accept() -> None:
    assert findings(D28.replace(":FORWARD DROP", ":FORWARD ACCEPT")) == []


# ---- documentation -------------------------------------------------------------------------------

@pytest.mark.parametrize("code", ["NL401", "NL402", "NL403"])
def test_rule_documentation(code: str) -> None:
    text = CliRunner().invoke(main, ["rule", code]).stdout
    assert code in text and "Why it matters" in text and "Fixed" in text


@pytest.mark.parametrize("code", ["NL401", "NL402", "NL403"])
def test_documented_example_fails_and_fixed_passes(code: str) -> None:
    entry = natlint.findings.CODES[code]
    assert code in {f.code for f in findings(entry.example)}
    if entry.fixed.startswith("*"):
        assert code not in {f.code for f in findings(entry.fixed)}
