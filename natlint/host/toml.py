"""The host file: a host model written by hand (``--host host.toml``) or printed by ``natlint host``.

```toml
br_netfilter = true          # optional (default true): bridged traffic crosses FORWARD
ip_forward = true            # optional (default true)

[[interface]]
name = "eth0"
addresses = ["198.51.100.1/24", "2001:db8::1/64"]
external = true              # optional

[[interface]]
name = "docker0"
addresses = ["172.17.0.1/16"]
bridge = true                # optional
ports = ["veth0"]            # optional: the bridge's member interfaces
hairpin = true               # optional (bridges, default false): hairpin_mode on its ports
route_localnet = true        # optional (IPv4, default false): routes 127.0.0.0/8 here

[[route]]
dst = "0.0.0.0/0"            # or "default" (its family is the one of via)
dev = "eth0"                 # optional when via is on a connected subnet
via = "198.51.100.254"       # optional
kind = "blackhole"           # optional: unicast (default), blackhole, unreachable, prohibit

[[container]]
name = "web"
address = "172.17.0.2"
bridge = "docker0"
```

One file can describe both families: reading it for IPv4 keeps the IPv4 addresses, routes and
containers, and the IPv6 ones for IPv6. Files are read with :mod:`tomllib`; anything wrong
raises :class:`HostFileError` naming the file and the key. Writing is by hand (the format is
small), with what was inferred as comments on top.
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Literal

from natlint.host.model import Endpoint, HostModel, IfAddress, Interface, Route, RouteKind, cidr, format_ip
from natlint.model.values import interface_name_problem, parse_interface

__all__ = ["HostFileError", "read_host_file", "parse_host_toml", "dump_host_toml"]

_TOP_KEYS = ("br_netfilter", "ip_forward", "interface", "route", "container")
_INTERFACE_KEYS = ("name", "addresses", "bridge", "external", "ports", "route_localnet", "hairpin")
_ROUTE_KEYS = ("dst", "dev", "via", "kind")
_CONTAINER_KEYS = ("name", "address", "bridge")
_ROUTE_KINDS: tuple[RouteKind, ...] = ("unicast", "blackhole", "unreachable", "prohibit")


class HostFileError(ValueError):
    """A host file that cannot be read: the message names the file and the key."""


def read_host_file(path: str | Path, family: Literal[4, 6] = 4) -> HostModel:
    """Read a host file for one address family."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HostFileError(f"{p}: cannot read the host file: {exc}") from None
    return parse_host_toml(text, family, path=str(p))


def parse_host_toml(text: str, family: Literal[4, 6] = 4, *, path: str = "<host file>") -> HostModel:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HostFileError(f"{path}: not valid TOML: {exc}") from None
    return _Reader(path, family).read(doc)


