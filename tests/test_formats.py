"""Output formats: concise, full, json, sarif, github; colour; untrusted text from the checked file.

The checks other modules add are work in progress and can take minutes on some fixtures, so
these tests run the reader's and the structure checks' findings only (``structure_only``); the
formats do not depend on which check produced a finding, and the synthetic findings below cover
related locations, witnesses and approximate findings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from jsonschema import Draft4Validator

import natlint
from natlint.checks import run_checks
from natlint.cli import main
from natlint.findings import CODES, Finding, Related
from natlint.report.github import escape_data, escape_property, format_github
from natlint.report.sarif import format_sarif
from natlint.report.text import clean, format_concise, format_full

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
VALIDATOR = Draft4Validator(SCHEMA)
UNDEFINED = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j LOGDROP\nCOMMIT\n"


@pytest.fixture(autouse=True)
def structure_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("natlint.checks.CHECK_MODULES", ("structure",))


def _sarif_errors(log: object) -> list[str]:
    errors = sorted(VALIDATOR.iter_errors(log), key=lambda e: list(e.path))
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors]


def _synthetic() -> list[Finding]:
    source = '-A INPUT -p tcp --dport 22 -m comment --comment "ssh" -j ACCEPT'
    return [
        Finding("NL101", "error", "'-j LOGDROP' jumps to a chain that is not declared", "rules.v4", 3, 10,
                "filter", "INPUT", source_line="-A INPUT -j LOGDROP"),
        Finding("NL102", "warning", "shadowed by line 2", "rules.v4", 4, 1, "filter", "INPUT",
                related=(Related("rules.v4", 2, "ACCEPT: takes tcp dport 22"),),
                witness={"src": "203.0.113.10", "dst": "198.51.100.10", "proto": 6, "dport": 22},
                certainty="approximate", source_line=source),
        Finding("NL004", "info", "unknown module", "/abs/elsewhere.rules", 1, 1),
        Finding("NL001", "error", "bad", "<stdin>", 2, 5),
    ]


SOURCES = {"rules.v4": ("*filter", "-A INPUT -p tcp --dport 22 -j ACCEPT", "-A INPUT -j LOGDROP",
                        '-A INPUT -p tcp --dport 22 -m comment --comment "ssh" -j ACCEPT', "COMMIT")}


# ---- concise and full -----------------------------------------------------------------------------


def test_full_shows_caret_related_text_and_witness() -> None:
    text = format_full(_synthetic(), sources=SOURCES)
    lines = text.splitlines()
    at = lines.index("  3 | -A INPUT -j LOGDROP")
    assert lines[at + 1].index("^") == lines[at].index("-j LOGDROP")
    assert "  = related: rules.v4:2: ACCEPT: takes tcp dport 22" in lines
    assert "      2 | -A INPUT -p tcp --dport 22 -j ACCEPT" in lines  # the related rule's own text
    assert "  = e.g.: src=203.0.113.10 dst=198.51.100.10 proto=6 dport=22" in lines
    assert any("approximate" in x for x in lines)


def test_full_reads_the_source_line_when_the_finding_has_none() -> None:
    result = CliRunner().invoke(main, ["check", "--format", "full", "-"], input=UNDEFINED)
    assert "3 | -A INPUT -j LOGDROP" in result.stdout


def test_terminal_formats_strip_control_characters_from_the_file() -> None:
    evil = "x\x1b[2J\x1b]0;title\x07\r\x00\x9b31m\u202eevil"
    finding = Finding("NL101", "error", f"message {evil}", f"dir/{evil}.rules", 1, 1, related=(
        Related("r", 1, evil),), source_line=f"-A INPUT -j {evil}")
    for out in (format_concise([finding]), format_full([finding], sources={"r": (evil,)})):
        body = out.rstrip("\n")
        assert all(ch == "\n" or (ord(ch) >= 32 and not 127 <= ord(ch) < 160) for ch in body), repr(body)
        assert "\u202e" not in body
    assert clean("a\tb") == "a\tb"


def test_colour_only_when_asked_and_never_around_file_text() -> None:
    finding = Finding("NL101", "error", "msg \x1b[31m", "p", 1, 1, source_line="-A X \x1b[0m")
    plain = format_concise([finding])
    assert "\x1b" not in plain
    coloured = format_full([finding], color=True)
    assert "\x1b[1;31merror\x1b[0m" in coloured
    assert "msg ?[31m" in coloured and "-A X ?[0m" in coloured


def test_cli_colour_follows_no_color_and_force_color() -> None:
    runner = CliRunner()
    assert "\x1b[" not in runner.invoke(main, ["check", "-"], input=UNDEFINED).stdout  # not a terminal
    forced = runner.invoke(main, ["check", "-"], input=UNDEFINED, env={"FORCE_COLOR": "1", "NO_COLOR": ""})
    assert "\x1b[" in forced.stdout
    both = runner.invoke(main, ["check", "-"], input=UNDEFINED, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert "\x1b[" not in both.stdout


# ---- format selection, -o, summary on stderr -------------------------------------------------------


def test_format_from_env_and_output_file(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["check", "-"], input=UNDEFINED, env={"NATLINT_FORMAT": "json"})
    assert json.loads(result.stdout)["summary"]["errors"] == 1
    assert "Found 1 error(s)" in result.stderr
    target = tmp_path / "out.sarif"
    result = runner.invoke(main, ["check", "--format", "sarif", "-o", str(target), "-"], input=UNDEFINED)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert _sarif_errors(json.loads(target.read_text(encoding="utf-8"))) == []
    assert runner.invoke(main, ["check", "--format", "xml", "-"], input=UNDEFINED).exit_code == 2


# ---- SARIF -------------------------------------------------------------------------------------------


def test_the_vendored_schema_is_the_official_one() -> None:
    Draft4Validator.check_schema(SCHEMA)
    assert SCHEMA["id"] == "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
    assert len((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text(encoding="utf-8")) == 112768


@pytest.mark.parametrize("path", sorted(FIXTURES.rglob("*.rules")), ids=lambda p: str(p.relative_to(FIXTURES)))
def test_sarif_of_every_fixture_is_valid(path: Path) -> None:
    ruleset = natlint.load(path)
    findings = run_checks(ruleset)
    log = json.loads(format_sarif(findings, sources={ruleset.path: ruleset.lines}))
    assert _sarif_errors(log) == []
    assert len(log["runs"][0]["results"]) == len(findings)


def test_sarif_content(tmp_path: Path) -> None:
    log = json.loads(format_sarif(_synthetic(), sources=SOURCES, cwd=tmp_path, failures=["cannot read x"]))
    assert _sarif_errors(log) == []
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == sorted(CODES)
    nl101 = next(r for r in rules if r["id"] == "NL101")
    assert nl101["name"] == "undefined-chain"
    assert nl101["defaultConfiguration"]["level"] == "error"
    assert "Why it matters" in nl101["help"]["text"] and "Fixed" in nl101["help"]["markdown"]
    assert CODES["NL101"].fixed in nl101["help"]["text"]
    first, second, info, stdin = run["results"]
    assert rules[first["ruleIndex"]]["id"] == "NL101"
    assert [r["level"] for r in run["results"]] == ["error", "warning", "note", "error"]
    region = first["locations"][0]["physicalLocation"]["region"]
    assert (region["startLine"], region["startColumn"], region["snippet"]["text"]) == (3, 10, "-A INPUT -j LOGDROP")
    assert first["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "filter/INPUT"
    related = second["relatedLocations"][0]
    assert related["physicalLocation"]["region"]["startLine"] == 2
    assert related["message"]["text"] == "ACCEPT: takes tcp dport 22"
    assert second["properties"]["witness"]["dport"] == 22
    assert second["properties"]["certainty"] == "approximate"
    assert info["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "file:///abs/elsewhere.rules"
    assert stdin["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "stdin"
    assert run["invocations"][0]["executionSuccessful"] is False


def test_sarif_uris_are_relative_to_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "rules v4").write_text(UNDEFINED)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["check", "--format", "sarif", str(tmp_path / "etc" / "rules v4")])
    log = json.loads(result.stdout)
    location = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert location == {"uri": "etc/rules%20v4", "uriBaseId": "%SRCROOT%"}
    assert log["runs"][0]["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tmp_path.resolve().as_uri() + "/"


def _fingerprints(text: str) -> list[str]:
    ruleset = natlint.load(text.encode(), path="rules.v4")
    log = json.loads(format_sarif(run_checks(ruleset), sources={ruleset.path: ruleset.lines}))
    return [r["partialFingerprints"]["natlint/v1"] for r in log["runs"][0]["results"]]


def test_sarif_fingerprints_survive_moved_lines_and_tell_duplicates_apart() -> None:
    base = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j NOPE\n-A INPUT -j NOPE\nCOMMIT\n"
    moved = base.replace(":INPUT ACCEPT [0:0]\n", ":INPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\n\n")
    counters = base.replace("-A INPUT -j NOPE\n", "[5:300] -A INPUT  -j NOPE\n", 1)
    prints = _fingerprints(base)
    assert len(prints) == 2 and prints[0] != prints[1]  # same rule twice: the occurrence index
    assert _fingerprints(moved) == prints
    assert _fingerprints(counters) == prints
    assert _fingerprints(base.replace("NOPE", "OTHER")) != prints


# ---- GitHub workflow commands ----------------------------------------------------------------------


def test_github_annotations(tmp_path: Path) -> None:
    out = format_github(_synthetic(), cwd=tmp_path).splitlines()
    assert out[0].startswith("::error file=rules.v4,line=3,col=10,title=NL101 undefined-chain::'-j LOGDROP' jumps")
    assert out[1].startswith("::warning file=rules.v4,line=4,col=1,title=NL102 unreferenced-chain::")
    assert "%0Arelated: rules.v4:2: ACCEPT: takes tcp dport 22%0Ae.g.: src=203.0.113.10" in out[1]
    assert out[2].startswith("::notice file=/abs/elsewhere.rules,")
    assert out[3].startswith("::error title=NL001 invalid-syntax::bad")  # stdin: no file to point at


@pytest.mark.parametrize("payload", [
    "\n::error::pwned", "\r::error::pwned", "\r\n::warning file=x::pwned", "%0A::error::pwned",
    "%0D%0A::error::pwned", "::stop-commands::tok", "a,title=pwned,line=1", "x\x1b[2K\x00::error::y",
])
def test_github_output_cannot_be_injected(payload: str) -> None:
    finding = Finding("NL101", "error", f"comment {payload}", f"dir/{payload}.rules", 7, 2,
                      related=(Related("r", 1, payload),), witness={"comment": payload})
    out = format_github([finding])
    assert out.endswith("\n") and out.count("\n") == 1, repr(out)  # one finding, one line
    assert out.startswith("::error file=")  # '::' inside the data is inert: only a line start counts
    head, _, data = out.rstrip("\n").partition("::")[2].partition("::")
    props = head.split(" ", 1)[1].split(",")
    assert [p.split("=", 1)[0] for p in props] == ["file", "line", "col", "title"]  # no property smuggled in
    assert ":" not in "".join(p.split("=", 1)[1] for p in props)
    # what the runner shows after unescaping is the message itself, CRs as line breaks
    unescaped = data.replace("%0A", "\n").replace("%0D", "\r").replace("%25", "%")
    shown = clean(payload.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\x00")).replace("?", "")
    assert shown in unescaped.replace("\n", "").replace("?", "")


def test_github_escapes() -> None:
    assert escape_data("100%\nx\ry") == "100%25%0Ax%0Ay"
    assert escape_property("a:b,c%") == "a%3Ab%2Cc%25"


def test_github_injection_through_the_cli(tmp_path: Path) -> None:
    rules = tmp_path / "r.rules"
    rules.write_bytes(b"*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j FOO%0A::error::pwned,x:y\x1b[31m\nCOMMIT\n")
    result = CliRunner().invoke(main, ["check", "--format", "github", str(rules)])
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("::error file=")
    assert "FOO%250A::error::pwned,x:y?[31m" in lines[0]


# ---- the real process: one subprocess per format ---------------------------------------------------

_RUN = ("import sys, natlint.checks as c; c.CHECK_MODULES = ('structure',); from natlint.cli import main;"
        " sys.argv[0] = 'natlint'; main()")


def _run(*args: str, stdin: str = UNDEFINED, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "NATLINT_FORMAT")}
    environ.update(env)
    return subprocess.run([sys.executable, "-c", _RUN, "check", *args], input=stdin, capture_output=True,
                          text=True, timeout=120, env=environ, cwd=ROOT)


@pytest.mark.parametrize("fmt", ["concise", "full", "json", "sarif", "github"])
def test_subprocess_each_format(fmt: str) -> None:
    proc = _run("--format", fmt, "--stdin-filename", "etc/rules.v4", "-")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "Found 1 error(s), 0 warning(s), 0 info in 1 file(s)."  # stdout stays clean
    out = proc.stdout
    if fmt == "concise":
        assert out.startswith("etc/rules.v4:3:10: NL101 [error] ") and out.count("\n") == 1
    elif fmt == "full":
        assert "3 | -A INPUT -j LOGDROP" in out and "^" in out
    elif fmt == "json":
        assert json.loads(out)["findings"][0]["code"] == "NL101"
    elif fmt == "sarif":
        log = json.loads(out)
        assert _sarif_errors(log) == []
        uri = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        assert uri == "etc/rules.v4"
    else:
        assert out.startswith("::error file=etc/rules.v4,line=3,col=10,title=NL101 undefined-chain::")
    assert "\x1b" not in out  # a pipe is not a terminal


def test_subprocess_env_format_and_force_color() -> None:
    assert json.loads(_run("-", NATLINT_FORMAT="json").stdout)["version"] == 1
    assert "\x1b[" in _run("-", FORCE_COLOR="1").stdout
