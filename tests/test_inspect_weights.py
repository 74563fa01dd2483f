"""``einspace inspect --weights`` (trained parameters per derivation node) and ``--tree``."""

import json
import random

import pytest
import torch

import einspace
from einspace.cli import main
from einspace.compiler import build_traced
from einspace.errors import EinspaceError
from einspace.trained import trained_weights
from einspace.tree_picture import tidy_layout, tree_graph

CONV = "(routing im2col3k1s1p (computation linear16) col2im)"
RESIDUAL = ("(branching clone_tensor2 (sequential (routing im2col3k1s1p (computation linear16) "
            "col2im) (computation norm)) (computation identity) add_tensors)")
NET = f"(sequential {CONV} (sequential {RESIDUAL} (computation leakyrelu)))"
HEAD = ("(branching clone_tensor2 (sequential (branching clone_tensor2 (computation linear16) "
        "(routing identity (computation linear16) permute21) scaled_dot_product) "
        "(computation softmax)) (computation linear16) dot_product)")
MULTIHEAD = f"(sequential (computation linear32) (branching clone_tensor4 {HEAD} cat_tensors2d4t))"
SAMPLER = einspace.Sampler(budget=einspace.Budget(max_params=30_000, max_nodes=40, max_depth=8))
CASES = [(NET, (2, 8, 8)), (MULTIHEAD, (6, 12))] + [
    (SAMPLER.sample((1, 12, 12), random.Random(seed)).derivation.text, (1, 12, 12))
    for seed in range(4)]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def save_trained(derivation, shape, file, num_classes=3, seed=0):
    """A state_dict as a search keeps it, with non-default values so norms mean something."""
    torch.manual_seed(seed)
    net = einspace.build(derivation, shape, num_classes=num_classes)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    torch.save(net.state_dict(), file)
    return net


@pytest.mark.parametrize("text,shape", CASES, ids=range(len(CASES)))
def test_per_node_counts_match_annotation_and_sum_to_the_network(tmp_path, text, shape):
    d = einspace.parse(text)
    net = save_trained(d, shape, tmp_path / "w.pt")
    trained = trained_weights(d, shape, tmp_path / "w.pt", num_classes=3)
    params = list(net.parameters())
    assert trained.params == sum(p.numel() for p in params)
    total = sum(float(p.detach().double().square().sum()) for p in params)
    assert trained.nodes[()].l2 ** 2 + trained.head.l2 ** 2 == pytest.approx(total)
    annotation = einspace.annotate(d, shape)
    for path, weights in trained.nodes.items():  # every copy of a repeated module counts
        info = annotation[path]
        assert weights.params == info.cost.params * info.repeat, path


