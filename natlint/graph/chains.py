"""Chain graphs: which chains reach which, from which hooks, loops and nesting depth.

A user chain has no hook of its own: it runs in every hook whose built-in chain reaches it,
and the kernel checks its targets against all of them (a MASQUERADE in a chain jumped to
from PREROUTING is rejected even if POSTROUTING jumps there too).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import networkx as nx

from natlint.model.ruleset import Rule, Ruleset, Table

__all__ = ["ChainGraph", "build_graphs", "NFT_MAX_USER_DEPTH"]

# nf_tables allows a built-in chain plus at most 15 nested user chains (-g counts too).
NFT_MAX_USER_DEPTH = 15


@dataclass
class ChainGraph:
    table: Table
    graph: nx.MultiDiGraph = field(repr=False)

    @property
    def builtins(self) -> list[str]:
        return [c.name for c in self.table if c.builtin]

    def edges(self) -> Iterator[tuple[str, str, Rule]]:
        for src, dst, data in self.graph.edges(data=True):
            yield src, dst, data["rule"]

    def undefined_targets(self) -> Iterator[Rule]:
        for chain in self.table:
            for rule in chain.rules:
                t = rule.target
                if t is not None and t.kind == "chain" and t.name not in self.table.chains:
                    yield rule

    @cached_property
    def hooks(self) -> Mapping[str, frozenset[str]]:
        """For each chain, the built-in chains (hooks) from which it can run."""
        result: dict[str, set[str]] = {c.name: set() for c in self.table}
        for hook in self.builtins:
            for chain in nx.descendants(self.graph, hook) | {hook}:
                if chain in result:
                    result[chain].add(hook)
        return {k: frozenset(v) for k, v in result.items()}

    def unreferenced(self) -> list[str]:
        return [c.name for c in self.table if not c.builtin and self.graph.in_degree(c.name) == 0]

    def reachable_cycles(self) -> list[list[str]]:
        """Cycles that a built-in chain reaches (the kernel refuses those)."""
        reachable: set[str] = set()
        for hook in self.builtins:
            reachable |= nx.descendants(self.graph, hook) | {hook}
        sub = nx.DiGraph(self.graph.subgraph(reachable))
        cycles = []
        for component in nx.strongly_connected_components(sub):
            if len(component) > 1 or sub.has_edge(next(iter(component)), next(iter(component))):
                cycles.append(sorted(component))
        return cycles

    def max_depth(self) -> tuple[int, list[str]]:
        """The deepest nesting of user chains below a built-in chain (cycles ignored)."""
        dag = nx.DiGraph(self.graph)
        for component in list(nx.strongly_connected_components(dag)):
            if len(component) > 1:
                dag.remove_edges_from([(a, b) for a in component for b in component if dag.has_edge(a, b)])
        dag.remove_edges_from(list(nx.selfloop_edges(dag)))
        best: tuple[int, list[str]] = (0, [])
        depth: dict[str, tuple[int, list[str]]] = {}
        for node in reversed(list(nx.topological_sort(dag))):
            below = max((depth[s] for s in dag.successors(node) if s in depth), default=(0, []), key=lambda d: d[0])
            is_user = node in self.table.chains and not self.table.chains[node].builtin
            depth[node] = (below[0] + 1, [node, *below[1]]) if is_user else below
        for hook in self.builtins:
            below = max((depth[s] for s in dag.successors(hook) if s in depth), default=(0, []), key=lambda d: d[0])
            if below[0] > best[0]:
                best = (below[0], [hook, *below[1]])
        return best


def build_graphs(ruleset: Ruleset) -> dict[str, ChainGraph]:
    graphs: dict[str, ChainGraph] = {}
    for table in ruleset.tables.values():
        g: nx.MultiDiGraph = nx.MultiDiGraph()
        for chain in table:
            g.add_node(chain.name, builtin=chain.builtin)
        for chain in table:
            for rule in chain.rules:
                t = rule.target
                if t is not None and t.kind == "chain" and t.name in table.chains:
                    g.add_edge(chain.name, t.name, rule=rule, goto=t.goto)
        graphs[table.name] = ChainGraph(table, g)
    return graphs
