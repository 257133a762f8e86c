"""Kernel proof of NL301-NL304: each finding's witness, sent in network namespaces, does what
the finding says (issue 4).

For a fixture of ``fixtures/lint/nl3xx``, a :class:`KernelLab` is built from the host model
natlint infers (``to_kernelcheck_topology``), the dump is loaded with ``iptables-restore`` and
the witness is sent:

* NL301: from the outside peer (the witness arrives on the external interface) to the
  witness's destination and port: the kernel delivers it nowhere, and the first packet's
  trace ends at the rule or policy the finding names; the near miss is delivered.
* NL302: the connection the shadowed DNAT would rewrite reaches the earlier DNAT's target,
  and the kernel trace shows the earlier rule, never the shadowed one.
* NL303/NL304: a datagram from a container on the private subnet to the internet peer on
  the external segment arrives there with its private source (the lab has no default route:
  the internet peer stands for the witness's public destination, which takes the same path
  out of the external interface); with the MASQUERADE in place it arrives with the host's.

Marker ``kernel``; skipped without root or ``ip netns`` (``oracle.kernel_available()``).
Every lab is removed when its test ends; probes wait at most 0.5 s each.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import oracle
import pytest
from kernel_harness import KernelLab, Probe, ProbeResult, Topology

import natlint
from natlint.checks import CheckContext, nat
from natlint.findings import Finding
from natlint.host import HostModel, infer, to_kernelcheck_topology
from natlint.host.model import Endpoint

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "lint" / "nl3xx"
REASON = oracle.kernel_available()
pytestmark = [pytest.mark.kernel, pytest.mark.skipif(REASON is not None, reason=REASON or "")]
TIMEOUT = 0.5


def _findings(path: Path, code: str) -> list[Finding]:
    return [f for f in nat.check(CheckContext(natlint.load(path))) if f.code == code]


@contextmanager
def _lab(path: Path, extra: tuple[Endpoint, ...] = ()) -> Iterator[tuple[KernelLab, HostModel]]:
    """A lab for the fixture, built from the inferred host model (plus containers)."""
    ruleset = natlint.load(path)
    host = infer(ruleset)
    if extra:
        host = replace(host, containers=host.containers + extra)
    topo = to_kernelcheck_topology(host)
    topo.pop("notes", None)
    with KernelLab(Topology.from_dict(topo), timeout=TIMEOUT) as lab:
        loaded = lab.load(path.read_text())
        assert loaded.ok, f"iptables-restore refused {path}: {loaded.reason}"
        yield lab, host


def _container(lab: KernelLab, address: str) -> str:
    for role, addrs in lab.addresses.items():
        if address in addrs:
            return role
    raise AssertionError(f"no lab namespace has {address}: {lab.addresses}")


def _hits(res: ProbeResult) -> list[tuple[str, str, int]]:
    hits = res.first_packet_hits
    assert hits is not None, "kernel trace unavailable"
    return hits


@pytest.mark.parametrize("name", [
    "nl301_forward_tests_host_port.rules", "nl301_docker_user_drops_all.rules", "nl301_redirect_input_drop.rules",
])
def test_nl301_witness_is_dropped_where_natlint_says(name: str) -> None:
    path = FIXTURES / name
    [finding] = _findings(path, "NL301")
    w = finding.witness
    assert w is not None and w["in"] == "eth0"
    dropped = w["dropped_by"]
    assert isinstance(dropped, dict)
    with _lab(path) as (lab, _host):
        proto = "tcp" if w["proto"] == 6 else "udp"
        res = lab.probe(Probe("outside", proto, str(w["dst"]), int(w["dport"])))  # type: ignore[call-overload]
        assert not res.delivered, res.describe()
        hits = _hits(res)
        index = 0 if dropped["index"] == "policy" else int(dropped["index"])
        assert hits[-1] == (dropped["table"], dropped["chain"], index), res.describe()
        # the DNAT did rewrite it: the trace went through the finding's rule
        ruleset = natlint.load(path)
        rule = next(r for r in ruleset.rules() if r.pos.line == finding.line)
        assert ("nat", rule.chain, rule.index) in hits, res.describe()


def test_nl301_near_miss_is_delivered() -> None:
    path = FIXTURES / "nl301_ok_port_translated.rules"
    assert _findings(path, "NL301") == []
    with _lab(path) as (lab, host):
        ext = host.external
        assert ext is not None
        addr = str(ext.addresses[0]).split("/")[0]
        res = lab.probe(Probe("outside", "tcp", addr, 8080))
        assert res.delivered_to is not None and res.delivered_to.endswith(":80"), res.describe()


def test_nl302_earlier_dnat_takes_the_connection() -> None:
    path = FIXTURES / "nl302_same_host_port.rules"
    [finding] = _findings(path, "NL302")
    w = finding.witness
    assert w is not None
    with _lab(path) as (lab, _host):
        res = lab.probe(Probe("outside", "tcp", str(w["dst"]), int(w["dport"])))  # type: ignore[call-overload]
        assert res.delivered_to == f"{_container(lab, '172.17.0.2')}:80", res.describe()
        hits = _hits(res)
        assert ("nat", "PUBLISH", 1) in hits and ("nat", "PUBLISH", 2) not in hits, res.describe()


@pytest.mark.parametrize("name,source,masqueraded", [
    ("nl303_no_masquerade.rules", "192.168.10.2", False),
    ("nl303_masquerade_wrong_subnet.rules", "192.168.10.2", False),
    ("nl303_ok_masquerade.rules", "192.168.10.2", True),
    ("nl304_accept_first.rules", "172.17.0.2", False),
])
def test_source_nat_as_natlint_says(name: str, source: str, masqueraded: bool) -> None:
    path = FIXTURES / name
    code = "NL304" if name.startswith("nl304") else "NL303"
    found = _findings(path, code)
    assert bool(found) != masqueraded
    with _lab(path) as (lab, host):
        ext = host.external
        assert ext is not None
        internet = lab.addr("internet")
        res = lab.probe(Probe(_container(lab, source), "udp", internet, 9999))
        assert res.delivered, res.describe()
        expected = str(ext.addresses[0]).split("/")[0] if masqueraded else source
        assert res.src_seen == expected, res.describe()
