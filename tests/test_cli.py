"""The command line, as a user meets it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from natlint import __version__
from natlint.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BAD = FIXTURES / "docker-published-db.rules"
CLEAN = "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n"


def test_findings_exit_1_with_one_line_each() -> None:
    result = CliRunner().invoke(main, ["check", str(BAD)])
    assert result.exit_code == 1
    line = next(x for x in result.stdout.splitlines() if "NL101" in x)
    assert line.startswith(f"{BAD}:24:10: NL101 [error] ")
    assert line.endswith("(undefined-chain)")


def test_clean_input_from_stdin_exits_0() -> None:
    result = CliRunner().invoke(main, ["check", "-"], input=CLEAN)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""


def test_fail_on_and_exit_zero() -> None:
    warn_only = CLEAN.replace("COMMIT", ":SPARE - [0:0]\n-A SPARE -j ACCEPT\nCOMMIT")
    runner = CliRunner()
    assert runner.invoke(main, ["check", "-"], input=warn_only).exit_code == 0
    assert runner.invoke(main, ["check", "--fail-on", "warning", "-"], input=warn_only).exit_code == 1
    assert runner.invoke(main, ["check", "--exit-zero", str(BAD)]).exit_code == 0


def test_json_report_contract() -> None:
    result = CliRunner().invoke(main, ["check", "--format", "json", str(BAD), "-"], input=CLEAN)
    doc = json.loads(result.stdout)
    assert doc["version"] == 1
    assert doc["summary"]["files"] == 2
    assert doc["summary"]["errors"] == 1
    finding = next(f for f in doc["findings"] if f["code"] == "NL101")
    keys = {"code", "name", "severity", "path", "line", "column", "table", "chain", "message", "related"}
    assert set(finding) >= keys
    assert (finding["line"], finding["column"], finding["table"], finding["chain"]) == (24, 10, "filter", "INPUT")


def test_full_format_points_at_the_column() -> None:
    result = CliRunner().invoke(main, ["check", "--format", "full", str(BAD)])
    lines = result.stdout.splitlines()
    at = next(i for i, x in enumerate(lines) if "24 | -A INPUT -j LOGDROP" in x)
    assert lines[at + 1].index("^") == lines[at].index("-j LOGDROP")


def test_unreadable_file_exits_2() -> None:
    result = CliRunner().invoke(main, ["check", "/nonexistent/rules.v4"])
    assert result.exit_code == 2
    assert "cannot read /nonexistent/rules.v4" in result.stderr


def test_version_and_rule_help() -> None:
    runner = CliRunner()
    assert __version__ in runner.invoke(main, ["--version"]).stdout
    text = runner.invoke(main, ["rule", "NL101"]).stdout
    assert "undefined-chain" in text and "Why it matters" in text and "Fixed" in text
    listing = runner.invoke(main, ["rule", "--all"]).stdout
    assert all(code in listing for code in ("NL001", "NL002", "NL003", "NL004", "NL101", "NL105"))
    assert runner.invoke(main, ["rule", "NL999"]).exit_code == 2


def test_console_script_runs_without_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "natlint.cli", "check", "-"], input=b"\x00\xff*junk\n-A X\n", capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert b"Traceback" not in proc.stderr
