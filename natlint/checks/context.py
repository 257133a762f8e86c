"""What a check gets: the ruleset, the host model and one shared engine, built on demand.

Structural checks only read ``ctx.ruleset``; semantic checks ask ``ctx.engine`` (built once
per file and shared, so compiled rules are reused across checks). ``ctx.host`` is the model
given with ``--host`` or, by default, the one inferred from the dump. ``trusted_interfaces``
and ``trusted_networks`` come from the configuration file (empty unless configured).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING

from natlint.model.ruleset import Ruleset

if TYPE_CHECKING:
    from natlint.host.model import HostModel
    from natlint.netfilter.engine import Engine

__all__ = ["CheckContext", "ENGINE_BUDGET", "DEFAULT_BUDGET_SECONDS"]

# Rule applications and seconds one file's semantic checks may spend before they stop with
# NL007 "analysis incomplete" instead of running for minutes (``natlint check --budget``).
ENGINE_BUDGET = 5_000_000
DEFAULT_BUDGET_SECONDS = 60.0


@dataclass
class CheckContext:
    ruleset: Ruleset
    host_model: HostModel | None = None
    max_branches: int = ENGINE_BUDGET
    budget_seconds: float | None = DEFAULT_BUDGET_SECONDS
    notes: list[str] = field(default_factory=list)
    # From the configuration (trusted-interfaces, trusted-networks): traffic a check may treat as
    # coming from the operator's side (a management VPN, a bastion network). Empty by default.
    trusted_interfaces: tuple[str, ...] = ()
    trusted_networks: tuple[IPv4Network | IPv6Network, ...] = ()

    @cached_property
    def host(self) -> HostModel:
        if self.host_model is not None:
            return self.host_model
        from natlint.host import infer

        return infer(self.ruleset)

    @cached_property
    def engine(self) -> Engine:
        """An engine that records steps (findings cite the rules that decided)."""
        from natlint.netfilter.engine import Engine
        from natlint.packets.compile import compile_interfaces
        from natlint.packets.space import PacketSpace

        # the clock starts when the space is made: the budget covers every semantic check
        space = PacketSpace(self.ruleset.family, compile_interfaces(self.ruleset, self.host),
                            max_seconds=self.budget_seconds)
        return Engine(self.ruleset, self.host, space=space, record_steps=True, max_branches=self.max_branches)

    def stepless_engine(self) -> Engine:
        """An engine on :attr:`engine`'s space and compiled rules that records no steps (fates
        only: much faster), made once and let go of by :meth:`release`."""
        found = vars(self).get("_natlint_plain_engine")
        if found is None:
            from natlint.netfilter.engine import Engine

            found = Engine(self.ruleset, self.host, space=self.engine.space, record_steps=False,
                           max_branches=self.max_branches, like=self.engine)
            vars(self)["_natlint_plain_engine"] = found
        return found  # type: ignore[no-any-return]

    def release(self) -> None:
        """Let go of what a check kept in the context for others of its kind (the DNAT
        inventory, the engine that records no steps, shared nat walks: ``_natlint_*``
        attributes) and of the engine's last arriving run; compiled rules stay. run_checks
        calls it after each check module: on a 100k-rule kube-proxy dump they hold millions
        of BDD nodes that the next module does not read."""
        for name in [n for n in vars(self) if n.startswith("_natlint_")]:
            del vars(self)[name]
        if "engine" in vars(self):
            self.engine.release()

    @property
    def path(self) -> str:
        return self.ruleset.path
