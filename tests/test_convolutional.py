"""Seed-paper terminals of ``blocks/low_rank.py`` (Maestro low-rank layers),
``blocks/inception_resnet.py`` (Inception-ResNet scales and blocks), ``blocks/propagation.py``
(PixPro pixel propagation) and ``blocks/masking.py`` (layer-masking operators), and the
Inception-ResNet seed network.

Every forward is checked against an independent computation written from the paper's equations
(einsum, shifted windows, explicit loops) with the module's own weights; every module is checked
to pass gradients to its parameters, and to build, count and train inside an architecture.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from training import random_task, train_one_epoch

import einspace
from einspace.blocks import Kind, get, terminals
from einspace.blocks.registry import NAME_PATTERN, NO_CONTEXT

MODULES = {f"einspace.blocks.{name}"
           for name in ("low_rank", "inception_resnet", "propagation", "masking")}
MINE = [t for t in terminals() if t.__module__ in MODULES]
NAMES = {t.name for t in MINE}
MASKED = ["masked_conv3k", "masked_norm", "masked_leakyrelu"]
FAMILIES = {"attention", "normalisation", "token-mixing", "gating", "hyper-kernel", "bottleneck",
            "low-rank", "residual", "masking", "propagation"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def terminal(name):
    return get(Kind.COMPUTATION, name)


def build(name, shape, seed=0):
    torch.manual_seed(seed)
    return terminal(name).build(shape, NO_CONTEXT)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def conv_ref(x, weight, bias=None):
    """Stride-1 'same' convolution with an odd kh x kw kernel as a sum of shifted einsums."""
    _, _, kh, kw = weight.shape
    h, w = x.shape[-2:]
    xp = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2))
    out = sum(torch.einsum("bchw,oc->bohw", xp[:, :, i:i + h, j:j + w], weight[:, :, i, j])
              for i in range(kh) for j in range(kw))
    return out if bias is None else out + bias[None, :, None, None]


def check_gradients(module, x, nonzero=1.0):
    """Backward reaches every parameter with a finite gradient, non-zero for most of them."""
    module.zero_grad()
    module(x).square().mean().backward()
    grads = [(name, p.grad) for name, p in module.named_parameters()]
    assert grads
    for name, g in grads:
        assert g is not None, name
        assert torch.isfinite(g).all(), name
    alive = sum(bool(g.abs().sum() > 0) for _, g in grads)
    assert alive >= nonzero * len(grads), [n for n, g in grads if g.abs().sum() == 0]


def check_in_architecture(text, shape, name):
    """Builds, runs forward + backward on a batch, and ``count`` agrees with the built module."""
    d = einspace.parse(text)
    assert einspace.parse(str(d)) == d
    torch.manual_seed(0)
    net = einspace.build(d, shape, num_classes=5)
    logits = net(torch.randn(4, *shape))
    assert logits.shape == (4, 5)
    logits.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert einspace.count(d, shape, num_classes=5).params == n_params(net)
    annotation = einspace.annotate(d, shape)
    node = next(i for i in annotation.nodes.values() if i.node == name)
    inner = terminal(name).build(node.input, node.context)
    assert any(type(m) is type(inner) for m in net.modules())
    return annotation


def test_registration():
    assert len(MINE) == 16
    for t in MINE:
        assert NAME_PATTERN.match(t.name) and t.kind == Kind.COMPUTATION
        assert t.family in FAMILIES and t.paper and t.reference and t.description
        assert t.hyperparameters()
        assert t.category == "compute", t.name
    assert {"scale0.1", "scale0.17", "scale0.2", "inception_resnet_a", "inception_resnet_b",
            "inception_resnet_c", "pixel_propagation", "lowrank_linear8", "lowrank_conv3k8r",
            "masked_conv3k"} <= NAMES


# -- Maestro low-rank ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 16), (2, 3, 16)])
def test_lowrank_linear_forward(shape):
    module = build("lowrank_linear8", shape)
    assert terminal("lowrank_linear8").infer(shape, NO_CONTEXT) == shape
    x = torch.randn(2, *shape)
    v, u, b = module.down.weight, module.up.weight, module.up.bias  # (r, D), (D, r), (D,)
    assert v.shape == (8, 16) and u.shape == (16, 8)
    expected = torch.einsum("...d,rd->...r", x, v)
    expected = torch.einsum("...r,er->...e", expected, u) + b
    torch.testing.assert_close(module(x), expected)
    # the map is U Vᵀ: of rank r
    assert torch.linalg.matrix_rank(u @ v).item() == 8


def test_lowrank_rank_cap_and_penalties():
    assert terminal("lowrank_linear32").infer((6, 16), NO_CONTEXT) is None
    assert terminal("lowrank_linear16").infer((6, 16), NO_CONTEXT) == (6, 16)
    assert "rank 32" in terminal("lowrank_linear32").refusal((6, 16), NO_CONTEXT)
    assert terminal("lowrank_conv3k16r").infer((8, 4, 4), NO_CONTEXT) is None
    assert terminal("lowrank_conv3k8r").infer((6, 8), NO_CONTEXT) is None
    module = build("lowrank_conv3k8r", (12, 5, 5))
    v = module.down.weight.flatten(1)  # (r, C k k)
    u = module.up.weight.flatten(1).t()  # (r, C)
    importance = module.importance()
    torch.testing.assert_close(importance, v.norm(dim=1) * u.norm(dim=1))
    hierarchical = sum(v[i:].square().sum().sqrt() + u[i:].square().sum().sqrt()
                       for i in range(8))
    torch.testing.assert_close(module.group_lasso(), hierarchical)
    plain = sum(v[i].norm() + u[i].norm() for i in range(8))
    torch.testing.assert_close(module.group_lasso(hierarchical=False), plain)


@pytest.mark.parametrize("name,kernel,rank", [("lowrank_conv3k8r", 3, 8),
                                              ("lowrank_conv5k8r", 5, 8)])
def test_lowrank_conv_forward(name, kernel, rank):
    shape = (10, 6, 7)
    module = build(name, shape)
    x = torch.randn(2, *shape)
    v, u, b = module.down.weight, module.up.weight, module.up.bias
    assert v.shape == (rank, 10, kernel, kernel) and u.shape == (10, rank, 1, 1)
    hidden = conv_ref(x, v)
    expected = torch.einsum("brhw,cr->bchw", hidden, u[:, :, 0, 0]) + b[None, :, None, None]
    out = module(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    # the same as one k x k conv whose kernel is the rank-r product U V
    full = torch.einsum("cr,rdkl->cdkl", u[:, :, 0, 0], v)
    torch.testing.assert_close(out, conv_ref(x, full, b), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name,shape", [("lowrank_linear16", (7, 24)),
                                        ("lowrank_conv3k16r", (16, 5, 5))])
def test_lowrank_gradients(name, shape):
    check_gradients(build(name, shape), torch.randn(3, *shape))


def test_lowrank_in_architectures():
    check_in_architecture("(sequential (routing im2col4k4s0p (computation linear32) identity) "
                          "(computation lowrank_linear16))", (3, 16, 16), "lowrank_linear16")
    a = check_in_architecture("(sequential (routing im2col3k1s1p (computation linear16) col2im) "
                              "(computation lowrank_conv3k8r))", (3, 16, 16), "lowrank_conv3k8r")
    assert a.output_shape == (16, 16, 16)


# -- Inception-ResNet ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,s", [("scale0.1", 0.1), ("scale0.17", 0.17), ("scale0.2", 0.2)])
def test_scale_forward(name, s):
    for shape in [(3, 4, 5), (6, 8)]:
        module = build(name, shape)
        x = torch.randn(2, *shape)
        assert terminal(name).infer(shape, NO_CONTEXT) == shape
        assert n_params(module) == 0 and terminal(name).flops(shape, NO_CONTEXT) == 0
        torch.testing.assert_close(module(x), s * x)


def test_scaled_residual_in_architecture():
    """x + 0.1 F(x): the paper's scaled residual from the grammar's clone / add / scale."""
    text = ("(branching clone_tensor2 (sequential (routing im2col3k1s1p (computation linear16) "
            "col2im) (computation scale0.1)) (computation identity) add_tensors)")
    shape = (16, 6, 6)
    check_in_architecture(text, shape, "scale0.1")
    torch.manual_seed(0)
    net = einspace.build(einspace.parse(text), shape)
    conv = next(m for m in net.modules() if type(m) is nn.Conv2d)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(net.backbone(x), x + 0.1 * conv(x), atol=1e-6, rtol=1e-5)


# branch widths (kh, kw, width) of Inception-ResNet-v2 (the digest's table)
V2 = {"a": (320, 0.17, [[(1, 1, 32)], [(1, 1, 32), (3, 3, 32)],
                        [(1, 1, 32), (3, 3, 48), (3, 3, 64)]]),
      "b": (1088, 0.10, [[(1, 1, 192)], [(1, 1, 128), (1, 7, 160), (7, 1, 192)]]),
      "c": (2080, 0.20, [[(1, 1, 192)], [(1, 1, 192), (1, 3, 224), (3, 1, 256)]])}


@pytest.mark.parametrize("variant", "abc")
def test_inception_resnet_paper_widths(variant):
    """At the paper's width the block has Inception-ResNet-v2's exact parameter count."""
    c, _, branches = V2[variant]
    expected, concat = 0, 0
    for branch in branches:
        cin = c
        for kh, kw, w in branch:
            expected += cin * w * kh * kw + 2 * w  # conv without bias, BN weight and bias
            cin = w
        concat += cin
    expected += concat * c + c  # 1x1 projection with bias
    t = terminal(f"inception_resnet_{variant}")
    assert t.params((c, 17, 17), NO_CONTEXT) == expected
    assert t.infer((c, 17, 17), NO_CONTEXT) == (c, 17, 17)
    assert t.infer((17, c), NO_CONTEXT) is None


# small inputs and the widths the blocks take there: round(w * C / C_ref), at least 1
SMALL = {"a": (20, [[2], [2, 2], [2, 3, 4]]), "b": (34, [[6], [4, 5, 6]]),
         "c": (26, [[2], [2, 3, 3]])}


def bn_relu_ref(x, bn):
    assert bn.eps == 1e-3
    y = (x - bn.running_mean[None, :, None, None]) / (bn.running_var[None, :, None, None]
                                                      + 1e-3).sqrt()
    return torch.clamp(y * bn.weight[None, :, None, None] + bn.bias[None, :, None, None], min=0)


@pytest.mark.parametrize("variant", "abc")
def test_inception_resnet_forward(variant):
    c, widths = SMALL[variant]
    _, scale, spec = V2[variant]
    shape = (c, 5, 6)
    module = build(f"inception_resnet_{variant}", shape).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, *shape)
    outs = []
    for branch_spec, branch_widths, branch in zip(spec, widths, module.branches, strict=True):
        h = x
        for (kh, kw, _), w, layer in zip(branch_spec, branch_widths, branch, strict=True):
            conv, bn = layer[0], layer[1]
            assert conv.weight.shape[0] == w and conv.weight.shape[2:] == (kh, kw)
            assert conv.bias is None
            h = bn_relu_ref(conv_ref(h, conv.weight), bn)
        outs.append(h)
    cat = torch.cat(outs, 1)
    project = module.project
    residual = torch.einsum("bkhw,ck->bchw", cat, project.weight[:, :, 0, 0])
    residual = residual + project.bias[None, :, None, None]
    expected = torch.clamp(x + scale * residual, min=0)
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", "abc")
def test_inception_resnet_gradients(variant):
    c, _ = SMALL[variant]
    check_gradients(build(f"inception_resnet_{variant}", (c, 6, 6)), torch.randn(4, c, 6, 6))


def test_inception_resnet_in_architecture():
    check_in_architecture("(sequential (routing im2col3k1s1p (computation linear32) col2im) "
                          "(computation inception_resnet_b))", (3, 12, 12), "inception_resnet_b")


# -- PixPro pixel propagation -------------------------------------------------------------------

def propagation_ref(tokens, values):
    """y_i = sum_j max(cos(x_i, x_j), 0)^2 v_j / |v_j| with explicit loops; (N, D) inputs."""
    n = tokens.shape[0]
    out = torch.zeros_like(values)
    for i in range(n):
        for j in range(n):
            cos = tokens[i] @ tokens[j] / (tokens[i].norm() * tokens[j].norm())
            out[i] += torch.clamp(cos, min=0) ** 2 * values[j] / values[j].norm()
    return out


def test_pixel_propagation_forward_image():
    shape = (4, 3, 3)
    module = build("pixel_propagation", shape)
    x = torch.randn(2, *shape)
    weight, bias = module.transform.weight[:, :, 0, 0], module.transform.bias
    with torch.no_grad():
        out = module(x)
        for b in range(2):
            tokens = x[b].reshape(4, 9).t()  # (HW, C)
            values = tokens @ weight.t() + bias  # g = 1x1 conv
            expected = propagation_ref(tokens, values).t().reshape(shape)
            torch.testing.assert_close(out[b], expected, atol=1e-5, rtol=1e-4)


def test_pixel_propagation_forward_tokens():
    shape = (7, 5)
    module = build("pixel_propagation", shape)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        out = module(x)
        for b in range(2):
            values = x[b] @ module.transform.weight.t() + module.transform.bias
            torch.testing.assert_close(out[b], propagation_ref(x[b], values), atol=1e-5,
                                       rtol=1e-4)


@pytest.mark.parametrize("shape", [(4, 3, 3), (7, 5)])
def test_pixel_propagation_gradients(shape):
    check_gradients(build("pixel_propagation", shape), torch.randn(3, *shape))


def test_pixel_propagation_in_architectures():
    a = check_in_architecture("(sequential (routing im2col4k4s0p (computation linear32) identity) "
                              "(computation pixel_propagation))", (3, 16, 16),
                              "pixel_propagation")
    assert a.output_shape == (16, 32)
    check_in_architecture("(sequential (routing im2col3k2s1p (computation linear16) col2im) "
                          "(sequential (computation pixel_propagation) (computation norm)))",
                          (3, 12, 12), "pixel_propagation")


# -- layer masking ------------------------------------------------------------------------------

def window(t, h, w, k):
    """The in-bounds k x k window of a (..., H, W) map around (h, w)."""
    r = k // 2
    return t[..., max(h - r, 0):h + r + 1, max(w - r, 0):w + r + 1]


def masked_conv_ref(x, conv, k):
    """fast_fmm in-painting (k rounds, 3x3 neighbour means) then conv; pixel loops."""
    data, mask = x[:, :-1].clone(), x[:, -1:].clamp(0, 1)
    img, m = data * mask, mask.clone()
    height, width = x.shape[-2:]
    for _ in range(k):
        num, den = torch.zeros_like(img), torch.zeros_like(m)
        for h in range(height):
            for w in range(width):
                num[..., h, w] = window(img, h, w, 3).sum((-2, -1))
                den[..., h, w] = window(m, h, w, 3).sum((-2, -1))
        img = img + (1 - m) * num / (den + 1e-5)
        m = (m + den).clamp(0, 1)
    out_mask = torch.zeros_like(mask)
    for h in range(height):
        for w in range(width):
            out_mask[..., h, w] = window(mask, h, w, k).amax((-2, -1))
    y = conv_ref(img, conv.weight, conv.bias)
    return torch.cat([y * out_mask, out_mask], 1)


def masked_input(shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, *shape, generator=g)
    mask = torch.ones(2, *shape[1:])
    mask[0, 1:5, 1:4] = 0  # a hole: some pixels far from any present one
    mask[1, :, 3:] = 0
    mask[1, 2, 4] = 1  # an island
    x[:, -1] = mask
    return x


def test_masked_conv_forward():
    shape = (3, 6, 7)
    module = build("masked_conv3k", shape)
    x = masked_input(shape)
    with torch.no_grad():
        out = module(x)
        torch.testing.assert_close(out, masked_conv_ref(x, module.conv, 3), atol=1e-5, rtol=1e-4)
    # the mask grows by the receptive field; outputs whose window saw no pixel are zero
    assert out[0, -1, 1, 1] == 1 and out[0, -1, 2, 2] == 0 and (out[0, :-1, 3, 2] == 0).all()
    # a full mask is a plain convolution of the data channels
    full = x.clone()
    full[:, -1] = 1
    with torch.no_grad():
        plain = F.conv2d(full[:, :-1], module.conv.weight, module.conv.bias, padding=1)
        torch.testing.assert_close(module(full), torch.cat([plain, full[:, -1:]], 1))


def test_masked_norm_and_activation_forward():
    shape = (4, 6, 7)
    x = masked_input(shape)
    data, mask = x[:, :-1], x[:, -1:]
    norm = build("masked_norm", shape)
    with torch.no_grad():
        masked = data * mask
        mean = masked.mean((0, 2, 3), keepdim=True)
        var = masked.var((0, 2, 3), unbiased=False, keepdim=True)
        bn = norm.norm
        expected = ((masked - mean) / (var + bn.eps).sqrt() * bn.weight[None, :, None, None]
                    + bn.bias[None, :, None, None]) * mask
        torch.testing.assert_close(norm(x), torch.cat([expected, mask], 1), atol=1e-5, rtol=1e-4)
    act = build("masked_leakyrelu", shape)
    masked = data * mask
    expected = torch.where(masked > 0, masked, 0.01 * masked) * mask
    torch.testing.assert_close(act(x), torch.cat([expected, mask], 1))
    assert terminal("masked_norm").infer((1, 4, 4), NO_CONTEXT) is None
    assert terminal("masked_conv3k").infer((4, 6), NO_CONTEXT) is None


@pytest.mark.parametrize("name", MASKED)
def test_masked_gradients(name):
    shape = (4, 6, 6)
    module = build(name, shape)
    x = masked_input(shape).requires_grad_()
    if n_params(module):
        check_gradients(module, x)
    module.zero_grad()
    x.grad = None
    module(x).square().mean().backward()
    assert x.grad[:, :-1].abs().sum() > 0
    assert (x.grad[:, -1] == 0).all()  # the mask is data: no gradient flows into it


def test_masked_in_architecture_and_reachable():
    text = ("(sequential (computation masked_conv3k) (sequential (computation masked_norm) "
            "(computation masked_leakyrelu)))")
    check_in_architecture(text, (4, 8, 8), "masked_conv3k")
    counts = sample_counts(einspace.load_grammar(terminal_set="seed-papers"), (4, 28, 28), 1000)
    assert all(counts[n] > 0 for n in MASKED), counts
    without = einspace.load_grammar(terminal_set="seed-papers", family_weights={"masking": 0})
    assert not set(MASKED) & {n for names in without.categories.values() for n, _ in names}
    grammar = einspace.load_grammar(add={"compute": MASKED})
    counts = sample_counts(grammar, (4, 28, 28), 1000)
    assert all(counts[n] > 0 for n in MASKED), counts


# -- sampling with the seed-papers terminal set --------------------------------------------------

def leaves(d, found):
    for c in d.children:
        if isinstance(c, str):
            found.add(c)
        else:
            leaves(c, found)
    return found


def sample_counts(grammar, shape, n):
    """In how many of n samples each terminal occurs."""
    sampler = einspace.Sampler(grammar)
    counts = Counter()
    for i in range(n):
        counts.update(leaves(sampler.sample(shape, random.Random(i)).derivation, set()))
    return counts


def test_sampled_with_seed_papers_terminal_set():
    grammar = einspace.load_grammar(terminal_set="seed-papers")
    counts = sample_counts(grammar, (3, 28, 28), 2000)
    missing = sorted(n for n in NAMES - set(MASKED) if counts[n] == 0)
    assert not missing, {n: counts[n] for n in NAMES}


# -- the Inception-ResNet seed ------------------------------------------------------------------

def test_seed_parses_and_round_trips():
    d = einspace.load_seed("inception_resnet")
    assert "inception_resnet" in einspace.seed_names()
    assert einspace.parse(str(d)) == d and einspace.parse(d.pretty()) == d
    names = leaves(d, set())
    assert {"inception_resnet_a", "inception_resnet_b", "inception_resnet_c"} <= names


@pytest.mark.parametrize("shape", [(3, 28, 28), (3, 32, 32)])
def test_seed_builds(shape):
    d = einspace.load_seed("inception_resnet")
    torch.manual_seed(0)
    net = einspace.build(d, shape, num_classes=10)
    assert n_params(net) == einspace.count(d, shape, num_classes=10).params
    assert 300_000 < n_params(net) < 3_000_000
    literal = einspace.build(d, shape, num_classes=10, lower=False)
    lowered_convs = sum(isinstance(m, nn.Conv2d) for m in net.modules())
    literal_convs = sum(isinstance(m, nn.Conv2d) for m in literal.modules())
    assert lowered_convs - literal_convs == 3  # the stem and 2 reductions were lowered
    with torch.no_grad():
        assert net(torch.randn(2, *shape)).shape == (2, 10)
    size = shape[1]
    assert einspace.annotate(d, shape).output_shape == (256, -(-size // 4), -(-size // 4))


def test_seed_trains_one_epoch():
    """256 fixed random 3x16x16 images, labels the argmax of a fixed random linear map of the
    channel means; one epoch of SGD (lr 0.01, momentum 0.9, batch 32)."""
    shape = (3, 16, 16)
    images, labels = random_task(shape)
    torch.manual_seed(0)
    net = einspace.build(einspace.load_seed("inception_resnet"), shape, num_classes=10)
    losses = train_one_epoch(net, images, labels)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0], losses
