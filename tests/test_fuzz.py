"""Never a traceback: random bytes and mutations of real dumps all end in findings.

The default run tries a few hundred inputs; ``pytest -m slow tests/test_fuzz.py`` runs the
long campaign. Every finding must point at a line inside the input.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natlint.checks import run_checks
from natlint.printer import to_save
from natlint.syntax.reader import read

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [p.read_bytes() for p in sorted((ROOT / "fixtures").rglob("*.rules"))]
ref = ROOT.parent / "shared" / "reference-dumps"
if ref.is_dir():
    SEEDS += [p.read_bytes() for p in sorted(ref.glob("*.rules"))]

WORDS = [
    b"-A", b"-I", b"-D", b"-N", b"-P", b"-E", b"-X", b"-F", b"INPUT", b"FORWARD", b"DOCKER", b"!", b"-s", b"-d",
    b"-i", b"-o", b"-p", b"tcp", b"udp", b"-m", b"tcp", b"multiport", b"conntrack", b"comment", b"--comment",
    b'"a b"', b'"', b"\\", b"--dport", b"--dports", b"80,443", b"1:65535", b"--ctstate", b"NEW,ESTABLISHED",
    b"-j", b"-g", b"ACCEPT", b"DROP", b"DNAT", b"--to-destination", b"10.0.0.1:80", b"MASQUERADE", b"RETURN",
    b"*nat", b"*filter", b":X - [0:0]", b"COMMIT", b"[1:2]", b"10.0.0.0/8", b"::1/128", b"\r", b"\x00", b"\t",
    b"--dp", b"-c", b"5", b"fe80::/10", b"300.1.1.1", b"eth0+",
]


def _check(data: bytes) -> None:
    ruleset = read(data, "fuzz.rules")
    findings = run_checks(ruleset)
    lines = max(len(ruleset.lines), 1)
    for f in findings:
        assert 1 <= f.line <= lines, f
        assert f.column >= 1, f
    to_save(ruleset)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    seed = draw(st.sampled_from(SEEDS))
    lines = seed.split(b"\n")
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 5))
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        if op == 0 and lines:
            del lines[i]
        elif op == 1:
            lines.insert(i, b" ".join(draw(st.lists(st.sampled_from(WORDS), max_size=12))))
        elif op == 2 and lines:
            words = lines[i].split(b" ")
            j = draw(st.integers(0, max(len(words) - 1, 0)))
            words[j] = draw(st.sampled_from(WORDS))
            lines[i] = b" ".join(words)
        elif op == 3 and lines:
            lines[i] = lines[i] + draw(st.binary(max_size=8))
        elif op == 4 and len(lines) > 1:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 5:
            lines.insert(i, draw(st.binary(max_size=40)))
    return b"\n".join(lines)


_FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
_LONG = settings(max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck))


@_FAST
@given(mutated())
def test_mutated_dumps_never_crash(data: bytes) -> None:
    _check(data)


@_FAST
@given(st.binary(max_size=400))
def test_random_bytes_never_crash(data: bytes) -> None:
    _check(data)


@pytest.mark.slow
@_LONG
@given(st.one_of(mutated(), st.binary(max_size=2000)))
def test_long_fuzz_campaign(data: bytes) -> None:
    _check(data)


def test_adversarial_inputs() -> None:
    for data in (b"", b"\n" * 1000, b"\x00" * 100, b"-A INPUT " + b"x" * 1_000_000, b"*filter\r\nCOMMIT\r\n",
                 b"#!/bin/sh\niptables -A INPUT -j ACCEPT\n", bytes(range(256)) * 40):
        _check(data)
