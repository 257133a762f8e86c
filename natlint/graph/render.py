"""Draw the chain graph: Graphviz dot, Mermaid (``flowchart LR``, as GitHub renders it) or SVG.

What is drawn (:func:`build_view`): per table a cluster with its built-in chains (bold, with
their policy) and user chains; a node per netfilter hook with an edge to the built-in chain of
every table that runs there, in priority order; an edge per jump (solid) or goto (dashed)
labelled with the rule's line. Unreferenced user chains are grey; a jump to an undeclared chain
goes to a red dashed node. Chains and rules with error or warning findings are coloured (red,
orange); the chain's label lists its findings and the tooltip (dot/SVG) gives their messages.

Every name and label is escaped for its format: chain names may hold quotes, backslashes,
``#``, ``<``, ``|``... and node ids are generated (``n0``, ``n1``...), never taken from names.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from natlint.findings import Finding
from natlint.graph.chains import build_graphs
from natlint.model.ruleset import TABLES, Ruleset

__all__ = [
    "HOOKS",
    "EdgeView",
    "GraphView",
    "GraphvizError",
    "NodeView",
    "build_view",
    "dot_escape",
    "mermaid_escape",
    "to_dot",
    "to_mermaid",
    "to_svg",
]

HOOKS: tuple[str, ...] = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
NodeKind = Literal["hook", "builtin", "user", "undefined"]
Level = Literal["error", "warning"] | None

_COLORS: dict[str, tuple[str, str]] = {  # severity -> (border/edge colour, fill colour)
    "error": ("#c62828", "#fde0e0"),
    "warning": ("#b26a00", "#fff1cc"),
}
_GREY = ("#9e9e9e", "#eeeeee", "#757575")  # border, fill, font of unreferenced chains
_MAX_LABEL_FINDINGS = 4


@dataclass(frozen=True)
class NodeView:
    id: str
    label: str
    kind: NodeKind
    table: str | None = None
    chain: str | None = None
    policy: str | None = None
    unreferenced: bool = False
    severity: Level = None
    findings: tuple[str, ...] = ()  # one line per error/warning finding of the chain or its rules


@dataclass(frozen=True)
class EdgeView:
    src: str
    dst: str
    label: str
    goto: bool = False
    rule: str | None = None  # the rule's text (or the hook -> table order for hook edges)
    severity: Level = None
    findings: tuple[str, ...] = ()


@dataclass
class GraphView:
    title: str
    tables: dict[str, list[NodeView]] = field(default_factory=dict)  # table -> its chain nodes
    hooks: list[NodeView] = field(default_factory=list)
    edges: list[EdgeView] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # findings tied to no chain of the graph


def _worst(levels: Iterable[str]) -> Level:
    found = set(levels)
    if "error" in found:
        return "error"
    if "warning" in found:
        return "warning"
    return None


def _finding_line(f: Finding) -> str:
    return f"{f.code} line {f.line}: {f.message}"


def build_view(ruleset: Ruleset, findings: Sequence[Finding] = (), table: str | None = None) -> GraphView:
    """The drawable graph of ``ruleset`` (one table, or all in kernel order), with the error
    and warning ``findings`` attached to their chains and rules."""
    from natlint.netfilter.engine import _TABLES_AT

    graphs = build_graphs(ruleset)
    if table is not None and table not in graphs:
        have = ", ".join(sorted(graphs)) or "none"
        raise ValueError(f"no table {table!r} in {ruleset.path} (tables: {have})")
    names = [t for t in TABLES if t in graphs and (table is None or t == table)]
    names += sorted(t for t in graphs if t not in names and (table is None or t == table))
    view = GraphView(ruleset.path if table is None else f"{ruleset.path} ({table})")
    relevant = [f for f in findings if f.severity in ("error", "warning")]
    by_chain: dict[tuple[str, str], list[Finding]] = {}
    by_line: dict[int, list[Finding]] = {}
    for f in relevant:
        if f.table is not None and f.chain is not None:
            by_chain.setdefault((f.table, f.chain), []).append(f)
        by_line.setdefault(f.line, []).append(f)
    used: set[int] = set()
    ids = (f"n{i}" for i in range(1_000_000_000))
    node_of: dict[tuple[str, str], str] = {}
    for name in names:
        graph = graphs[name]
        unreferenced = set(graph.unreferenced())
        nodes: list[NodeView] = []
        for chain in graph.table:
            attached = by_chain.get((name, chain.name), [])
            used.update(id(f) for f in attached)
            node = NodeView(next(ids), chain.name, "builtin" if chain.builtin else "user", name, chain.name,
                            chain.policy if chain.builtin else None, chain.name in unreferenced,
                            _worst(f.severity for f in attached), tuple(_finding_line(f) for f in attached))
            node_of[(name, chain.name)] = node.id
            nodes.append(node)
        undefined: dict[str, NodeView] = {}
        for chain in graph.table:
            for rule in chain.rules:
                target = rule.target
                if target is None or target.kind != "chain":
                    continue
                if target.name in graph.table.chains:
                    dst = node_of[(name, target.name)]
                else:
                    if target.name not in undefined:
                        undefined[target.name] = NodeView(next(ids), target.name, "undefined", name, target.name,
                                                          severity="error", findings=("not declared in this table",))
                    dst = undefined[target.name].id
                on_rule = [f for f in by_line.get(rule.pos.line, []) if f.table in (None, name)]
                used.update(id(f) for f in on_rule)
                view.edges.append(EdgeView(node_of[(name, chain.name)], dst, f"line {rule.pos.line}", target.goto,
                                           rule.text, _worst(f.severity for f in on_rule),
                                           tuple(_finding_line(f) for f in on_rule)))
        nodes.extend(undefined.values())
        view.tables[name] = nodes
    for hook in HOOKS:
        order = [t for t in _TABLES_AT[hook] if t in view.tables and (t, hook) in node_of]
        if not order:
            continue
        hook_node = NodeView(next(ids), hook, "hook")
        view.hooks.append(hook_node)
        for rank, name in enumerate(order, 1):
            view.edges.append(EdgeView(hook_node.id, node_of[(name, hook)], str(rank) if len(order) > 1 else "",
                                       rule=f"{hook}: {' -> '.join(order)}"))
    view.notes = [_finding_line(f) for f in relevant if id(f) not in used
                  and (table is None or f.table in (None, table))]
    return view


# ---------------------------------------------------------------- dot

def dot_escape(text: str) -> str:
    """The inside of a double-quoted dot string showing ``text`` literally: backslashes (dot's
    label escapes \\n, \\l, \\N... start with one) and quotes escaped, newlines as \\n."""
    return (text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "\\n"))


def _dot_attrs(attrs: dict[str, str]) -> str:
    return ", ".join(f'{k}="{dot_escape(v)}"' for k, v in attrs.items())


def _label_lines(node: NodeView) -> list[str]:
    lines = [node.label]
    if node.kind == "builtin" and node.policy:
        lines.append(f"policy {node.policy}")
    if node.kind == "undefined":
        lines.append("(undefined)")
    elif node.unreferenced:
        lines.append("(unreferenced)")
    shown = [_clip(f) for f in node.findings[:_MAX_LABEL_FINDINGS]]
    if len(node.findings) > _MAX_LABEL_FINDINGS:
        shown.append(f"... {len(node.findings) - _MAX_LABEL_FINDINGS} more")
    return lines + shown


def _clip(finding: str, width: int = 48) -> str:
    head = finding.split(": ", 1)[0]  # "NL201 line 12"
    return head if len(head) <= width else head[: width - 3] + "..."


def _node_style(node: NodeView) -> dict[str, str]:
    attrs: dict[str, str] = {"shape": "box", "style": "rounded,filled", "fillcolor": "#ffffff"}
    if node.kind == "hook":
        attrs = {"shape": "cds", "style": "filled", "fillcolor": "#e3f2fd", "color": "#1565c0"}
    elif node.kind == "builtin":
        attrs.update(penwidth="2", fillcolor="#e8f5e9")
    elif node.kind == "undefined":
        attrs.update(style="rounded,dashed,filled")
    if node.unreferenced:
        attrs.update(color=_GREY[0], fillcolor=_GREY[1], fontcolor=_GREY[2])
    if node.severity is not None:
        line, fill = _COLORS[node.severity]
        attrs["color"] = line
        attrs["penwidth"] = "2"
        if not node.unreferenced:
            attrs["fillcolor"] = fill
    if node.findings:
        attrs["tooltip"] = "\n".join(node.findings)
    elif node.kind != "hook":
        attrs["tooltip"] = f"{node.table} {node.label}"
    return attrs


def _edge_style(edge: EdgeView) -> dict[str, str]:
    attrs: dict[str, str] = {"label": edge.label} if edge.label else {}
    if edge.goto:
        attrs["style"] = "dashed"
    if edge.severity is not None:
        attrs["color"] = attrs["fontcolor"] = _COLORS[edge.severity][0]
        attrs["penwidth"] = "2"
    tip = [edge.rule] if edge.rule else []
    attrs["tooltip"] = "\n".join(tip + list(edge.findings)) or edge.label
    return attrs


def to_dot(view: GraphView) -> str:
    """A Graphviz digraph (left to right) of the view."""
    graph_attrs = {"rankdir": "LR", "label": _caption(view), "labelloc": "t", "fontname": "Helvetica"}
    out = ["digraph natlint {",
           f"  graph [{_dot_attrs(graph_attrs)}];",
           '  node [fontname="Helvetica", fontsize="11"];',
           '  edge [fontname="Helvetica", fontsize="9"];']
    for node in view.hooks:
        out.append(f"  {node.id} [{_dot_attrs({'label': node.label, **_node_style(node)})}];")
    for i, (name, nodes) in enumerate(view.tables.items()):
        out.append(f"  subgraph cluster_{i} {{")
        out.append(f"    graph [{_dot_attrs({'label': name, 'style': 'rounded', 'color': '#bdbdbd'})}];")
        for node in nodes:
            attrs = {"label": "\n".join(_label_lines(node)), **_node_style(node)}
            out.append(f"    {node.id} [{_dot_attrs(attrs)}];")
        out.append("  }")
    for edge in view.edges:
        out.append(f"  {edge.src} -> {edge.dst} [{_dot_attrs(_edge_style(edge))}];")
    out.append("}")
    return "\n".join(out) + "\n"


def _caption(view: GraphView) -> str:
    lines = [view.title]
    if view.notes:
        lines.append(f"{len(view.notes)} finding(s) tied to no chain:")
        lines.extend(n.split(": ", 1)[0] for n in view.notes[:_MAX_LABEL_FINDINGS])
    return "\n".join(lines)


# ---------------------------------------------------------------- mermaid

_MERMAID_ENTITIES = {'"': "#34;", "#": "#35;", "&": "#38;", "<": "#60;", ">": "#62;", "`": "#96;",
                     "|": "#124;", "[": "#91;", "]": "#93;", "{": "#123;", "}": "#125;", "\\": "#92;"}


def mermaid_escape(text: str) -> str:
    """Text for inside a quoted Mermaid label: every character Mermaid (or the HTML it makes)
    could read as syntax becomes an entity code (``#34;`` for a quote...); newlines become
    ``<br/>``."""
    escaped = "".join(_MERMAID_ENTITIES.get(c, c) for c in text.replace("\r", ""))
    return escaped.replace("\n", "<br/>")


def to_mermaid(view: GraphView) -> str:
    """A Mermaid ``flowchart LR`` (paste it in a ```mermaid block: GitHub renders it)."""
    out = ["flowchart LR"]
    if view.notes:
        out.append(f"  %% {len(view.notes)} finding(s) tied to no chain")
    for node in view.hooks:
        out.append(f'  {node.id}>"{mermaid_escape(node.label)}"]')
    for i, (name, nodes) in enumerate(view.tables.items()):
        out.append(f'  subgraph t{i}["{mermaid_escape(name)}"]')
        for node in nodes:
            text = "\n".join(_label_lines(node))
            out.append(f'    {node.id}("{mermaid_escape(text)}")')
        out.append("  end")
    styled: dict[str, list[str]] = {}
    for i, edge in enumerate(view.edges):
        arrow = "-.->" if edge.goto else "-->"
        label = f'|"{mermaid_escape(edge.label)}"|' if edge.label else ""
        out.append(f"  {edge.src} {arrow}{label} {edge.dst}")
        if edge.severity is not None:
            styled.setdefault(edge.severity, []).append(str(i))
    out.append("  classDef hook fill:#e3f2fd,stroke:#1565c0")
    out.append("  classDef builtin fill:#e8f5e9,stroke-width:2px")
    out.append(f"  classDef unreferenced fill:{_GREY[1]},stroke:{_GREY[0]},color:{_GREY[2]}")
    out.append("  classDef undefined stroke-dasharray:4 3")
    for level, (line, fill) in _COLORS.items():
        out.append(f"  classDef {level} fill:{fill},stroke:{line},stroke-width:2px")
        out.append(f"  classDef {level}Grey fill:{_GREY[1]},stroke:{line},stroke-width:2px,color:{_GREY[2]}")
    classes: dict[str, list[str]] = {}
    for node in view.hooks:
        classes.setdefault("hook", []).append(node.id)
    for nodes in view.tables.values():
        for node in nodes:
            if node.severity is not None:
                name = node.severity + ("Grey" if node.unreferenced else "")
            elif node.unreferenced:
                name = "unreferenced"
            else:
                name = "builtin" if node.kind == "builtin" else ""
            if name:
                classes.setdefault(name, []).append(node.id)
            if node.kind == "undefined":
                classes.setdefault("undefined", []).append(node.id)
    for name, members in classes.items():
        out.append(f"  class {','.join(members)} {name}")
    for level, edges in styled.items():
        out.append(f"  linkStyle {','.join(edges)} stroke:{_COLORS[level][0]},stroke-width:2px")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- svg

class GraphvizError(RuntimeError):
    """Graphviz's dot failed on the source natlint gave it."""


def to_svg(dot_source: str, dot_binary: str, *, timeout: float = 120.0) -> str:
    """Lay the dot source out with Graphviz (``dot -Tsvg``)."""
    try:
        done = subprocess.run([dot_binary, "-Tsvg"], input=dot_source.encode("utf-8"), capture_output=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GraphvizError(f"cannot run {dot_binary}: {exc}") from None
    if done.returncode != 0:
        raise GraphvizError(done.stderr.decode("utf-8", "replace").strip() or f"dot exited with {done.returncode}")
    return done.stdout.decode("utf-8")
