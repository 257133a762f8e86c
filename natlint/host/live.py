"""Read the host model of the machine natlint runs on (``--host live``).

natlint never changes the system: this module runs only the read-only ``ip`` commands listed
in :data:`READ_ONLY_COMMANDS` (JSON output, with a timeout) and reads files under
``/proc/sys`` (forwarding, bridge-nf-call, each interface's ``route_localnet``). A bridge's
hairpin mode comes from its ports' ``ip -d link`` details. Container addresses live in other
network namespaces and are not read.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path
from typing import Literal

from natlint.host.model import HostModel, IfAddress, Interface, Route, RouteKind, cidr

__all__ = ["READ_ONLY_COMMANDS", "LiveHostError", "read_live"]

# Every command read_live may run, exactly as run. A test checks each call against this list.
READ_ONLY_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("ip", "-j", "-4", "addr", "show"),
    ("ip", "-j", "-6", "addr", "show"),
    ("ip", "-j", "-4", "route", "show"),
    ("ip", "-j", "-6", "route", "show"),
    ("ip", "-j", "-d", "link", "show"),
)
_TIMEOUT = 10.0
_SYSCTL = Path("/proc/sys")


class LiveHostError(RuntimeError):
    """The machine's configuration could not be read."""


def _run(argv: tuple[str, ...]) -> object:
    if argv not in READ_ONLY_COMMANDS:  # a programming error: keep the promise above
        raise LiveHostError(f"refusing to run {' '.join(argv)}: not a listed read-only command")
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=_TIMEOUT, check=False,
            env={"LC_ALL": "C", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
        )
    except FileNotFoundError:
        raise LiveHostError("the 'ip' command (iproute2) is missing: cannot read this host (--host live)") from None
    except subprocess.TimeoutExpired:
        raise LiveHostError(f"'{' '.join(argv)}' did not answer within {_TIMEOUT:g} s") from None
    except OSError as exc:
        raise LiveHostError(f"cannot run '{' '.join(argv)}': {exc}") from None
    if proc.returncode != 0:
        raise LiveHostError(f"'{' '.join(argv)}' failed ({proc.returncode}): {proc.stderr.strip()}")
    text = proc.stdout.strip()
    if not text:
        return []
    try:
        return json.loads(text)
    except ValueError as exc:
        raise LiveHostError(f"'{' '.join(argv)}' printed no JSON (iproute2 too old for -j?): {exc}") from None


def _read_sysctl(relative: str) -> str | None:
    try:
        return (_SYSCTL / relative).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_route_localnet(ifname: str) -> bool:
    """``/proc/sys/net/ipv4/conf/<ifname>/route_localnet`` (``all``: the host-wide switch)."""
    if not ifname or "/" in ifname or ifname in (".", ".."):
        return False
    try:
        return (_SYSCTL / "net/ipv4/conf" / ifname / "route_localnet").read_text(encoding="ascii").strip() == "1"
    except (OSError, UnicodeDecodeError):
        return False


