"""The chain graph: one per table, an edge per jump or goto (networkx on demand)."""

from natlint.graph.chains import ChainGraph, build_graphs

__all__ = ["ChainGraph", "build_graphs"]