class _Reader:
    def __init__(self, path: str, family: Literal[4, 6]) -> None:
        self.path = path
        self.family = family

    def fail(self, where: str, message: str) -> HostFileError:
        return HostFileError(f"{self.path}: {where}: {message}")

    def keys(self, table: dict[str, object], known: tuple[str, ...], where: str) -> None:
        for key in table:
            if key not in known:
                raise self.fail(where, f"unknown key '{key}' (known keys: {', '.join(known)})")

    def tables(self, doc: dict[str, object], key: str) -> list[dict[str, object]]:
        value = doc.get(key, [])
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            raise self.fail(key, f"write each one as a [[{key}]] table")
        return value

    def boolean(self, table: dict[str, object], key: str, where: str, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(f"{where}, key '{key}'", f"must be true or false, not {value!r}")
        return value

    def string(self, table: dict[str, object], key: str, where: str, *, required: bool = True) -> str | None:
        value = table.get(key)
        if value is None:
            if required:
                raise self.fail(where, f"the key '{key}' is missing")
            return None
        if not isinstance(value, str):
            raise self.fail(f"{where}, key '{key}'", f"must be a string, not {value!r}")
        return value

    def strings(self, table: dict[str, object], key: str, where: str) -> list[str]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"{where}, key '{key}'", f'must be a list of strings, e.g. ["10.0.0.1/24"], not {value!r}')
        return value

    def ifname(self, text: str, where: str) -> str:
        try:
            parse_interface(text)
        except ValueError as exc:
            raise self.fail(where, str(exc)) from None
        problem = interface_name_problem(text)
        if problem is not None or text.endswith("+"):
            raise self.fail(where, problem or f"'{text}' is a pattern, not an interface name")
        return text

    def address(self, text: str, where: str) -> tuple[int, int]:
        try:
            ip = ipaddress.ip_address(text.strip())
        except ValueError:
            raise self.fail(where, f"'{text}' is not an IP address") from None
        return ip.version, int(ip)

    def read(self, doc: dict[str, object]) -> HostModel:
        self.keys(doc, _TOP_KEYS, "top level")
        br_netfilter = self.boolean(doc, "br_netfilter", "top level", True)
        ip_forward = self.boolean(doc, "ip_forward", "top level", True)
        interfaces: list[Interface] = []
        for n, table in enumerate(self.tables(doc, "interface"), 1):
            where = f"[[interface]] #{n}"
            self.keys(table, _INTERFACE_KEYS, where)
            name = self.ifname(self.string(table, "name", where) or "", f"{where}, key 'name'")
            where = f"[[interface]] #{n} '{name}'"
            if any(i.name == name for i in interfaces):
                raise self.fail(where, f"the interface '{name}' is described twice")
            addresses = []
            for k, text in enumerate(self.strings(table, "addresses", where), 1):
                try:
                    address = IfAddress.parse(text)
                except ValueError as exc:
                    raise self.fail(f"{where}, addresses #{k}", str(exc)) from None
                if address.version == self.family:
                    addresses.append(address)
            ports = [self.ifname(p, f"{where}, key 'ports'") for p in self.strings(table, "ports", where)]
            is_bridge = self.boolean(table, "bridge", where, False)
            hairpin = self.boolean(table, "hairpin", where, False)
            if hairpin and not is_bridge:
                raise self.fail(f"{where}, key 'hairpin'", "hairpin mode is a bridge's setting: add bridge = true")
            interfaces.append(Interface(
                name, tuple(addresses), is_bridge, self.boolean(table, "external", where, False), tuple(ports),
                route_localnet=self.boolean(table, "route_localnet", where, False), hairpin=hairpin,
            ))
        names = {i.name for i in interfaces}
        routes = []
        for n, table in enumerate(self.tables(doc, "route"), 1):
            route = self.route(table, f"[[route]] #{n}", names)
            if route is not None:
                routes.append(route)
        containers = []
        for n, table in enumerate(self.tables(doc, "container"), 1):
            where = f"[[container]] #{n}"
            self.keys(table, _CONTAINER_KEYS, where)
            cname = self.string(table, "name", where) or ""
            version, ip = self.address(self.string(table, "address", where) or "", f"{where}, key 'address'")
            bridge = self.string(table, "bridge", where) or ""
            if bridge not in names:
                raise self.fail(f"{where}, key 'bridge'", f"no [[interface]] is named '{bridge}'")
            if version == self.family:
                containers.append(Endpoint(ip, bridge, cname))
        return HostModel(
            family=self.family,
            interfaces=tuple(interfaces),
            routes=tuple(routes),
            br_netfilter=br_netfilter,
            containers=tuple(containers),
            inferred=(f"read from {self.path}",),
            source="file",
            ip_forward=ip_forward,
        )

    def route(self, table: dict[str, object], where: str, names: set[str]) -> Route | None:
        self.keys(table, _ROUTE_KEYS, where)
        dst_text = self.string(table, "dst", where) or ""
        via_text = self.string(table, "via", where, required=False)
        dev = self.string(table, "dev", where, required=False) or ""
        kind_text = self.string(table, "kind", where, required=False) or "unicast"
        kind = next((k for k in _ROUTE_KINDS if k == kind_text), None)
        if kind is None:
            raise self.fail(f"{where}, key 'kind'", f"'{kind_text}' is not one of {', '.join(_ROUTE_KINDS)}")
        via: tuple[int, int] | None = self.address(via_text, f"{where}, key 'via'") if via_text is not None else None
        if dst_text.strip() == "default":
            version = via[0] if via is not None else self.family
            dst = cidr(version, 0, 0)
        else:
            try:
                net = ipaddress.ip_network(dst_text.strip(), strict=False)
            except ValueError:
                message = f"'{dst_text}' is not a prefix (10.0.0.0/8) or default"
                raise self.fail(f"{where}, key 'dst'", message) from None
            dst = cidr(net.version, int(net.network_address), net.prefixlen)
        if via is not None and via[0] != dst.version:
            raise self.fail(f"{where}, key 'via'", f"{via_text} and {dst_text} are not of the same address family")
        if dev and dev not in names:
            raise self.fail(f"{where}, key 'dev'", f"no [[interface]] is named '{dev}'")
        if kind == "unicast" and not dev and via is None:
            raise self.fail(where, "a route needs 'dev', 'via' or both")
        if dst.version != self.family:
            return None
        return Route(dst, dev, via[1] if via is not None else None, kind)


