"""The chain graph: one networkx DiGraph per table, an edge per jump or goto."""

from natlint.graph.chains import ChainGraph, build_graphs

__all__ = ["ChainGraph", "build_graphs"]
