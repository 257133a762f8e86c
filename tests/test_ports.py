"""``natlint ports``: the exposure table (natlint.portmap) and its command.

The reference dumps (``/work/shared/reference-dumps``, skipped when absent) publish what the
rules say: e.g. docker-legacy-2containers publishes 0.0.0.0:8080 -> 172.17.0.2:80 and
127.0.0.1:3306 -> 172.17.0.3:3306. Fixtures in ``fixtures/ports`` cover DOCKER-USER source
restrictions, port ranges, a hand-written router port forward and the ``--iptables=false``
signature. The kernel test builds the lab of one Docker dump and sends, for every row, a probe
from outside: it arrives at the destination exactly when the row says "reachable from outside".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import natlint
from natlint.cli import main
from natlint.portmap import PortsReport, Reach, Service, ports

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "ports"
REFERENCE = Path(os.environ.get("NATLINT_REFERENCE_DUMPS", "/work/shared/reference-dumps"))


def _reference(name: str) -> Path:
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"reference dump {path} is not available")
    return path


def _report(path: Path) -> PortsReport:
    return ports(natlint.load(path))


def _services(report: PortsReport) -> dict[tuple[str, str], Service]:
    return {(s.proto, s.front): s for s in report.services}


def _reach(service: Service, origin: str, interface: str | None = None) -> Reach:
    for r in service.reach:
        if r.origin == origin and (interface is None or interface in r.interfaces):
            return r
    raise AssertionError(f"no {origin} {interface or ''} reach in {service.front}")


# ---------------------------------------------------------------- reference dumps


def test_docker_legacy_two_containers() -> None:
    report = _report(_reference("docker-legacy-2containers.rules"))
    found = _services(report)
    assert set(found) == {("tcp", "0.0.0.0:8080"), ("tcp", "127.0.0.1:3306")}
    web, db = found["tcp", "0.0.0.0:8080"], found["tcp", "127.0.0.1:3306"]
    assert web.destinations == ("172.17.0.2:80",) and db.destinations == ("172.17.0.3:3306",)
    assert [r.line for r in web.rules] == [38] and web.scope == "host" and db.scope == "loopback"
    out = _reach(web, "outside")
    assert out.status == "yes" and out.sources == ("any",) and out.via == ("iptables",)
    assert [(r.chain, r.line) for r in out.accepted_by] == [("DOCKER", 16)]
    # the userland proxy carries what the DNAT leaves out: containers, and the host's 127.0.0.1
    bridge = _reach(web, "bridge", "docker0")
    assert bridge.via == ("docker-proxy",) and bridge.status == "yes"
    assert "INPUT" in (bridge.note or "") and bridge.accepted_by[0].chain == "INPUT"
    assert set(_reach(web, "host").via) == {"iptables", "docker-proxy"}
    assert _reach(db, "host").via == ("docker-proxy",)
    assert _reach(db, "bridge").status == "no"
    # no raw guard before Docker 28: a neighbour on the link reaches 127.0.0.1:3306 (moby#45610)
    loop = _reach(db, "outside")
    assert loop.status == "yes" and "local link" in (loop.condition or "")
    assert any("docker-proxy" in n for n in report.notes)
    assert report.docker_proxy is True
    assert {(i.proto, i.ports) for i in report.input} == {("all but tcp", "any"), ("tcp", "any but 8080")}
    assert all(i.accepted_by is not None and i.accepted_by.is_policy for i in report.input)


@pytest.mark.parametrize("name", ["docker-28-2containers.rules", "docker-29-2containers.rules"])
def test_docker_28_29_guard_loopback(name: str) -> None:
    found = _services(_report(_reference(name)))
    assert set(found) == {("tcp", "0.0.0.0:8080"), ("tcp", "127.0.0.1:3306")}
    assert _reach(found["tcp", "0.0.0.0:8080"], "outside").status == "yes"
    db = _reach(found["tcp", "127.0.0.1:3306"], "outside")
    assert db.status == "no" and db.blocked_by[0].table == "raw"


def test_docker_noproxy_hairpin() -> None:
    report = _report(_reference("docker-28-noproxy-2containers.rules"))
    web = _services(report)["tcp", "0.0.0.0:8080"]
    bridge = _reach(web, "bridge", "docker0")
    assert bridge.via == ("iptables",) and bridge.masquerade in ("yes", "partly")
    assert {r.line for r in bridge.snat_rules} >= {48}  # the per-port hairpin MASQUERADE
    assert _reach(web, "host").via == ("iptables",)
    assert report.docker_proxy is False


@pytest.mark.parametrize("name", ["docker-legacy-userdefined.rules", "docker-28-userdefined.rules"])
def test_docker_userdefined(name: str) -> None:
    found = _services(_report(_reference(name)))
    assert {k: s.destinations for k, s in found.items()} == {
        ("tcp", "0.0.0.0:8443"): ("172.18.0.2:443",),
        ("tcp", "0.0.0.0:53"): ("172.18.0.3:53",),
        ("udp", "0.0.0.0:53"): ("172.18.0.3:53",),
    }
    for service in found.values():
        assert _reach(service, "outside").status == "yes"
        assert _reach(service, "bridge", "br-3f2a9c1d7e45").via == ("docker-proxy",)


def test_docker_ipv6() -> None:
    report = ports(natlint.load(_reference("docker-28-userdefined-ipv6.ip6tables.rules")))
    found = _services(report)
    assert set(found) == {("tcp", "[::]:8443")}
    assert found["tcp", "[::]:8443"].destinations == ("[fd00:dead:beef::2]:443",)
    assert _reach(found["tcp", "[::]:8443"], "outside").status == "yes"


def test_kube_proxy_small() -> None:
    report = _report(_reference("kube-proxy-small.rules"))
    found = _services(report)
    web_np = found["tcp", "0.0.0.0:30080"]
    assert web_np.label == "shop/web:http"
    assert set(web_np.destinations) == {"10.244.1.15:8080", "10.244.2.10:8080", "10.244.3.7:8080"}
    assert _reach(web_np, "outside").status == "yes" and _reach(web_np, "outside").masquerade == "yes"
    # ClusterIPs: from the host and the pods; from outside only when routed through the node
    cluster = found["tcp", "10.96.0.1:443"]
    assert cluster.scope == "routed" and cluster.destinations == ("192.168.10.10:6443",)
    assert _reach(cluster, "host").status == "yes" and _reach(cluster, "bridge", "cni0").status == "yes"
    assert _reach(cluster, "outside").condition is not None
    # eTP=Local: from outside only the local endpoint
    api_np = found["tcp", "0.0.0.0:31443"]
    assert _reach(api_np, "outside").destinations == ("10.244.1.20:8443",)
    # loadBalancerSourceRanges
    lb = _reach(found["tcp", "203.0.113.50:443"], "outside")
    assert lb.status == "restricted" and lb.sources == ("198.51.100.0/24",)
    assert [r.chain for r in lb.blocked_by] == ["KUBE-PROXY-FIREWALL"]
    health = [i for i in report.input if i.ports == "32150"]
    assert health and health[0].accepted_by is not None and health[0].accepted_by.chain == "KUBE-NODEPORTS"


# ---------------------------------------------------------------- fixtures


def test_docker_user_restriction_and_port_range() -> None:
    report = _report(FIXTURES / "docker-user-restricted.rules")
    found = _services(report)
    assert set(found) == {("tcp", "0.0.0.0:8080"), ("tcp", "0.0.0.0:9000-9100")}
    assert found["tcp", "0.0.0.0:9000-9100"].destinations == ("172.17.0.3:9000-9100",)
    for service in found.values():
        out = _reach(service, "outside")
        assert out.status == "restricted" and out.sources == ("10.0.0.0/8",)
        assert [(r.chain, r.line) for r in out.blocked_by] == [("DOCKER-USER", 27)]
    # INPUT DROP with ssh from 192.0.2.0/24 only
    assert [(i.proto, i.ports, i.sources) for i in report.input] == [("tcp", "22", ("192.0.2.0/24",))]


def test_router_port_forward() -> None:
    report = _report(FIXTURES / "router-forward.rules")
    found = _services(report)
    assert {k: s.destinations for k, s in found.items()} == {
        ("tcp", "*:2222"): ("192.168.1.10:22",),
        ("tcp", "*:80"): ("192.168.1.20:80",),
        ("tcp", "*:443"): ("192.168.1.20:443",),
    }
    ssh = found["tcp", "*:2222"]
    out = _reach(ssh, "outside")
    assert out.status == "yes" and [(r.chain, r.line) for r in out.accepted_by] == [("FORWARD", 15)]
    # PREROUTING -i eth0 only: no hairpin for the LAN, nothing for the host itself
    assert _reach(ssh, "bridge", "br0").status == "no"
    assert _reach(ssh, "host").status == "no"
    assert report.docker_proxy is None
    assert [(i.proto, i.ports) for i in report.input] == [("icmp", "-")]


def test_iptables_false_signature() -> None:
    report = _report(FIXTURES / "docker-iptables-false.rules")
    assert report.services == [] and report.docker_iptables_false
    assert any("--iptables=false" in n and "docker-proxy" in n for n in report.notes)
    assert {(i.proto, i.ports) for i in report.input} == {("tcp", "22"), ("tcp", "8080")}


def test_kube_proxy_synth_nodeports_and_cluster_ips() -> None:
    from natlint.synth import kube_proxy

    rs = natlint.load(kube_proxy(12, 2))
    report = ports(rs)
    nodeports = [s for s in report.services if s.address == "0.0.0.0" and s.proto == "tcp"]
    cluster = [s for s in report.services if s.scope == "routed" and s.address.startswith("10.")]  # ClusterIPs
    assert nodeports and cluster
    for s in nodeports:
        assert _reach(s, "outside").status == "yes"
    for s in cluster:
        assert _reach(s, "host").status == "yes"


def test_to_dict_is_json() -> None:
    report = _report(FIXTURES / "docker-user-restricted.rules")
    data = json.loads(json.dumps(report.to_dict()))
    assert set(data) == {"services", "input", "notes"}
    service = data["services"][0]
    assert {"proto", "address", "port", "front_end", "destinations", "rules", "reach"} <= set(service)
    assert {"origin", "status", "sources", "via", "masquerade", "accepted_by", "blocked_by"} <= set(service["reach"][0])


# ---------------------------------------------------------------- the command


def test_cli_text_and_json() -> None:
    runner = CliRunner()
    path = str(FIXTURES / "docker-user-restricted.rules")
    res = runner.invoke(main, ["ports", path], env={"NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    assert "0.0.0.0:8080 -> 172.17.0.2:80" in res.output and "\033[" not in res.output
    assert "restricted" in res.output and "10.0.0.0/8" in res.output
    res = runner.invoke(main, ["ports", "--format", "json", path])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert [s["front_end"] for s in data["services"]] == ["0.0.0.0:8080", "0.0.0.0:9000-9100"]


def test_cli_family_host_and_stdin(tmp_path: Path) -> None:
    runner = CliRunner()
    text = (FIXTURES / "router-forward.rules").read_text()
    host = tmp_path / "host.toml"
    host.write_text('[[interface]]\nname = "lo"\naddresses = ["127.0.0.1/8"]\n\n[[interface]]\nname = "eth0"\n'
                    'addresses = ["203.0.113.5/24"]\nexternal = true\n\n[[interface]]\nname = "br0"\n'
                    'addresses = ["192.168.1.1/24"]\nbridge = true\n\n[[route]]\ndst = "0.0.0.0/0"\n'
                    'dev = "eth0"\nvia = "203.0.113.1"\n')
    res = runner.invoke(main, ["ports", "--family", "4", "--host", str(host), "--format", "json", "-"], input=text)
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert {s["front_end"] for s in data["services"]} == {"*:2222", "*:80", "*:443"}
    assert not any("inferred" in n for n in data["notes"])
    res = runner.invoke(main, ["ports", "--host", str(tmp_path / "missing.toml"), "-"], input=text)
    assert res.exit_code == 2


def test_cli_subprocess() -> None:
    path = FIXTURES / "docker-iptables-false.rules"
    env = {**os.environ, "NO_COLOR": "1"}
    command = [sys.executable, "-c", "from natlint.cli import main; main()", "ports", str(path)]
    p = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    assert "--iptables=false" in p.stdout and "filter/INPUT line 9 ACCEPT" in p.stdout
    assert "\033[" not in p.stdout


# ---------------------------------------------------------------- a big dump


@pytest.mark.slow
def test_kube_proxy_60_5_services() -> None:
    """Every kube-proxy service shows up (the time is measured by the benchmarks)."""
    from natlint.synth import kube_proxy

    report = ports(natlint.load(kube_proxy(60, 5)))
    assert len(report.services) > 50


# ---------------------------------------------------------------- the kernel


def _kernel_reason() -> str | None:
    try:
        import oracle
    except ImportError as exc:  # pragma: no cover
        return f"the kernel oracle is not importable: {exc}"
    return oracle.kernel_available()


@pytest.mark.kernel
def test_outside_claims_hold_in_the_kernel() -> None:
    """For every row of docker-legacy-2containers, a probe from outside reaches the destination
    exactly when the row says it is reachable from outside (127.0.0.1 rows: sent by a neighbour
    that routes 127.0.0.1 to the host, the case the row's condition names)."""
    reason = _kernel_reason()
    if reason:
        pytest.skip(reason)
    from kernel_harness import KernelLab, Probe, Topology

    from natlint.host import infer, to_kernelcheck_topology

    path = _reference("docker-legacy-2containers.rules")
    text = path.read_text()
    rs = natlint.load(path)
    report = ports(rs)
    topo: dict[str, Any] = to_kernelcheck_topology(infer(rs))
    topo.pop("notes", None)
    topology = Topology.from_dict(topo)
    host_addr = topology.host.ext_addr.split("/")[0]
    started = time.monotonic()
    with KernelLab(topology, timeout=0.5) as lab:
        loaded = lab.load(text)
        assert loaded.ok, loaded.reason
        for service in report.services:
            claim = _reach(service, "outside")
            dst_ip, dst_port = service.destinations[0].rsplit(":", 1)
            owner = next(role for role, addrs in lab.addresses.items() if dst_ip in addrs)
            port = int(service.port.split("-")[0])
            if service.scope == "loopback":
                _neighbour_routes_loopback(lab, host_addr)
                target = service.address
            else:
                target = host_addr
            res = lab.probe(Probe("outside", service.proto, target, port, timeout=0.5))  # type: ignore[arg-type]
            arrived = [a for a in res.arrived_at if a.ns == owner]
            if claim.status in ("yes", "restricted"):
                assert arrived, f"{service.front}: natlint says reachable from outside; {res.describe()}"
                assert arrived[0].dport == int(dst_port), res.describe()
                if service.scope != "loopback":  # (a crafted 127.0.0.1 packet's reply goes astray)
                    assert res.delivered_to == f"{owner}:{dst_port}", res.describe()
            else:
                assert not arrived, f"{service.front}: natlint says not reachable; {res.describe()}"
    assert time.monotonic() - started < 120


def _neighbour_routes_loopback(lab: Any, host_addr: str) -> None:
    """Let ``outside`` send packets for 127.0.0.1 to the host's MAC (what an L2 neighbour can do)."""
    cmds = [
        ["sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=1", "net.ipv4.conf.eth0.route_localnet=1"],
        ["ip", "route", "del", "local", "127.0.0.1", "dev", "lo", "table", "local"],
        ["ip", "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local"],
        ["ip", "route", "replace", "127.0.0.1/32", "via", host_addr, "dev", "eth0"],
    ]
    for cmd in cmds:
        subprocess.run(["ip", "netns", "exec", lab.namespaces["outside"], *cmd], capture_output=True, check=False)
