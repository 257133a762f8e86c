"""NL310 forwarded-connection-never-completes (natlint.checks.forwarding). The kernel's side:
fixtures/kernel/forward-replies.rules and fixtures/kernel/handshake.rules, whose NL310 lines
are rules whose connections the kernel's listener never accepts (tests/test_engine_kernel.py
compares natlint's ``connection`` with it probe by probe)."""

from __future__ import annotations

from pathlib import Path

import natlint
from natlint import synth
from natlint.checks import run_checks
from natlint.findings import CODES, Finding
from natlint.host import read_host_file

ROOT = Path(__file__).resolve().parents[1]
HOST = read_host_file(ROOT / "fixtures" / "kernel" / "lab.host.toml")
_NAT = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
        "-A PREROUTING -i eth0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80\n"
        "-A POSTROUTING -s 172.18.0.0/16 -o eth0 -j MASQUERADE\nCOMMIT\n")
_FILTER = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
_FORWARD = "-A FORWARD -i eth0 -o docker0 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j ACCEPT\n"


def _nl310(text: str, host: object = HOST) -> list[Finding]:
    return [f for f in run_checks(natlint.load(text.encode()), host) if f.code == "NL310"]  # type: ignore[arg-type]


def test_a_port_forward_without_a_rule_for_its_replies_never_completes() -> None:
    [finding] = _nl310(_NAT + _FILTER + _FORWARD + "COMMIT\n")
    assert finding.line == 13 and finding.certainty == "exact" and finding.chain == "FORWARD"
    assert "filter/FORWARD rule 1" in finding.message and "172.17.0.2 (port 80)" in finding.message
    # the witness is the port forward as a client sends it, on the host's external address
    assert finding.witness is not None
    assert (finding.witness["in"], finding.witness["dst"], finding.witness["dport"]) == ("eth0", "198.51.100.1", 8080)
    assert "198.51.100.1:8080 DNATed to 172.17.0.2:80" in finding.message
    assert "filter FORWARD policy (DROP)" in finding.message and "--ctstate ESTABLISHED,RELATED" in finding.message
    assert [r.line for r in finding.related] == [11]  # the FORWARD policy's declaration


def test_an_established_rule_or_a_rule_for_the_answers_completes_them() -> None:
    established = "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
    assert not _nl310(_NAT + _FILTER + established + _FORWARD + "COMMIT\n")
    answers = "-A FORWARD -i docker0 -o eth0 -s 172.17.0.2/32 -p tcp -m tcp --sport 80 -j ACCEPT\n"
    assert not _nl310(_NAT + _FILTER + _FORWARD + answers + "COMMIT\n")


def test_a_masqueraded_way_out_whose_answers_are_dropped() -> None:
    [finding] = _nl310(_NAT + _FILTER + "-A FORWARD -i br-net1 -o eth0 -j ACCEPT\nCOMMIT\n")
    assert "filter/FORWARD rule 1" in finding.message and "from br-net1" in finding.message
    assert finding.witness is not None and finding.witness["in"] == "br-net1"


def test_answers_that_reach_some_clients_are_not_reported() -> None:
    # the port forward's answers get back to 198.51.100.0/25 only: not every client fails,
    # natlint says nothing about rule 1 (the rule for the answers is itself a way out of
    # docker0, whose own answers nothing lets back in: that one is reported)
    answers = "-A FORWARD -i docker0 -o eth0 -d 198.51.100.0/25 -j ACCEPT\n"
    assert [f.line for f in _nl310(_NAT + _FILTER + _FORWARD + answers + "COMMIT\n")] == [14]
    # an answer natlint cannot decide (a rate limit) may pass: nothing is claimed for rule 1,
    # and the way out through the rate limit is reported as approximate
    limited = "-A FORWARD -i docker0 -o eth0 -m limit --limit 10/sec -j ACCEPT\n"
    [finding] = _nl310(_NAT + _FILTER + _FORWARD + limited + "COMMIT\n")
    assert finding.line == 14 and finding.certainty == "approximate" and "-m limit" in finding.message


def test_a_docker_user_drop_without_a_state_test_cuts_the_containers_off() -> None:
    # Docker's own rules accept the containers' way out and the answers coming back, but a
    # DOCKER-USER allowlist for the published ports drops the answers from everyone else
    text = (ROOT / "fixtures" / "lint" / "nl3xx" / "nl301_ok_docker_user_allowlist.rules").read_text()
    [finding] = _nl310(text, None)
    assert "from docker0" in finding.message and "filter/DOCKER-USER rule 1" in finding.message
    assert "-I DOCKER-USER -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN" in finding.message


def test_raw_prerouting_rules_stop_natlint_from_following_snat_answers() -> None:
    # raw PREROUTING sees the answer before conntrack rewrites it back to the container:
    # natlint does not follow SNATed connections then, and claims nothing about them
    raw = ("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
           "-A PREROUTING -p udp -m udp --dport 5 -j ACCEPT\nCOMMIT\n")
    assert not _nl310(raw + _NAT + _FILTER + "-A FORWARD -i br-net1 -o eth0 -j ACCEPT\nCOMMIT\n")


def test_an_open_forward_or_no_forwarding_costs_nothing_and_finds_nothing() -> None:
    assert not _nl310(_NAT + "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
    assert not _nl310(_NAT + _FILTER + "COMMIT\n")


def test_docker_and_kube_proxy_hosts_are_clean() -> None:
    for text in (synth.docker_host(5, 2), synth.kube_proxy(20, 3)):
        ruleset = natlint.load(text.encode() if isinstance(text, str) else text)
        assert not [f for f in run_checks(ruleset) if f.code == "NL310"]
    for path in sorted((ROOT.parent / "shared" / "reference-dumps").glob("*.rules")):
        assert not [f for f in run_checks(natlint.load(path)) if f.code == "NL310"], path


def test_documented_example_fails_and_fixed_passes() -> None:
    entry = CODES["NL310"]
    assert [f.code for f in _nl310(entry.example, None)] == ["NL310"]
    assert not _nl310(entry.fixed, None)
