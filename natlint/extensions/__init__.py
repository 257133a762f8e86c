"""The registry of match modules and targets natlint understands.

Each ``matches_*`` / ``targets_*`` module exports ``SPECS``; this package only lists them.
"""

from __future__ import annotations

from natlint.extensions import (
    matches_addr,
    matches_l4,
    matches_misc,
    matches_state,
    targets_core,
    targets_mangle,
    targets_nat,
)
from natlint.extensions.spec import ExtensionSpec

__all__ = ["MATCHES", "TARGETS", "IMPLICIT_BY_PROTOCOL", "ExtensionSpec", "match_spec", "target_spec"]

_MODULES = (matches_l4, matches_state, matches_addr, matches_misc, targets_core, targets_nat, targets_mangle)

MATCHES: dict[str, ExtensionSpec] = {}
TARGETS: dict[str, ExtensionSpec] = {}
for _module in _MODULES:
    for _spec in _module.SPECS:
        (MATCHES if _spec.kind == "match" else TARGETS)[_spec.name] = _spec

IMPLICIT_BY_PROTOCOL = matches_l4.IMPLICIT_BY_PROTOCOL


def match_spec(name: str) -> ExtensionSpec | None:
    return MATCHES.get(name)


def target_spec(name: str) -> ExtensionSpec | None:
    return TARGETS.get(name)
