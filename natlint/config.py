"""Configuration: ``[tool.natlint]`` in ``pyproject.toml``, or ``natlint.toml`` / ``.natlint.toml``.

The nearest configuration file above a checked file applies to it (for standard input: above
the current directory). In one directory ``.natlint.toml`` wins over ``natlint.toml``, which wins
over a ``pyproject.toml`` with a ``[tool.natlint]`` table (a ``pyproject.toml`` without one is
passed over, as ruff does). Command-line options override the file.

Keys (the same in all three files; in ``pyproject.toml`` under ``[tool.natlint]``)::

    select = ["NL1", "NL301"]          # code prefixes, full codes, rule names or "ALL" (default ALL)
    extend-select = []                 # added to select
    ignore = ["NL102"]                 # taken out (the most specific selector wins; a tie: ignore)
    fail-on = "warning"                # error | warning | info
    format = "full"                    # concise | full | json | sarif | github
    host = "host.toml"                 # a host model file, relative to this file (or "live")
    trusted-interfaces = ["lo", "wg0"]
    trusted-networks = ["10.8.0.0/24"]
    budget = 120                       # seconds the semantic checks may take per file (default 60; 0: no limit)
    [per-file-ignores]                 # glob (relative to this file's folder, or a base name) -> codes
    "legacy/*.rules" = ["NL2"]
    [severity]                         # code, prefix or name -> error | warning | info
    NL102 = "error"

An unknown key or a wrong value is a ``ConfigError`` naming the file and the key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import ipaddress
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from natlint.findings import CODES, Severity

__all__ = [
    "CONFIG_NAMES",
    "FORMATS",
    "Config",
    "ConfigError",
    "Selection",
    "Settings",
    "find_config",
    "load_config",
    "normalise_selector",
    "parse_config",
    "parse_selectors",
    "selector_matches",
    "validate_selectors",
]

# Looked up in this order in each folder.
CONFIG_NAMES: tuple[str, ...] = (".natlint.toml", "natlint.toml", "pyproject.toml")
FORMATS: tuple[str, ...] = ("concise", "full", "json", "sarif", "github")
LEVELS: tuple[str, ...] = ("error", "warning", "info")
_SELECTOR = re.compile(r"^(?:ALL|NL[0-9]{0,3}|[a-z][a-z0-9]*(?:-[a-z0-9]+)*)$")
_KEYS = frozenset({
    "select", "extend-select", "ignore", "per-file-ignores", "severity", "fail-on", "format", "host",
    "trusted-interfaces", "trusted-networks", "budget",
})


class ConfigError(ValueError):
    """A configuration file or option natlint cannot use: the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class Selection:
    """One layer of rule selection (a config file, or the command line)."""

    select: tuple[str, ...] | None = None
    extend_select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    """One configuration file's settings (``path`` None: no file, the defaults)."""

    path: Path | None = None
    selection: Selection = Selection()
    per_file_ignores: tuple[tuple[str, tuple[str, ...]], ...] = ()
    severity: tuple[tuple[str, Severity], ...] = ()
    fail_on: str | None = None
    format: str | None = None
    host: str | None = None
    trusted_interfaces: tuple[str, ...] = ()
    trusted_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    budget: float | None = None  # seconds (0: no limit); None: not configured

    @property
    def root(self) -> Path:
        """The folder that per-file-ignores globs and ``host`` are relative to."""
        return self.path.parent if self.path is not None else Path.cwd()

    def selectors(self) -> Iterable[str]:
        yield from self.selection.select or ()
        yield from self.selection.extend_select
        yield from self.selection.ignore
        for _, codes in self.per_file_ignores:
            yield from codes
        for key, _ in self.severity:
            yield key


# ---- selectors -----------------------------------------------------------------------------------


def parse_selectors(values: Iterable[str]) -> tuple[str, ...]:
    """``("NL1,NL2", "NL301")`` (command-line style, comma separated, repeatable) -> a tuple."""
    out: list[str] = []
    for value in values:
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return tuple(normalise_selector(s) for s in out)


