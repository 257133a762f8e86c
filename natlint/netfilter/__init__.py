"""The netfilter model: chains, hooks and NAT, evaluated on packet sets as the kernel does."""

from natlint.netfilter.engine import Engine, Outcome, Step

__all__ = ["Engine", "Outcome", "Step"]
