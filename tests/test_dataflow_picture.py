"""Pictures of the data-flow graph: layered layouts (Graphviz and the built-in one) in which a skip
connection is its own visible edge, shapes on edges, repeats drawn once, element-wise chains and
convolutions folded."""

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import networkx as nx
import pytest

import einspace
from einspace.dataflow_picture import (
    SKIP_COLOUR,
    graphviz_available,
    picture_graph,
    write_dataflow,
    write_picture,
)
from einspace.errors import EinspaceError
from einspace.inspect import dataflow_graph
from einspace.layered_drawing import layered_layout

README = Path(__file__).resolve().parent.parent / "README.md"
SHAPE = (3, 32, 32)
SVG = "{http://www.w3.org/2000/svg}"
LAYOUTS = [pytest.param("graphviz", marks=pytest.mark.skipif(
    not graphviz_available(), reason="pydot or Graphviz's dot is not installed")), "layered"]


def readme_residual_example() -> einspace.Derivation:
    """The hand-written residual network of the README (its first block of derivation text)."""
    blocks = re.findall(r"```\n(\(sequential.*?)```", README.read_text(), flags=re.S)
    return einspace.parse(blocks[0])


def svg_groups(file: Path) -> dict[str, ET.Element]:
    """Every SVG group with an id, by id."""
    return {g.get("id"): g for g in ET.parse(file).iter(f"{SVG}g") if g.get("id")}


def path_points(group: ET.Element) -> list[tuple[float, float]]:
    """The coordinates of the first <path> of a group (both renderers write x,y pairs)."""
    path = next(group.iter(f"{SVG}path"))
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", path.get("d"))]
    return list(zip(numbers[::2], numbers[1::2], strict=True))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_readme_residual_example_svg_draws_the_skip_edge_as_its_own_path(layout, tmp_path):
    annotation = einspace.annotate(readme_residual_example(), SHAPE)
    graph = picture_graph(annotation)
    skips = [(a, b) for a, b, data in graph.edges(data=True) if data["skip"]]
    assert [(graph.nodes[a]["label"], graph.nodes[b]["label"]) for a, b in skips] == \
        [("clone_tensor2", "add_tensors")]
    file = write_picture(annotation, tmp_path / "residual.svg", layout=layout)
    groups = svg_groups(file)
    (a, b), = skips
    skip = groups[f"edge:{a}->{b}"]
    points = path_points(skip)
    xs = [x for x, _ in points]
    # Not a straight line down the column of the chain: the edge bends out beside it.
    assert max(xs) - min(xs) > 10
    assert SKIP_COLOUR in ET.tostring(skip, encoding="unicode")
    # The chain it bypasses is drawn with edges of its own.
    chain = [v for v in graph.successors(a) if v != b]
    assert len(chain) == 1 and f"edge:{a}->{chain[0]}" in groups


@pytest.mark.parametrize("layout", LAYOUTS)
def test_edges_are_labelled_with_tensor_shapes(layout, tmp_path):
    annotation = einspace.annotate(readme_residual_example(), SHAPE)
    file = write_picture(annotation, tmp_path / "residual.svg", layout=layout)
    texts = [t.text for t in ET.parse(file).iter(f"{SVG}text") if t.text]
    if layout == "graphviz":
        assert "64×32×32" in texts and "3×32×32" in texts
    graph = picture_graph(annotation)
    assert graph.edges["input", "/0/0"]["shape"] == "3×32×32"
    assert all(data["shape"] for _, _, data in graph.edges(data=True))


def test_repeated_branch_is_drawn_once_with_its_count(tmp_path):
    net = einspace.parse("(sequential (branching clone_tensor8 (sequential (computation linear16) "
                         "(computation leakyrelu)) cat_tensors1d8t) (computation linear32))")
    annotation = einspace.annotate(net, (4, 16))
    full, picture = dataflow_graph(annotation), picture_graph(annotation)
    labels = [d["label"] for _, d in picture.nodes(data=True)]
    assert sum(d["label"] == "linear16" for _, d in full.nodes(data=True)) == 8
    assert labels.count("linear16") == 1
    (inner,) = [v for v, d in picture.nodes(data=True) if d["label"] == "linear16"]
    assert picture.nodes[inner]["groups"] == (("/0/0", 8),)
    if graphviz_available():
        file = write_picture(annotation, tmp_path / "k.svg", layout="graphviz")
        assert "×8" in [t.text for t in ET.parse(file).iter(f"{SVG}text")]
    file = write_picture(annotation, tmp_path / "k-layered.svg", layout="layered")
    assert "linear16 ×8" in file.read_text()


def test_elementwise_chains_and_convolutions_fold_into_one_box():
    net = einspace.parse("(sequential (routing im2col3k1s1p (computation linear16) col2im) "
                         "(sequential (computation norm) (sequential (computation leakyrelu) "
                         "(computation linear32))))")
    annotation = einspace.annotate(net, (3, 8, 8))
    picture = picture_graph(annotation)
    labels = [picture.nodes[v]["label"] for v in nx.topological_sort(picture)]
    assert labels == ["input", "conv3k1s1p · linear16", "norm · leakyrelu", "linear32", "output"]
    conv = next(v for v, d in picture.nodes(data=True) if d["label"].startswith("conv"))
    assert picture.nodes[conv]["params"] == 3 * 9 * 16 + 16
    assert picture.edges[conv, next(picture.successors(conv))]["shape"] == "16×8×8"
    assert len(dataflow_graph(annotation)) == len(picture) + 3


def test_layered_layout_routes_long_edges_beside_the_vertices_they_pass():
    graph = picture_graph(einspace.annotate(readme_residual_example(), SHAPE))
    positions, routes = layered_layout(graph)
    (a, b), = [(a, b) for a, b, d in graph.edges(data=True) if d["skip"]]
    via = routes[(a, b)][1:-1]
    assert via, "the skip edge spans several layers"
    occupied = set(positions.values())
    assert not occupied & set(via)
    for x, y in via:  # beside a vertex of the branch it bypasses, on that vertex's layer
        assert any(vy == y and vx != x for vx, vy in positions.values())


def test_resnet18_picture_is_laid_out_in_layers(tmp_path):
    annotation = einspace.annotate(einspace.load_seed("resnet18"), SHAPE)
    picture = picture_graph(annotation)
    assert einspace.load_seed("resnet18").size > 250
    assert len(picture) < 0.6 * len(dataflow_graph(annotation))  # 67 of 118 vertices
    skips = [1 for *_, d in picture.edges(data=True) if d["skip"]]
    assert len(skips) == 5  # the identity shortcuts; the downsampling ones hold a convolution
    file = write_picture(annotation, tmp_path / "rn18.png", layout="layered")
    assert file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_picture_suffix_is_a_one_line_error(tmp_path):
    annotation = einspace.annotate(readme_residual_example(), SHAPE)
    with pytest.raises(EinspaceError, match=r"\.png, \.svg, \.dot or \.graphml"):
        write_dataflow(annotation, tmp_path / "x.jpeg")
    assert write_dataflow(annotation, tmp_path / "x.dot").read_text().startswith("digraph")