def normalise_selector(selector: str) -> str:
    """Codes and ALL in upper case, rule names in lower case."""
    return selector.upper() if selector.upper().startswith("NL") or selector.upper() == "ALL" else selector.lower()


def selector_matches(selector: str, code: str) -> bool:
    """Whether a normalised selector (ALL, a code or prefix, a rule name) covers ``code``."""
    if selector == "ALL":
        return True
    if selector.startswith("NL"):
        return code.startswith(selector)
    entry = CODES.get(code)
    return entry is not None and entry.name == selector


def _specificity(selector: str) -> int:
    """ALL < NL < NL3 < NL30 < NL301 = a rule name."""
    if selector == "ALL":
        return 0
    return len(selector) - 1 if selector.startswith("NL") else 4


def validate_selectors(selectors: Iterable[str], where: str) -> None:
    """Every selector must be well formed and name at least one registered code (call after the
    check modules are loaded, which registers their codes)."""
    for selector in selectors:
        if not _SELECTOR.match(selector):
            raise ConfigError(f"{where}: '{selector}' is not a code, a code prefix (NL2), a rule name or ALL")
        if selector != "ALL" and not any(selector_matches(selector, c) for c in CODES):
            raise ConfigError(f"{where}: '{selector}' names no natlint code ('natlint rule --all' lists them)")


def _best(selectors: Iterable[str], code: str) -> int:
    return max((_specificity(s) for s in selectors if selector_matches(s, code)), default=-1)


@dataclass(frozen=True, slots=True)
class Settings:
    """What applies to one checked file: the config file's layer, then the command line's."""

    config: Config = field(default_factory=Config)
    cli: Selection = Selection()

    def enabled(self, code: str, path: str) -> bool:
        on = True  # the default: select = ["ALL"]
        for layer in (self.config.selection, self.cli):
            if layer.select is None and not layer.extend_select and not layer.ignore:
                continue
            enable = _best((*(layer.select or ()), *layer.extend_select), code)
            disable = _best(layer.ignore, code)
            # A layer that does not name the code keeps it, unless its select starts afresh.
            on = (on and layer.select is None) if enable < 0 and disable < 0 else enable > disable
        return on and not self._ignored_for(code, path)

    def _ignored_for(self, code: str, path: str) -> bool:
        if not self.config.per_file_ignores:
            return False
        candidates = _path_forms(path, self.config.root)
        for pattern, codes in self.config.per_file_ignores:
            if any(selector_matches(s, code) for s in codes) and any(
                    fnmatch.fnmatchcase(c, pattern) for c in candidates):
                return True
        return False

    def severity_for(self, code: str) -> Severity | None:
        """The configured severity of ``code`` (the most specific key), or None: the check's own."""
        best: tuple[int, Severity] | None = None
        for key, level in self.config.severity:
            if selector_matches(key, code) and (best is None or _specificity(key) >= best[0]):
                best = (_specificity(key), level)
        return best[1] if best else None


def _path_forms(path: str, root: Path) -> list[str]:
    """A checked path as per-file-ignores globs may spell it: relative to the config file's
    folder, as given, and its base name."""
    forms = [path.replace("\\", "/")]
    if path not in ("-", "<stdin>"):
        with contextlib.suppress(ValueError, OSError):
            forms.insert(0, Path(path).resolve().relative_to(root.resolve()).as_posix())
    forms.append(forms[-1].rsplit("/", 1)[-1])
    return forms


# ---- files -----------------------------------------------------------------------------------------


def find_config(start: Path) -> Path | None:
    """The nearest configuration file in ``start`` (a folder) or a folder above it."""
    try:
        folder = start.resolve()
    except OSError:
        folder = start.absolute()
    for candidate_dir in (folder, *folder.parents):
        for name in CONFIG_NAMES:
            candidate = candidate_dir / name
            if not candidate.is_file():
                continue
            if name != "pyproject.toml" or _has_tool_table(candidate):
                return candidate
    return None


def _has_tool_table(path: Path) -> bool:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False  # not ours to complain about
    tool = doc.get("tool")
    return isinstance(tool, dict) and "natlint" in tool