# ---------------------------------------------------------------- writing


def _quote(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _comment(text: str) -> str:
    # TOML comments end at a newline and may hold no control character but tab
    flat = " ".join(text.split())
    return "".join(ch if ord(ch) >= 0x20 and ord(ch) != 0x7F else f"\\x{ord(ch):02x}" for ch in flat)


def _bool(value: bool) -> str:
    return "true" if value else "false"


def dump_host_toml(host: HostModel, *, title: str | None = None) -> str:
    """The host file for ``host``; :attr:`HostModel.inferred` becomes comments on top."""
    fam = f"IPv{host.family}"
    lines = ["# " + _comment(title or f"natlint host model ({host.source}, {fam})")]
    lines.append("# Correct what is wrong and pass the file back with --host FILE.")
    if host.inferred:
        lines.append("#")
        lines.append("# What was inferred, and from where:")
        for note in host.inferred:
            lines.append("#   - " + _comment(note))
    lines.append("")
    lines.append(f"br_netfilter = {_bool(host.br_netfilter)}")
    lines.append(f"ip_forward = {_bool(host.ip_forward)}")
    for iface in host.interfaces:
        lines += ["", "[[interface]]", f"name = {_quote(iface.name)}"]
        lines.append(f"addresses = [{', '.join(_quote(str(a)) for a in iface.addresses)}]")
        if iface.bridge:
            lines.append("bridge = true")
        if iface.external:
            lines.append("external = true")
        if iface.ports:
            lines.append(f"ports = [{', '.join(_quote(p) for p in iface.ports)}]")
        if iface.bridge:
            lines.append(f"hairpin = {_bool(iface.hairpin)}")
        if (host.family == 4 and not iface.loopback) or iface.route_localnet:
            lines.append(f"route_localnet = {_bool(iface.route_localnet)}")
    for route in host.routes:
        lines += ["", "[[route]]", f"dst = {_quote(str(route.dst))}"]
        if route.dev:
            lines.append(f"dev = {_quote(route.dev)}")
        if route.via is not None:
            lines.append(f"via = {_quote(format_ip(host.family, route.via))}")
        if route.kind != "unicast":
            lines.append(f"kind = {_quote(route.kind)}")
    for c in host.containers:
        lines += ["", "[[container]]", f"name = {_quote(c.name)}"]
        lines.append(f"address = {_quote(format_ip(host.family, c.address))}")
        lines.append(f"bridge = {_quote(c.bridge)}")
    return "\n".join(lines) + "\n"
