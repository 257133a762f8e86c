"""NL201-NL203 (natlint.checks.rules) on small inline dumps: what is reported, and what must not be."""

from __future__ import annotations

from pathlib import Path

import pytest

import natlint
from natlint import synth
from natlint.checks.context import CheckContext
from natlint.checks.rules import check, findings
from natlint.findings import CODES, Finding
from natlint.syntax.reader import read

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference-dumps"
FILTER = "*filter\n:INPUT {policy} [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n{chains}{rules}\nCOMMIT\n"


def _check(text: str) -> list[Finding]:
    return list(check(CheckContext(read(text, "t.rules"))))


def _filter(rules: str, policy: str = "ACCEPT", chains: str = "") -> list[Finding]:
    return _check(FILTER.format(policy=policy, chains=chains, rules=rules.strip()))


def _codes(found: list[Finding], severity: str | None = None) -> list[tuple[str, int]]:
    return [(f.code, f.line) for f in found if severity is None or f.severity == severity]


def test_codes_are_registered_with_documentation() -> None:
    for code in ("NL201", "NL202", "NL203"):
        entry = CODES[code]
        assert entry.summary and entry.why and entry.example and entry.fixed


def test_shadowed_by_one_earlier_rule_with_witness() -> None:
    found = _filter("-A INPUT -p tcp -m tcp --dport 22 -j DROP\n"
                    "-A INPUT -s 10.0.0.5/32 -p tcp -m tcp --dport 22 -j ACCEPT")
    assert _codes(found) == [("NL201", 6)]
    f = found[0]
    assert f.severity == "warning" and f.certainty == "exact"
    assert [r.line for r in f.related] == [5]
    assert f.witness is not None and f.witness["src"] == "10.0.0.5" and f.witness["dport"] == 22
    assert f.witness["taken_by"] == {"line": 5, "rule": "-A INPUT -p tcp -m tcp --dport 22 -j DROP"}
    assert "move it above line 5" in f.message


def test_shadowed_by_a_union_cites_every_needed_rule() -> None:
    found = _filter(
        "-A INPUT -p tcp -m tcp --dport 1:1000 -j DROP\n-A INPUT -p udp -j DROP\n"
        "-A INPUT -p tcp -m tcp --dport 1001:2000 -j REJECT\n-A INPUT -p tcp -m tcp --dport 1000:1001 -j ACCEPT")
    assert _codes(found) == [("NL201", 8)]
    assert sorted(r.line for r in found[0].related) == [5, 7]


def test_same_outcome_is_redundant_not_shadowed() -> None:
    found = _filter("-A INPUT -p tcp -m multiport --dports 22,80 -j ACCEPT\n"
                    "-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT")
    assert _codes(found, "warning") == [("NL202", 6)]


def test_duplicate_behind_unrelated_accepts_is_redundant() -> None:
    # The established ACCEPT takes part of it too, but line 6 alone covers line 7.
    found = _filter("-A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT\n-A INPUT -s 192.0.2.1/32 -j DROP\n"
                    "-A INPUT -s 192.0.2.1/32 -j DROP")
    assert _codes(found, "warning") == [("NL202", 7)]
    assert [r.line for r in found[0].related] == [6]


def test_partial_overlap_is_not_a_finding() -> None:
    assert _filter("-A INPUT -s 10.0.0.0/24 -p tcp -j ACCEPT\n-A INPUT -s 10.0.0.0/16 -j DROP") == []


@pytest.mark.parametrize("opaque", [
    "-m statistic --mode random --probability 0.50000000000",
    "-m limit --limit 5/min",
    "-m recent --rcheck --seconds 60 --name x --rsource",
    "-m set --match-set bad src",
    "-m string --string GET --algo bm",
])
def test_an_opaque_earlier_rule_takes_nothing(opaque: str) -> None:
    assert _filter(f"-A INPUT -p tcp -m tcp --dport 22 {opaque} -j DROP\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
                   policy="DROP") == []


def test_opaque_rule_is_shadowed_when_it_is_for_every_value() -> None:
    found = _filter("-A INPUT -p tcp -j DROP\n-A INPUT -p tcp -m tcp --dport 22 -m limit --limit 5/min -j ACCEPT")
    assert _codes(found) == [("NL201", 6)]


def test_log_and_mark_take_nothing() -> None:
    assert _filter("-A INPUT -p tcp -j LOG\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT", policy="DROP") == []
    text = ("*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            ":POSTROUTING ACCEPT [0:0]\n-A PREROUTING -m mark --mark 0x1 -j ACCEPT\n"
            "-A PREROUTING -j MARK --set-xmark 0x1/0xffffffff\n-A PREROUTING -m mark --mark 0x1 -j ACCEPT\nCOMMIT\n")
    assert [f for f in _check(text) if f.severity != "info"] == []


def test_a_jump_takes_only_what_the_chain_surely_decides() -> None:
    chains = ":SUB - [0:0]\n"
    head = "-A INPUT -p tcp -j SUB\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n"
    for sub in ("-A SUB -s 10.0.0.0/8 -j RETURN\n-A SUB -j DROP",  # 10/8 returns
                "-A SUB -s 10.0.0.0/8 -j DROP",  # the others return
                "-A SUB -m limit --limit 1/s -j RETURN\n-A SUB -j DROP"):
        assert _codes(_filter(head + sub, chains=chains), "warning") == []
    found = _filter(head + "-A SUB -j LOG\n-A SUB -j DROP", chains=chains)
    assert _codes(found, "warning") == [("NL201", 7)]
    assert "dropped at line 6" in found[0].message


def test_goto_takes_everything_it_matches() -> None:
    found = _filter("-A INPUT -p tcp -g SUB\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n-A SUB -s 10.0.0.0/8 -j DROP",
                    chains=":SUB - [0:0]\n")
    assert _codes(found) == [("NL201", 7)]


