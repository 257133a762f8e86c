"""``natlint check -j N``: many files in worker processes, the same report as one process.

An audit of a thousand host dumps is one command (``natlint check -j 0 dumps/*``): results come
back in the order of the arguments, the summary counts every file and the exit code is the one
a single process gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from natlint import synth
from natlint.cli import main

SMALL = """*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m tcp --dport {port} -j ACCEPT
-A INPUT -p tcp -m tcp --dport {port} -m comment --comment "again {i}" -j ACCEPT
-A INPUT -p tcp -m tcp --dport {other} -j {target}
COMMIT
"""
NAT = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i eth0 -p tcp -m tcp --dport {port} -j DNAT --to-destination 10.0.{i}.2:80
-A POSTROUTING -s 10.0.0.0/16 -o eth0 -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -i eth0 -p tcp -m tcp --dport {port} -j ACCEPT
COMMIT
"""


def _corpus(folder: Path, count: int) -> list[str]:
    """``count`` small dumps of a few kinds: clean, shadowed rules, undefined chains, syntax
    errors, port forwards, Docker hosts."""
    paths = []
    for i in range(count):
        kind = i % 5
        if kind == 0 and i % 40 == 0:
            text = synth.docker_host(1 + i % 3, seed=i)
        elif kind == 0:
            text = SMALL.format(port=1000 + i, other=3000 + i, i=i, target="RETURN")
        elif kind == 1:
            text = SMALL.format(port=1000 + i, other=2000 + i, i=i, target="ACCEPT")
        elif kind == 2:
            text = SMALL.format(port=1000 + i, other=2000 + i, i=i, target="LOGDROP")  # NL101
        elif kind == 3 and i % 20 == 3:
            text = NAT.format(port=8000 + i, i=i % 250)
        elif kind == 3:
            text = SMALL.format(port=1000 + i, other=4000 + i, i=i, target="REJECT")
        else:
            text = SMALL.format(port=1000 + i, other="x" * (i % 3), i=i, target="DROP")  # NL001/NL002 for some
        path = folder / f"host{i:04d}.rules"
        path.write_text(text)
        paths.append(str(path))
    return paths


def _run(*args: str) -> Result:
    return CliRunner().invoke(main, ["check", "--isolated", *args])


def test_two_hundred_files_same_results_with_two_workers(tmp_path: Path) -> None:
    paths = _corpus(tmp_path, 200)
    one = _run("--format", "json", "-j", "1", *paths)
    two = _run("--format", "json", "-j", "2", *paths)
    assert one.exit_code == two.exit_code == 1, (one.stderr, two.stderr)
    assert two.stdout == one.stdout  # same findings, same order, byte for byte
    assert two.stderr == one.stderr
    doc = json.loads(two.stdout)
    assert doc["summary"]["files"] == 200
    codes = set(doc["summary"]["by_code"])
    assert {"NL001", "NL101", "NL202", "NL301"} <= codes, codes
    # findings come in the order of the arguments
    order = [paths.index(f["path"]) for f in doc["findings"]]
    assert order == sorted(order)
    assert "in 200 file(s)" in two.stderr


def test_text_report_and_exit_codes_match(tmp_path: Path) -> None:
    paths = _corpus(tmp_path, 6)
    missing = str(tmp_path / "missing.rules")
    for args in ((*paths, missing), (paths[1],), ("--exit-zero", "--format", "full", *paths)):
        single = _run("-j", "1", *args)
        many = _run("-j", "3", *args)
        assert (many.exit_code, many.stdout, many.stderr) == (single.exit_code, single.stdout, single.stderr), args
    many = _run("-j", "2", *paths, missing)
    assert many.exit_code == 2 and "cannot read" in many.stderr  # an unreadable file: 2, the others checked
    assert many.stdout.count("host0001.rules:") >= 1


def test_jobs_zero_means_every_cpu(tmp_path: Path) -> None:
    paths = _corpus(tmp_path, 4)
    assert _run("-j", "0", *paths).stdout == _run(*paths).stdout


def test_jobs_with_standard_input(tmp_path: Path) -> None:
    paths = _corpus(tmp_path, 3)
    text = Path(paths[2]).read_text()
    args = ["--stdin-filename", "piped.rules", paths[0], "-", paths[1]]
    single = CliRunner().invoke(main, ["check", "--isolated", "-j", "1", *args], input=text)
    many = CliRunner().invoke(main, ["check", "--isolated", "-j", "2", *args], input=text)
    assert many.stdout == single.stdout and "piped.rules:" in many.stdout


@pytest.mark.parametrize("value", ["-1", "x"])
def test_bad_jobs(value: str) -> None:
    assert _run("-j", value, "x.rules").exit_code == 2
