"""Host settings natlint models, proven against the kernel: route_localnet and hairpin mode.

Each fixture below is loaded into a :class:`KernelLab` built from natlint's host model (the
host file the fixture names: ``route_localnet`` per interface, ``hairpin`` per bridge, made
in the lab by ``to_kernelcheck_topology``), its probes are sent and natlint's trace must
agree with the kernel (``test_engine_kernel.compare``: verdict, endpoint, post-NAT addresses
and ports, the rules the first packet hit). Every probe the fixture lists is sent, also those
the general differential test cannot send:

* ``# probe: SRC PROTO DST PORT from ADDR``: the client binds ADDR (a 127.0.0.0/8 or ``::1``
  source, a martian);
* ``# setup: ROLE COMMAND...``: run in that namespace before the probes (the outside client
  routes 127.0.0.0/8 or ``::1`` to the host; c1 may send from 127.0.0.x).

What the fixtures show (kernel 6.18; the numbers of probes are printed per fixture):

* ``localnet-off``/``localnet-on``: IPv4 martian destination 127/8 arriving on eth0 (also
  after a DNAT to 127.0.0.1), martian source 127/8 arriving on docker0 (127.0.0.1, the host's
  own, stays a martian with route_localnet on), a DNAT *from* 127.0.0.3 to a container (not a
  martian), host -> 127.0.0.1:8080 DNATed in nat OUTPUT to c1 (refused by the reroute after
  nat OUTPUT without route_localnet on docker0), and a socket bound to 127.0.0.1 sending out
  of eth0 (EINVAL without route_localnet);
* ``hairpin-off``/``hairpin-on``/``hairpin-nobrnf``: c1 reaching its own published port from
  the host's address and from c2's (DNATed back to itself): dropped by the bridge before
  FORWARD unless hairpin mode is on; without br_netfilter it is routed and hairpin mode does
  not matter;
* ``v6/localnet6``: IPv6 has no route_localnet: ``::1`` off lo is dropped on receipt (before
  PREROUTING), after a DNAT to [::1], and after PREROUTING for a bridge port's packet.

Marker ``kernel``; skipped where the oracle cannot run (``oracle.kernel_available()``).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import oracle
import pytest
from kernel_harness import KernelLab, Probe
from test_engine_kernel import (
    KERNEL_FIXTURES,
    PROBE_TIMEOUT,
    LabMap,
    _as_built,
    _fixture_case,
    _host_model,
    _topology,
    probe_and_compare,
)

from natlint.netfilter.engine import Engine
from natlint.syntax.reader import read

REASON = oracle.kernel_available()

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

FIXTURES = (
    "localnet-off.rules",
    "localnet-on.rules",
    "hairpin-off.rules",
    "hairpin-on.rules",
    "hairpin-nobrnf.rules",
    "v6/localnet6.rules",
)
# What each fixture must show: (probe key, verdict) pairs, so that a regression in the model
# that the kernel happens to share cannot pass unnoticed (both sides saying "delivered").
EXPECTED: dict[str, dict[str, str]] = {
    "localnet-off.rules": {
        "outside tcp 127.0.0.2 22": "DROP", "outside tcp 127.0.0.3 8080": "ACCEPT",
        "outside tcp 198.51.100.1 8090": "DROP", "c1 udp 198.51.100.1 22 from 127.0.0.5": "DROP",
        "host tcp 127.0.0.1 8080": "DROP", "host udp 198.51.100.2 53 from 127.0.0.1": "DROP",
    },
    "localnet-on.rules": {
        "outside tcp 127.0.0.2 22": "ACCEPT", "outside tcp 127.0.0.3 8080": "ACCEPT",
        "outside tcp 198.51.100.1 8090": "ACCEPT", "c1 udp 198.51.100.1 22 from 127.0.0.1": "DROP",
        "c1 udp 198.51.100.1 22 from 127.0.0.5": "ACCEPT", "host tcp 127.0.0.1 8080": "ACCEPT",
        "host udp 198.51.100.2 53 from 127.0.0.1": "ACCEPT",
    },
    "hairpin-off.rules": {
        "c1 tcp 198.51.100.1 8080": "DROP", "c1 tcp 172.17.0.3 9000": "DROP", "c2 tcp 198.51.100.1 8080": "ACCEPT",
    },
    "hairpin-on.rules": {
        "c1 tcp 198.51.100.1 8080": "ACCEPT", "c1 tcp 172.17.0.3 9000": "ACCEPT", "c1 udp 198.51.100.1 8081": "ACCEPT",
    },
    "hairpin-nobrnf.rules": {"c1 tcp 198.51.100.1 8080": "ACCEPT", "c1 udp 198.51.100.1 8081": "ACCEPT"},
    "v6/localnet6.rules": {
        "outside udp ::1 22": "DROP", "outside tcp 2001:db8:100::1 8090": "DROP",
        "host tcp ::1 8080": "ACCEPT", "c1 udp 2001:db8:100::1 22 from ::1": "DROP",
    },
}

_PROBE = re.compile(r"^# probe: (\S+) (tcp|udp) (\S+) (\d+)(?: from (\S+))?\s*$", re.M)
_SETUP = re.compile(r"^# setup: (\S+) (.+?)\s*$", re.M)


def _probes(text: str) -> list[tuple[str, Probe]]:
    return [(" ".join(x for x in (s, p, d, port, "from " + src if src else "") if x),
             Probe(s, p, d, int(port), src_addr=src or None))  # type: ignore[arg-type]
            for s, p, d, port, src in _PROBE.findall(text)]


@pytest.mark.parametrize("name", FIXTURES)
def test_host_settings_agree_with_kernel(name: str) -> None:
    path = KERNEL_FIXTURES / name
    text = path.read_text()
    case = _fixture_case(path)
    ruleset = read(text.encode(), str(path), None)
    host = _host_model(case, ruleset)
    topo = _topology(case, host)
    host = _as_built(host, topo.to_dict())
    engine = Engine(ruleset, host)
    t0 = time.monotonic()
    disagreements: list[str] = []
    verdicts: dict[str, str] = {}
    probes = _probes(text)
    assert probes, f"{name} lists no probe"
    with KernelLab(topo, timeout=PROBE_TIMEOUT) as lab:
        assert lab.load(text).ok, f"iptables-restore refused {path}"
        for role, command in _SETUP.findall(text):
            p = subprocess.run(["ip", "netns", "exec", lab.namespaces[lab.role(role)], *command.split()],
                               capture_output=True, check=False)
            assert p.returncode == 0, f"{role}: {command}: {p.stderr.decode(errors='replace')}"
        lm = LabMap.build(topo, lab, host)
        for key, probe in probes:
            verdict, report, res = probe_and_compare(lab, probe, ruleset, host, engine, lm)
            if verdict == "disagree":
                disagreements.append(report or key)
            delivered = res.delivered_to is not None or any(lm.owners.get(a.dst) == a.ns for a in res.arrived_at)
            verdicts[key] = "ACCEPT" if delivered else "DROP"
    print(f"\n{name}: {len(probes)} probes, {len(probes) - len(disagreements)} agree"
          f" ({time.monotonic() - t0:.1f} s)")
    assert not disagreements, f"{name}: natlint and the kernel disagree\n\n" + "\n\n".join(disagreements)
    wrong = {k: (verdicts.get(k), v) for k, v in EXPECTED[name].items() if verdicts.get(k) != v}
    assert not wrong, f"{name}: the kernel did not do what the fixture shows (got, expected): {wrong}"


def test_fixture_probe_lines_parse() -> None:
    keys = [k for k, _ in _probes((KERNEL_FIXTURES / "localnet-on.rules").read_text())]
    assert "c1 udp 198.51.100.1 22 from 127.0.0.1" in keys
    assert all(Path(KERNEL_FIXTURES / n).is_file() for n in FIXTURES)