def test_unmatchable_by_itself() -> None:
    found = _filter("-A INPUT -s 10.0.0.0/8 -m iprange --src-range 192.168.0.1-192.168.0.9 -j DROP")
    assert _codes(found) == [("NL203", 5)]
    assert "contradict each other" in found[0].message


def test_unmatchable_by_the_path_into_its_chain() -> None:
    found = _filter("-A INPUT -p tcp -j TCP\n-A TCP -p udp -m udp --dport 53 -j ACCEPT\n-A TCP -j ACCEPT",
                    chains=":TCP - [0:0]\n")
    assert _codes(found) == [("NL203", 7)]
    assert "line(s) 6" in found[0].message and [r.line for r in found[0].related] == [6]


def test_rules_of_a_chain_whose_jump_never_matches_are_not_repeated() -> None:
    found = _filter("-A INPUT -j DROP\n-A INPUT -p tcp -j SUB\n-A SUB -p udp -j ACCEPT\n-A SUB -j ACCEPT",
                    chains=":SUB - [0:0]\n")
    assert _codes(found, "warning") == [("NL201", 7)]


def test_nat_only_sees_new_connections() -> None:
    text = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
            "-A PREROUTING -m conntrack --ctstate ESTABLISHED -j ACCEPT\n"
            "-A PREROUTING -m conntrack --ctstate RELATED -j ACCEPT\nCOMMIT\n")
    found = _check(text)
    assert _codes(found, "warning") == [("NL203", 6)]
    assert "first packet" in found[0].message


def test_output_interface_misuse_is_left_to_nl104() -> None:
    found = _filter("-A INPUT -j SUB\n-A SUB -o eth0 -j DROP", chains=":SUB - [0:0]\n")
    assert [f for f in found if f.code == "NL203"] == []


def test_policy_duplicate_at_the_end_is_info() -> None:
    found = _filter("-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n-A INPUT -p udp -j DROP\n-A INPUT -j DROP",
                    policy="DROP")
    assert _codes(found) == [("NL202", 7), ("NL202", 6)]
    assert {f.severity for f in found} == {"info"}


def test_user_chain_end_is_a_return_not_a_policy() -> None:
    chains = ":SUB - [0:0]\n"
    assert _filter("-A INPUT -j SUB\n-A SUB -s 10.0.0.0/8 -j DROP", policy="DROP", chains=chains) == []
    assert _filter("-A INPUT -j SUB\n-A SUB -s 10.0.0.0/8 -j ACCEPT\n-A SUB -j RETURN", chains=chains) == []
    found = _filter("-A INPUT -j SUB\n-A SUB -s 10.0.0.0/8 -j ACCEPT\n-A SUB -s 11.0.0.0/8 -j RETURN", chains=chains)
    assert _codes(found) == [("NL202", 8)] and found[0].severity == "info"


def test_generated_chains_are_info() -> None:
    chains = ":DOCKER-ISOLATION-STAGE-2 - [0:0]\n"
    found = _filter("-A FORWARD -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2\n"
                    "-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP", chains=chains)
    assert _codes(found) == [("NL203", 7)] and found[0].severity == "info"
    assert "generated by Docker" in found[0].message


def test_tables_with_unread_lines_are_skipped() -> None:
    text = FILTER.format(policy="ACCEPT", chains="", rules="-A INPUT -j DROP\n-A INPUT -p tcp --dport -j ACCEPT\n"
                         "-A INPUT -p udp -j ACCEPT")
    ctx = CheckContext(read(text, "t.rules"))
    assert list(findings(ctx)) == []
    forced = list(findings(CheckContext(read(text, "t.rules")), skip_unreadable=False))
    assert _codes(forced) == [("NL201", 7)] and forced[0].certainty == "approximate"


def test_tables_with_loops_are_skipped() -> None:
    assert _filter("-A INPUT -j A\n-A A -j B\n-A B -j A\n-A B -j DROP\n-A B -j DROP",
                   chains=":A - [0:0]\n:B - [0:0]\n") == []


@pytest.mark.parametrize("text", [
    synth.kube_proxy(20, 5),
    synth.docker_host(6, 2),
    synth.docker_host(6, 2, layout="legacy"),
], ids=["kube-proxy", "docker-28", "docker-legacy"])
def test_synthetic_tool_dumps_have_no_warning(text: str) -> None:
    assert [f for f in _check(text) if f.severity != "info"] == []


def test_reference_dumps_have_no_warning() -> None:
    if not REFERENCE.is_dir():
        pytest.skip(f"{REFERENCE} is absent")
    for path in sorted(REFERENCE.glob("*.rules")):
        found = list(check(CheckContext(natlint.load(path))))
        assert [f for f in found if f.severity != "info"] == [], path.name


CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def test_a_rule_compiled_without_a_reason_tests_no_opaque_predicate() -> None:
    # the reachability walk takes may() and must() of such a rule to be its set, without an
    # ∃ and a ∀ over every opaque predicate (two operations for each of 100k rules)
    dumps = [natlint.load(synth.kube_proxy(8, 3)), natlint.load(synth.docker_host(4, 2))]
    if CORPUS.is_dir():
        dumps += [natlint.load(p) for p in sorted(CORPUS.rglob("iptables-save*"))[:12] if p.is_file()]
    checked = 0
    for ruleset in dumps:
        ctx = CheckContext(ruleset)
        for rule in ruleset.rules():
            compiled = ctx.engine.compiled(rule)
            s = compiled.set  # type: ignore[attr-defined]
            if not compiled.approximate:  # type: ignore[attr-defined]
                assert s.may() == s == s.must(), rule.text
                checked += 1
    assert checked > 100
