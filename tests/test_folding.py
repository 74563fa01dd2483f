"""Folding an axis into the batch: a routing module whose inner module runs once per row, column
or token group with shared weights (axial attention, local attention groups)."""

import pytest
import torch
from flops import measured_flops

import einspace

ATTENTION = ("(branching clone_tensor2 (sequential (branching clone_tensor2 (computation linear16) "
             "(routing identity (computation linear16) permute21) scaled_dot_product) "
             "(computation softmax)) (computation linear8{v}) dot_product)")


def axial(axis: str) -> str:
    head = ATTENTION.replace("linear8{v}", "linear16")
    return f"(routing fold_{axis} {head} unfold)"


@pytest.mark.parametrize("axis", ["rows", "cols"])
def test_axial_attention_in_the_grammar_equals_attention_along_one_axis(axis):
    d = einspace.parse(axial(axis))
    shape = (6, 5, 7)
    net = einspace.build(d, shape).eval()
    literal = einspace.build(d, shape, lower=False).eval()
    literal.load_state_dict(_rename(net.state_dict(), literal))
    x = torch.randn(2, *shape)
    out = net(x)
    assert out.shape == (2, 16, 5, 7)
    lin = [m for m in literal.modules() if isinstance(m, torch.nn.Linear)]
    q, k, v = lin
    expected = torch.empty(2, 16, 5, 7)
    for b in range(2):
        lines = range(5) if axis == "rows" else range(7)
        for i in lines:
            seq = x[b, :, i, :].T if axis == "rows" else x[b, :, :, i].T  # (L, C)
            attn = torch.softmax(q(seq) @ k(seq).T / 4.0, dim=-1) @ v(seq)  # (L, 16)
            if axis == "rows":
                expected[b, :, i, :] = attn.T
            else:
                expected[b, :, :, i] = attn.T
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(literal(x), expected, atol=1e-5, rtol=1e-4)


def _rename(state: dict, target: torch.nn.Module) -> dict:
    """The lowered and literal modules hold the same q/k/v weights under different names."""
    return dict(zip(target.state_dict().keys(), state.values(), strict=True))


def test_token_groups_run_the_inner_module_on_each_group():
    d = einspace.parse("(routing fold_groups4 (computation softmax) unfold)")
    x = torch.randn(3, 16, 5)
    out = einspace.build(d, (16, 5))(x)
    expected = torch.cat([torch.softmax(g, dim=-1) for g in x.split(4, dim=1)], dim=1)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("text,shape", [
    (axial("rows"), (6, 5, 7)), (axial("cols"), (6, 5, 7)),
    ("(routing fold_groups4 (sequential (computation linear32) (computation norm)) unfold)",
     (16, 8)),
])
def test_folded_costs_count_work_per_slice_and_weights_once(text, shape):
    d = einspace.parse(text)
    cost = einspace.count(d, shape)
    net = einspace.build(d, shape)
    assert cost.params == sum(p.numel() for p in net.parameters())
    assert cost.flops == measured_flops(net, torch.randn(1, *shape))
    unfolded = einspace.count(einspace.parse(text.split(" ", 2)[2].rsplit(" ", 1)[0]), (
        shape[2], shape[0]) if "rows" in text else (shape[1], shape[0]) if "cols" in text
        else (shape[0] // 4, shape[1]))
    slices = shape[1] if "rows" in text else shape[2] if "cols" in text else 4
    assert cost.flops == slices * unfolded.flops
    assert cost.params == unfolded.params


def test_unfold_without_a_fold_is_a_clear_error():
    d = einspace.parse("(routing identity (computation norm) unfold)")
    with pytest.raises(einspace.ShapeError, match="prerouting to be a fold"):
        einspace.annotate(d, (16, 8))


@pytest.mark.slow
def test_seed_papers_samples_fold_and_every_sample_builds():
    sampler = einspace.Sampler(einspace.load_grammar(terminal_set="seed-papers"),
                               einspace.Budget(max_flops=500_000_000, max_params=2_000_000))
    folded = 0
    for seed in range(400):
        d = einspace.sample((3, 16, 16), seed=seed, sampler=sampler)
        if "unfold" in d.text:
            folded += 1
            cost = einspace.count(d, (3, 16, 16))
            net = einspace.build(d, (3, 16, 16))
            assert cost.params == sum(p.numel() for p in net.parameters())
            with torch.inference_mode():
                out = net(torch.randn(2, 3, 16, 16))
            assert tuple(out.shape[1:]) == einspace.annotate(d, (3, 16, 16)).output_shape
            child = einspace.mutate(d, (3, 16, 16), seed=seed, sampler=sampler)
            assert einspace.Budget(max_flops=500_000_000, max_params=2_000_000).admits(
                einspace.annotate(child, (3, 16, 16)).cost, child.depth) == ""
    assert folded >= 3


def test_a_fold_must_be_closed_by_unfold():
    d = einspace.parse("(routing fold_groups4 (computation norm) identity)")
    with pytest.raises(einspace.ShapeError, match="must end with unfold"):
        einspace.annotate(d, (16, 8))


def test_once_per_forward_work_is_not_multiplied_by_a_fold():
    d = einspace.parse("(routing fold_rows (computation hyper_channel_gate) unfold)")
    shape = (4, 6, 6)
    net = einspace.build(d, shape)
    assert einspace.count(d, shape).flops == measured_flops(net, torch.randn(1, *shape))
