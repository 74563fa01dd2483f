"""Hyper-kernel, gating and parallel-sum terminals: HyperZ·Z·W / Terminator
(``blocks/hyper_kernel.py``: ``hyper_channel_gate``, ``hyperzzw_local{3,5,7}``,
``hyperzzw_global``, ``rgu``), Sentence Attention Blocks and FiRST (``blocks/gating.py``:
``cond_channel_gate``, ``routed_skip``), Make Deep Networks Shallow Again
(``blocks/parallel_sum.py``: ``parallel_sum{2,4}``, and the same sum as a grammar expression) and
the ``terminator`` seed.

Every forward is checked against an independent computation written from the equations
(explicit coordinates, einsum, explicit shifted sums for the depth-wise convolution) with the
module's own weights.
"""

from __future__ import annotations

import math

import pytest
import torch
from flops import measured_flops
from seed_checks import checked_params
from torch import nn
from torch.nn import functional as F
from training import random_task, train_one_epoch

import einspace
from einspace.blocks import Kind, get
from einspace.blocks.registry import NO_CONTEXT

MINE = ["hyper_channel_gate", "hyperzzw_local3", "hyperzzw_local5", "hyperzzw_local7", "rgu",
        "hyperzzw_global", "cond_channel_gate", "routed_skip", "parallel_sum2", "parallel_sum4"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build(kind, name, x, seed=0):
    torch.manual_seed(seed)
    return get(kind, name).build(x, NO_CONTEXT)


# -- independent MAGNet -----------------------------------------------------------------------

def grid_coords(grid):
    """Coordinates of the slow net's grid, written out point by point (row-major)."""
    def axis(n):
        return [-1.0 + 2.0 * i / (n - 1) if n > 1 else -1.0 for i in range(n)]
    if len(grid) == 1:
        return torch.tensor([[c] for c in axis(grid[0])])
    rows, cols = axis(grid[0]), axis(grid[1])
    return torch.tensor([[r, c] for r in rows for c in cols])


def magnet_reference(slow, grid, context=None):
    """h_0 = sin(F_0 c); h_i = sin(F_i c) * (A_i h + a_i) + b_p; with a context (MAGNet_L):
    h <- alpha h + beta h / ||h||_grid, h <- h * (C_i g + c_i); out = A_out h + a_out."""
    c = grid_coords(grid)
    fw, fb = slow.filter_weight, slow.filter_bias
    h = torch.sin(torch.einsum("kd,ud->ku", c, fw[0]) + fb[0])
    for i in range(slow.layers):
        mixed = torch.einsum("...kv,uv->...ku", h, slow.hidden_weight[i]) + slow.hidden_bias[i]
        gate = torch.sin(torch.einsum("kd,ud->ku", c, fw[i + 1]) + fb[i + 1])
        h = gate * mixed + slow.bias_p[:, 0][:, None]
        if context is not None:
            norm = torch.sqrt((h * h).sum(dim=-2, keepdim=True))
            h = slow.alpha[i] * h + slow.beta[i] * h / norm
            h = h * (torch.einsum("bkv,uv->bku", context, slow.context_weight[i])
                     + slow.context_bias[i])
    return torch.einsum("...ku,ou->...ko", h, slow.out_weight) + slow.out_bias


def batch_standardise(z):
    mean = z.mean(dim=(0, 2, 3), keepdim=True)
    var = ((z - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    return (z - mean) / torch.sqrt(var + 1e-5)


# -- forward against the equations ------------------------------------------------------------

def test_hyper_channel_gate_forward():
    for x_shape in [(6, 4, 5), (9, 7)]:
        m = build(Kind.COMPUTATION, "hyper_channel_gate", x_shape)
        x = torch.randn(3, *x_shape)
        channels = x_shape[0] if len(x_shape) == 3 else x_shape[1]
        w = magnet_reference(m.slow, (channels,))[:, 0]
        if len(x_shape) == 3:
            y = x.mean(dim=(2, 3))
            expected = x * torch.sigmoid(w * y * y)[:, :, None, None]
        else:
            y = x.mean(dim=1)
            expected = x * torch.sigmoid(w * y * y)[:, None, :]
        torch.testing.assert_close(m(x), expected)


@pytest.mark.parametrize("k,size", [(3, 6), (5, 10)])
def test_hyperzzw_local_forward(k, size):
    channels, batch = 3, 2
    m = build(Kind.COMPUTATION, f"hyperzzw_local{k}", (channels, size, size))
    with torch.no_grad():
        m.bias.fill_(0.3)
        m.mixer_bias.normal_()
    x = torch.randn(batch, channels, size, size)
    # context: average over (size/k)^2 blocks, 1x1 maps P_1, P_2, GELU; one per sample
    s = size // k
    pooled = x.reshape(batch, channels, k, s, k, s).mean(dim=(3, 5))
    tokens = pooled.permute(0, 2, 3, 1).reshape(batch, k * k, channels)
    g = torch.einsum("bkc,hc->bkh", tokens, m.reduce.weight) + m.reduce.bias
    g = F.gelu(torch.einsum("bkh,oh->bko", g, m.context.weight) + m.context.bias)
    kernel = magnet_reference(m.slow, (k, k), g)  # (B, k*k, C), point (i, j) at i*k + j
    padded = F.pad(x, (k // 2,) * 4)
    z = torch.zeros_like(x)
    for i in range(k):
        for j in range(k):
            z += kernel[:, i * k + j, :, None, None] * padded[:, :, i:i + size, j:j + size]
    z = torch.einsum("bchw,oc->bohw", z, m.mixer_weight[:, :, 0, 0]) + m.mixer_bias[:, None, None]
    expected = F.gelu(batch_standardise(z)) + m.bias
    torch.testing.assert_close(m(x), expected, rtol=1e-4, atol=1e-5)


def test_hyperzzw_local_samples_are_independent():
    """Per-sample context (the reference averaged it over the batch): in evaluation a sample's
    output does not depend on the rest of the batch."""
    m = build(Kind.COMPUTATION, "hyperzzw_local5", (4, 7, 7)).eval()
    x = torch.randn(5, 4, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(m(x)[1:2], m(x[1:2]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m(x)[3:], m(x[3:]), rtol=1e-5, atol=1e-6)


def test_hyperzzw_global_forward():
    shape = (3, 5, 5)
    m = build(Kind.AGGREGATION, "hyperzzw_global", (shape, shape))
    x, v = torch.randn(2, *shape), torch.randn(2, *shape)
    w = magnet_reference(m.slow, (5, 5))  # (25, C): point (i, t) at i*5 + t
    wg = w.T.reshape(3, 5, 5)
    expected = torch.einsum("bcit,cit,bctj->bcij", x, wg, v)
    torch.testing.assert_close(m([x, v]), expected, rtol=1e-4, atol=1e-5)
    assert get(Kind.AGGREGATION, "hyperzzw_global").infer(((3, 5, 6), (3, 5, 6)), NO_CONTEXT) \
        is None


@pytest.mark.parametrize("shape", [(4, 3, 5), (7, 6)])
def test_rgu_forward(shape):
    m = build(Kind.COMPUTATION, "rgu", shape)
    with torch.no_grad():
        m.bias_p.normal_()
        for linear in (m.key, m.value, m.query, m.out):
            linear.bias.normal_()
    x = torch.randn(2, *shape)
    t = x.flatten(2).transpose(1, 2) if len(shape) == 3 else x  # (B, positions, C)

    def lin(a, layer):
        return torch.einsum("bnc,oc->bno", a, layer.weight) + layer.bias

    a = lin(t, m.key) * lin(lin(t, m.value), m.query)
    mean = a.mean(dim=1, keepdim=True)
    var = ((a - mean) ** 2).mean(dim=1, keepdim=True)
    y = lin(F.gelu((a - mean) / torch.sqrt(var + 1e-5)) + m.bias_p[None], m.out)
    expected = y.transpose(1, 2).reshape(x.shape) if len(shape) == 3 else y
    torch.testing.assert_close(m(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("x_shape,s_shape", [((8, 4, 4), (5, 6)), ((16, 2, 2), (1, 24)),
                                             ((3, 5, 7), (16, 4))])
def test_cond_channel_gate_forward(x_shape, s_shape):
    m = build(Kind.AGGREGATION, "cond_channel_gate", (x_shape, s_shape))
    x, s = torch.randn(3, *x_shape), torch.randn(3, *s_shape)
    z = torch.cat([x.mean(dim=(2, 3)), s.mean(dim=1)], 1)
    hidden = torch.relu(z @ m.squeeze.weight.T + m.squeeze.bias)
    gate = torch.sigmoid(hidden @ m.excite.weight.T + m.excite.bias)
    torch.testing.assert_close(m([x, s]), x * gate[:, :, None, None])
    assert m.squeeze.out_features == max((x_shape[0] + s_shape[1]) // 16, 1)


def test_cond_channel_gate_pairs():
    gate = get(Kind.AGGREGATION, "cond_channel_gate")
    assert gate.infer(((8, 4, 4), (5, 6)), NO_CONTEXT) == (8, 4, 4)
    for refused in [((5, 6), (8, 4, 4)), ((8, 4, 4), (8, 4, 4)), ((5, 6), (5, 6)),
                    ((8, 4, 4), (5, 6), (5, 6))]:
        assert gate.infer(refused, NO_CONTEXT) is None


@pytest.mark.parametrize("shape", [(8, 5, 5), (6, 12)])
def test_routed_skip_forward(shape):
    m = build(Kind.AGGREGATION, "routed_skip", (shape, shape))
    fx, x = torch.randn(6, *shape), torch.randn(6, *shape)
    pooled = x.mean(dim=(2, 3)) if len(shape) == 3 else x.mean(dim=1)
    hidden = torch.relu(pooled @ m.router_in.weight.T + m.router_in.bias)
    p = torch.sigmoid(hidden @ m.router_out.weight.T + m.router_out.bias)[:, 0]
    p = p.reshape(-1, *([1] * len(shape)))
    torch.testing.assert_close(m([fx, x]), p * fx + (1 - p) * x)
    m.eval()
    torch.testing.assert_close(m([fx, x]), torch.where(p > 0.5, fx, x))
    with torch.no_grad():
        m.router_out.bias.fill_(30.0)
        assert torch.equal(m([fx, x]), fx)  # routed: every sample runs F
        m.router_out.bias.fill_(-30.0)
        assert torch.equal(m([fx, x]), x)  # skipped


@pytest.mark.parametrize("k,shape", [(2, (3, 5, 6)), (4, (4, 4, 4)), (2, (7, 5)), (4, (6, 3))])
def test_parallel_sum_forward(k, shape):
    m = build(Kind.COMPUTATION, f"parallel_sum{k}", shape)
    x = torch.randn(2, *shape)
    weight, bias = m.layer.weight, m.layer.bias
    width = shape[0] if len(shape) == 3 else shape[1]
    expected = x.clone()
    for j in range(k):
        rows = slice(j * width, (j + 1) * width)  # the outputs of F_j
        if len(shape) == 3:  # 3x3 convolution, same padding, as a sum over the 9 shifts
            h, w = shape[1:]
            padded = F.pad(x, (1, 1, 1, 1))
            z = bias[rows][None, :, None, None].expand(2, -1, h, w).clone()
            for di in range(3):
                for dj in range(3):
                    z += torch.einsum("bchw,oc->bohw", padded[:, :, di:di + h, dj:dj + w],
                                      weight[rows, :, di, dj])
        else:
            z = torch.einsum("bnd,od->bno", x, weight[rows]) + bias[rows]
        expected = expected + torch.where(z > 0, z, 0.01 * z)
    torch.testing.assert_close(m(x), expected, rtol=1e-4, atol=1e-5)


# -- gradients ---------------------------------------------------------------------------------

GRADIENT_CASES = [
    (Kind.COMPUTATION, "hyper_channel_gate", (6, 5, 5)),
    (Kind.COMPUTATION, "hyper_channel_gate", (9, 12)),
    (Kind.COMPUTATION, "hyperzzw_local3", (4, 6, 6)),
    (Kind.COMPUTATION, "hyperzzw_local7", (4, 5, 9)),
    (Kind.COMPUTATION, "rgu", (4, 6, 6)),
    (Kind.COMPUTATION, "rgu", (9, 12)),
    (Kind.AGGREGATION, "hyperzzw_global", ((4, 6, 6), (4, 6, 6))),
    (Kind.AGGREGATION, "cond_channel_gate", ((8, 4, 4), (5, 6))),
    (Kind.AGGREGATION, "routed_skip", ((6, 12), (6, 12))),
    (Kind.AGGREGATION, "routed_skip", ((8, 5, 5), (8, 5, 5))),
    (Kind.COMPUTATION, "parallel_sum2", (4, 5, 6)),
    (Kind.COMPUTATION, "parallel_sum4", (9, 12)),
]


@pytest.mark.parametrize("kind,name,x", GRADIENT_CASES, ids=lambda v: str(v))
def test_gradients_reach_every_parameter(kind, name, x):
    """Every parameter gets a finite, non-zero gradient, except the local branch's channel-mixer
    bias: the batch standardisation right after it removes any per-channel constant, so its
    gradient is zero by design (as in the reference)."""
    m = build(kind, name, x)
    torch.manual_seed(1)
    inputs = ([torch.randn(4, *s, requires_grad=True) for s in x] if kind == Kind.AGGREGATION
              else torch.randn(4, *x, requires_grad=True))
    out = m(inputs)
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        if pname == "mixer_bias":
            assert p.grad.abs().max() < 1e-4
        else:
            assert p.grad.abs().max() > 0, pname
    leaves = inputs if isinstance(inputs, list) else [inputs]
    assert all(t.grad is not None and t.grad.abs().max() > 0 for t in leaves)


# -- inside architectures ----------------------------------------------------------------------

ARCHITECTURES = [
    # image mode: stem conv, the three local branches, RGU and the hyper-channel gate
    ("(sequential (routing im2col3k1s1p (computation linear16) col2im) (sequential "
     "(computation hyperzzw_local3) (sequential (computation hyperzzw_local5) (sequential "
     "(computation hyperzzw_local7) (sequential (computation rgu) (sequential "
     "(computation hyper_channel_gate) (computation parallel_sum2)))))))", (3, 16, 16),
     (16, 16, 16)),
    # global operator on (x, rgu(x)); a conditional gate of the map by a token branch
    ("(sequential (routing im2col3k1s1p (computation linear16) col2im) (sequential (branching "
     "clone_tensor2 (computation identity) (computation rgu) hyperzzw_global) (branching "
     "clone_tensor2 (computation identity) (routing im2col4k4s0p (computation linear32) "
     "identity) cond_channel_gate)))", (3, 16, 16), (16, 16, 16)),
    # token mode: patches of width 32, RGU, hyper-channel gate, a routed MLP skip
    ("(sequential (routing im2col4k4s0p (computation linear32) identity) (sequential "
     "(computation rgu) (sequential (computation hyper_channel_gate) (sequential (branching "
     "clone_tensor2 (sequential (computation linear32) (computation leakyrelu)) (computation "
     "identity) routed_skip) (computation parallel_sum4)))))", (3, 16, 16), (16, 32)),
]


@pytest.mark.parametrize("text,shape,out", ARCHITECTURES, ids=["image", "global", "tokens"])
def test_inside_an_architecture(text, shape, out):
    d = einspace.parse(text)
    assert einspace.parse(str(d)) == d
    annotation = einspace.annotate(d, shape)
    assert annotation.output_shape == out
    torch.manual_seed(0)
    net = einspace.build(d, shape, num_classes=5)
    n_params = sum(p.numel() for p in net.parameters())
    assert einspace.count(d, shape, num_classes=5).params == n_params
    x = torch.randn(4, *shape)
    logits = net(x)
    assert logits.shape == (4, 5)
    logits.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    # FLOPs: at batch 1 per-sample and per-batch work together equal the annotation
    with torch.no_grad():
        assert measured_flops(net.backbone, torch.randn(1, *shape)) == annotation.cost.flops
    net.eval()
    with torch.no_grad():
        assert torch.isfinite(net(x)).all()


def first_sample_with(sampler, shape, names, limit):
    """Names not seen in the first ``limit`` samples (stops as soon as all are seen)."""
    missing = set(names)
    for seed in range(limit):
        d = einspace.sample(shape, seed=seed, sampler=sampler)
        missing -= {node for _, node in d.walk() if isinstance(node, str)}
        if not missing:
            break
    return missing


def test_sampled_with_the_seed_papers_terminal_set():
    """Each terminal shows up in sampled architectures: 3x28x28 images (and 16x24 tokens for
    those that also work on tokens).  ``hyperzzw_global`` needs two equal square image branches,
    which whole samples produce rarely (about 0.15 % of 3x28x28 samples), so it is looked for in
    samples whose top production is a branching, on a square 16x14x14 map (about 1 %)."""
    grammar = einspace.load_grammar(terminal_set="seed-papers")
    sampler = einspace.Sampler(grammar)
    common = [n for n in MINE if n != "hyperzzw_global"]
    assert not first_sample_with(sampler, (3, 28, 28), common, 3000)
    tokens = ["hyper_channel_gate", "rgu", "routed_skip", "parallel_sum2", "parallel_sum4"]
    assert not first_sample_with(sampler, (16, 24), tokens, 1000)
    branching = einspace.Sampler(einspace.load_grammar(
        terminal_set="seed-papers", probabilities={"network": {"branching": 1.0}}))
    assert not first_sample_with(branching, (16, 14, 14), ["hyperzzw_global"], 2000)


# -- Make Deep Networks Shallow Again: y = x + sum_j F_j(x) -----------------------------------

def parallel_sum_text(k: int) -> str:
    body = "(sequential (computation linear16) (computation leakyrelu))"
    inner = f"{body} {body}" if k == 2 else body  # a 2-way branch holds two inner modules
    return (f"(branching clone_tensor2 (branching clone_tensor{k} {inner} add_tensors) "
            f"(computation identity) add_tensors)")


@pytest.mark.parametrize("k", [2, 4, 8])
@pytest.mark.parametrize("lower", [True, False])
def test_parallel_sum_is_a_grammar_expression(k, lower):
    shape = (6, 16)
    d = einspace.parse(parallel_sum_text(k))
    torch.manual_seed(0)
    net = einspace.build(d, shape, lower=lower)
    linears = [m for m in net.backbone.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == k  # k independently initialised copies of F
    assert len({tuple(lin.weight.flatten()[:3].tolist()) for lin in linears}) == k
    x = torch.randn(3, *shape)
    expected = x + sum(F.leaky_relu(x @ lin.weight.T + lin.bias) for lin in linears)
    torch.testing.assert_close(net(x), expected)
    assert einspace.count(d, shape).params == k * (16 * 16 + 16)


def test_parallel_sum_of_different_branches():
    """Two different F_j: y = x + conv3x3(x) + hyperzzw_local3(x)."""
    shape = (16, 6, 6)
    text = ("(branching clone_tensor2 (branching clone_tensor2 (routing im2col3k1s1p "
            "(computation linear16) col2im) (computation hyperzzw_local3) add_tensors) "
            "(computation identity) add_tensors)")
    d = einspace.parse(text)
    torch.manual_seed(0)
    net = einspace.build(d, shape).eval()
    conv = next(m for m in net.backbone.modules() if isinstance(m, nn.Conv2d))
    local = next(m for m in net.backbone.modules() if type(m).__name__ == "HyperZZWLocalModule")
    x = torch.randn(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(net(x), x + conv(x) + local(x))


@pytest.mark.parametrize("k,shape", [(4, (16, 6, 6)), (2, (5, 16))])
def test_parallel_sum_terminal_equals_the_grammar_expression(k, shape):
    """``parallel_sum{k}`` is the macro of x + sum_j LeakyReLU(F_j(x)) written with clones."""
    if len(shape) == 3:
        layer = "(routing im2col3k1s1p (computation linear16) col2im)"
    else:
        layer = "(computation linear16)"
    body = f"(sequential {layer} (computation leakyrelu))"
    inner = f"{body} {body}" if k == 2 else body
    d = einspace.parse(f"(branching clone_tensor2 (branching clone_tensor{k} {inner} "
                       f"add_tensors) (computation identity) add_tensors)")
    torch.manual_seed(0)
    expression = einspace.build(d, shape)
    layers = [m for m in expression.backbone.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == k
    terminal = einspace.build(einspace.parse(f"(computation parallel_sum{k})"), shape)
    with torch.no_grad():
        terminal.backbone.layer.weight.copy_(torch.cat([m.weight for m in layers]))
        terminal.backbone.layer.bias.copy_(torch.cat([m.bias for m in layers]))
    x = torch.randn(3, *shape)
    with torch.no_grad():
        torch.testing.assert_close(terminal(x), expression(x), rtol=1e-5, atol=1e-5)
    assert einspace.count(d, shape).params == einspace.count(
        einspace.parse(f"(computation parallel_sum{k})"), shape).params
    assert einspace.count(d, shape).flops == einspace.count(
        einspace.parse(f"(computation parallel_sum{k})"), shape).flops


# -- the Terminator seed -----------------------------------------------------------------------

def test_terminator_seed_parses_builds_and_counts():
    d = einspace.load_seed("terminator")
    assert einspace.parse(str(d)) == d
    assert einspace.parse(d.pretty()) == d
    leaves = {node for _, node in d.walk() if isinstance(node, str)}
    assert {"hyperzzw_global", "hyperzzw_local3", "hyperzzw_local5", "rgu",
            "hyper_channel_gate", "im2col1k1s0p"} <= leaves
    assert "add_tensors" not in leaves  # no residual connections, as in the paper
    for shape in [(3, 28, 28), (3, 32, 32)]:
        assert 100_000 < checked_params(d, shape) < 5_000_000


def test_terminator_seed_trains_one_epoch():
    shape, classes = (3, 28, 28), 10
    images, labels = random_task(shape, classes, colour_cast=True)
    torch.manual_seed(0)
    net = einspace.build(einspace.load_seed("terminator"), shape, num_classes=classes)
    losses = train_one_epoch(net, images, labels)
    assert all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < losses[0], losses
