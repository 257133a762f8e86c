"""The host model as a kernelcheck topology (``../shared/tools/kernelcheck``, README "Topology").

kernelcheck builds network namespaces from it: the host with its external interface and
bridges, containers on the bridges, and an ``outside`` client and an ``internet`` server on the
external subnet. A differential test loads the same dump there and compares the kernel's
answers with natlint's, so the namespaces must be the model: same interface names, addresses,
bridges and containers, same ``bridge-nf-call-iptables`` and ``ip_forward``, same
``route_localnet`` per interface (``host.interface_sysctls``, applied once the interfaces
exist) and hairpin mode per bridge (``bridges[].hairpin``: on every port). These two keys are
natlint's kernel harness's (tests/kernel_harness.py); kernelcheck ignores them.

What kernelcheck cannot build is approximated and listed in ``notes`` (a key kernelcheck
ignores): addresses of other interfaces become /32 extra addresses of the external interface
(so that they stay LOCAL), routes through devices it does not create are dropped, and the
host has no default gateway (kernelcheck's default: the outside and internet namespaces share
the external subnet).
"""

from __future__ import annotations

import re

from natlint.host.model import HostModel, format_ip, prefix_hosts

__all__ = ["to_kernelcheck_topology"]

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_RESERVED = {"host", "outside", "internet", "sw"}


def to_kernelcheck_topology(host: HostModel) -> dict[str, object]:
    """A kernelcheck topology (JSON-ready dict) for a host model.

    An IPv6 model gives an IPv6 topology (natlint's kernel harness builds those; the reference
    kernelcheck is IPv4 only): ``disable_ipv6`` false, ``net.ipv6.conf.all.forwarding`` and
    ``bridge-nf-call-ip6tables`` from the model, DAD off. Raises ValueError when the model
    cannot be built: no external interface with an address, or an external subnet too small
    for the two peers.
    """
    v = host.family
    full = 32 if v == 4 else 128
    ext = host.external
    if ext is None or not ext.addresses:
        raise ValueError("the host model has no external interface with an address")
    notes: list[str] = []
    main = ext.addresses[0]
    local = {a.address for i in host.interfaces for a in i.addresses}
    peers = [h for h in prefix_hosts(main.prefix)[:64] if h not in local][:2]
    if len(peers) < 2:
        raise ValueError(f"the external subnet {main.prefix} has no room for the outside and internet peers")
    extra = [{"dev": ext.name, "addr": str(a)} for a in ext.addresses[1:] if not _link_local(v, a.address)]
    bridges: list[dict[str, object]] = []
    names: dict[str, str] = {}  # model name -> topology name (one container may sit on two bridges)
    for iface in host.interfaces:
        if iface.loopback or iface is ext:
            continue
        if iface.bridge and iface.addresses:
            containers = []
            for c in host.containers:
                if c.bridge != iface.name:
                    continue
                if c.name not in names:
                    names[c.name] = _container_name(c.name, set(names.values()))
                containers.append({"name": names[c.name], "addr": format_ip(v, c.address)})
            bridges.append({"name": iface.name, "addr": str(iface.addresses[0]), "mcast_snooping": 0,
                            "containers": containers, **({"hairpin": True} if iface.hairpin else {})})
            rest = iface.addresses[1:]
        else:
            rest = iface.addresses
        for a in rest:
            if _link_local(v, a.address):  # every IPv6 interface has its own: not movable
                notes.append(f"{a} of {iface.name} left out: link-local")
                continue
            extra.append({"dev": ext.name, "addr": f"{format_ip(v, a.address)}/{full}"})
            notes.append(f"{a} of {iface.name} is a /32 on {ext.name}: kernelcheck does not create {iface.name}")
    routes = []
    for r in host.routes:
        if r.dst.mask == 0:
            continue  # no default gateway: the peers share the external subnet
        if r.kind == "unicast" and r.via is not None and main.prefix.contains(r.via):
            routes.append({"to": str(r.dst), "via": format_ip(v, r.via)})
        else:
            via = f" via {format_ip(v, r.via)}" if r.via is not None else ""
            notes.append(f"route {r.dst} ({r.kind}{' dev ' + r.dev if r.dev else ''}{via}) left out")
    built = {ext.name, *(str(b["name"]) for b in bridges)}
    interface_sysctls: dict[str, str] = {}
    for iface in host.interfaces:
        if v != 4 or iface.loopback or not iface.route_localnet:
            continue
        if iface.name in built:
            interface_sysctls[f"net/ipv4/conf/{iface.name}/route_localnet"] = "1"
        else:
            notes.append(f"route_localnet of {iface.name} left out: kernelcheck does not create {iface.name}")
    plen = str(main).rsplit("/", 1)[1]
    if v == 4:
        sysctls = {
            "net.ipv4.ip_forward": "1" if host.ip_forward else "0",
            "net.ipv4.conf.all.rp_filter": "0",
            "net.ipv4.conf.default.rp_filter": "0",
            "net.bridge.bridge-nf-call-iptables": "1" if host.br_netfilter else "0",
            # a lab setting, not the host's: ICMP errors are rate limited per peer (1/s), so
            # back-to-back probes answered by REJECT would otherwise look dropped
            "net.ipv4.icmp_ratelimit": "0",
        }
    else:
        sysctls = {
            "net.ipv6.conf.all.forwarding": "1" if host.ip_forward else "0",
            "net.ipv6.conf.all.accept_dad": "0",
            "net.ipv6.conf.default.accept_dad": "0",
            "net.bridge.bridge-nf-call-ip6tables": "1" if host.br_netfilter else "0",
            # a lab setting, not the host's: ICMPv6 errors are rate limited per peer (1/s), so
            # back-to-back probes answered by REJECT would otherwise look dropped
            "net.ipv6.icmp.ratelimit": "0",
        }
    return {
        "disable_ipv6": v == 4,
        "host": {
            "ext_if": ext.name,
            "ext_addr": str(main),
            "gw": None,
            "extra_addrs": extra,
            "routes": routes,
            "sysctls": sysctls,
            **({"interface_sysctls": interface_sysctls} if interface_sysctls else {}),
        },
        "outside": {"addr": f"{format_ip(v, peers[0])}/{plen}", "gw": format_ip(v, main.address), "routes": []},
        "internet": {"addr": f"{format_ip(v, peers[1])}/{plen}", "gw": None, "routes": []},
        "bridges": bridges,
        "notes": notes,
    }


def _link_local(version: int, address: int) -> bool:
    return version == 6 and address >> 118 == 0xFE80 >> 6  # fe80::/10


def _container_name(name: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:32] or "c"
    if base in _RESERVED or not _NAME.match(base):
        base = f"c-{base}"[:32]
    candidate, n = base, 2
    while candidate in used:
        candidate = f"{base[:28]}-{n}"
        n += 1
    return candidate
