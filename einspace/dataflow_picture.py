"""The data-flow graph as a picture a reader can follow (``einspace inspect --graph x.svg``, the
report's graphs), as PNG or SVG.

A derivation's raw data-flow graph has hundreds of vertices, most of them copies and
normalisations; drawn as it is, everything lands in one column and skip connections hide behind
the chain.  So the picture

* lays the graph out in layers, with Graphviz ``dot`` (through pydot) when both are installed,
  else with a layered layout of its own (longest-path layers, long edges routed through
  placeholder points, positions ordered by barycentres), so an edge that skips layers runs
  beside the chain instead of behind it;
* draws skip connections (an identity branch from a split to its merge) in their own colour;
* labels every edge with the shape of its tensor;
* draws a repeated inner module once, boxed and marked "×k";
* folds a chain of element-wise operations (shape-keeping and free of matrix work, such as
  norm → leakyrelu) into one box, and im2col → linear → col2im, which the compiler lowers to
  one ``nn.Conv2d``, into one box named ``conv<kernel, stride, padding> · linear<N>``.

Every edge is its own SVG group with the id ``edge:TAIL->HEAD`` (vertex names are node paths),
so tools and tests can find a particular connection in the SVG.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import networkx as nx

from .analysis import Annotation
from .errors import EinspaceError
from .inspect import dataflow_graph, write_graph

PICTURE_SUFFIXES = (".png", ".svg")
DATA_SUFFIXES = (".dot", ".gv", ".graphml")
#: A run of at least this many element-wise operations is drawn as one box.
FOLD_AT = 2
#: Names shown in a folded box before the rest are summarised as "…".
FOLD_NAMES = 4
COLOURS = {"input": "#eeeeee", "output": "#eeeeee", "computation": "#ffbbbb",
           "branching": "#ffdd99", "aggregation": "#ffcc99", "prerouting": "#cceecc",
           "postrouting": "#bbddbb", "folded": "#ffdddd"}
SKIP_COLOUR = "#c0392b"
EDGE_COLOUR = "#555555"


def picture_graph(annotation: Annotation) -> nx.DiGraph:
    """The data-flow graph to draw: repeated inner modules once (vertices keep their
    ``groups``), convolutions as one vertex and chains of element-wise operations as one vertex
    (``kind="folded"``); a folded vertex lists the vertices it stands for in ``members``."""
    graph = dataflow_graph(annotation, repeats_once=True)
    for chain in _convolutions(graph):
        _fold(graph, chain, f"conv{graph.nodes[chain[0]]['label'][len('im2col'):]} · "
                            f"{graph.nodes[chain[1]]['label']}", "computation")
    for chain in _elementwise_chains(graph):
        names = [graph.nodes[v]["label"] for v in chain]
        _fold(graph, chain, " · ".join(names[:FOLD_NAMES]) + (
            f" · … ({len(names)} ops)" if len(names) > FOLD_NAMES else ""), "folded")
    return graph


def _single_successor(graph: nx.DiGraph, vertex: str) -> str | None:
    successors = list(graph.successors(vertex))
    if len(successors) != 1 or graph.in_degree(successors[0]) != 1:
        return None
    return successors[0]


def _convolutions(graph: nx.DiGraph) -> list[list[str]]:
    """im2col → linear → col2im runs, each vertex feeding only the next."""
    runs = []
    for vertex, data in list(graph.nodes(data=True)):
        if data["kind"] != "prerouting" or not data["label"].startswith("im2col"):
            continue
        inner = _single_successor(graph, vertex)
        if inner is None or not graph.nodes[inner]["label"].startswith("linear"):
            continue
        post = _single_successor(graph, inner)
        if post is not None and graph.nodes[post]["label"] == "col2im":
            runs.append([vertex, inner, post])
    return runs


def _elementwise(graph: nx.DiGraph, vertex: str) -> bool:
    """A one-in, one-out computation that keeps its input's shape and does no matrix work (the
    FLOP count treats element-wise work as free)."""
    data = graph.nodes[vertex]
    if data["kind"] != "computation" or data["flops"] or graph.in_degree(vertex) != 1 \
            or graph.out_degree(vertex) != 1:
        return False
    (source,) = graph.predecessors(vertex)
    return graph.edges[source, vertex]["shape"] == data["shape"]


def _elementwise_chains(graph: nx.DiGraph) -> list[list[str]]:
    chains, seen = [], set()
    for vertex in nx.topological_sort(graph):
        if vertex in seen or not _elementwise(graph, vertex):
            continue
        chain = [vertex]
        while True:
            (nxt,) = graph.successors(chain[-1])
            if not _elementwise(graph, nxt) or graph.nodes[nxt]["groups"] != \
                    graph.nodes[vertex]["groups"]:
                break
            chain.append(nxt)
        seen.update(chain)
        if len(chain) >= FOLD_AT:
            chains.append(chain)
    return chains


def _fold(graph: nx.DiGraph, chain: list[str], label: str, kind: str) -> None:
    """Replace a one-in, one-out chain by one vertex (named as its first) with ``label``."""
    first, last = chain[0], chain[-1]
    (source,) = graph.predecessors(first)
    targets = {t: graph.edges[last, t] for t in graph.successors(last)}
    incoming = graph.edges[source, first]
    data = graph.nodes[first]
    groups, shape = data["groups"], graph.nodes[last]["shape"]
    params = sum(graph.nodes[v]["params"] for v in chain)
    flops = sum(graph.nodes[v]["flops"] for v in chain)
    graph.remove_nodes_from(chain)
    graph.add_node(first, label=label, kind=kind, shape=shape, params=params, flops=flops,
                   groups=groups, members=chain)
    graph.add_edge(source, first, **incoming)
    for target, edge in targets.items():
        graph.add_edge(first, target, **edge)


def graphviz_available() -> bool:
    """Whether pictures are laid out by Graphviz (pydot importable and ``dot`` on the PATH)."""
    try:
        import pydot  # noqa: F401
    except ImportError:
        return False
    return shutil.which("dot") is not None


def write_dataflow(annotation: Annotation, file: str | Path) -> Path:
    """``einspace inspect --graph FILE``: a picture (.png, .svg) or the whole graph's data, every
    copy of a repeated module included (.dot, .graphml)."""
    suffix = Path(file).suffix.lower()
    if suffix in PICTURE_SUFFIXES:
        return write_picture(annotation, file)
    if suffix in DATA_SUFFIXES:
        return write_graph(dataflow_graph(annotation), file)
    raise EinspaceError(f"graph file {str(file)!r}: use a .png, .svg, .dot or .graphml name")


def write_picture(annotation: Annotation, file: str | Path, *,
                  layout: str | None = None) -> Path:
    """Draw the data-flow graph of ``annotation`` into a .png or .svg file.  ``layout`` is
    ``"graphviz"`` or ``"layered"`` (the built-in layered layout); by default Graphviz when it is
    available."""
    path = Path(file)
    suffix = path.suffix.lower()
    if suffix not in PICTURE_SUFFIXES:
        raise EinspaceError(f"picture file {str(path)!r}: use a .png or .svg name")
    layout = layout or ("graphviz" if graphviz_available() else "layered")
    graph = picture_graph(annotation)
    if layout == "graphviz":
        _draw_graphviz(graph, path, suffix[1:])
    elif layout == "layered":
        from .layered_drawing import draw_layered

        draw_layered(graph, path, colours=COLOURS, skip_colour=SKIP_COLOUR,
                     edge_colour=EDGE_COLOUR)
    else:
        raise EinspaceError(f"unknown picture layout {layout!r}: graphviz or layered")
    return path


def _draw_graphviz(graph: nx.DiGraph, path: Path, fmt: str) -> None:
    import pydot

    dot = pydot.Dot("einspace", graph_type="digraph", rankdir="TB", nodesep="0.2",
                    ranksep="0.3", bgcolor="white", fontname="Helvetica", fontsize="10")
    if fmt == "png":
        dot.set("dpi", "150")
    dot.set_node_defaults(shape="box", style="rounded,filled", fontname="Helvetica",
                          fontsize="10", height="0.3", margin="0.08,0.03", color="#777777")
    dot.set_edge_defaults(fontname="Helvetica", fontsize="8", color=EDGE_COLOUR,
                          fontcolor="#333333", arrowsize="0.6")
    clusters: dict[tuple, pydot.Subgraph] = {(): dot}

    def container(groups: tuple) -> pydot.Subgraph:
        if groups not in clusters:
            outer = container(groups[:-1])
            _, copies = groups[-1]
            cluster = pydot.Cluster(f"repeat{len(clusters)}", label=f"×{copies}",
                                    labeljust="r", style="rounded,dashed", color="#888888",
                                    fontname="Helvetica", fontsize="10")
            outer.add_subgraph(cluster)
            clusters[groups] = cluster
        return clusters[groups]

    for vertex, data in graph.nodes(data=True):
        container(tuple(data.get("groups", ()))).add_node(pydot.Node(
            _quote(vertex), label=_quote(data["label"]), id=_quote(f"node:{vertex}"),
            fillcolor=COLOURS.get(data["kind"], "#eeeeee")))
    for a, b, data in graph.edges(data=True):
        style = {"color": SKIP_COLOUR, "penwidth": "1.6", "fontcolor": SKIP_COLOUR} \
            if data.get("skip") else {}
        dot.add_edge(pydot.Edge(_quote(a), _quote(b), label=_quote(data.get("shape", "")),
                                id=_quote(f"edge:{a}->{b}"), **style))
    try:
        picture = dot.create(prog="dot", format=fmt)
    except (OSError, AssertionError) as e:
        raise EinspaceError(f"graphviz could not draw {path}: {e}") from None
    path.write_bytes(picture)


def _quote(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', "'") + '"'
