"""NL204 connection-never-completes (natlint.checks.handshake). The kernel's side:
fixtures/kernel/handshake.rules (its NL204 lines are the connections the kernel's listener
never accepts, tests/test_engine_kernel.py) and the corpus firewall of tests/test_corpus_kernel.py."""

from __future__ import annotations

from pathlib import Path

import natlint
from natlint.checks import run_checks
from natlint.findings import Finding
from natlint.host import read_host_file

ROOT = Path(__file__).resolve().parents[1]
HOST = read_host_file(ROOT / "fixtures" / "kernel" / "lab.host.toml")
_HEAD = "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\n"


def _nl204(text: str) -> list[Finding]:
    return [f for f in run_checks(natlint.load(text.encode()), HOST) if f.code == "NL204"]


def test_output_without_established_drops_every_synack() -> None:
    text = _HEAD + ("-A INPUT -p tcp -m tcp --dport 443 -j ACCEPT\n"
                    "-A OUTPUT -p udp -m udp --dport 53 -j ACCEPT\nCOMMIT\n")
    [finding] = _nl204(text)
    assert finding.line == 5 and finding.certainty == "exact"
    assert "port 443" in finding.message and "filter OUTPUT policy (DROP)" in finding.message
    assert "--ctstate ESTABLISHED,RELATED -j ACCEPT" in finding.message
    assert finding.witness is not None and finding.witness["dport"] == 443
    assert [r.line for r in finding.related] == [4]  # the OUTPUT policy's declaration


def test_an_established_rule_or_a_port_rule_answers() -> None:
    accept = "-A INPUT -p tcp -m tcp --dport 443 -j ACCEPT\n"
    assert not _nl204(_HEAD + accept + "-A OUTPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT\nCOMMIT\n")
    assert not _nl204(_HEAD + accept + "-A OUTPUT -p tcp -m tcp --sport 443 -j ACCEPT\nCOMMIT\n")
    # answered only for another port: 443 still never completes, 22 does
    [finding] = _nl204(_HEAD + accept + "-A INPUT -p tcp --dport 22 -j ACCEPT\n"
                       "-A OUTPUT -p tcp -m tcp --sport 22 -j ACCEPT\nCOMMIT\n")
    assert "port 443" in finding.message and "22" not in finding.message.split("(filter")[0]


def test_a_service_some_clients_can_reach_is_not_reported() -> None:
    # the SYN-ACK gets out to 198.51.100.0/25 (on eth0): not every client fails, natlint says nothing
    text = _HEAD + ("-A INPUT -p tcp -m tcp --dport 443 -j ACCEPT\n"
                    "-A OUTPUT -d 198.51.100.0/25 -j ACCEPT\nCOMMIT\n")
    assert not _nl204(text)
    # a rule for client port 53 does not answer clients on their ephemeral ports
    text = _HEAD + ("-A INPUT -p tcp -m tcp --dport 443 -j ACCEPT\n"
                    "-A OUTPUT -p tcp -m tcp --dport 53 -j ACCEPT\nCOMMIT\n")
    assert len(_nl204(text)) == 1


def test_open_output_costs_nothing_and_finds_nothing() -> None:
    text = "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n" \
           "-A INPUT -p tcp -m tcp --dport 443 -j ACCEPT\nCOMMIT\n"
    assert not _nl204(text)


def test_an_undecidable_accept_is_approximate() -> None:
    text = _HEAD + ("-A INPUT -p tcp -m tcp --dport 443 -m limit --limit 10/sec -j ACCEPT\n"
                    "-A OUTPUT -p udp -m udp --dport 53 -j ACCEPT\nCOMMIT\n")
    [finding] = _nl204(text)
    assert finding.certainty == "approximate" and "-m limit" in finding.message


def test_docker_and_kube_proxy_reference_hosts_are_clean() -> None:
    from natlint import synth

    for text in (synth.docker_host(5, 2), synth.kube_proxy(20, 3)):
        ruleset = natlint.load(text.encode() if isinstance(text, str) else text)
        assert not [f for f in run_checks(ruleset) if f.code == "NL204"]
