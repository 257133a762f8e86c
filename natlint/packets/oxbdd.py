"""The slice of dd's BDD interface that :mod:`natlint.packets.space` uses, over oxidd.

oxidd (``oxidd.bcdd``: BDDs with complement edges, written in Rust and built optimised) is
faster than the CUDD inside the ``dd`` wheel, which is compiled without optimisation: 3-3.7x
on a micro benchmark of big unions, about 2x on the engine's kube-proxy classification, where
most of the time goes into unique-table lookups (docs/performance.md).

This module makes oxidd look like ``dd.cudd.BDD``, so that the packet space keeps one code
path: named variables in declaration order (no reordering), ``cube``, ``exist``/``forall``/
``apply('\\E')``, ``let`` (substitution), ``ite``, and nodes with ``var``, ``low``, ``high``
(semantic cofactors, so ``negated`` is always False), ``support`` and ``dag_size``.

Memory: nodes are allocated as needed, the apply cache (``cache`` entries, 16 bytes each) at
once: it is small, since natlint makes many short-lived managers (one per analysis) and a
bigger cache measured no faster. The manager holds at most ``capacity`` nodes; an operation
that needs more raises :class:`MemoryError` (``oxidd.util.DDMemoryError``). Dead nodes are freed only by
:meth:`OxBDD.collect_garbage`: the packet space calls it when the node count has grown
enough since the last collection, and once more before it gives up on an operation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import oxidd.bcdd as _ox
from oxidd.util import BooleanOperator

_AND = BooleanOperator.AND

__all__ = ["OxBDD", "OxNode"]

_CUBE_CACHE_MAX = 4096


class OxNode:
    """A BDD function of an :class:`OxBDD` manager."""

    __slots__ = ("bdd", "f")
    negated = False  # low/high are semantic cofactors

    def __init__(self, bdd: OxBDD, f: Any) -> None:
        self.bdd = bdd
        self.f = f

    def __and__(self, other: OxNode) -> OxNode:
        return OxNode(self.bdd, self.f & other.f)

    def __or__(self, other: OxNode) -> OxNode:
        return OxNode(self.bdd, self.f | other.f)

    def __xor__(self, other: OxNode) -> OxNode:
        return OxNode(self.bdd, self.f ^ other.f)

    def __invert__(self) -> OxNode:
        return OxNode(self.bdd, ~self.f)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OxNode) and bool(self.f == other.f)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(self.f)

    @property
    def var(self) -> str | None:
        """The name of the top variable (None for the constants)."""
        level = self.f.node_level()
        return None if level is None else self.bdd.names[level]

    @property
    def low(self) -> OxNode:
        return OxNode(self.bdd, self.f.cofactor_false())

    @property
    def high(self) -> OxNode:
        return OxNode(self.bdd, self.f.cofactor_true())

    @property
    def support(self) -> set[str]:
        return self.bdd.support(self)

    @property
    def dag_size(self) -> int:
        return int(self.f.node_count())

    def __len__(self) -> int:
        return self.dag_size

    def __repr__(self) -> str:
        return f"<OxNode var={self.var} nodes={self.dag_size}>"


class OxBDD:
    """A BDD manager with named variables, as ``dd.cudd.BDD`` (the parts natlint uses)."""

    def __init__(self, capacity: int = 1 << 26, cache: int = 1 << 18) -> None:
        self.capacity = capacity
        self._mgr = _ox.BCDDManager(capacity, min(cache, capacity), 1)
        self.names: list[str] = []
        self._index: dict[str, int] = {}
        self._vars: list[Any] = []
        self.true = OxNode(self, self._mgr.true())
        self.false = OxNode(self, self._mgr.false())
        self._cubes: dict[tuple[str, ...], Any] = {}
        self._substitutions: dict[tuple[object, ...], Any] = {}

    # ---- variables ---------------------------------------------------------------------
    def declare(self, *names: str) -> None:
        new = [n for n in dict.fromkeys(names) if n not in self._index]
        if not new:
            return
        for index, name in zip(self._mgr.add_vars(len(new)), new, strict=True):
            self._index[name] = index
            self.names.append(name)
            self._vars.append(None)  # its node is made on first use (blocks of opaque variables)

    @property
    def vars(self) -> set[str]:
        return set(self._index)

    def level_of_var(self, name: str) -> int:
        return self._index[name]

    def var(self, name: str) -> OxNode:
        return OxNode(self, self._var(self._index[name]))

    def _var(self, index: int) -> Any:
        found = self._vars[index]
        if found is None:
            found = self._vars[index] = self._mgr.var(index)
        return found

    def cube(self, assignment: Mapping[str, bool]) -> OxNode:
        """The conjunction of the literals (built bottom-up: each step adds one node)."""
        f = self._mgr.true()
        for index in sorted((self._index[n] for n in assignment), reverse=True):
            v = self._var(index)
            f = (v if assignment[self.names[index]] else ~v) & f
        return OxNode(self, f)

    def _positive_cube(self, names: Iterable[str]) -> Any:
        key = tuple(names)
        found = self._cubes.get(key)
        if found is None:
            if len(self._cubes) >= _CUBE_CACHE_MAX:
                self._cubes.clear()
            found = self.cube(dict.fromkeys(key, True)).f
            self._cubes[key] = found
        return found

    # ---- operations --------------------------------------------------------------------
    def exist(self, names: Iterable[str], node: OxNode) -> OxNode:
        return OxNode(self, node.f.exists(self._positive_cube(names)))

    def and_exists(self, u: OxNode, v: OxNode, cube: OxNode) -> OxNode:
        """``∃ cube. u ∧ v`` in one pass (the cube: a positive conjunction of variables)."""
        return OxNode(self, u.f.apply_exists(_AND, v.f, cube.f))

    def forall(self, names: Iterable[str], node: OxNode) -> OxNode:
        return OxNode(self, node.f.forall(self._positive_cube(names)))

    def apply(self, op: str, u: OxNode, v: OxNode | None = None, w: OxNode | None = None) -> OxNode:
        """``\\E``/``\\A`` (u: the cube of variables, v: the function), and the binary ones."""
        if op in ("\\E", "exists"):
            assert v is not None
            return OxNode(self, v.f.exists(u.f))
        if op in ("\\A", "forall"):
            assert v is not None
            return OxNode(self, v.f.forall(u.f))
        if op in ("and", "&", "/\\"):
            assert v is not None
            return u & v
        if op in ("or", "|", "\\/"):
            assert v is not None
            return u | v
        if op in ("ite",):
            assert v is not None and w is not None
            return self.ite(u, v, w)
        raise ValueError(f"unsupported operator {op!r}")

    def ite(self, g: OxNode, u: OxNode, v: OxNode) -> OxNode:
        return OxNode(self, g.f.ite(u.f, v.f))

    def let(self, definitions: Mapping[str, bool | str | OxNode], node: OxNode) -> OxNode:
        """Substitute variables in parallel: by constants, other variables or functions."""
        pairs: list[tuple[int, Any]] = []
        key: list[object] = []
        for name, value in definitions.items():
            index = self._index[name]
            if isinstance(value, bool):
                pairs.append((index, self._mgr.true() if value else self._mgr.false()))
            elif isinstance(value, str):
                pairs.append((index, self._var(self._index[value])))
            else:
                pairs.append((index, value.f))
            key.append((index, value))
        cache_key = tuple(sorted(key, key=lambda p: p[0]))  # type: ignore[index]
        substitution = self._substitutions.get(cache_key)
        if substitution is None:
            if len(self._substitutions) >= _CUBE_CACHE_MAX:
                self._substitutions.clear()
            substitution = node.f.make_substitution(pairs)
            self._substitutions[cache_key] = substitution
        return OxNode(self, node.f.substitute(substitution))

    def support(self, node: OxNode) -> set[str]:
        """The names of the variables the function depends on (a walk over its nodes)."""
        levels: set[int] = set()
        seen: set[Any] = set()
        stack = [node.f]
        while stack:
            f = stack.pop()
            level = f.node_level()
            if level is None or f in seen:
                continue
            seen.add(f)
            levels.add(level)
            t, e = f.cofactors()
            stack.append(t)
            stack.append(e)
        return {self.names[i] for i in levels}

    # ---- bookkeeping -------------------------------------------------------------------
    def configure(self, **_settings: object) -> dict[str, object]:
        return {"reordering": False}

    def collect_garbage(self) -> int:
        return int(self._mgr.gc())

    def statistics(self) -> dict[str, int]:
        return {"n_nodes": int(self._mgr.approx_num_inner_nodes())}

    def __len__(self) -> int:
        return int(self._mgr.num_inner_nodes())