def load_config(path: Path) -> Config:
    """Read one configuration file (``pyproject.toml``: its ``[tool.natlint]`` table)."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    prefix = ""
    if path.name == "pyproject.toml":
        tool = doc.get("tool")
        table = tool.get("natlint", {}) if isinstance(tool, dict) else {}
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [tool.natlint] must be a table")
        doc, prefix = table, "tool.natlint."
    return _parse(doc, path, prefix)


def _parse(doc: Mapping[str, Any], path: Path, prefix: str) -> Config:
    for key in doc:
        if key not in _KEYS:
            hint = f" (did you mean '{key.replace('_', '-')}'?)" if key.replace("_", "-") in _KEYS else ""
            raise ConfigError(f"{path}: unknown key '{prefix}{key}'{hint}; known keys: {', '.join(sorted(_KEYS))}")

    def where(key: str) -> str:
        return f"{path}: {prefix}{key}"

    def strings(key: str) -> tuple[str, ...]:
        value = doc.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where(key)} must be a list of strings")
        return tuple(cast("list[str]", value))

    def selectors(key: str, value: object = None) -> tuple[str, ...]:
        raw = strings(key) if value is None else value
        out = tuple(normalise_selector(s) for s in cast("Sequence[str]", raw))
        for s in out:
            if not _SELECTOR.match(s):
                raise ConfigError(f"{where(key)}: '{s}' is not a code, a code prefix (NL2), a rule name or ALL")
        return out

    def choice(key: str, allowed: Sequence[str]) -> str | None:
        value = doc.get(key)
        if value is None:
            return None
        if value not in allowed:
            raise ConfigError(f"{where(key)} must be one of {', '.join(allowed)}, not {value!r}")
        return cast("str", value)

    def table(key: str) -> Mapping[str, Any]:
        value = doc.get(key, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{where(key)} must be a table")
        return value

    per_file: list[tuple[str, tuple[str, ...]]] = []
    for pattern, codes in table("per-file-ignores").items():
        if isinstance(codes, str):
            codes = [codes]
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            raise ConfigError(f"{where('per-file-ignores')}.\"{pattern}\" must be a list of codes")
        per_file.append((pattern, selectors(f"per-file-ignores.\"{pattern}\"", codes)))
    severity: list[tuple[str, Severity]] = []
    for key, level in table("severity").items():
        (norm,) = selectors(f"severity.{key}", [key])
        if level not in LEVELS:
            raise ConfigError(f"{where('severity')}.{key} must be one of {', '.join(LEVELS)}, not {level!r}")
        severity.append((norm, cast("Severity", level)))
    host = doc.get("host")
    if host is not None:
        if not isinstance(host, str) or not host:
            raise ConfigError(f"{where('host')} must be a file name (relative to {path.name}) or 'live'")
        if host != "live":
            host = str(path.parent / host)
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for text in strings("trusted-networks"):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ConfigError(f"{where('trusted-networks')}: {exc}") from None
    budget = doc.get("budget")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int | float) or not budget >= 0
                               or budget == float("inf")):
        raise ConfigError(f"{where('budget')} must be a number of seconds (0: no limit), not {budget!r}")
    select = selectors("select") if "select" in doc else None
    return Config(
        path=path,
        selection=Selection(select, selectors("extend-select"), selectors("ignore")),
        per_file_ignores=tuple(per_file),
        severity=tuple(severity),
        fail_on=choice("fail-on", LEVELS),
        format=choice("format", FORMATS),
        host=host,
        trusted_interfaces=strings("trusted-interfaces"),
        trusted_networks=tuple(networks),
        budget=float(budget) if budget is not None else None,
    )


def parse_config(doc: Mapping[str, Any], path: Path | None = None) -> Config:
    """A configuration from a mapping with the keys of the file (``{"select": ["NL1"]}``), for
    library callers. ``path`` is the file it stands for: relative ``host`` names and
    per-file-ignores globs start in its folder (default: the current folder)."""
    config = _parse(doc, path if path is not None else Path.cwd() / "<config>", "")
    return config if path is not None else dataclasses.replace(config, path=None)
