"""Inspection walkers: a text tree with shapes and costs, and the data-flow graph (networkx).

The tree view shows every node's input and output shape, parameters and FLOPs per sample; the
data-flow graph has one vertex per built operation (copies of a repeated inner module are separate
vertices, as they are separate modules) and one edge per tensor, labelled with its shape.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from einspace.blocks.registry import mode_of

from .analysis import Annotation
from .derivation import Derivation
from .errors import EinspaceError


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


def _rows(annotation: Annotation, path, prefix: str, child_prefix: str, rows: list) -> None:
    info = annotation[path]
    node = info.node
    children: list[int] = []
    if not isinstance(node, Derivation):
        label = f"{info.slot.value} {node}"
    elif node.label == "computation":
        label = f"computation {node.children[0]}"
    else:
        label = node.label
        children = list(range(len(node.children)))
    parent = annotation.nodes.get(path[:-1]) if path else None
    copies = info.repeat // parent.repeat if parent is not None else 1
    if copies > 1 and isinstance(node, Derivation):
        label += f" ×{copies}"
    out = info.output if info.output is not None else ()
    rows.append((path, prefix + label, f"{shape_str(info.input)} → {shape_str(out)}",
                 human(info.cost.params), human(info.cost.flops)))
    for n, i in enumerate(children):
        last = n == len(children) - 1
        _rows(annotation, path + (i,), child_prefix + ("└─ " if last else "├─ "),
              child_prefix + ("   " if last else "│  "), rows)


def dataflow_graph(annotation: Annotation) -> nx.DiGraph:
    """One vertex per operation (``input`` and ``output`` included; identities are skipped), one
    edge per tensor."""
    graph = nx.DiGraph()
    graph.add_node("input", label="input", kind="input", shape=shape_str(annotation.input_shape))
    builder = _GraphBuilder(annotation, graph)
    last = builder.module((), ["input"], "")
    graph.add_node("output", label="output", kind="output",
                   shape=shape_str(annotation.output_shape))
    for source in last:
        graph.add_edge(source, "output", shape=shape_str(annotation.output_shape))
    return graph


class _GraphBuilder:
    def __init__(self, annotation: Annotation, graph: nx.DiGraph):
        self.annotation = annotation
        self.graph = graph

    def op(self, path, sources: list[str], copy: str) -> list[str]:
        info = self.annotation[path]
        if info.node == "identity":
            return sources
        vertex = "/" + "/".join(map(str, path)) + copy
        self.graph.add_node(vertex, label=str(info.node), kind=info.slot.value,
                            shape=shape_str(info.output) if info.output else "",
                            params=info.cost.params, flops=info.cost.flops)
        for source in sources:
            self.graph.add_edge(source, vertex, shape=shape_str(info.input) if not isinstance(
                info.input[0], tuple) else "")
        return [vertex]

    def module(self, path, sources: list[str], copy: str) -> list[str]:
        node = self.annotation[path].node
        if node.label == "computation":
            return self.op(path + (0,), sources, copy)
        if node.label == "sequential":
            middle = self.module(path + (0,), sources, copy)
            return self.module(path + (1,), middle, copy)
        if node.label == "routing":
            pre = self.op(path + (0,), sources, copy)
            inner = self.module(path + (1,), pre, copy)
            return self.op(path + (2,), inner, copy)
        split = self.op(path + (0,), sources, copy)
        inner_count = len(node.children) - 2
        copies = self.annotation[path + (1,)].repeat // self.annotation[path].repeat
        ends: list[str] = []
        for i in range(1, inner_count + 1):
            for c in range(copies):
                suffix = f"{copy}#{c}" if copies > 1 else copy
                ends += self.module(path + (i,), split, suffix)
        return self.op(path + (len(node.children) - 1,), ends, copy)


def write_graph(graph: nx.DiGraph, file: str | Path) -> Path:
    """Write the graph as .dot (Graphviz), .graphml or .png (matplotlib)."""
    path = Path(file)
    suffix = path.suffix.lower()
    if suffix not in (".dot", ".gv", ".graphml", ".png"):
        raise EinspaceError(f"graph file {str(path)!r}: use a .dot, .graphml or .png name")
    if suffix == ".graphml":
        nx.write_graphml(graph, path)
    elif suffix == ".png":
        _draw_png(graph, path)
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


def _draw_png(graph: nx.DiGraph, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for layer, vertices in enumerate(nx.topological_generations(graph)):
        for v in vertices:
            graph.nodes[v]["layer"] = layer
    positions = nx.multipartite_layout(graph, subset_key="layer", align="horizontal")
    positions = {v: (x, -y) for v, (x, y) in positions.items()}
    layers = 1 + max(nx.get_node_attributes(graph, "layer").values())
    fig, ax = plt.subplots(figsize=(10, max(4.0, 0.45 * layers)))
    labels = {v: d["label"].replace("(computation ", "").rstrip(")") for v, d in
              graph.nodes(data=True)}
    nx.draw_networkx(graph, positions, ax=ax, labels=labels, node_size=300, font_size=7,
                     node_color="#cde", arrows=True, arrowsize=8)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
