"""NL404 (kube-proxy integrity) and NL405 (mixed backends)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from test_checks_docker import CORPUS, REFERENCE, shared_files

import natlint
from natlint import synth
from natlint.checks import CheckContext, kube
from natlint.cli import main
from natlint.findings import CODES, Finding

KUBE = synth.kube_proxy(12, 2, seed=3)


def findings(text: str) -> list[Finding]:
    return list(kube.check(CheckContext(natlint.load(text))))


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.split("\n"), 1) if needle in line)


def drop(text: str, *needles: str) -> str:
    return "\n".join(line for line in text.split("\n") if not any(n in line for n in needles))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("services", "endpoints"), [(3, 1), (12, 3), (40, 0), (25, 2)])
def test_synthetic_kube_proxy_nodes_are_clean(seed: int, services: int, endpoints: int) -> None:
    assert findings(synth.kube_proxy(services, endpoints, seed=seed)) == []


@pytest.mark.parametrize("path", shared_files(REFERENCE, "*.rules") + shared_files(CORPUS), ids=lambda p: p.name)
def test_shared_dumps_get_no_kube_finding(path: Path) -> None:
    assert list(kube.check(CheckContext(natlint.load(path)))) == []


def test_docker_hosts_get_no_kube_finding() -> None:
    assert findings(synth.docker_host(6, 2)) == []


# ---- NL404 ---------------------------------------------------------------------------------------

TAIL = "service nodeports; NOTE: this must be the last rule"


def test_rule_after_the_nodeports_tail() -> None:
    text = KUBE.replace("COMMIT\n# Completed", "COMMIT\n# Completed", 1)
    nat = text.rindex("COMMIT")
    text = text[:nat] + "-A KUBE-SERVICES -d 10.96.9.9/32 -p tcp -m tcp --dport 81 -j ACCEPT\n" + text[nat:]
    found = findings(text)
    assert [(f.code, f.line) for f in found] == [("NL404", line_of(text, "--dport 81 -j ACCEPT"))]
    assert found[0].related[-1].line == line_of(text, TAIL)


def test_several_nodeport_tails_are_fine() -> None:
    tail = next(line for line in KUBE.split("\n") if TAIL in line)
    text = KUBE.replace(tail, tail.replace("-A KUBE-SERVICES", "-A KUBE-SERVICES -d 192.168.10.21/32") + "\n"
                        + tail.replace("-A KUBE-SERVICES", "-A KUBE-SERVICES -d 10.0.0.21/32"))
    assert findings(text) == []


def test_nodeports_without_the_tail_jump() -> None:
    text = drop(KUBE, TAIL)
    found = findings(text)
    assert [f.code for f in found] == ["NL404"] and "-j KUBE-NODEPORTS" in found[0].message


def test_mark_bit_mismatch() -> None:
    text = KUBE.replace("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
                        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x8000/0x8000")
    found = findings(text)
    lines = sorted(f.line for f in found)
    assert lines == sorted([line_of(text, "-A KUBE-POSTROUTING -m mark"), line_of(text, "KUBE-POSTROUTING -j MARK"),
                            line_of(text, "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\"")])
    assert all(f.code == "NL404" and "0x8000" in f.message for f in found)


def test_mark_test_the_wrong_way_round() -> None:
    text = KUBE.replace("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
                        "-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j RETURN")
    found = findings(text)
    assert [f.line for f in found] == [line_of(text, "KUBE-POSTROUTING -m mark --mark")]
    assert "wrong way round" in found[0].message


def test_old_single_rule_postrouting_and_other_mark_bit() -> None:
    text = KUBE.replace("0x4000/0x4000", "0x1000/0x1000").replace("0x4000/0x0", "0x1000/0x0")
    assert findings(text) == []
    old = drop(KUBE, "KUBE-POSTROUTING -j MARK", "KUBE-POSTROUTING -m comment").replace(
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE")
    assert findings(old) == []


def test_empty_mark_chain() -> None:
    text = drop(KUBE, "-A KUBE-MARK-MASQ -j MARK")
    found = findings(text)
    assert [f.code for f in found] == ["NL404"] and "sets no mark" in found[0].message


def _one_sep(text: str) -> str:
    return next(line.split()[1] for line in text.split("\n") if line.startswith("-A KUBE-SEP-"))


def test_jump_to_an_empty_endpoint_chain() -> None:
    sep = _one_sep(KUBE)
    text = drop(KUBE, f"-A {sep} ")
    found = findings(text)
    assert [f.line for f in found] == [line_of(text, f"-j {sep}")]
    assert sep in found[0].message and "restart kube-proxy" in found[0].message


def test_service_whose_endpoints_are_all_gone() -> None:
    svc = "KUBE-SVC-NPX46M4PTMTKRN6Y"  # default/kubernetes:https
    seps = {line.split()[-1] for line in KUBE.split("\n") if line.startswith(f"-A {svc}") and "-j KUBE-SEP-" in line}
    text = drop(KUBE, *(f"-A {sep} " for sep in seps))
    found = findings(text)
    svc_level = [f for f in found if f"jumps to {svc}" in f.message]
    assert [f.line for f in svc_level] == [line_of(text, f"-j {svc}")]
    assert len(found) == 1 + len(seps)


@pytest.mark.parametrize(("table_rule", "hook"), [
    ("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES", "PREROUTING"),
    ("-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES", "OUTPUT"),
    ("-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING", "POSTROUTING"),
    ("-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD", "FORWARD"),
])
def test_missing_static_jump(table_rule: str, hook: str) -> None:
    text = drop(KUBE, table_rule)
    found = findings(text)
    assert [f.code for f in found] == ["NL404"]
    assert f"{hook} does not jump" in found[0].message and f"-I {hook}" in found[0].message


# ---- NL405 ---------------------------------------------------------------------------------------

def test_legacy_tables_present() -> None:
    text = "# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n" + KUBE
    found = findings(text)
    assert [(f.code, f.line) for f in found] == [("NL405", 1)]
    assert "iptables-legacy-save" in found[0].message


def test_legacy_tables_present_v6() -> None:
    text = ("# Warning: ip6tables-legacy tables present, use ip6tables-legacy-save to see them\n"
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -s ::1/128 -j ACCEPT\n"
            "COMMIT\n")
    found = findings(text)
    assert [f.code for f in found] == ["NL405"] and "ip6tables-legacy-save" in found[0].message


def test_incompatible_table() -> None:
    text = "# Table `nat' is incompatible, use 'nft' tool.\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"
    found = findings(text)
    assert [(f.code, f.line, f.table) for f in found] == [("NL405", 1, "nat")]
    assert "nft list table ip nat" in found[0].message


def test_other_comments_are_not_backend_warnings() -> None:
    text = ("# Generated by iptables-save v1.8.10 (nf_tables) on Tue Jun 10 09:14:27 2025\n"
            "# see: Warning: iptables-legacy tables present\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n")
    assert findings(text) == []


# ---- documentation -------------------------------------------------------------------------------

@pytest.mark.parametrize("code", ["NL404", "NL405"])
def test_rule_documentation(code: str) -> None:
    text = CliRunner().invoke(main, ["rule", code]).stdout
    assert code in text and "Why it matters" in text and "Fixed" in text


@pytest.mark.parametrize("code", ["NL404", "NL405"])
def test_documented_example_fails_and_fixed_passes(code: str) -> None:
    entry = CODES[code]
    assert code in {f.code for f in findings(entry.example)}
    if entry.fixed.startswith("*"):
        assert code not in {f.code for f in findings(entry.fixed)}
