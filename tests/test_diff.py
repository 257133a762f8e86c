"""``natlint diff`` and natlint.semdiff: what a change to the rules does to traffic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from natlint.cli import main
from natlint.host import load_host_file
from natlint.model.ruleset import Ruleset
from natlint.semdiff import DiffReport, diff, format_text, union_ruleset
from natlint.syntax.reader import read

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "diff"
BASE = FIXTURES / "base.rules"
HOST = FIXTURES / "host.toml"
REFERENCE = Path("/work/shared/reference-dumps/docker-28-2containers.rules")


def _read(path: Path) -> Ruleset:
    return read(path.read_bytes(), str(path), None)


def _diff(new: str, *, host: bool = True) -> DiffReport:
    model = load_host_file(str(HOST), 4) if host else None
    return diff(_read(BASE), _read(FIXTURES / new), model)


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["diff", *args])
    return result.exit_code, result.output


def test_opening_a_port_is_newly_exposed_and_exits_1() -> None:
    report = _diff("open-port.rules")
    assert [c.kind for c in report.changes] == ["exposed"]
    change = report.exposed[0]
    assert change.traffic == "arriving" and set(change.interfaces) == {"eth0", "eth1"}
    assert change.witness["dport"] == 443 and change.witness["proto"] == 6
    assert str(change.old.fate) == "dropped" and change.old.rules[0].action == "policy DROP"
    assert change.new.fate.delivered == "local"
    assert change.new.rules[0].rule == "-A INPUT -p tcp -m tcp --dport 443 -j ACCEPT"
    assert change.certainty == "exact"
    code, out = _cli(str(BASE), str(FIXTURES / "open-port.rules"), "--host", str(HOST))
    assert code == 1, out
    assert "Newly exposed" in out and "--dport 443 -j ACCEPT" in out and "e.g. tcp " in out


def test_closing_a_port_is_newly_blocked_and_exits_0() -> None:
    report = _diff("close-port.rules", host=False)  # INPUT only: the inferred host is enough
    assert [c.kind for c in report.changes] == ["blocked"]
    change = report.blocked[0]
    assert change.witness["dport"] == 22
    assert change.old.rules[0].rule == "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"
    assert str(change.new.fate) == "dropped"
    code, out = _cli(str(BASE), str(FIXTURES / "close-port.rules"))
    assert code == 0, out
    assert "Newly blocked" in out


def test_changing_a_dnat_target_is_a_nat_change() -> None:
    report = _diff("dnat-target.rules")
    nat = report.nat_changed
    assert len(nat) == 1
    change = nat[0]
    assert change.witness["dport"] == 8080 and change.witness["in"] == "eth0"
    assert change.old.result is not None and "-> 192.168.1.10:80" in change.old.result
    assert change.new.result is not None and "-> 192.168.1.11:80" in change.new.result
    assert any("--to-destination 192.168.1.10:80" in (r.rule or "") for r in change.old.rules)
    assert any("--to-destination 192.168.1.11:80" in (r.rule or "") for r in change.new.rules)
    # the FORWARD rule now lets the new server's port in from eth0 directly, and no longer the old one's
    assert {c.witness["dst"] for c in report.exposed} == {"192.168.1.11"}
    assert {c.witness["dst"] for c in report.blocked} == {"192.168.1.10"}


def test_reordered_independent_rules_change_nothing() -> None:
    report = _diff("reordered.rules")
    assert report.unchanged, format_text(report)
    code, out = _cli(str(BASE), str(FIXTURES / "reordered.rules"), "--host", str(HOST))
    assert code == 0 and "No change" in out


def test_identical_rulesets_without_a_host_file() -> None:
    assert diff(_read(BASE), _read(BASE)).unchanged


def test_reordering_dependent_rules_is_a_change() -> None:
    text = BASE.read_text()
    new = text.replace("-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n", "").replace(
        "-A INPUT -i lo -j ACCEPT\n", "-A INPUT -i lo -j ACCEPT\n-A INPUT -p tcp -j DROP\n"
        "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n")
    report = diff(_read(BASE), read(new.encode(), "new.rules", 4), load_host_file(str(HOST), 4))
    assert {c.kind for c in report.changes} == {"blocked"}
    assert {c.witness["dport"] for c in report.blocked} == {22}


def test_locally_generated_traffic() -> None:
    new = BASE.read_text().replace(":OUTPUT ACCEPT [0:0]\n-A INPUT -i lo",
                                   ":OUTPUT ACCEPT [0:0]\n-A OUTPUT -p tcp -m tcp --dport 25 -j REJECT\n-A INPUT -i lo")
    report = diff(_read(BASE), read(new.encode(), "new.rules", 4), load_host_file(str(HOST), 4))
    # one class per old fate: delivered on lo, forwarded out of eth0, out of eth1
    assert {(c.kind, c.traffic) for c in report.changes} == {("blocked", "local")}
    assert {str(c.old.fate) for c in report.changes} == {"delivered locally (on lo)", "forwarded out of eth0",
                                                         "forwarded out of eth1"}
    for change in report.changes:
        assert change.witness["dport"] == 25 and change.witness["in"] is None
        assert str(change.new.fate) == "rejected"
        assert change.new.rules[0].rule == "-A OUTPUT -p tcp -m tcp --dport 25 -j REJECT"
    assert "sent by the host" in format_text(report)


def test_union_host_sees_interfaces_of_both_dumps() -> None:
    lo = "-A INPUT -i lo -j ACCEPT\n"
    new = BASE.read_text().replace(lo, lo + "-A INPUT -i wg0 -j ACCEPT\n")
    new_rules = read(new.encode(), "new.rules", 4)
    assert len(list(union_ruleset(_read(BASE), new_rules).rules())) == 2 * len(list(_read(BASE).rules())) + 1
    report = diff(_read(BASE), new_rules)
    assert "wg0" in report.interfaces
    assert report.exposed and all(c.interfaces == ("wg0",) for c in report.exposed)


def test_json_output() -> None:
    code, out = _cli(str(BASE), str(FIXTURES / "dnat-target.rules"), "--host", str(HOST), "--format", "json")
    assert code == 1
    data = json.loads(out)
    assert data["summary"] == {"exposed": 1, "blocked": 1, "nat": 1, "changed": 0}
    assert data["host"]["source"] == "file"
    nat = next(c for c in data["changes"] if c["kind"] == "nat")
    assert nat["old"]["fate"]["delivered"] == "out" and nat["witness"]["in"] == "eth0"
    assert nat["old"]["rules"][0]["table"] == "nat" and nat["certainty"] == "exact"


def test_unreadable_input_and_family_mismatch_exit_2(tmp_path: Path) -> None:
    code, out = _cli(str(tmp_path / "missing.rules"), str(BASE))
    assert code == 2 and "cannot read" in out
    v6 = tmp_path / "v6.rules"
    v6.write_text("*filter\n:INPUT DROP [0:0]\n-A INPUT -s 2001:db8::/32 -j ACCEPT\nCOMMIT\n")
    code, out = _cli(str(BASE), str(v6))
    assert code == 2 and "IPv4" in out and "IPv6" in out
    with pytest.raises(ValueError, match="cannot compare"):
        diff(_read(BASE), _read(v6))


def test_budget_exceeded_is_analysis_incomplete(monkeypatch: pytest.MonkeyPatch) -> None:
    from natlint.netfilter.engine import BranchBudgetExceeded

    stopped = False
    try:  # not pytest.raises: its traceback would keep BDD nodes alive past their manager
        diff(_read(BASE), _read(FIXTURES / "open-port.rules"), max_branches=2)
    except BranchBudgetExceeded:
        stopped = True
    assert stopped

    import functools

    import natlint.semdiff

    monkeypatch.setattr(natlint.semdiff, "diff", functools.partial(natlint.semdiff.diff, max_branches=2))
    code, out = _cli(str(BASE), str(FIXTURES / "open-port.rules"))
    assert code == 2
    assert "analysis incomplete" in out and "Traceback" not in out


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference dumps not available")
def test_docker_reference_dump_with_docker_user_drop() -> None:
    text = REFERENCE.read_text()
    new_text = text.replace("-A FORWARD -j DOCKER-USER\n", "-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j DROP\n")
    assert new_text != text
    report = diff(read(text.encode(), str(REFERENCE), None), read(new_text.encode(), "new.rules", None))
    assert report.changes and not report.exposed
    assert {c.kind for c in report.changes} == {"blocked"}
    assert all(c.new.rules[0].rule == "-A DOCKER-USER -j DROP" for c in report.blocked)
    published = [c for c in report.blocked if c.witness["dport"] == 8080]  # web: -p 8080:80
    assert published and published[0].old.result is not None and "172.17.0.2:80" in published[0].old.result
    assert {"docker0", "eth0"} <= {i for c in report.blocked for i in c.interfaces}


def test_subprocess_exit_code_for_ci(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", "from natlint.cli import main; main()", "diff", str(BASE),
                           str(FIXTURES / "open-port.rules"), "--format", "json"],
                          capture_output=True, timeout=300, check=False)
    assert proc.returncode == 1, proc.stderr.decode()
    assert json.loads(proc.stdout)["summary"]["exposed"] == 1
