"""NL305-NL308 against the real kernel: each finding's witness does what the finding says.

For every fixture of ``fixtures/lint/nl3xx`` a :class:`KernelLab` is built from the host model
natlint infers (as tests/test_engine_kernel.py does), the fixture is loaded, and the witness of
each finding is sent as a probe:

* NL306: the witness from outside reaches the container; the same probe with the nat table's
  DNAT rules removed is stopped (INPUT really drops that port).
* NL307: a neighbour (``outside``, with its own loopback route replaced by a route to the host)
  sends to 127.0.0.1:PORT and the packet arrives at the container; with the raw guard it does not.
* NL305: the container's own connection to its published port arrives at itself with its own
  address as source and does not complete; the host's connection to 127.0.0.1 arrives at the
  container with source 127.0.0.1. Near misses: the connection completes.
* NL308: the witness reaches the container, and the rule the finding names counts no packet.

Marker ``kernel``; skipped where the oracle cannot run (``oracle.kernel_available()``).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import oracle
import pytest
from kernel_harness import KernelLab, Probe, ProbeResult, Topology

import natlint
from natlint.checks import run_checks
from natlint.findings import Finding
from natlint.host import infer, to_kernelcheck_topology

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "lint" / "nl3xx"
REASON = oracle.kernel_available()
CODES = ("NL305", "NL306", "NL307", "NL308")

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

TIMEOUT = 0.5


def _findings(path: Path) -> list[Finding]:
    return [f for f in run_checks(natlint.load(path)) if f.code in CODES]


def _lab_options(text: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith("# lab: "):
            found.update(json.loads(line[len("# lab: "):]))
    return found


def _topology(path: Path, options: Mapping[str, Any]) -> Topology:
    topo: dict[str, Any] = to_kernelcheck_topology(infer(natlint.load(path)))
    topo.pop("notes", None)
    if options.get("sysctls"):
        topo["host"]["sysctls"] = {**topo["host"]["sysctls"], **options["sysctls"]}
    return Topology.from_dict(topo)


def _run(lab: KernelLab, role: str, *cmd: str) -> None:
    p = subprocess.run(["ip", "netns", "exec", lab.namespaces[role], *cmd], capture_output=True, check=False)
    assert p.returncode == 0, f"{role}: {' '.join(cmd)}: {p.stderr.decode(errors='replace')}"


def _hairpin_on(lab: KernelLab) -> None:
    p = subprocess.run(["ip", "-n", lab.namespaces["host"], "-j", "link", "show", "type", "veth"],
                       capture_output=True, check=True)
    for link in json.loads(p.stdout or b"[]"):
        if link.get("master"):
            _run(lab, "host", "ip", "link", "set", "dev", link["ifname"], "type", "bridge_slave", "hairpin", "on")


def _neighbour_routes_loopback(lab: KernelLab, host_addr: str) -> None:
    """Let ``outside`` send packets for 127.0.0.1 to the host's MAC (what an L2 neighbour can do)."""
    _run(lab, "outside", "sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=1",
         "net.ipv4.conf.eth0.route_localnet=1")
    _run(lab, "outside", "ip", "route", "del", "local", "127.0.0.1", "dev", "lo", "table", "local")
    _run(lab, "outside", "ip", "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local")
    _run(lab, "outside", "ip", "route", "add", "127.0.0.1/32", "via", host_addr, "dev", "eth0")


def _owner(lab: KernelLab, address: str) -> str | None:
    for role, addresses in lab.addresses.items():
        if address in addresses:
            return role
    return None


def _arrived(res: ProbeResult, role: str) -> list[Any]:
    return [a for a in res.arrived_at if a.ns == role]


def _probe(lab: KernelLab, src: str, w: Mapping[str, Any]) -> ProbeResult:
    proto = "tcp" if w["proto"] == 6 else "udp"
    return lab.probe(Probe(src, proto, str(w["dst"]), int(w["dport"]), timeout=TIMEOUT))  # type: ignore[arg-type]


def _without_dnat(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "-j DNAT" not in line) + "\n"


def _fixtures() -> list[Any]:
    return [pytest.param(p, id=p.name) for p in sorted(FIXTURES.glob("nl30[5-8]_*.rules"))]


