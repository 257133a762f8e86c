"""The host model: what natlint knows of the machine the rules run on.

Three ways to get one, all giving a :class:`HostModel`:

* :func:`infer` reads it out of the rules (the default; always reported, with what was
  assumed and from which line, in :attr:`HostModel.inferred`);
* :func:`read_host_file` reads a host file (``--host host.toml``, format in
  :mod:`natlint.host.toml`; :func:`dump_host_toml` writes one, which is what
  ``natlint host rules.txt`` prints);
* :func:`read_live` reads this machine with read-only ``ip -j`` commands (``--host live``).

:func:`to_kernelcheck_topology` turns a model into the namespaces of the kernel oracle.
"""

from natlint.host.infer import infer
from natlint.host.live import READ_ONLY_COMMANDS, LiveHostError, read_live
from natlint.host.model import (
    ADDRESS_TYPES,
    AddressType,
    Endpoint,
    HostModel,
    HostSource,
    IfAddress,
    Interface,
    Route,
    RouteDecision,
    RouteKind,
)
from natlint.host.toml import HostFileError, dump_host_toml, parse_host_toml, read_host_file
from natlint.host.topology import to_kernelcheck_topology

# The names the CLI uses (``--host FILE``, ``natlint host``).
load_host_file = read_host_file
dump_host_file = dump_host_toml

__all__ = [
    "ADDRESS_TYPES",
    "AddressType",
    "Endpoint",
    "HostFileError",
    "HostModel",
    "HostSource",
    "IfAddress",
    "Interface",
    "LiveHostError",
    "READ_ONLY_COMMANDS",
    "Route",
    "RouteDecision",
    "RouteKind",
    "dump_host_file",
    "dump_host_toml",
    "infer",
    "load_host_file",
    "parse_host_toml",
    "read_host_file",
    "read_live",
    "to_kernelcheck_topology",
]
