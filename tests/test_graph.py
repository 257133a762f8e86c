"""``natlint graph``: the chain graph as dot, Mermaid and SVG, with findings highlighted."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from natlint.cli import main
from natlint.graph.render import build_view, dot_escape, mermaid_escape, to_dot, to_mermaid
from natlint.syntax.reader import read

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BAD = FIXTURES / "docker-published-db.rules"
# Chain names that break naive dot or Mermaid: '-', a quote, a backslash, '|', '<', '>', '#'.
ODD = """*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:a-b - [0:0]
:x"y - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:p|q<r>#s - [0:0]
:w\\n - [0:0]
:SPARE - [0:0]
-A INPUT -j a-b
-A INPUT -g "x\\"y"
-A a-b -j DOCKER-ISOLATION-STAGE-1
-A a-b -j p|q<r>#s
-A FORWARD -j MISSING
-A SPARE -j ACCEPT
COMMIT
"""
DOT = shutil.which("dot")


def _odd_view():  # type: ignore[no-untyped-def]
    from natlint.checks import run_checks

    ruleset = read(ODD.encode(), "odd.rules", 4)
    return build_view(ruleset, run_checks(ruleset))


def _nodes(view) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {n.label: n for nodes in view.tables.values() for n in nodes}


def test_view_has_hooks_chains_jumps_gotos_unreferenced_and_findings() -> None:
    view = _odd_view()
    nodes = _nodes(view)
    assert [h.label for h in view.hooks] == ["INPUT", "FORWARD", "OUTPUT"]
    assert nodes["SPARE"].unreferenced and not nodes["a-b"].unreferenced  # type: ignore[attr-defined]
    assert nodes["INPUT"].kind == "builtin" and nodes["INPUT"].policy == "DROP"  # type: ignore[attr-defined]
    goto = next(e for e in view.edges if e.dst == nodes['x"y'].id)  # type: ignore[attr-defined]
    assert goto.goto and goto.label == "line 12"
    jump = next(e for e in view.edges if e.dst == nodes["a-b"].id)  # type: ignore[attr-defined]
    assert not jump.goto and jump.rule == "-A INPUT -j a-b"
    # the undefined chain: an error node, the jump and FORWARD coloured, NL101 listed
    missing = nodes["MISSING"]
    assert missing.kind == "undefined" and missing.severity == "error"  # type: ignore[attr-defined]
    assert nodes["FORWARD"].severity == "error"  # type: ignore[attr-defined]
    assert any("NL101" in f for f in nodes["FORWARD"].findings)  # type: ignore[attr-defined]
    bad_edge = next(e for e in view.edges if e.dst == missing.id)  # type: ignore[attr-defined]
    assert bad_edge.severity == "error" and any("NL101" in f for f in bad_edge.findings)


def test_table_filter_and_unknown_table() -> None:
    ruleset = read(BAD.read_bytes(), str(BAD), None)
    view = build_view(ruleset, (), "nat")
    assert list(view.tables) == ["nat"]
    assert {h.label for h in view.hooks} == {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"}
    with pytest.raises(ValueError, match="no table 'raw'"):
        build_view(ruleset, (), "raw")


def test_dot_escaping() -> None:
    assert dot_escape('x"y') == 'x\\"y'
    assert dot_escape("w\\n") == "w\\\\n"  # a literal backslash, not dot's \n
    assert dot_escape("a\nb") == "a\\nb"


def _dot_strings_balanced(text: str) -> None:
    for line in text.splitlines():
        unescaped = re.sub(r'\\.', "", line)
        assert unescaped.count('"') % 2 == 0, line


def test_dot_output_parses() -> None:
    text = to_dot(_odd_view())
    assert text.startswith("digraph natlint {") and text.rstrip().endswith("}")
    _dot_strings_balanced(text)
    assert 'label="x\\"y"' in text
    assert "style=\"dashed\"" in text  # the goto
    assert "#c62828" in text  # the error colour
    assert "#eeeeee" in text  # the grey of the unreferenced chain
    ids = set(re.findall(r"^\s+(n\d+) \[", text, re.M))
    for src, dst in re.findall(r"^\s+(n\d+) -> (n\d+) ", text, re.M):
        assert src in ids and dst in ids
    if DOT is not None:  # the real parser
        done = subprocess.run([DOT, "-Tcanon"], input=text.encode(), capture_output=True, check=False)
        assert done.returncode == 0, done.stderr.decode()
        svg = subprocess.run([DOT, "-Tsvg"], input=text.encode(), capture_output=True, check=True).stdout.decode()
        assert "x&quot;y" in svg and ">w\\n<" in svg and "p|q&lt;r&gt;#s" in svg


def test_mermaid_escaping() -> None:
    assert mermaid_escape('x"y') == "x#34;y"
    assert mermaid_escape("p|q<r>#s") == "p#124;q#60;r#62;#35;s"
    assert mermaid_escape("a-b") == "a-b"
    assert mermaid_escape("two\nlines") == "two<br/>lines"
    text = to_mermaid(_odd_view())
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    body = "\n".join(lines[1:])
    # labels are quoted, and nothing inside them is raw syntax: no quote, pipe, bracket or '<' but <br/>
    for line in lines[1:]:
        assert line.count('"') % 2 == 0, line
        for label in re.findall(r'"([^"]*)"', line):
            assert not set(label.replace("<br/>", "")) & set('|<>[]{}`\\'), label
    assert '("x#34;y")' in body
    assert '("DOCKER-ISOLATION-STAGE-1")' in body
    assert '("p#124;q#60;r#62;#35;s")' in body
    assert '("w#92;n<br/>(unreferenced)")' in body
    assert re.search(r"n\d+ -\.->\|\"line 12\"\| n\d+", body)  # the goto, dashed
    assert re.search(r"^  class .* unreferenced$", body, re.M)
    assert re.search(r"^  linkStyle \d+ stroke:#c62828", body, re.M)
    # ids are generated: no chain name is used as a node id (mermaid reserves 'end', ...)
    for line in lines[1:]:
        match = re.match(r"\s+(\S+?)[\[(>]", line)
        if match and not line.strip().startswith(("subgraph", "class", "linkStyle")):
            assert re.fullmatch(r"n\d+", match.group(1)), line


def test_cli_dot_and_mermaid_to_file(tmp_path: Path) -> None:
    rules = tmp_path / "odd.rules"
    rules.write_text(ODD)
    out = tmp_path / "graph.mmd"
    result = CliRunner().invoke(main, ["graph", str(rules), "--format", "mermaid", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("flowchart LR\n")
    result = CliRunner().invoke(main, ["graph", str(BAD), "-t", "filter"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("digraph natlint {")
    assert "LOGDROP" in result.stdout and "NL101" in result.stdout
    result = CliRunner().invoke(main, ["graph", str(BAD), "-t", "mangle"])
    assert result.exit_code == 2 and "no table 'mangle'" in result.output


def test_cli_svg_without_graphviz(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    result = CliRunner().invoke(main, ["graph", str(BAD), "--format", "svg"])
    assert result.exit_code == 2
    assert "install graphviz (apt-get install graphviz) or use --format dot" in result.output
    assert "Traceback" not in result.output


def test_cli_svg_with_a_failing_dot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "dot"
    fake.write_text("#!/bin/sh\necho 'syntax error in line 1' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(shutil, "which", lambda _name: str(fake))
    result = CliRunner().invoke(main, ["graph", str(BAD), "--format", "svg"])
    assert result.exit_code == 2
    assert "Graphviz failed: syntax error in line 1" in result.output


@pytest.mark.skipif(DOT is None, reason="Graphviz's dot is not installed")
def test_cli_svg_with_graphviz(tmp_path: Path) -> None:
    out = tmp_path / "graph.svg"
    result = CliRunner().invoke(main, ["graph", str(BAD), "--format", "svg", "-o", str(out)])
    assert result.exit_code == 0, result.output
    svg = out.read_text()
    assert "<svg" in svg and "DOCKER&#45;USER" in svg


def test_unreadable_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["graph", str(tmp_path / "missing.rules")])
    assert result.exit_code == 2
    assert "cannot read" in result.output


def test_subprocess_mermaid_from_stdin() -> None:
    proc = subprocess.run([sys.executable, "-c", "from natlint.cli import main; main()", "graph", "--format",
                           "mermaid", "-"], input=ODD.encode(), capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().startswith("flowchart LR\n")
    assert b"x#34;y" in proc.stdout
