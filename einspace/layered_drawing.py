"""A layered drawing of a directed acyclic graph with matplotlib, for when Graphviz is absent.

The layout follows Sugiyama's scheme in its simplest form: each vertex sits on the layer of its
longest path from an input; an edge spanning several layers passes through one placeholder per
layer it crosses, so it takes a place of its own beside the vertices there instead of running
behind them; the order within each layer is improved by a few sweeps that sort vertices by the
mean position of their neighbours on the layer above (then below), which removes most crossings
of the series-parallel graphs derivations produce.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx

SWEEPS = 4
#: Width of one character of a 7-point label, in inches: sets the room between vertices.
CHAR_INCHES = 0.065
Point = tuple[float, float]


def layered_layout(graph: nx.DiGraph) -> tuple[dict[str, Point], dict[tuple, list[Point]]]:
    """Vertex positions (x in layer order, y = -layer) and, per edge, the points it runs
    through from tail to head."""
    layer: dict = {}
    for vertex in nx.topological_sort(graph):
        layer[vertex] = max((layer[u] + 1 for u in graph.predecessors(vertex)), default=0)
    rows: list[list] = [[] for _ in range(max(layer.values(), default=0) + 1)]
    for vertex in nx.topological_sort(graph):
        rows[layer[vertex]].append(vertex)
    chains: dict[tuple, list] = {}
    above: dict = {v: list(graph.predecessors(v)) for v in graph}
    below: dict = {v: list(graph.successors(v)) for v in graph}
    for a, b in graph.edges:
        previous, chain = a, []
        for depth in range(layer[a] + 1, layer[b]):
            placeholder = ("via", a, b, depth)
            rows[depth].append(placeholder)
            above[placeholder], below[placeholder] = [previous], [b]
            below[previous] = [placeholder if n == b else n for n in below[previous]]
            chain.append(placeholder)
            previous = placeholder
        if chain:
            above[b] = [chain[-1] if n == a else n for n in above[b]]
        chains[(a, b)] = chain
    for _ in range(SWEEPS):
        for depth in range(1, len(rows)):
            rows[depth] = _by_barycentre(rows[depth], rows[depth - 1], above)
        for depth in range(len(rows) - 2, -1, -1):
            rows[depth] = _by_barycentre(rows[depth], rows[depth + 1], below)
    where = {v: (i - (len(row) - 1) / 2, -float(depth))
             for depth, row in enumerate(rows) for i, v in enumerate(row)}
    positions = {v: where[v] for v in graph}
    routes = {(a, b): [where[a]] + [where[p] for p in chain] + [where[b]]
              for (a, b), chain in chains.items()}
    return positions, routes


def _by_barycentre(row: list, neighbour_row: list, neighbours: dict) -> list:
    index = {v: i for i, v in enumerate(neighbour_row)}

    def key(item: tuple[int, object]) -> float:
        i, v = item
        places = [index[n] for n in neighbours[v] if n in index]
        return sum(places) / len(places) if places else float(i)

    return [v for _, v in sorted(enumerate(row), key=key)]


def draw_layered(graph: nx.DiGraph, path: Path, *, colours: dict[str, str], skip_colour: str,
                 edge_colour: str) -> None:
    """Draw ``graph`` (vertices with ``label``, ``kind`` and optional ``groups``; edges with
    ``shape`` and ``skip``) into a .png or .svg file.  A vertex inside repeats gets their "×k"
    in its label, as this drawing has no boxes around groups."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.path import Path as Curve

    positions, routes = layered_layout(graph)
    labels = {v: data["label"] + "".join(f" ×{k}" for _, k in data.get("groups", ()))
              for v, data in graph.nodes(data=True)}
    xs = [x for x, _ in positions.values()] + [x for r in routes.values() for x, _ in r]
    layers = 1 - min(y for _, y in positions.values())
    width = max(xs) - min(xs) + 1
    slot = CHAR_INCHES * max(len(label) for label in labels.values()) + 0.5
    fig, ax = plt.subplots(figsize=(max(5.0, slot * width), max(3.0, 0.6 * layers)))
    for (a, b), route in routes.items():
        data = graph.edges[a, b]
        colour = skip_colour if data.get("skip") else edge_colour
        points = [(route[0][0], route[0][1] - 0.15)] + route[1:-1] + \
            [(route[-1][0], route[-1][1] + 0.2)]
        arrow = FancyArrowPatch(path=Curve(points), arrowstyle="-|>,head_length=3,head_width=2",
                                color=colour, lw=1.4 if data.get("skip") else 0.7)
        arrow.set_gid(f"edge:{a}->{b}")
        ax.add_patch(arrow)
        (x0, y0), (x1, y1) = points[0], points[1]
        if data.get("shape"):
            ax.text((x0 + x1) / 2 + 0.04, (y0 + y1) / 2, data["shape"], fontsize=6,
                    color=colour, va="center", ha="left")
    for vertex, (x, y) in positions.items():
        data = graph.nodes[vertex]
        ax.text(x, y, labels[vertex], ha="center", va="center", fontsize=7,
                gid=f"node:{vertex}", zorder=3,
                bbox={"boxstyle": "round,pad=0.25", "fc": colours.get(data["kind"], "#eee"),
                      "ec": "#777", "lw": 0.5})
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(-layers + 0.4, 0.6)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
