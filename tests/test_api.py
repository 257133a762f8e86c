"""The library API: natlint.load, Ruleset.check/trace/ports, natlint.diff, natlint.api."""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

import natlint
from natlint import api
from natlint.cli import main
from natlint.config import Config, ConfigError, load_config
from natlint.model.ruleset import Ruleset
from natlint.netfilter.trace import TraceQuery, outcome_to_dict

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
DB = FIXTURES / "docker-published-db.rules"
HOST = FIXTURES / "kernel" / "lab.host.toml"

SUPPRESSED = """*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
# natlint: ignore[NL101] the chain comes from another file
-A INPUT -j LOGDROP
-A INPUT -j MISSING
COMMIT
"""


def _cli_findings(*args: str) -> list[dict[str, object]]:
    result = CliRunner().invoke(main, ["check", "--isolated", "--format", "json", *args])
    assert result.exit_code in (0, 1), result.output
    findings: list[dict[str, object]] = json.loads(result.stdout)["findings"]
    return findings


def test_import_natlint_is_light() -> None:
    code = ("import sys, natlint\n"
            "print(sorted(m for m in ('lark', 'networkx', 'dd', 'click', 'natlint.netfilter.engine',"
            " 'natlint.syntax.reader') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_names() -> None:
    assert {"load", "diff", "Ruleset", "__version__"} <= set(natlint.__all__)
    for name in ("check", "trace", "ports"):
        assert callable(getattr(Ruleset, name)) and getattr(Ruleset, name).__doc__


def test_py_typed_in_the_package() -> None:
    assert (ROOT / "natlint" / "py.typed").is_file()


def test_py_typed_in_the_wheel(tmp_path: Path) -> None:
    pytest.importorskip("hatchling", reason="hatchling (the build backend) is not installed")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("natlint-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"natlint/py.typed", "natlint/api.py", "natlint/_grammar/iptables_save.lark"} <= names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "natlint-system = natlint.system:run" in text and "natlint = natlint.cli:main" in text


def test_methods_keep_the_dataclass_value_semantics() -> None:
    rs = natlint.load(DB)
    assert [f.name for f in dataclasses.fields(Ruleset)] == ["path", "family", "tables", "diagnostics", "lines"]
    assert pickle.loads(pickle.dumps(rs)) == rs
    assert natlint.load(DB) == rs
    assert dataclasses.replace(rs, path="other") != rs
    with pytest.raises(dataclasses.FrozenInstanceError):
        rs.path = "x"  # type: ignore[misc]
    assert not hasattr(rs, "__dict__")  # still slotted


def test_check_matches_the_command_line() -> None:
    rs = natlint.load(DB, path=str(DB))
    assert [f.to_dict() for f in rs.check()] == _cli_findings(str(DB))
    assert [f.code for f in rs.check()] == ["NL301", "NL101"]


def test_check_with_a_config_mapping_file_and_object(tmp_path: Path) -> None:
    rs = natlint.load(DB)
    mapping = {"ignore": ["NL3"], "severity": {"NL101": "warning"}}
    expected = [("NL101", "warning")]
    assert [(f.code, f.severity) for f in rs.check(config=mapping)] == expected
    toml = tmp_path / "natlint.toml"
    toml.write_text('ignore = ["NL3"]\n[severity]\nNL101 = "warning"\n', encoding="utf-8")
    assert [(f.code, f.severity) for f in rs.check(config=toml)] == expected
    assert [(f.code, f.severity) for f in rs.check(config=str(toml))] == expected
    assert [(f.code, f.severity) for f in rs.check(config=load_config(toml))] == expected
    pyproject = tmp_path / "sub" / "pyproject.toml"
    pyproject.parent.mkdir()
    pyproject.write_text('[tool.natlint]\nselect = ["NL1"]\n', encoding="utf-8")
    assert [f.code for f in rs.check(config=pyproject)] == ["NL101"]
    # keyword selectors win over the configuration, as command-line options do
    assert [f.code for f in rs.check(config=mapping, select=["NL3"])] == ["NL301"]
    assert [f.code for f in rs.check(ignore=["undefined-chain"])] == ["NL301"]


def test_nearest_config_is_what_the_cli_uses(tmp_path: Path) -> None:
    (tmp_path / ".natlint.toml").write_text('ignore = ["NL301"]\n', encoding="utf-8")
    dump = tmp_path / "rules.v4"
    dump.write_bytes(DB.read_bytes())
    config = api.nearest_config(dump)
    assert config.path is not None and config.path.name == ".natlint.toml"
    rs = natlint.load(dump)
    cli = CliRunner().invoke(main, ["check", "--format", "json", str(dump)])
    assert [f.to_dict() for f in rs.check(config=config)] == json.loads(cli.stdout)["findings"]
    assert api.nearest_config(Path("/") / "nonexistent" / "rules.v4") == Config()


def test_bad_configuration_raises_value_error() -> None:
    rs = natlint.load(DB)
    with pytest.raises(ConfigError, match="unknown key 'nonsense'"):
        rs.check(config={"nonsense": 1})
    with pytest.raises(ValueError, match="names no natlint code"):
        rs.check(config={"select": ["NL999"]})
    with pytest.raises(ValueError, match="NL999"):
        rs.check(select=["NL999"])
    with pytest.raises(ConfigError, match="cannot read"):
        rs.check(config=Path("/nonexistent/natlint.toml"))
    with pytest.raises(TypeError):
        rs.check(config=42)  # type: ignore[arg-type]


def test_suppressions_apply_like_the_cli(tmp_path: Path) -> None:
    rs = natlint.load(SUPPRESSED)
    assert [(f.code, f.line) for f in rs.check()] == [("NL101", 7)]
    assert sorted((f.code, f.line) for f in rs.check(suppressions=False)) == [("NL101", 6), ("NL101", 7)]
    dump = tmp_path / "rules.v4"
    dump.write_text(SUPPRESSED, encoding="utf-8")
    assert [f.to_dict() for f in natlint.load(dump).check()] == _cli_findings(str(dump))


def test_host_argument_forms(tmp_path: Path) -> None:
    from natlint.host import read_host_file

    rs = natlint.load(DB)
    model = read_host_file(HOST, 4)
    by_path = [f.to_dict() for f in rs.check(host=HOST)]
    assert by_path == [f.to_dict() for f in rs.check(host=str(HOST))]
    assert by_path == [f.to_dict() for f in rs.check(host=model)]
    assert [f["code"] for f in _cli_findings("--host", str(HOST), str(DB))] == [f["code"] for f in by_path]
    # the configuration's host key, relative to the file
    (tmp_path / "host.toml").write_bytes(HOST.read_bytes())
    (tmp_path / "natlint.toml").write_text('host = "host.toml"\n', encoding="utf-8")
    assert [f.to_dict() for f in rs.check(config=tmp_path / "natlint.toml")] == by_path
    assert api.resolve_host(rs, None) is None
    with pytest.raises(ValueError, match="cannot read the host file"):
        rs.check(host=tmp_path / "missing.toml")


def test_trace_with_fields_or_a_query() -> None:
    rs = natlint.load(DB)
    fields = {"in_interface": "eth0", "src": "203.0.113.9", "dst": "198.51.100.1", "proto": "tcp", "dport": 3306}
    outcomes = rs.trace(**fields)  # type: ignore[arg-type]
    query = TraceQuery("eth0", False, "203.0.113.9", "198.51.100.1", "tcp", None, "3306")
    assert [outcome_to_dict(o) for o in outcomes] == [outcome_to_dict(o) for o in rs.trace(query)]
    assert [o.verdict for o in outcomes] == ["DROP"]
    cli = CliRunner().invoke(main, ["trace", str(DB), "--in", "eth0", "--src", "203.0.113.9", "--dst",
                                    "198.51.100.1", "--proto", "tcp", "--dport", "3306", "--format", "json"])
    assert json.loads(cli.stdout)["outcomes"] == [outcome_to_dict(o) for o in outcomes]
    local = rs.trace(local=True, dst="1.1.1.1", proto=17, dport=53)
    assert local and all(o.verdict == "ACCEPT" for o in local)
    assert rs.trace(in_interface="eth0", dport="8000:9000", proto="tcp", host=HOST)


def test_trace_argument_errors() -> None:
    rs = natlint.load(DB)
    with pytest.raises(TypeError, match="unknown packet field"):
        rs.trace(in_iface="eth0")
    with pytest.raises(TypeError, match="not both"):
        rs.trace(TraceQuery("eth0"), dport=22)
    with pytest.raises(ValueError, match="not both"):
        rs.trace(in_interface="eth0", local=True)
    with pytest.raises(ValueError):
        rs.trace(in_interface="eth0", dst="not-an-address")


def test_ports_calls_portmap(monkeypatch: pytest.MonkeyPatch) -> None:
    import natlint.portmap as portmap
    from natlint.host import read_host_file

    rs = natlint.load(DB)
    report = rs.ports()
    assert isinstance(report, portmap.PortsReport)
    assert [s.front for s in report.services] == [s.front for s in portmap.ports(rs, None).services]
    seen: list[tuple[object, object]] = []
    monkeypatch.setattr(portmap, "ports", lambda ruleset, host=None: seen.append((ruleset, host)) or "report")
    assert rs.ports(host=HOST) == "report"
    assert seen[0][0] is rs and seen[0][1] == read_host_file(HOST, 4)


def test_diff_is_a_lazy_wrapper(monkeypatch: pytest.MonkeyPatch) -> None:
    import natlint.semdiff as semdiff

    old = FIXTURES / "lint" / "nl3xx" / "nl306_policy_drop.rules"
    new = FIXTURES / "lint" / "nl3xx" / "nl306_ok_input_accepts.rules"
    report = natlint.diff(old, new)
    assert isinstance(report, semdiff.DiffReport) and report.exposed
    assert natlint.diff(natlint.load(old), str(new)).to_dict()["changes"] == report.to_dict()["changes"]
    seen: list[tuple[object, ...]] = []
    monkeypatch.setattr(semdiff, "diff", lambda a, b, host=None: seen.append((a, b, host)) or "report")
    assert natlint.diff(old, new.read_text(encoding="utf-8")) == "report"
    assert isinstance(seen[0][0], Ruleset) and seen[0][0].path == str(old)
    assert isinstance(seen[0][1], Ruleset) and seen[0][1].path == "<text>"
    assert seen[0][2] is None


def test_apply_settings_is_what_the_cli_runs() -> None:
    import natlint.cli as cli

    assert not hasattr(cli, "_post_process")  # one implementation: natlint.api.apply_settings
    assert "apply_settings" in Path(cli.__file__).read_text(encoding="utf-8")


def test_a_host_model_of_the_other_family_is_refused_with_a_clear_error() -> None:
    from natlint.checks import run_checks
    from natlint.host.model import HostModel, IfAddress, Interface

    ruleset = natlint.load(b"# Generated by ip6tables-save\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n")
    v4 = HostModel(family=4, interfaces=(Interface("eth0", (IfAddress.parse("198.51.100.1/24"),)),))
    with pytest.raises(ValueError, match="host model is for IPv4 and the ruleset is an IPv6 dump"):
        run_checks(ruleset, v4)