def test_fused_nodes_have_no_entry_and_lowered_modules_map_to_their_production(tmp_path):
    d = einspace.parse(NET)
    net, origins = build_traced(d, (2, 8, 8), num_classes=3)
    convs = [name for name, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert [origins[name] for name in convs] == [(0,), (1, 0, 1, 0)]
    assert not any(name.startswith("head") for name in origins)
    save_trained(d, (2, 8, 8), tmp_path / "w.pt")
    trained = trained_weights(d, (2, 8, 8), tmp_path / "w.pt", num_classes=3)
    assert (0, 1) not in trained.nodes and (0, 1, 0) not in trained.nodes  # inside the conv
    assert trained.nodes[(0,)].params == 2 * 16 * 9 + 16


def test_cli_shows_trained_columns_and_json(tmp_path, capsys):
    d = einspace.parse(NET)
    net = save_trained(d, (2, 8, 8), tmp_path / "w.pt")
    total = sum(p.numel() for p in net.parameters())
    code, out, err = run(capsys, "inspect", NET, "--input-shape", "2,8,8", "--num-classes", "3",
                         "--weights", str(tmp_path / "w.pt"))
    assert code == 0, err
    header = out.splitlines()[0]
    assert "trained" in header and "L2" in header
    assert f"{total:,} trained parameters" in out
    assert "—" in out  # the conv's inner nodes
    code, out, _ = run(capsys, "inspect", NET, "--input-shape", "2,8,8", "--num-classes", "3",
                       "--weights", str(tmp_path / "w.pt"), "--json")
    info = json.loads(out)["weights"]
    assert info["params"] == total and info["nodes"]["/"]["params"] + info["head_params"] == total


def test_without_num_classes_the_head_is_taken_from_the_file(tmp_path):
    d = einspace.parse(NET)
    net = save_trained(d, (2, 8, 8), tmp_path / "w.pt", num_classes=5)
    trained = trained_weights(d, (2, 8, 8), tmp_path / "w.pt")
    assert trained.head.params == 16 * 5 + 5
    assert trained.params == sum(p.numel() for p in net.parameters())


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("einspace: error: "), err
    return lines[0]


def test_weights_of_another_architecture_name_the_keys(tmp_path, capsys):
    save_trained(einspace.parse(MULTIHEAD), (6, 12), tmp_path / "other.pt")
    code, _, err = run(capsys, "inspect", NET, "--input-shape", "2,8,8", "--num-classes", "3",
                       "--weights", str(tmp_path / "other.pt"))
    line = one_error_line(err)
    assert code == 2 and "does not fit" in line
    assert "missing keys backbone." in line and "unexpected keys backbone." in line


def test_weights_for_another_input_shape_name_the_shapes(tmp_path, capsys):
    save_trained(einspace.parse(NET), (3, 8, 8), tmp_path / "w.pt")
    code, _, err = run(capsys, "inspect", NET, "--input-shape", "2,8,8", "--num-classes", "3",
                       "--weights", str(tmp_path / "w.pt"))
    line = one_error_line(err)
    assert code == 2 and "shape mismatch in backbone.0.weight (16, 3, 3, 3)" in line


@pytest.mark.parametrize("content", [None, b"not a torch file", "list"])
def test_missing_or_unreadable_weights_are_one_line_errors(tmp_path, capsys, content):
    file = tmp_path / "trial-3.pt"
    if content == "list":
        torch.save([torch.zeros(2)], file)
    elif content is not None:
        file.write_bytes(content)
    code, _, err = run(capsys, "inspect", CONV, "--input-shape", "2,8,8", "--weights", str(file))
    line = one_error_line(err)
    assert code == 2 and str(file) in line
    assert ("does not exist" if content is None else "state_dict") in line


def test_tree_picture_and_text_formats(tmp_path, capsys):
    code, out, err = run(capsys, "inspect", "resnet18", "--input-shape", "3,16,16", "--tree",
                         str(tmp_path / "tree.png"))
    assert code == 0, err
    assert (tmp_path / "tree.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"derivation tree written to {tmp_path / 'tree.png'}" in out
    code, _, _ = run(capsys, "inspect", NET, "--input-shape", "2,8,8", "--tree",
                     str(tmp_path / "tree.dot"))
    assert code == 0 and (tmp_path / "tree.dot").read_text().startswith("digraph")
    code, _, err = run(capsys, "inspect", NET, "--input-shape", "2,8,8", "--tree",
                       str(tmp_path / "tree.svg"))
    assert code == 2 and ".png, .dot or .graphml" in one_error_line(err)


def test_tree_graph_merges_computation_leaves_and_lays_out_without_crossings():
    d = einspace.parse(NET)
    graph = tree_graph(einspace.annotate(d, (2, 8, 8)))
    labels = [data["label"] for _, data in graph.nodes(data=True)]
    assert "computation" not in labels and labels.count("linear16") == 2
    assert len(graph) == d.size - 5  # five computation nodes merged with their terminals
    positions = tidy_layout(graph)
    for vertex in graph:
        children = list(graph.successors(vertex))
        xs = [positions[c][0] for c in children]
        assert xs == sorted(xs)
        if children:
            assert positions[vertex][0] == (xs[0] + xs[-1]) / 2


def test_too_wide_tree_png_suggests_dot(tmp_path, monkeypatch):
    from einspace import tree_picture

    monkeypatch.setattr(tree_picture, "MAX_PNG_LEAVES", 3)
    with pytest.raises(EinspaceError, match=r"too many for a readable PNG.*\.dot"):
        tree_picture.write_tree(einspace.annotate(einspace.parse(NET), (2, 8, 8)),
                                tmp_path / "t.png")