def _records(value: object) -> list[dict[str, object]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _dst(text: object, family: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if not isinstance(text, str):
        return None
    if text == "default":
        return ipaddress.ip_network("0.0.0.0/0" if family == 4 else "::/0")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _ip(text: object) -> int | None:
    if not isinstance(text, str):
        return None
    try:
        return int(ipaddress.ip_address(text))
    except ValueError:
        return None


def read_live(family: Literal[4, 6] = 4) -> HostModel:
    """The host model of this machine for one family. Raises :class:`LiveHostError`."""
    flag = "-4" if family == 4 else "-6"
    links = _records(_run(("ip", "-j", "-d", "link", "show")))
    addrs = _records(_run(("ip", "-j", flag, "addr", "show")))
    routes_json = _records(_run(("ip", "-j", flag, "route", "show")))
    notes: list[str] = []

    bridges: set[str] = set()
    ports: dict[str, list[str]] = {}
    hairpins: dict[str, list[bool]] = {}  # bridge -> its ports' hairpin mode
    order: list[str] = []
    for link in links:
        name = link.get("ifname")
        if not isinstance(name, str):
            continue
        order.append(name)
        info = link.get("linkinfo")
        if isinstance(info, dict) and info.get("info_kind") == "bridge":
            bridges.add(name)
        master = link.get("master")
        if isinstance(master, str):
            ports.setdefault(master, []).append(name)
            slave = info.get("info_slave_data") if isinstance(info, dict) else None
            if isinstance(info, dict) and info.get("info_slave_kind") == "bridge" and isinstance(slave, dict):
                hairpins.setdefault(master, []).append(slave.get("hairpin") is True)

    addresses: dict[str, list[IfAddress]] = {}
    wanted = "inet" if family == 4 else "inet6"
    for rec in addrs:
        name = rec.get("ifname")
        if not isinstance(name, str):
            continue
        if name not in order:
            order.append(name)
        info = rec.get("addr_info")
        for a in info if isinstance(info, list) else []:
            if not isinstance(a, dict) or a.get("family") != wanted:
                continue
            local, plen = _ip(a.get("local")), a.get("prefixlen")
            if local is None or not isinstance(plen, int):
                continue
            peer = _ip(a.get("address"))  # point-to-point: the subnet is the peer's
            subnet = cidr(family, peer if peer is not None else local, plen)
            addresses.setdefault(name, []).append(IfAddress(local, subnet))

    routes: list[Route] = []
    external: list[str] = []
    for rec in routes_json:
        net = _dst(rec.get("dst"), family)
        if net is None or net.version != family:
            continue
        dst = cidr(family, int(net.network_address), net.prefixlen)
        rtype = rec.get("type")
        kind: RouteKind = "unicast"
        if rtype in ("blackhole", "unreachable", "prohibit"):
            kind = "blackhole" if rtype == "blackhole" else "unreachable" if rtype == "unreachable" else "prohibit"
        elif rtype not in (None, "unicast"):
            continue  # multicast, throw, local... do not decide unicast forwarding here
        dev, via = rec.get("dev"), _ip(rec.get("gateway"))
        hops = rec.get("nexthops")
        if isinstance(hops, list) and hops and isinstance(hops[0], dict):
            dev, via = hops[0].get("dev", dev), _ip(hops[0].get("gateway"))
            notes.append(f"route {dst}: multipath, modelled by its first next hop")
        dev_name = dev if isinstance(dev, str) else ""
        if rec.get("protocol") == "kernel" and via is None and any(
            a.prefix == dst for a in addresses.get(dev_name, [])
        ):
            continue  # the connected route of an interface address: the model derives it
        routes.append(Route(dst, dev_name, via, kind))
        if net.prefixlen == 0 and dev_name and dev_name not in external:
            external.append(dev_name)

    localnet_all = family == 4 and _read_route_localnet("all")
    if localnet_all:
        notes.append("net.ipv4.conf.all.route_localnet is 1: every interface routes 127.0.0.0/8")

    def localnet(name: str) -> bool:
        if family != 4 or name == "lo":
            return False
        return localnet_all or _read_route_localnet(name)

    def hairpin(name: str) -> bool:
        modes = hairpins.get(name, [])
        if modes and any(modes) and not all(modes):
            notes.append(f"{name}: hairpin mode is on for some of its ports only: modelled as on")
        return any(modes)

    interfaces = tuple(
        Interface(name, tuple(addresses.get(name, [])), name in bridges, name in external, tuple(ports.get(name, [])),
                  route_localnet=localnet(name), hairpin=name in bridges and hairpin(name))
        for name in order
    )
    bridge_nf = _read_sysctl("net/bridge/bridge-nf-call-" + ("iptables" if family == 4 else "ip6tables"))
    forward = _read_sysctl("net/ipv4/ip_forward" if family == 4 else "net/ipv6/conf/all/forwarding")
    ran = [" ".join(c) for c in READ_ONLY_COMMANDS if c[2] in ("-d", flag)]
    notes.insert(0, "read from this machine: " + ", ".join(ran))
    if bridge_nf is None:
        notes.append("br_netfilter is not loaded (no /proc/sys/net/bridge): bridged traffic skips iptables")
    notes.append("container addresses are in other network namespaces: not read")
    return HostModel(
        family=family,
        interfaces=interfaces,
        routes=tuple(routes),
        br_netfilter=bridge_nf == "1",
        containers=(),
        inferred=tuple(notes),
        source="live",
        ip_forward=forward == "1",
    )