@pytest.mark.parametrize("path", _fixtures())
def test_findings_hold_in_the_kernel(path: Path) -> None:
    text = path.read_text()
    options = _lab_options(text)
    findings = _findings(path)
    topo = _topology(path, options)
    host_addr = topo.host.ext_addr.split("/")[0]
    with KernelLab(topo, timeout=TIMEOUT) as lab:
        if options.get("hairpin"):
            _hairpin_on(lab)
        loaded = lab.load(text)
        assert loaded.ok, loaded.reason
        if "nl307" in path.name:
            _neighbour_routes_loopback(lab, host_addr)
        for f in findings:
            w: dict[str, Any] = f.witness or {}
            after: dict[str, Any] = w.get("after_nat") or {}
            target = _owner(lab, str(after.get("dst")))
            assert target is not None, f"the lab has no namespace for {after.get('dst')}"
            if f.code == "NL306":
                res = _probe(lab, "outside", w)
                assert res.delivered_to == f"{target}:{after['dport']}", res.describe()
                loaded = lab.load(_without_dnat(text))  # the same packet, for the host itself
                assert loaded.ok, loaded.reason
                res = _probe(lab, "outside", w)
                assert not res.delivered and res.client in ("timeout", "refused", "unreachable"), res.describe()
                lab.load(text)
            elif f.code == "NL307":
                res = _probe(lab, "outside", w)
                assert _arrived(res, target), res.describe()
            elif f.code == "NL308":
                res = _probe(lab, "outside", w)
                assert res.delivered_to == f"{target}:{after['dport']}", res.describe()
                chain_rules = [c for c in res.counters if c.table == "filter" and c.chain == f.chain
                               and c.rule.strip() == (f.source_line or "").strip()]
                assert not chain_rules, f"the rule counted packets: {chain_rules}"
            elif f.code == "NL305" and str(w["src"]).startswith("127."):
                res = lab.probe(Probe("host", "tcp", str(w["dst"]), int(w["dport"]), timeout=TIMEOUT))
                # DNATed to the container, source kept: it is dropped on the way (route_localnet
                # off) or arrives with source 127.0.0.1 (on); either way nothing connects
                assert res.client != "connected", res.describe()
                assert any(e.dnat and not e.snat and e.reply.src == after["dst"] for e in res.conntrack), res.describe()
                assert all(a.src.startswith("127.") for a in _arrived(res, target)), res.describe()
            elif f.code == "NL305":
                src_role = _owner(lab, str(w["src"]))
                assert src_role == target, f"self-hairpin expected: {w}"
                res = lab.probe(Probe(target, "tcp", host_addr, int(w["dport"]), timeout=TIMEOUT))
                arrivals = _arrived(res, target)
                assert arrivals and arrivals[0].src == str(w["src"]), res.describe()
                assert res.client != "connected", res.describe()
        if not findings:
            _near_miss(path, lab, host_addr)


def _near_miss(path: Path, lab: KernelLab, host_addr: str) -> None:
    """What the near misses promise, in the kernel."""
    name = path.name
    if name == "nl305_ok_noproxy.rules":
        own = lab.probe(Probe("c1", "tcp", host_addr, 8080, timeout=TIMEOUT))
        assert own.client == "connected" and own.src_seen == "172.17.0.1", own.describe()
        sibling = lab.probe(Probe("c2", "tcp", host_addr, 8080, timeout=TIMEOUT))
        assert sibling.client == "connected", sibling.describe()
    elif name == "nl307_ok_raw_guard.rules":  # outside routes 127.0.0.1 to the host already
        res = lab.probe(Probe("outside", "tcp", "127.0.0.1", 3306, timeout=TIMEOUT))
        assert not [a for a in res.arrived_at if a.dport == 3306 and a.ns != "outside"], res.describe()
    elif name == "nl308_ok_container_port.rules":
        res = lab.probe(Probe("outside", "tcp", host_addr, 8080, timeout=TIMEOUT))
        assert not res.delivered, res.describe()  # the DROP on the container port works
    elif name == "nl306_ok_docker_user.rules":
        res = lab.probe(Probe("outside", "tcp", host_addr, 3306, timeout=TIMEOUT))
        assert not res.delivered, res.describe()
    elif name == "nl306_ok_input_accepts.rules":
        res = lab.probe(Probe("outside", "tcp", host_addr, 8080, timeout=TIMEOUT))
        assert res.delivered, res.describe()
