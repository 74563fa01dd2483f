"""Inspection walkers: a text tree with shapes and costs, and the data-flow graph (networkx).

The tree view shows every node's input and output shape, parameters and FLOPs per sample; the
data-flow graph has one vertex per built operation (copies of a repeated inner module are separate
vertices, as they are separate modules) and one edge per tensor, labelled with its shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from einspace.blocks.registry import mode_of

from .analysis import Annotation
from .derivation import Derivation
from .errors import EinspaceError
from .productions import MODULE, production
from .walker import Walker


def human(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return str(int(n))


def shape_str(shape) -> str:
    if isinstance(shape, tuple) and shape and isinstance(shape[0], tuple):
        return f"{len(shape)}×{shape_str(shape[0])}" if len(set(shape)) == 1 else \
            "[" + ", ".join(shape_str(s) for s in shape) + "]"
    return "×".join(map(str, shape))


def summary(annotation: Annotation) -> dict:
    """The facts ``inspect --json`` and ``sample --json`` print about one architecture."""
    d = annotation.derivation
    return {"arch": d.text, "hash": d.hash, "input_shape": list(annotation.input_shape),
            "output_shape": list(annotation.output_shape),
            "output_mode": mode_of(annotation.output_shape),
            "params": annotation.cost.params, "flops": annotation.cost.flops,
            "activations": annotation.cost.activations, "nodes": d.size,
            "built_nodes": annotation.cost.nodes, "depth": d.depth}


def render_tree(annotation: Annotation,
                columns: dict[str, dict[tuple[int, ...], str]] | None = None) -> str:
    """The derivation as an indented tree, one line per node with shapes and costs; each of
    ``columns`` (header -> text per node path) adds a right-aligned column."""
    rows: list[tuple] = []
    _rows(annotation, (), "", "", rows)
    extra = columns or {}
    width = max(len(r[1]) for r in rows)
    shape_w = max(len(r[2]) for r in rows)
    widths = {h: max([8, len(h)] + [len(c.get(r[0], "")) for r in rows])
              for h, c in extra.items()}
    lines = [f"{label.ljust(width)}  {shapes.ljust(shape_w)}  {params:>8}  {flops:>8}"
             + "".join(f"  {c.get(path, ''):>{widths[h]}}" for h, c in extra.items())
             for path, label, shapes, params, flops in rows]
    header = f"{'node'.ljust(width)}  {'input → output'.ljust(shape_w)}  {'params':>8}  " \
             f"{'FLOPs':>8}" + "".join(f"  {h:>{widths[h]}}" for h in extra)
    return "\n".join([header] + lines)


@dataclass(frozen=True)
class TreeEntry:
    """How the text tree and the tree picture show one derivation node: its label, its kind
    (``module``, ``computation`` or a terminal kind) and the child positions shown under it."""

    label: str
    kind: str
    children: tuple[int, ...] = ()


class _TreeEntries(Walker):
    """A computation node and its terminal are one entry (the terminal's name), which takes a
    third of the entries off a typical tree; any other production shows its label over its
    children, with "×k" when its parent builds it k times."""

    def computation(self, node: Derivation, annotation: Annotation, path) -> TreeEntry:
        return TreeEntry(node.children[0], "computation")

    def default(self, label: str, node: Derivation, annotation: Annotation, path) -> TreeEntry:
        info = annotation[path]
        parent = annotation.nodes.get(path[:-1]) if path else None
        copies = info.repeat // parent.repeat if parent is not None else 1
        return TreeEntry(label + (f" ×{copies}" if copies > 1 else ""), "module",
                         tuple(range(len(node.children))))


def tree_entry(annotation: Annotation, path: tuple[int, ...]) -> TreeEntry:
    """The entry of the node at ``path`` (a terminal is shown as its kind and name)."""
    info = annotation[path]
    if isinstance(info.node, Derivation):
        return _TreeEntries().walk(info.node, annotation, path)
    return TreeEntry(info.node, info.slot.value)


def _rows(annotation: Annotation, path, prefix: str, child_prefix: str, rows: list) -> None:
    info = annotation[path]
    entry = tree_entry(annotation, path)
    label = entry.label if entry.kind == "module" else f"{entry.kind} {entry.label}"
    out = info.output if info.output is not None else ()
    rows.append((path, prefix + label, f"{shape_str(info.input)} → {shape_str(out)}",
                 human(info.cost.params), human(info.cost.flops)))
    for n, i in enumerate(entry.children):
        last = n == len(entry.children) - 1
        _rows(annotation, path + (i,), child_prefix + ("└─ " if last else "├─ "),
              child_prefix + ("   " if last else "│  "), rows)


def dataflow_graph(annotation: Annotation, *, repeats_once: bool = False) -> nx.DiGraph:
    """One vertex per operation (``input`` and ``output`` included; identities are skipped), one
    edge per tensor, labelled with its shape; an edge that goes straight from a branching vertex
    to its aggregation (an identity branch: a skip connection) has ``skip=True``.

    With ``repeats_once`` the k copies of a repeated inner module are one set of vertices, each
    with ``groups``: the (branching vertex, k) of every repeat it sits in, outermost first (what
    a picture draws as one box marked "×k"); otherwise every copy is its own vertices, as they
    are separate modules."""
    graph = nx.DiGraph()
    graph.add_node("input", label="input", kind="input", shape=shape_str(annotation.input_shape))
    builder = _GraphBuilder(annotation, graph, repeats_once)
    last = builder.module((), ["input"], "", ())
    graph.add_node("output", label="output", kind="output",
                   shape=shape_str(annotation.output_shape))
    for source in last:
        graph.add_edge(source, "output", shape=shape_str(annotation.output_shape), skip=False)
    return graph


class _GraphBuilder(Walker):
    """The data-flow graph: productions chain their children, except branching, which fans
    out to its inner modules and merges them."""

    def __init__(self, annotation: Annotation, graph: nx.DiGraph, repeats_once: bool):
        self.annotation = annotation
        self.graph = graph
        self.repeats_once = repeats_once

    def op(self, path, sources: list[str], copy: str, groups: tuple) -> list[str]:
        info = self.annotation[path]
        if info.node == "identity":
            return sources
        vertex = "/" + "/".join(map(str, path)) + copy
        attributes = {"groups": groups} if self.repeats_once else {}
        self.graph.add_node(vertex, label=str(info.node), kind=info.slot.value,
                            shape=shape_str(info.output) if info.output else "",
                            params=info.cost.params, flops=info.cost.flops, **attributes)
        aggregating = isinstance(info.input[0], tuple)
        for n, source in enumerate(sources):
            shape = info.input[n] if aggregating and n < len(info.input) else info.input
            skip = aggregating and self.graph.nodes[source]["kind"] == "branching"
            self.graph.add_edge(source, vertex, shape=shape_str(shape), skip=skip)
        return [vertex]

    def module(self, path, sources: list[str], copy: str, groups: tuple) -> list[str]:
        return self.walk(self.annotation[path].node, path, sources, copy, groups)

    def default(self, label: str, node: Derivation, path, sources: list[str], copy: str,
                groups: tuple) -> list[str]:
        """A chain: each child, in evaluation order, takes the previous one's output."""
        for i in production(label).order(node):
            where = path + (i,)
            step = self.module if self.annotation[where].slot == MODULE else self.op
            sources = step(where, sources, copy, groups)
        return sources

    def branching(self, node: Derivation, path, sources: list[str], copy: str,
                  groups: tuple) -> list[str]:
        split = self.op(path + (0,), sources, copy, groups)
        inner_count = len(node.children) - 2
        copies = self.annotation[path + (1,)].repeat // self.annotation[path].repeat
        built = 1 if self.repeats_once else copies
        inner_groups = groups + ((split[0], copies),) if copies > 1 else groups
        ends: list[str] = []
        for i in range(1, inner_count + 1):
            for c in range(built):
                suffix = f"{copy}#{c}" if built > 1 else copy
                ends += self.module(path + (i,), split, suffix, inner_groups)
        return self.op(path + (len(node.children) - 1,), ends, copy, groups)


def write_graph(graph: nx.DiGraph, file: str | Path) -> Path:
    """Write the graph's data as .dot (Graphviz text) or .graphml; pictures (.png, .svg) are
    drawn by :func:`einspace.dataflow_picture.write_dataflow`."""
    path = Path(file)
    suffix = path.suffix.lower()
    if suffix not in (".dot", ".gv", ".graphml"):
        raise EinspaceError(f"graph file {str(path)!r}: use a .dot or .graphml name")
    if suffix == ".graphml":
        nx.write_graphml(graph, path)
    else:
        path.write_text(to_dot(graph))
    return path


def to_dot(graph: nx.DiGraph) -> str:
    """Graphviz text (written directly: no pydot/pygraphviz needed)."""
    def quote(s) -> str:
        return '"' + str(s).replace('"', "'") + '"'

    lines = ["digraph einspace {", "  rankdir=TB;", "  node [shape=box, fontsize=10];"]
    for vertex, data in graph.nodes(data=True):
        text = data["label"] + (f"\\n{data['shape']}" if data.get("shape") else "")
        lines.append(f"  {quote(vertex)} [label={quote(text)}];")
    for a, b, data in graph.edges(data=True):
        lines.append(f"  {quote(a)} -> {quote(b)} [label={quote(data.get('shape', ''))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
