"""What natlint trace says the sender sees (natlint.netfilter.replies): the answer a REJECT
sends and the rest of a TCP handshake, followed through the host's own chains; and built-in
chains a dump never names. The kernel's side: fixtures/kernel/reject-answer.rules and
handshake.rules (tests/test_engine_kernel.py) and the corpus runs of
tests/test_corpus_kernel.py."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import natlint
from natlint.cli import main
from natlint.host import read_host_file
from natlint.netfilter.engine import Outcome
from natlint.netfilter.trace import TraceQuery, outcome_to_dict, trace

ROOT = Path(__file__).resolve().parents[1]

HOST = read_host_file(ROOT / "fixtures" / "kernel" / "lab.host.toml")

_HEAD = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
_REJECT_23 = "-A INPUT -p tcp -m tcp --dport 23 -j REJECT --reject-with tcp-reset\n"
_REJECT_69 = "-A INPUT -p udp -m udp --dport 69 -j REJECT\n"


def _trace(text: str, **query: object) -> list[Outcome]:
    ruleset = natlint.load(text.encode())
    fields: dict[str, object] = {"in_interface": "eth0", "src": "198.51.100.2", "dst": "198.51.100.1",
                                 "proto": "tcp", "sport": "41000", "dport": "23"}
    fields.update(query)
    return trace(ruleset, HOST, TraceQuery(**fields))  # type: ignore[arg-type]


def test_a_reset_that_output_drops_is_a_drop() -> None:
    text = _HEAD + _REJECT_23 + "-A OUTPUT -p tcp -m tcp --tcp-flags RST RST -j DROP\nCOMMIT\n"
    [outcome] = _trace(text)
    assert outcome.verdict == "DROP"
    assert outcome.delivered is None
    first = [s for s in outcome.steps if not s.reply]
    answer = [s for s in outcome.steps if s.reply]
    assert first[-1].action.startswith("REJECT") and first[-1].line == 5
    assert answer[-1].hook == "OUTPUT" and answer[-1].action == "DROP" and answer[-1].line == 6
    assert outcome.note is not None and "TCP reset" in outcome.note and "line 5" in outcome.note
    assert outcome.certainty == "exact"


def test_the_answer_is_related_with_mark_zero() -> None:
    # the answer is RELATED (not NEW), so "NEW -j DROP" lets it pass; the rejected packet's
    # mark is not the answer's (fwmark_reflect is off), so "--mark 0x7 -j ACCEPT" does not
    # save it from the policy
    text = ("*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j MARK --set-xmark 0x7/0xffffffff\nCOMMIT\n"
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT DROP [0:0]\n" + _REJECT_23
            + "-A OUTPUT -m conntrack --ctstate NEW -j DROP\n-A OUTPUT -m mark --mark 0x7 -j ACCEPT\nCOMMIT\n")
    [outcome] = _trace(text)
    assert outcome.verdict == "DROP"
    assert [s.index for s in outcome.steps if s.reply][-1] == "policy"
    related = text.replace("--ctstate NEW -j DROP", "--ctstate RELATED -j ACCEPT")
    [outcome] = _trace(related)
    assert outcome.verdict == "REJECT" and not any(s.reply for s in outcome.steps)


def test_the_reset_goes_from_the_rejected_destination_with_ports_swapped() -> None:
    kept = "-A OUTPUT -s 198.51.100.1/32 -d 198.51.100.2/32 -p tcp --sport 23 --dport 41000 -j ACCEPT\n"
    text = _HEAD + _REJECT_23 + kept + "-A OUTPUT -j DROP\nCOMMIT\n"
    assert [o.verdict for o in _trace(text)] == ["REJECT"]
    assert [o.verdict for o in _trace(text, sport="41001")] == ["DROP"]


def test_an_icmp_error_that_output_drops_is_a_drop() -> None:
    text = _HEAD + _REJECT_69 + "-A OUTPUT -p icmp -m icmp --icmp-type 3/3 -j DROP\nCOMMIT\n"
    [outcome] = _trace(text, proto="udp", dport="69")
    assert outcome.verdict == "DROP"
    assert outcome.note is not None and "ICMP error" in outcome.note
    other = text.replace("3/3", "3/13")  # another code: the port-unreachable error passes
    assert [o.verdict for o in _trace(other, proto="udp", dport="69")] == ["REJECT"]


def test_an_answer_that_may_be_dropped_is_approximate() -> None:
    text = _HEAD + _REJECT_23 + "-A OUTPUT -p tcp -m limit --limit 1/sec -j DROP\nCOMMIT\n"
    [outcome] = _trace(text)
    assert outcome.verdict == "REJECT"
    assert outcome.certainty == "approximate"
    assert any("may be dropped" in r for r in outcome.reasons)


def test_a_class_of_many_addresses_is_left_as_rejected_with_a_note() -> None:
    text = _HEAD + _REJECT_23 + "-A OUTPUT -j DROP\nCOMMIT\n"
    outcomes = _trace(text, src="198.51.100.0/28")
    assert [o.verdict for o in outcomes] == ["REJECT"]
    assert outcomes[0].note is not None and "did not follow" in outcomes[0].note


def test_json_marks_the_answer_steps() -> None:
    text = _HEAD + _REJECT_23 + "-A OUTPUT -j DROP\nCOMMIT\n"
    [outcome] = _trace(text)
    data = outcome_to_dict(outcome)
    assert data["verdict"] == "DROP" and data["note"]
    steps = data["steps"]
    assert isinstance(steps, list)
    assert [s["reply"] for s in steps].count(True) == 1
    assert all(s["reply"] is False for s in steps[:-1])


def test_cli_prints_the_answer(tmp_path: Path) -> None:
    path = tmp_path / "r.rules"
    path.write_text(_HEAD + _REJECT_23 + "-A OUTPUT -j DROP\nCOMMIT\n")
    host = ROOT / "fixtures" / "kernel" / "lab.host.toml"
    args = ["trace", str(path), "--host", str(host), "--in", "eth0", "--src", "198.51.100.2",
            "--dst", "198.51.100.1", "--proto", "tcp", "--sport", "41000", "--dport", "23"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "the answer the REJECT sends:" in result.output
    assert "note: the REJECT at line 5 answers with a TCP reset" in result.output
    data = json.loads(CliRunner().invoke(main, [*args, "--format", "json"]).output)
    assert data["outcomes"][0]["verdict"] == "DROP"


def test_builtin_chains_a_dump_never_names_are_not_crossed() -> None:
    # iptables-nft makes a base chain when the dump declares it or appends to it: a nat table
    # with only POSTROUTING rules has no PREROUTING (nor INPUT, OUTPUT) chain to cross
    text = ("*nat\n-A POSTROUTING -o eth0 -j MASQUERADE\nCOMMIT\n"
            "*filter\n-A INPUT -p tcp --dport 22 -j ACCEPT\n-A INPUT -j DROP\nCOMMIT\n")
    [outcome] = _trace(text, dport="22")
    assert outcome.verdict == "ACCEPT"
    assert [(s.table, s.chain, s.index) for s in outcome.steps] == [("filter", "INPUT", 1)]
    declared = text.replace("*nat\n", "*nat\n:PREROUTING ACCEPT [0:0]\n")
    [outcome] = _trace(declared, dport="22")
    assert [(s.table, s.chain, s.index) for s in outcome.steps] == [("nat", "PREROUTING", "policy"),
                                                                   ("filter", "INPUT", 1)]


# ---- the TCP handshake of an accepted SYN


def test_a_synack_that_output_drops_never_completes() -> None:
    text = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT DROP [0:0]\n"
            "-A OUTPUT -p tcp --sport 22 -m conntrack --ctstate ESTABLISHED -j ACCEPT\nCOMMIT\n")
    [outcome] = _trace(text, dport="53")
    assert outcome.verdict == "ACCEPT" and outcome.delivered is not None and outcome.delivered.to == "local"
    assert outcome.connection == "fails"
    answer = [s for s in outcome.steps if s.reply]
    assert answer and answer[-1].hook == "OUTPUT" and answer[-1].index == "policy"
    assert outcome.note is not None and "SYN-ACK" in outcome.note
    [outcome] = _trace(text, dport="22")
    assert outcome.connection == "completes" and not any(s.reply for s in outcome.steps)


def test_the_clients_ack_must_pass_too() -> None:
    text = ("*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -p tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT\nCOMMIT\n")
    [outcome] = _trace(text, dport="22")
    assert outcome.connection == "fails"
    assert outcome.note is not None and "client's ACK" in outcome.note
    fixed = text.replace("-A INPUT -p", "-A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT\n-A INPUT -p")
    [outcome] = _trace(fixed, dport="22")
    assert outcome.connection == "completes"


def test_an_untracked_synack_is_invalid_unless_raw_notracks_it() -> None:
    text = ("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -p tcp --dport 80 -j NOTRACK\n"
            "COMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT DROP [0:0]\n"
            "-A OUTPUT -m conntrack --ctstate UNTRACKED -j ACCEPT\nCOMMIT\n")
    [outcome] = _trace(text, dport="80")
    assert outcome.connection == "fails"
    both = text.replace("COMMIT\n*filter", "-A OUTPUT -p tcp --sport 80 -j NOTRACK\nCOMMIT\n*filter")
    [outcome] = _trace(both, dport="80")
    assert outcome.connection == "completes"


def test_a_forwarded_connection_whose_replies_forward_drops() -> None:
    # a published port whose FORWARD lets the SYN in but has no rule for the way back
    text = ("*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
            "-A PREROUTING -i eth0 -p tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80\nCOMMIT\n"
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A FORWARD -o docker0 -p tcp --dport 80 -j ACCEPT\nCOMMIT\n")
    [outcome] = _trace(text, dport="8080")
    assert outcome.delivered is not None and outcome.delivered.interface == "docker0"
    assert outcome.connection == "fails"
    answer = [s for s in outcome.steps if s.reply]
    assert answer[-1].hook == "FORWARD" and answer[-1].index == "policy"
    back = "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
    fixed = text.replace("-A FORWARD -o", back + "-A FORWARD -o")
    [outcome] = _trace(fixed, dport="8080")
    assert outcome.connection is None  # the SYN-ACK passes; the ACK of a DNATed connection is not followed
    assert not any(s.reply for s in outcome.steps)


def test_udp_and_ranges_are_not_followed() -> None:
    text = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT DROP [0:0]\nCOMMIT\n"
    assert [o.connection for o in _trace(text, proto="udp", dport="53")] == [None]
    assert [o.connection for o in _trace(text, dport="53", src="198.51.100.0/28")] == [None]


def test_the_answer_to_an_untracked_packet_is_not_followed() -> None:
    # no connection to answer on: natlint leaves the REJECT as the rule says
    text = ("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -p tcp --dport 23 -j NOTRACK\n"
            "COMMIT\n" + _HEAD + _REJECT_23 + "-A OUTPUT -j DROP\nCOMMIT\n")
    [outcome] = _trace(text)
    assert outcome.verdict == "REJECT" and not any(s.reply for s in outcome.steps)
