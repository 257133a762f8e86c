"""The ruleset model: immutable typed dataclasses, knowing nothing of checks or the CLI."""

from natlint.model.ruleset import (
    BUILTIN_CHAINS,
    TABLES,
    VERDICTS,
    Chain,
    Family,
    Match,
    Option,
    Rule,
    Ruleset,
    SourcePos,
    Table,
    Target,
)

__all__ = [
    "BUILTIN_CHAINS",
    "TABLES",
    "VERDICTS",
    "Chain",
    "Family",
    "Match",
    "Option",
    "Rule",
    "Ruleset",
    "SourcePos",
    "Table",
    "Target",
]
