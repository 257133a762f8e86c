"""Chain graphs: which chains reach which, from which hooks, loops and nesting depth.

A user chain has no hook of its own: it runs in every hook whose built-in chain reaches it,
and the kernel checks its targets against all of them (a MASQUERADE in a chain jumped to
from PREROUTING is rejected even if POSTROUTING jumps there too).

The graph is a plain adjacency map and every walk is iterative: importing networkx costs more
than checking a small file (``natlint check`` runs in pre-commit hooks), and 10,000 nested user
chains must not hit Python's recursion limit. ``ChainGraph.graph`` still builds the networkx
``MultiDiGraph`` (an edge per jump or goto, with ``rule`` and ``goto``) for callers that want one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from natlint.model.ruleset import Rule, Ruleset, Table

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["ChainGraph", "build_graphs", "NFT_MAX_USER_DEPTH"]

# nf_tables allows a built-in chain plus at most 15 nested user chains (-g counts too).
NFT_MAX_USER_DEPTH = 15


@dataclass
class ChainGraph:
    table: Table
    # source chain -> target chain -> the rules that jump or go there, in file order (both levels
    # in the order of the first such rule): the edge order networkx had.
    jumps: dict[str, dict[str, list[Rule]]] = field(repr=False)

    @cached_property
    def graph(self) -> nx.MultiDiGraph:
        """The same graph as a networkx ``MultiDiGraph`` (imported and built on first use)."""
        import networkx as nx

        g: nx.MultiDiGraph = nx.MultiDiGraph()
        for chain in self.table:
            g.add_node(chain.name, builtin=chain.builtin)
        for src, targets in self.jumps.items():
            for dst, rules in targets.items():
                for rule in rules:
                    g.add_edge(src, dst, rule=rule, goto=rule.target.goto if rule.target is not None else False)
        return g

    @property
    def builtins(self) -> list[str]:
        return [c.name for c in self.table if c.builtin]

    def edges(self) -> Iterator[tuple[str, str, Rule]]:
        for src, targets in self.jumps.items():
            for dst, rules in targets.items():
                for rule in rules:
                    yield src, dst, rule

    def successors(self, name: str) -> list[str]:
        return list(self.jumps.get(name, ()))

    def descendants(self, name: str) -> set[str]:
        """Every chain reachable from ``name`` by one or more jumps (``name`` only through a loop,
        and then not included, as ``networkx.descendants``)."""
        seen: set[str] = set()
        stack = [name]
        while stack:
            for dst in self.jumps.get(stack.pop(), ()):
                if dst not in seen:
                    seen.add(dst)
                    stack.append(dst)
        seen.discard(name)
        return seen

    def reachable_from_hooks(self) -> set[str]:
        """The built-in chains and every chain they reach."""
        reachable: set[str] = set()
        for hook in self.builtins:
            reachable |= self.descendants(hook) | {hook}
        return reachable

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
            for chain in self.descendants(hook) | {hook}:
                if chain in result:
                    result[chain].add(hook)
        return {k: frozenset(v) for k, v in result.items()}

    def unreferenced(self) -> list[str]:
        targets = {dst for targets in self.jumps.values() for dst in targets}
        return [c.name for c in self.table if not c.builtin and c.name not in targets]

    @cached_property
    def _components(self) -> dict[str, int]:
        """Strongly connected components: chain -> component number (Tarjan, iteratively)."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        on_stack: set[str] = set()
        stack: list[str] = []
        component: dict[str, int] = {}
        counter = components = 0
        for root in self.table.chains:
            if root in index:
                continue
            index[root] = low[root] = counter
            counter += 1
            stack.append(root)
            on_stack.add(root)
            work: list[tuple[str, Iterator[str]]] = [(root, iter(self.jumps.get(root, ())))]
            while work:
                node, children = work[-1]
                for child in children:
                    if child not in index:
                        index[child] = low[child] = counter
                        counter += 1
                        stack.append(child)
                        on_stack.add(child)
                        work.append((child, iter(self.jumps.get(child, ()))))
                        break
                    if child in on_stack:
                        low[node] = min(low[node], index[child])
                else:
                    work.pop()
                    if work:
                        parent = work[-1][0]
                        low[parent] = min(low[parent], low[node])
                    if low[node] == index[node]:
                        number = components
                        components += 1
                        while True:
                            member = stack.pop()
                            on_stack.discard(member)
                            component[member] = number
                            if member == node:
                                break
        return component

    def _is_cyclic(self, members: list[str]) -> bool:
        return len(members) > 1 or members[0] in self.jumps.get(members[0], {})

    def reachable_cycles(self) -> list[list[str]]:
        """Cycles that a built-in chain reaches (the kernel refuses those), each sorted, in the
        order of their first chain in the table."""
        reachable = self.reachable_from_hooks()
        groups: dict[int, list[str]] = {}
        for name in self.table.chains:
            if name in reachable:
                groups.setdefault(self._components[name], []).append(name)
        return [sorted(members) for members in groups.values() if self._is_cyclic(members)]

    def topological_order(self, nodes: Iterable[str], *, acyclic_only: bool = False) -> list[str]:
        """``nodes`` (a set closed under jumps, or any set: other edges are ignored), callers
        before callees, ties in table order. Raises ValueError on a loop among them, unless
        ``acyclic_only``: then only the edges between different loops count (a loop's own jumps
        and self-jumps are left out)."""
        chosen = set(nodes)
        order = [n for n in self.table.chains if n in chosen]
        component = self._components if acyclic_only else None

        def targets(src: str) -> Iterator[str]:
            for dst in self.jumps.get(src, ()):
                if dst in chosen and (component is None or component[dst] != component[src]):
                    yield dst

        indegree = dict.fromkeys(order, 0)
        for src in order:
            for dst in targets(src):
                indegree[dst] += 1
        generation = [n for n in order if indegree[n] == 0]
        result: list[str] = []
        while generation:
            result.extend(generation)
            following: list[str] = []
            for src in generation:
                for dst in targets(src):
                    indegree[dst] -= 1
                    if indegree[dst] == 0:
                        following.append(dst)
            generation = following
        if len(result) != len(order):
            raise ValueError("the chains jump in a loop: no topological order")
        return result

    def max_depth(self) -> tuple[int, list[str]]:
        """The deepest nesting of user chains below a built-in chain (cycles ignored)."""
        component = self._components
        chains = self.table.chains

        def deepest(node: str) -> tuple[int, str | None]:
            """The depth below ``node`` and the first successor that has it (loop edges left out)."""
            below, step = 0, None
            for s in self.jumps.get(node, ()):
                if component[s] != component[node] and depth[s] > below:
                    below, step = depth[s], s
            return below, step

        depth: dict[str, int] = {}  # user chains on the deepest path below each chain, itself included
        nxt: dict[str, str | None] = {}
        for node in reversed(self.topological_order(chains, acyclic_only=True)):
            below, nxt[node] = deepest(node)
            depth[node] = below + (0 if chains[node].builtin else 1)

        best: tuple[int, list[str]] = (0, [])
        for hook in self.builtins:
            below, step = deepest(hook)
            if below > best[0]:
                route = [hook]
                while step is not None:
                    if not chains[step].builtin:
                        route.append(step)
                    step = nxt[step]
                best = (below, route)
        return best


def build_graphs(ruleset: Ruleset) -> dict[str, ChainGraph]:
    graphs: dict[str, ChainGraph] = {}
    for table in ruleset.tables.values():
        jumps: dict[str, dict[str, list[Rule]]] = {}
        for chain in table:
            for rule in chain.rules:
                t = rule.target
                if t is not None and t.kind == "chain" and t.name in table.chains:
                    jumps.setdefault(chain.name, {}).setdefault(t.name, []).append(rule)
        graphs[table.name] = ChainGraph(table, jumps)
    return graphs
