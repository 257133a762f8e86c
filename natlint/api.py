"""The library API: what ``natlint check`` and ``natlint trace`` do, without the command line.

Most callers use the methods of :class:`natlint.Ruleset` (``ruleset.check()``,
``ruleset.trace(...)``, ``ruleset.ports()``) and :func:`natlint.diff`, which call the functions
here. ``natlint check`` uses :func:`apply_settings` for the same selection, suppressions and
severity overrides, so a library caller and the command line get the same findings.

Nothing here imports the engine, lark or networkx at import time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from natlint.config import Config, Selection, Settings
from natlint.findings import Finding
from natlint.model.ruleset import Ruleset

if TYPE_CHECKING:
    from natlint.host.model import HostModel
    from natlint.netfilter.engine import Outcome
    from natlint.netfilter.trace import TraceQuery
    from natlint.portmap import PortsReport
    from natlint.semdiff import DiffReport

__all__ = [
    "ConfigLike",
    "HostLike",
    "TRACE_FIELDS",
    "apply_settings",
    "check",
    "nearest_config",
    "resolve_config",
    "resolve_host",
    "trace",
    "trace_query",
]

ConfigLike: TypeAlias = "Config | str | os.PathLike[str] | Mapping[str, Any] | None"
"""A configuration: a :class:`~natlint.config.Config`, the path of a ``natlint.toml`` /
``.natlint.toml`` / ``pyproject.toml``, a mapping with the same keys as the file (``{"select":
["NL1"], "severity": {"NL102": "error"}}``), or None for the defaults (every code)."""

HostLike: TypeAlias = "HostModel | str | os.PathLike[str] | None"
"""A host model: a :class:`~natlint.host.HostModel`, the path of a host TOML file, ``"live"``
(this machine, read with read-only ``ip -j`` commands), or None: inferred from the dump."""

# The keyword fields ruleset.trace() accepts: the fields of TraceQuery.
TRACE_FIELDS: tuple[str, ...] = ("in_interface", "local", "src", "dst", "proto", "sport", "dport", "state")


def resolve_config(config: ConfigLike) -> Config:
    """A :class:`~natlint.config.Config` from any :data:`ConfigLike`, its selectors checked.

    Raises :class:`~natlint.config.ConfigError` (a ``ValueError``) for an unreadable file, an
    unknown key, a bad value or a selector that names no code.
    """
    from natlint.checks import load_all
    from natlint.config import load_config, parse_config, validate_selectors

    if config is None:
        return Config()
    if isinstance(config, Config):
        resolved = config
    elif isinstance(config, str | os.PathLike):
        resolved = load_config(Path(config))
    elif isinstance(config, Mapping):
        resolved = parse_config(config)
    else:
        raise TypeError(f"config must be a Config, a file path or a mapping, not {type(config).__name__}")
    load_all()  # registers every code: selectors are checked against them
    validate_selectors(resolved.selectors(), str(resolved.path or "config"))
    return resolved


def nearest_config(path: str | os.PathLike[str]) -> Config:
    """The configuration ``natlint check PATH`` would use: the nearest ``.natlint.toml``,
    ``natlint.toml`` or ``pyproject.toml`` with ``[tool.natlint]`` in the file's folder or
    above, or the defaults when there is none."""
    from natlint.config import find_config

    found = find_config(Path(path).parent)
    return resolve_config(found) if found is not None else Config()


def resolve_host(ruleset: Ruleset, host: HostLike, config: Config | None = None) -> HostModel | None:
    """The host model for ``ruleset``: ``host`` if given, else the configuration's ``host`` key,
    else None (the checks and the engine then infer one from the dump).

    Raises ``ValueError`` (:class:`~natlint.host.HostFileError`) for a bad host file and
    :class:`~natlint.host.LiveHostError` when ``"live"`` cannot read this machine.
    """
    from natlint.host.model import HostModel

    if host is None and config is not None:
        host = config.host
    if host is None or isinstance(host, HostModel):
        return host
    if not isinstance(host, str | os.PathLike):
        raise TypeError(f"host must be a HostModel, a file path or 'live', not {type(host).__name__}")
    if host == "live":
        from natlint.host import read_live

        return read_live(ruleset.family)
    from natlint.host import read_host_file

    return read_host_file(Path(host), ruleset.family)


def apply_settings(raw: Iterable[Finding], ruleset: Ruleset, settings: Settings, *,
                   suppressions: bool = True) -> list[Finding]:
    """Selection (``select``/``ignore``/``per-file-ignores``), then the file's own suppressions
    (with NL005 for unused ones) unless ``suppressions`` is False, then severity overrides."""
    import dataclasses

    from natlint.suppress import apply_suppressions

    path = ruleset.path

    def enabled(code: str) -> bool:
        return settings.enabled(code, path)

    kept = [f for f in raw if enabled(f.code)]
    if suppressions:
        kept = [f for f in apply_suppressions(ruleset, kept, enabled) if enabled(f.code)]
    out: list[Finding] = []
    for f in kept:
        level = settings.severity_for(f.code)
        out.append(dataclasses.replace(f, severity=level) if level is not None and level != f.severity else f)
    return out


def check(ruleset: Ruleset, config: ConfigLike = None, host: HostLike = None, *,
          select: Sequence[str] | None = None, extend_select: Sequence[str] = (), ignore: Sequence[str] = (),
          suppressions: bool = True, budget_seconds: float | None = None) -> list[Finding]:
    """Every finding for ``ruleset``, as ``natlint check`` reports them, sorted by position.

    ``config`` (see :data:`ConfigLike`) plays the configuration file; ``select``,
    ``extend_select`` and ``ignore`` play the command-line options of the same names and win over
    it. ``suppressions=False`` is ``--no-suppressions``. ``budget_seconds`` bounds the semantic
    checks (``--budget``: default the configuration's ``budget``, else 60 s; 0 no limit; going
    over reports NL007). Raises ``ValueError`` for a bad
    configuration, selector or host file.
    """
    from natlint.checks import CheckContext, run_checks
    from natlint.checks.context import DEFAULT_BUDGET_SECONDS
    from natlint.config import parse_selectors, validate_selectors

    resolved = resolve_config(config)
    cli = Selection(parse_selectors(select) if select is not None else None, parse_selectors(extend_select),
                    parse_selectors(ignore))
    validate_selectors((*(cli.select or ()), *cli.extend_select, *cli.ignore), "arguments")
    host_model = resolve_host(ruleset, host, resolved)
    budget = budget_seconds if budget_seconds is not None else resolved.budget
    ctx = CheckContext(ruleset, host_model, trusted_interfaces=resolved.trusted_interfaces,
                       trusted_networks=resolved.trusted_networks,
                       budget_seconds=DEFAULT_BUDGET_SECONDS if budget is None else (budget or None))  # 0: no limit
    raw = run_checks(ruleset, host_model, ctx=ctx)
    return apply_settings(raw, ruleset, Settings(resolved, cli), suppressions=suppressions)


def trace_query(packet: TraceQuery | None = None, **fields: object) -> TraceQuery:
    """A :class:`~natlint.netfilter.trace.TraceQuery` from a query or keyword fields.

    Fields (all optional, None is "any"): ``in_interface`` (the interface it arrives on; with
    neither it nor ``local``, any interface), ``local=True`` (sent by the host itself), ``src``,
    ``dst`` (an address or prefix), ``proto`` (``"tcp"``, ``6``...), ``sport``, ``dport`` (a
    port, ``8080``, or a range, ``"8000:9000"``), ``state`` (``"new"`` by default).
    """
    from natlint.netfilter.trace import TraceQuery

    if packet is not None:
        if fields:
            raise TypeError("give a TraceQuery or keyword fields, not both")
        if not isinstance(packet, TraceQuery):
            raise TypeError(f"packet must be a TraceQuery, not {type(packet).__name__}")
        return packet
    unknown = sorted(set(fields) - set(TRACE_FIELDS))
    if unknown:
        raise TypeError(f"unknown packet field(s) {', '.join(unknown)}; known: {', '.join(TRACE_FIELDS)}")
    values: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "local":
            values[name] = bool(value)
        elif value is not None:
            values[name] = str(value).lower() if name == "state" else str(value)
    if values.get("local") and values.get("in_interface"):
        raise ValueError("give either in_interface (arriving traffic) or local=True (sent by the host), not both")
    return TraceQuery(**values)


def trace(ruleset: Ruleset, packet: TraceQuery | None = None, host: HostLike = None,
          **fields: object) -> list[Outcome]:
    """What the firewall does to a packet class: one :class:`~natlint.netfilter.engine.Outcome`
    per distinct fate (verdict, where it is delivered, the rules that acted, the packets after
    NAT). :func:`natlint.netfilter.trace.outcome_to_dict` gives the JSON of ``natlint trace
    --format json``. Raises ``ValueError`` for a bad field value, and the engine's budget errors
    (``BudgetExceeded``, ``BranchBudgetExceeded``) for a class too broad to follow."""
    from natlint.host import infer
    from natlint.netfilter.trace import trace as run_trace

    query = trace_query(packet, **fields)
    model = resolve_host(ruleset, host) or infer(ruleset)
    return run_trace(ruleset, model, query)


def _as_ruleset(value: Ruleset | str | bytes | os.PathLike[str]) -> Ruleset:
    if isinstance(value, Ruleset):
        return value
    from natlint import load

    return load(Path(value) if isinstance(value, os.PathLike) else value)


def diff(a: Ruleset | str | bytes | os.PathLike[str], b: Ruleset | str | bytes | os.PathLike[str],
         host: HostLike = None) -> DiffReport:
    """What changes for traffic between two dumps (``natlint.semdiff.diff``); ``a`` and ``b`` are
    rulesets or anything :func:`natlint.load` reads."""
    from natlint import semdiff

    old, new = _as_ruleset(a), _as_ruleset(b)
    return semdiff.diff(old, new, resolve_host(old, host))


def ports(ruleset: Ruleset, host: HostLike = None) -> PortsReport:
    """The ports the ruleset opens and forwards (``natlint.portmap.ports``): a
    :class:`~natlint.portmap.PortsReport`."""
    from natlint import portmap

    return portmap.ports(ruleset, resolve_host(ruleset, host))

