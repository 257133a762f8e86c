"""The registry of match modules and targets natlint understands.

Each ``matches_*`` / ``targets_*`` module exports ``SPECS``; this package only lists them.
"""

from __future__ import annotations

from collections.abc import Callable

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

__all__ = ["CANONICAL", "MATCHES", "TARGETS", "IMPLICIT_BY_PROTOCOL", "ExtensionSpec", "match_spec", "target_spec"]

_MODULES = (matches_l4, matches_state, matches_addr, matches_misc, targets_core, targets_nat, targets_mangle)

MATCHES: dict[str, ExtensionSpec] = {}
TARGETS: dict[str, ExtensionSpec] = {}
# Extensions whose canonical save form is not just "each option in spec order" (MARK's
# --set-mark printed as --set-xmark, REJECT's default printed...): name -> printer.
CanonicalOptions = Callable[..., list[tuple[str, list[str]]]]
CANONICAL: dict[str, CanonicalOptions] = {}
for _module in _MODULES:
    _canonical = getattr(_module, "canonical_options", None)
    for _spec in _module.SPECS:
        (MATCHES if _spec.kind == "match" else TARGETS)[_spec.name] = _spec
        if _canonical is not None:
            CANONICAL[_spec.name] = _canonical

IMPLICIT_BY_PROTOCOL = matches_l4.IMPLICIT_BY_PROTOCOL


def match_spec(name: str) -> ExtensionSpec | None:
    return MATCHES.get(name)


def target_spec(name: str) -> ExtensionSpec | None:
    return TARGETS.get(name)
