"""Checks: each module asks the model or the engine one family of questions.

``run_checks(ruleset, host=None)`` returns the reader's findings plus every check's, sorted.
A check is a module with ``check(ctx: CheckContext) -> Iterable[Finding]`` and the ``Code``
registrations (with their documentation) of what it reports, listed in ``CHECK_MODULES``.
A semantic check that runs out of its budget reports NL007 (analysis incomplete) instead of
its findings; the other checks still run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import TYPE_CHECKING

from natlint.checks.context import CheckContext
from natlint.findings import Finding
from natlint.model.ruleset import Ruleset

if TYPE_CHECKING:
    from natlint.host.model import HostModel

__all__ = ["run_checks", "CHECK_MODULES", "CheckContext", "load_all"]

Check = Callable[[CheckContext], Iterable[Finding]]

# Roughly in order of the codes they report (findings are sorted anyway), but the cheap
# semantic checks before the nat and exposure ones: the time budget covers every semantic
# check, and on a 100k-rule kube-proxy dump those two are what spends it.
CHECK_MODULES: tuple[str, ...] = (
    "structure", "rules", "handshake", "neighbours", "forwarding", "nat", "exposure", "docker", "kube",
)


def load_all() -> list[ModuleType]:
    """Import every check module (which registers its codes)."""
    return [importlib.import_module(f"natlint.checks.{name}") for name in CHECK_MODULES]


def run_checks(ruleset: Ruleset, host: HostModel | None = None, *, ctx: CheckContext | None = None) -> list[Finding]:
    from natlint.netfilter.engine import BranchBudgetExceeded
    from natlint.packets.space import BudgetExceeded

    if host is not None and host.family != ruleset.family:
        raise ValueError(f"the host model is for IPv{host.family} and the ruleset is an IPv{ruleset.family} dump:"
                         f" read the host file for IPv{ruleset.family} (natlint.host.read_host_file(path,"
                         f" {ruleset.family}))")
    context = ctx if ctx is not None else CheckContext(ruleset, host)
    findings = [f for f in ruleset.diagnostics if isinstance(f, Finding)]
    for module in load_all():
        check: Check = module.check
        try:
            findings.extend(check(context))
        except (BranchBudgetExceeded, BudgetExceeded) as exc:
            findings.append(_incomplete(ruleset, module.__name__.rsplit(".", 1)[-1], exc, context.budget_seconds))
        context.release()
    findings.sort(key=Finding.sort_key)
    return findings


def _incomplete(ruleset: Ruleset, name: str, exc: Exception, budget: float | None) -> Finding:
    from natlint.packets.space import BudgetExceeded

    timed_out = (isinstance(exc, BudgetExceeded) and budget is not None and exc.seconds > budget
                 and "nodes" not in exc.reason and "memory" not in exc.reason)
    if timed_out:
        how = (f"Raise the time budget with --budget SECONDS (now {budget:g} s; 0: no limit, or 'budget' in the"
               " configuration), give a host model (--host) or split the file.")
    else:
        how = ("Give a host model (--host) or split the file to narrow the analysis (--budget raises only the"
               " time limit).")
    return Finding("NL007", "warning",
                   f"analysis incomplete: the {name} checks stopped at their budget ({exc}); none of their codes is"
                   f" reported for this file. {how}",
                   ruleset.path, 1)
