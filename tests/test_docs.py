"""The documentation tells the truth: docs/rules.md is the registry, the marked examples of the
README and docs/ run, and the JSON of check and trace fits the schemas in docs/schemas/.

Marked blocks: a fenced block whose info string is ``python test`` runs as a script, one whose
info string is ``sh test`` runs line by line (each line in bash, in order, in a scratch folder
that has ``fixtures/``); each must exit 0, or 1 (findings) for natlint commands.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from natlint.cli import main
from natlint.docgen import render_rules

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FIXTURES = ROOT / "fixtures"
MARKDOWN = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
_BLOCK = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)


def _blocks(info: str) -> list[tuple[str, str]]:
    out = []
    for doc in MARKDOWN:
        for n, match in enumerate(_BLOCK.finditer(doc.read_text(encoding="utf-8")), 1):
            if match.group(1).strip() == info:
                out.append((f"{doc.relative_to(ROOT)}#{n}", match.group(2)))
    return out


def _bin_path() -> str:
    """PATH with this interpreter's scripts folder (natlint, natlint-system) first."""
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def test_rules_md_is_generated_from_the_registry() -> None:
    current = (DOCS / "rules.md").read_text(encoding="utf-8")
    assert current == render_rules(), "docs/rules.md is out of date: run python -m natlint.docgen"


def test_docgen_check_mode(tmp_path: Path) -> None:
    from natlint.docgen import main as docgen

    target = tmp_path / "rules.md"
    assert docgen(["-o", str(target), "--check"]) == 1
    assert docgen(["-o", str(target)]) == 0
    assert docgen(["-o", str(target), "--check"]) == 0
    assert "### NL101 undefined-chain" in target.read_text(encoding="utf-8")


PYTHON_BLOCKS = _blocks("python test")
SHELL_BLOCKS = _blocks("sh test")


def test_there_are_marked_examples() -> None:
    where = {name.split("#")[0] for name, _ in PYTHON_BLOCKS + SHELL_BLOCKS}
    assert {"README.md", "docs/library.md", "docs/getting-started.md"} <= where


@pytest.mark.parametrize(("name", "code"), PYTHON_BLOCKS, ids=[n for n, _ in PYTHON_BLOCKS])
def test_python_examples_run(name: str, code: str) -> None:
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, f"{name}:\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize(("name", "code"), SHELL_BLOCKS, ids=[n for n, _ in SHELL_BLOCKS])
def test_shell_examples_run(name: str, code: str, tmp_path: Path) -> None:
    (tmp_path / "fixtures").symlink_to(FIXTURES)
    env = {**os.environ, "PATH": _bin_path(), "NO_COLOR": "1"}
    missing = []
    for line in code.splitlines():
        command = line.split("  #", 1)[0].strip()
        if not command or command.startswith("#"):
            continue
        words = command.split()
        if words[0] == "natlint" and len(words) > 1 and words[1] not in main.commands:  # type: ignore[attr-defined]
            missing.append(words[1])  # a command another change adds: report, do not fail the rest
            continue
        proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300, check=False)
        assert proc.returncode in (0, 1), f"{name}: {command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        assert "Traceback" not in proc.stderr, f"{name}: {command}\n{proc.stderr}"
    if missing:
        pytest.skip(f"natlint has no command {', '.join(missing)} yet; the rest of {name} ran")


def test_readme_starts_with_the_two_commands_of_a_fresh_machine() -> None:
    first = _BLOCK.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert first is not None and first.group(1) == "sh"
    assert first.group(2).splitlines() == [
        "pip install . && natlint check fixtures/docker-published-db.rules; "
        'echo "natlint exit code: $? (1 = findings at error level)"',
        "pip install -e '.[test]' && python3 -m pytest -q",
    ]
    # the part after pip install: exit 1, for the error the fixture has
    env = {**os.environ, "PATH": _bin_path()}
    proc = subprocess.run(["bash", "-c", "natlint check fixtures/docker-published-db.rules"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and " NL101 [error] " in proc.stdout, proc.stderr
    assert shutil.which("natlint", path=env["PATH"]) is not None


# ---- JSON schemas ---------------------------------------------------------------------------------


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((DOCS / "schemas" / f"{name}.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return schema


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with no undeclared keys allowed (except where it says so): the documented
    keys must be all the keys natlint prints."""
    strict = copy.deepcopy(schema)

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(strict)
    return strict


def _validate(schema: dict[str, Any], doc: object) -> None:
    errors = sorted(Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:10]]


ALL_FIXTURES = sorted(str(p.relative_to(ROOT)) for p in FIXTURES.rglob("*.rules"))


def test_check_json_of_every_fixture_fits_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["check", "--isolated", "--format", "json", "--exit-zero", *ALL_FIXTURES])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["summary"]["files"] == len(ALL_FIXTURES) and doc["findings"]
    assert any("witness" in f for f in doc["findings"]) and any(f["related"] for f in doc["findings"])
    _validate(_strict(_schema("check")), doc)


TRACES = [
    ("fixtures/docker-published-db.rules", ["--in", "eth0", "--proto", "tcp", "--dport", "3306"]),
    ("fixtures/docker-published-db.rules", ["--local", "--dst", "1.1.1.1", "--proto", "udp", "--dport", "53"]),
    ("fixtures/kernel/nat-masquerade.rules", ["--in", "docker0", "--dst", "203.0.113.7", "--proto", "tcp"]),
    ("fixtures/kernel/reject.rules", ["--in", "eth0", "--proto", "tcp", "--dport", "1:1024"]),
    ("fixtures/kernel/chain-goto.rules", ["--in", "eth0", "--state", "established"]),
    ("fixtures/lint/nl2xx/ok-opaque-matches.rules", ["--in", "eth0"]),
    ("fixtures/kernel/v6/nat-dnat-port.rules", ["--in", "eth0", "--proto", "tcp", "--dport", "8080"]),
]


@pytest.mark.parametrize(("path", "args"), TRACES, ids=[f"{Path(p).stem}-{a[1]}" for p, a in TRACES])
def test_trace_json_fits_the_schema(path: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["trace", path, *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["outcomes"]
    _validate(_strict(_schema("trace")), doc)


def test_the_json_examples_in_the_docs_fit_the_schemas() -> None:
    text = (DOCS / "json-output.md").read_text(encoding="utf-8")
    examples = [json.loads(m.group(2)) for m in _BLOCK.finditer(text) if m.group(1).strip() == "json"]
    assert len(examples) == 2
    _validate(_strict(_schema("check")), examples[0])
    _validate(_strict(_schema("trace")), examples[1])


def test_the_schemas_reject_what_natlint_never_prints() -> None:
    check = _schema("check")
    bad = {"version": 1, "findings": [{"code": "NL1", "severity": "fatal"}], "summary": {}}
    assert list(Draft202012Validator(check).iter_errors(bad))
    trace = _schema("trace")
    assert list(Draft202012Validator(trace).iter_errors({"outcomes": [{"verdict": "MAYBE"}]}))
