"""Configuration files: discovery, keys, errors, and how the command line overrides them.

Findings here come from the reader and the structure checks only (see test_formats.py).
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from natlint.checks import load_all
from natlint.cli import main
from natlint.config import Config, ConfigError, Selection, Settings, find_config, load_config

# NL101 (error) at line 4, NL102 (info) at line 3
RULES = "*filter\n:INPUT ACCEPT [0:0]\n:SPARE - [0:0]\n-A INPUT -j LOGDROP\nCOMMIT\n"


@pytest.fixture(autouse=True)
def structure_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("natlint.checks.CHECK_MODULES", ("structure",))
    load_all()


def _tree(tmp_path: Path, config_name: str, config: str) -> Path:
    (tmp_path / config_name).write_text(config)
    (tmp_path / "etc" / "iptables").mkdir(parents=True)
    rules = tmp_path / "etc" / "iptables" / "rules.v4"
    rules.write_text(RULES)
    return rules


def _codes(result: Result) -> list[str]:
    return [f["code"] for f in json.loads(result.stdout)["findings"]]


def _check(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, ["check", "--format", "json", *args], input=stdin)


# ---- discovery -------------------------------------------------------------------------------------


def test_nearest_config_wins_and_dotfile_beats_plain_beats_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.natlint]\nignore = ['NL1']\n")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    assert find_config(sub) == tmp_path / "pyproject.toml"
    (tmp_path / "a" / "natlint.toml").write_text("")
    assert find_config(sub) == tmp_path / "a" / "natlint.toml"
    (tmp_path / "a" / ".natlint.toml").write_text("")
    assert find_config(sub) == tmp_path / "a" / ".natlint.toml"


def test_pyproject_without_a_natlint_table_is_passed_over(tmp_path: Path) -> None:
    (tmp_path / "natlint.toml").write_text("ignore = ['NL102']\n")
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "pyproject.toml").write_text("[tool.ruff]\nline-length = 100\n")
    assert find_config(tmp_path / "proj") == tmp_path / "natlint.toml"


def test_config_applies_to_the_file_it_is_above(tmp_path: Path) -> None:
    rules = _tree(tmp_path, "pyproject.toml", "[project]\nname = 'x'\n[tool.natlint]\nignore = ['NL102']\n")
    assert _codes(_check(str(rules))) == ["NL101"]
    assert _codes(_check("--isolated", str(rules))) == ["NL102", "NL101"]


def test_stdin_uses_the_config_above_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".natlint.toml").write_text("select = ['NL102']\n")
    monkeypatch.chdir(tmp_path)
    assert _codes(_check("-", stdin=RULES)) == ["NL102"]


def test_explicit_config_file(tmp_path: Path) -> None:
    rules = _tree(tmp_path, "natlint.toml", "ignore = ['NL102']\n")
    other = tmp_path / "strict.toml"
    other.write_text("select = ['NL102']\n")
    assert _codes(_check("--config", str(other), str(rules))) == ["NL102"]
    assert _check("--config", str(other), "--isolated", str(rules)).exit_code == 2


# ---- keys ------------------------------------------------------------------------------------------


def test_unknown_key_is_an_error_naming_file_and_key(tmp_path: Path) -> None:
    rules = _tree(tmp_path, "pyproject.toml", "[tool.natlint]\nselect = ['NL1']\nfail_on = 'info'\n")
    result = _check(str(rules))
    assert result.exit_code == 2
    assert str(tmp_path / "pyproject.toml") in result.stderr
    assert "unknown key 'tool.natlint.fail_on'" in result.stderr and "did you mean 'fail-on'" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("text", "message"), [
    ("select = 'NL1'\nformat = 'xml'\n", "format must be one of"),
    ("fail-on = 'fatal'\n", "fail-on must be one of"),
    ("select = [1]\n", "select must be a list of strings"),
    ("ignore = ['NLX']\n", "'NLX' is not a code"),
    ("ignore = ['no-such-rule']\n", "'no-such-rule' names no natlint code"),
    ("[severity]\nNL101 = 'fatal'\n", "severity.NL101 must be one of"),
    ("trusted-networks = ['10.0.0.0/33']\n", "trusted-networks"),
    ("[per-file-ignores]\n'*.rules' = 'NL1'\nx = 1\n", "per-file-ignores"),
    ("select = [\n", "not valid TOML"),
])
def test_bad_values_are_errors(tmp_path: Path, text: str, message: str) -> None:
    rules = _tree(tmp_path, "natlint.toml", text)
    result = _check(str(rules))
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "natlint.toml" in result.stderr


def test_load_config_reads_every_key(tmp_path: Path) -> None:
    (tmp_path / "natlint.toml").write_text(
        "select = ['nl1', 'undefined-chain']\nextend-select = ['NL0']\nignore = ['NL102']\nfail-on = 'warning'\n"
        "format = 'full'\nhost = 'hosts/h.toml'\ntrusted-interfaces = ['wg0']\ntrusted-networks = ['10.8.0.1/24']\n"
        "[per-file-ignores]\n'legacy/*' = ['NL1']\n[severity]\nNL102 = 'error'\n")
    config = load_config(tmp_path / "natlint.toml")
    assert config.selection == Selection(("NL1", "undefined-chain"), ("NL0",), ("NL102",))
    assert (config.fail_on, config.format) == ("warning", "full")
    assert config.host == str(tmp_path / "hosts" / "h.toml")  # relative to the config file
    assert config.trusted_interfaces == ("wg0",)
    assert config.trusted_networks == (ipaddress.ip_network("10.8.0.0/24"),)
    assert config.per_file_ignores == (("legacy/*", ("NL1",)),)
    assert config.severity == (("NL102", "error"),)


# ---- selection ------------------------------------------------------------------------------------


def test_selection_most_specific_selector_wins() -> None:
    cfg = Config(selection=Selection(("NL1",), (), ("NL102",)))
    settings = Settings(cfg)
    assert settings.enabled("NL101", "x") and not settings.enabled("NL102", "x")
    assert not settings.enabled("NL001", "x")  # select starts afresh
    flipped = Settings(Config(selection=Selection(("NL102",), (), ("NL1",))))
    assert flipped.enabled("NL102", "x") and not flipped.enabled("NL101", "x")
    by_name = Settings(Config(selection=Selection(None, (), ("unreferenced-chain",))))
    assert not by_name.enabled("NL102", "x") and by_name.enabled("NL101", "x")


def test_command_line_overrides_the_config() -> None:
    cfg = Config(selection=Selection(("NL1",), (), ("NL102",)))
    assert Settings(cfg, Selection(("NL0",))).enabled("NL001", "x")  # --select replaces
    assert not Settings(cfg, Selection(("NL0",))).enabled("NL101", "x")
    assert Settings(cfg, Selection(None, ("NL102",))).enabled("NL102", "x")  # --extend-select adds back
    assert not Settings(cfg, Selection(None, (), ("NL101",))).enabled("NL101", "x")  # --ignore adds


def test_cli_select_and_ignore_options(tmp_path: Path) -> None:
    rules = _tree(tmp_path, "natlint.toml", "ignore = ['NL102']\n")
    assert _codes(_check("--select", "NL102", str(rules))) == ["NL102"]
    assert _codes(_check("--extend-select", "NL102", str(rules))) == ["NL102", "NL101"]
    assert _codes(_check("--ignore", "NL1", str(rules))) == []
    # as in ruff, a --select starts afresh: the config's ignore does not carry over
    assert _codes(_check("--select", "NL0,NL1", "--ignore", "undefined-chain", str(rules))) == ["NL102"]
    bad = _check("--select", "NL9", str(rules))
    assert bad.exit_code == 2 and "NL9" in bad.stderr


def test_per_file_ignores(tmp_path: Path) -> None:
    rules = _tree(tmp_path, "natlint.toml", "[per-file-ignores]\n'etc/iptables/*.v4' = ['NL101']\n'*.v6' = ['NL1']\n")
    assert _codes(_check(str(rules))) == ["NL102"]
    v6 = rules.with_suffix(".v6")
    v6.write_text(RULES)
    assert _codes(_check(str(v6))) == []


def test_severity_override_and_fail_on_from_config(tmp_path: Path) -> None:
    rules = _tree(tmp_path, "natlint.toml", "fail-on = 'info'\n[severity]\nNL1 = 'warning'\nNL102 = 'error'\n")
    result = _check(str(rules))
    severities = {f["code"]: f["severity"] for f in json.loads(result.stdout)["findings"]}
    assert severities == {"NL101": "warning", "NL102": "error"}
    assert result.exit_code == 1
    (tmp_path / "natlint.toml").write_text("fail-on = 'error'\n[severity]\nNL101 = 'info'\n")
    assert _check(str(rules)).exit_code == 0  # NL101 is info now, under the threshold
    assert _check("--fail-on", "info", str(rules)).exit_code == 1  # the command line wins


def test_format_from_config_and_overrides(tmp_path: Path) -> None:
    rules = _tree(tmp_path, "natlint.toml", "format = 'github'\n")
    runner = CliRunner()
    assert runner.invoke(main, ["check", str(rules)]).stdout.startswith("::")
    assert runner.invoke(main, ["check", str(rules)], env={"NATLINT_FORMAT": "concise"}).stdout.startswith(str(rules))
    assert runner.invoke(main, ["check", "--format", "json", str(rules)]).stdout.startswith("{")


def test_host_is_relative_to_the_config_file(tmp_path: Path) -> None:
    rules = _tree(tmp_path, "natlint.toml", "host = 'no-such-host.toml'\n")
    result = _check(str(rules))
    assert result.exit_code == 2
    assert "natlint.toml: host:" in result.stderr and str(tmp_path / "no-such-host.toml") in result.stderr


def test_trusted_interfaces_and_networks_reach_the_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import natlint.checks

    seen = []
    real = natlint.checks.run_checks

    def spy(ruleset, host=None, *, ctx=None):  # type: ignore[no-untyped-def]
        seen.append(ctx)
        return real(ruleset, host, ctx=ctx)

    monkeypatch.setattr(natlint.checks, "run_checks", spy)
    rules = _tree(tmp_path, "natlint.toml", "trusted-interfaces = ['wg0', 'lo']\ntrusted-networks = ['fd00::/8']\n")
    _check(str(rules))
    assert seen[0].trusted_interfaces == ("wg0", "lo")
    assert seen[0].trusted_networks == (ipaddress.ip_network("fd00::/8"),)
    _check("--isolated", str(rules))
    assert seen[1].trusted_interfaces == () and seen[1].trusted_networks == ()


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)
