"""The derivation tree as a picture (``einspace inspect --tree``).

The data-flow graph shows what a network computes; the derivation tree shows how the grammar
produced it, which is what mutation and crossover act on.  The picture uses a tidy top-down
layout (leaves side by side in order, each parent centred over its children), so subtrees never
cross; it is drawn with matplotlib, or written as Graphviz .dot or .graphml for other tools.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from .analysis import Annotation
from .errors import EinspaceError
from .inspect import shape_str, to_dot, tree_entry

#: Beyond this many leaves a PNG is too wide to read; .dot or .graphml still work.
MAX_PNG_LEAVES = 300
COLOURS = {"module": "#cde", "branching": "#fd9", "aggregation": "#fc9",
           "prerouting": "#cec", "postrouting": "#bdb", "computation": "#fbb"}


def tree_graph(annotation: Annotation) -> nx.DiGraph:
    """One vertex per derivation node (named by its path, ``/`` for the root), edges from parent
    to child; attributes: label, kind (production slot or terminal kind), output shape, params.
    As in the text tree, a computation node and its terminal are one vertex (the terminal's
    name, kind ``computation``), which takes a third of the vertices off a typical tree."""
    graph = nx.DiGraph()
    _add_subtree(graph, annotation, ())
    return graph


def _add_subtree(graph: nx.DiGraph, annotation: Annotation, path: tuple[int, ...]) -> None:
    """Add the node at ``path`` and its shown descendants in pre-order."""
    info, entry = annotation[path], tree_entry(annotation, path)
    graph.add_node(_name(path), label=entry.label, kind=entry.kind, params=info.cost.params,
                   shape=shape_str(info.output) if info.output else "")
    if path:
        graph.add_edge(_name(path[:-1]), _name(path))
    for i in entry.children:
        _add_subtree(graph, annotation, path + (i,))


def write_tree(annotation: Annotation, file: str | Path) -> Path:
    """Write the derivation tree as .png, .dot or .graphml."""
    path = Path(file)
    suffix = path.suffix.lower()
    graph = tree_graph(annotation)
    if suffix == ".png":
        _draw(graph, path)
    elif suffix in (".dot", ".gv"):
        path.write_text(to_dot(graph))
    elif suffix == ".graphml":
        nx.write_graphml(graph, path)
    else:
        raise EinspaceError(f"tree file {str(path)!r}: use a .png, .dot or .graphml name")
    return path


def tidy_layout(graph: nx.DiGraph, root: str = "/") -> dict[str, tuple[float, float]]:
    """Leaves at consecutive x in child order, parents centred over their children, y = -depth."""
    positions: dict[str, tuple[float, float]] = {}
    leaves = 0

    def place(vertex: str, depth: int) -> float:
        nonlocal leaves
        children = list(graph.successors(vertex))
        if children:
            xs = [place(child, depth + 1) for child in children]
            x = (xs[0] + xs[-1]) / 2
        else:
            x = float(leaves)
            leaves += 1
        positions[vertex] = (x, -float(depth))
        return x

    place(root, 0)
    return positions


def _name(path: tuple[int, ...]) -> str:
    return "/" + "/".join(map(str, path))


def _draw(graph: nx.DiGraph, path: Path) -> None:
    leaves = sum(1 for v in graph if graph.out_degree(v) == 0)
    if leaves > MAX_PNG_LEAVES:
        raise EinspaceError(f"the derivation has {leaves} leaves, too many for a readable PNG "
                            f"(at most {MAX_PNG_LEAVES}); write {path.with_suffix('.dot')} or "
                            f"a .graphml file instead")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positions = tidy_layout(graph)
    depth = -min(y for _, y in positions.values())
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * leaves), max(3.0, 0.9 * (depth + 1))))
    nx.draw_networkx_edges(graph, positions, ax=ax, arrows=False, edge_color="#999", width=0.6)
    for vertex, (x, y) in positions.items():
        data = graph.nodes[vertex]
        leaf = graph.out_degree(vertex) == 0
        ax.text(x, y, data["label"], ha="center", va="top" if leaf else "center",
                rotation=90 if leaf else 0, fontsize=6,
                bbox={"boxstyle": "round,pad=0.2", "fc": COLOURS.get(data["kind"], "#eee"),
                      "ec": "#777", "lw": 0.4})
    ax.set_xlim(-1, leaves)
    ax.set_ylim(-depth - 1.5, 0.5)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
