"""Seed-paper token mixers (``blocks/token_mixers.py``) against independent computations.

For each paper (CRATE, axial attention, momentum attention, EchoAtt, FIT): the module's output
equals an explicit computation written from the equations (loops and ``torch.einsum``) with the
module's weights; a backward pass reaches every parameter; the terminal builds inside a network
whose ``einspace.count`` matches; the ``seed-papers`` grammar samples it.  The CRATE seed network
parses, round-trips, builds and trains one epoch.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from functools import lru_cache

import pytest
import torch
import torch.nn.functional as F
from seed_checks import checked_params
from torch import nn
from training import random_task, train_one_epoch

import einspace
from einspace.blocks import Kind, get
from einspace.blocks.registry import NO_CONTEXT
from einspace.blocks.token_mixers import TERMINALS

NAMES = [t.name for t in TERMINALS]


def terminal(name):
    return get(Kind.COMPUTATION, name)


def build(name, shape, seed=0):
    torch.manual_seed(seed)
    return terminal(name).build(shape, NO_CONTEXT)


def close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# -- independent reference pieces (einsum, written from the equations) -------------------------

def ref_attention(q, k, v, heads, causal=False):
    """Multi-head softmax attention; q (B, L, D), k/v (B, S, D); heads split D in order."""
    b, length, d = q.shape
    e = d // heads
    qh, kh, vh = (t.reshape(t.shape[0], t.shape[1], heads, e) for t in (q, k, v))
    scores = torch.einsum("blhe,bshe->bhls", qh, kh) / math.sqrt(e)
    if causal:
        future = torch.ones(length, length, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    probs = scores.softmax(-1)
    return torch.einsum("bhls,bshe->blhe", probs, vh).reshape(b, length, d)


def lin(x, layer):
    out = torch.einsum("...i,oi->...o", x, layer.weight)
    return out if layer.bias is None else out + layer.bias


def ln(x, norm):
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def ref_mha(x, context, attn, heads):
    """pix2seq-style MHA with q/k/v/out linear layers held by ``attn``."""
    y = ref_attention(lin(x, attn.query), lin(context, attn.key), lin(context, attn.value), heads)
    return lin(y, attn.out)


def ref_mlp(x, norm, fc1, fc2):
    return lin(F.gelu(lin(ln(x, norm), fc1)), fc2)


def check_gradients(module, x, none_expected=()):
    """Backward of a random projection of the output reaches every parameter."""
    torch.manual_seed(1)
    out = module(x)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in module.named_parameters():
        if name in none_expected:
            assert p.grad is None, name
            continue
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# -- #46 CRATE: MSSA and ISTA --------------------------------------------------------------------

@pytest.mark.parametrize("name,heads", [("mssa4h", 4), ("mssa8h", 8)])
def test_mssa_matches_equation(name, heads):
    n, d = 6, 16
    m = build(name, (n, d))
    x = torch.randn(2, n, d)
    u = m.proj.weight  # w = Uᵀx, U ∈ R^{d×d}: nn.Linear stores Uᵀ as its weight
    w = torch.einsum("bnd,ed->bne", x, u).reshape(2, n, heads, d // heads)
    scores = torch.einsum("bnhe,bmhe->bhnm", w, w) / math.sqrt(d // heads)
    assert torch.equal(scores, scores.transpose(-1, -2))  # Q = K: symmetric logits
    a = scores.softmax(-1)
    y = torch.einsum("bhnm,bmhe->bnhe", a, w).reshape(2, n, d)
    expected = torch.einsum("bnd,od->bno", y, m.out.weight) + m.out.bias
    close(m(x), expected)
    assert m.proj.bias is None  # a single bias-free projection shared as Q = K = V
    assert terminal(name).params((n, d), NO_CONTEXT) == 2 * d * d + d


@pytest.mark.parametrize("name,lam", [("ista", 0.1), ("ista_l05", 0.5)])
def test_ista_matches_equation(name, lam):
    n, d, eta = 5, 12, 0.1
    m = build(name, (n, d))
    x = torch.randn(2, n, d)
    dictionary = m.weight
    expected = torch.empty(2, n, d)
    for b in range(2):
        for t in range(n):
            v = x[b, t]
            step = dictionary.T @ (v - dictionary @ v)
            expected[b, t] = torch.relu(v + eta * step - eta * lam)
    out = m(x)
    close(out, expected)
    # the CRATE reference's three-product form: Dᵀx - DᵀDx
    crate = F.relu(x + eta * (x @ dictionary - (x @ dictionary.T) @ dictionary) - eta * lam)
    close(out, crate)
    assert (out >= 0).all()


def test_crate_gradients():
    x = torch.randn(2, 6, 16)
    for name in ("mssa4h", "mssa8h", "ista", "ista_l05"):
        check_gradients(build(name, (6, 16)), x)


# -- #47 Axial attention -------------------------------------------------------------------------

def ref_axial(m, x, heads, axis):
    """Loop over every row (axis W) or column (axis H): attention over that line of pixels."""
    b, c, h, w = x.shape
    out = torch.empty_like(x)
    wq, wkv, o = m.to_q.weight, m.to_kv.weight, m.to_out
    for i in range(b):
        lines = range(w) if axis == "h" else range(h)
        for j in lines:
            seq = x[i, :, :, j].T if axis == "h" else x[i, :, j, :].T  # (L, C)
            q = seq @ wq.T
            k, v = (seq @ wkv.T).split(c, dim=-1)
            y = ref_attention(q[None], k[None], v[None], heads)[0] @ o.weight.T + o.bias
            if axis == "h":
                out[i, :, :, j] = y.T
            else:
                out[i, :, j, :] = y.T
    return out


@pytest.mark.parametrize("name,heads,axis", [("axial_attention_h", 1, "h"),
                                             ("axial_attention_w", 1, "w"),
                                             ("axial_attention_h4h", 4, "h"),
                                             ("axial_attention_w4h", 4, "w")])
def test_axial_attention_matches_loops(name, heads, axis):
    shape = (8, 5, 3)
    m = build(name, shape)
    x = torch.randn(2, *shape)
    out = m(x)
    close(out, ref_axial(m, x, heads, axis))
    # attention along one axis never mixes the other: change one line, only it changes
    y = x.clone()
    if axis == "h":
        y[:, :, :, 1] += 1.0
        moved = (m(y) - out).abs().sum((0, 1, 2))
        assert moved[1] > 0 and moved[0] == 0 and moved[2] == 0
    else:
        y[:, :, 1, :] += 1.0
        moved = (m(y) - out).abs().sum((0, 1, 3))
        assert moved[1] > 0 and moved[0] == 0 and moved[2] == 0


def test_axial_attention_gradients_and_shape_rule():
    for name in ("axial_attention_h", "axial_attention_w", "axial_attention_h4h",
                 "axial_attention_w4h"):
        check_gradients(build(name, (8, 4, 6)), torch.randn(2, 8, 4, 6))
    assert terminal("axial_attention_h4h").infer((6, 4, 4), NO_CONTEXT) is None
    assert terminal("axial_attention_h").infer((6, 4), NO_CONTEXT) is None
    assert "heads" in terminal("axial_attention_w4h").refusal((6, 4, 4), NO_CONTEXT)


# -- #55 Momentum attention ----------------------------------------------------------------------

def test_momentum_attention_matches_loops():
    n, d, heads, eta = 7, 8, 4, 0.1
    m = build("momentum_attention4h", (n, d))
    x = torch.randn(2, n, d)
    e = d // heads
    q, k, v = lin(x, m.query), lin(x, m.key), lin(x, m.value)
    mixed = torch.zeros(2, n, d)
    for b in range(2):
        for h in range(heads):
            cols = slice(h * e, (h + 1) * e)
            for t in range(n):
                logits = torch.stack([q[b, t, cols] @ k[b, i, cols] / math.sqrt(e)
                                      for i in range(t + 1)])
                probs = logits.softmax(0)
                o = sum(probs[i] * v[b, i, cols] for i in range(t + 1))
                o = o + sum((eta ** (t - i)) * v[b, i, cols] for i in range(t))
                mixed[b, t, cols] = o
    out = m(x)
    close(out, lin(mixed, m.out))
    # causal: changing the last token changes only the last output
    y = x.clone()
    y[:, -1] += 1.0
    moved = (m(y) - out).abs().sum((0, 2))
    assert moved[-1] > 0 and torch.all(moved[:-1] == 0)


def test_momentum_attention_gradients():
    check_gradients(build("momentum_attention4h", (9, 16)), torch.randn(2, 9, 16))


# -- #39 EchoAtt ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,depth", [("echo_attention_block2", 2),
                                        ("echo_attention_block4", 4)])
def test_echo_attention_matches_equation(name, depth):
    n, d, heads = 6, 16, 4
    m = build(name, (n, d))
    x = torch.randn(2, n, d)
    layers = [m.first, *m.rest]
    assert len(layers) == depth
    # A = softmax(Q_1 K_1ᵀ / sqrt(d_h)) once, from layer 1's normalised input
    h = ln(x, layers[0].attn_norm)
    e = d // heads
    qh = lin(h, m.query).reshape(2, n, heads, e)
    kh = lin(h, m.key).reshape(2, n, heads, e)
    a = (torch.einsum("bnhe,bmhe->bhnm", qh, kh) / math.sqrt(e)).softmax(-1)
    y = x
    for layer in layers:
        vh = lin(ln(y, layer.attn_norm), layer.value).reshape(2, n, heads, e)
        y = y + lin(torch.einsum("bhnm,bmhe->bnhe", a, vh).reshape(2, n, d), layer.out)
        y = y + ref_mlp(y, layer.ffn_norm, layer.fc1, layer.fc2)
    close(m(x), y)
    # only the first layer holds Q/K: each later layer has just V, O, two norms and its FFN
    per_layer = sum(p.numel() for p in m.first.parameters())
    qk = 2 * (d * d + d)
    assert sum(p.numel() for p in m.parameters()) == qk + depth * per_layer
    assert not any("query" in k or "key" in k for k, _ in m.first.named_parameters())


def test_echo_attention_gradients():
    for name in ("echo_attention_block2", "echo_attention_block4"):
        check_gradients(build(name, (6, 16)), torch.randn(2, 6, 16))


# -- #31 FIT -------------------------------------------------------------------------------------

def ref_encoder(x, layer, heads):
    h = ln(x, layer.attn_norm)
    x = x + ref_mha(h, h, layer.attn, heads)
    return x + ref_mlp(x, layer.ffn_norm, layer.fc1, layer.fc2)


def ref_cross(x, context, layer, heads):
    return x + ref_mha(ln(x, layer.query_norm), ln(context, layer.context_norm), layer.attn, heads)


@pytest.mark.parametrize("name,groups", [("fit_block4g", 4), ("fit_block7g", 7)])
def test_fit_block_matches_group_loops(name, groups):
    per_group, d, heads, m_lat = 3, 8, 4, 4
    n = groups * per_group
    m = build(name, (n, d))
    x = torch.randn(2, n, d)
    out = torch.empty(2, n, d)
    for b in range(2):
        # local attention inside each group, then each group's latents read their group
        local, latents = [], []
        for g in range(groups):
            tokens = x[b:b + 1, g * per_group:(g + 1) * per_group]
            tokens = ref_encoder(tokens, m.local_layer, heads)
            local.append(tokens)
            latents.append(ref_cross(m.latents[g][None], tokens, m.read, heads))
        # global attention over all G*m latents of the sample
        everything = ref_encoder(torch.cat(latents, 1), m.global_layer, heads)
        for g in range(groups):
            mine = everything[:, g * m_lat:(g + 1) * m_lat]
            out[b, g * per_group:(g + 1) * per_group] = ref_cross(local[g], mine, m.write,
                                                                  heads)[0]
    close(m(x), out)
    assert m.latents.shape == (groups, m_lat, d)


def test_fit_block_gradients_and_shape_rule():
    check_gradients(build("fit_block4g", (8, 16)), torch.randn(2, 8, 16))
    check_gradients(build("fit_block7g", (14, 8)), torch.randn(2, 14, 8))
    t = terminal("fit_block4g")
    assert t.infer((10, 16), NO_CONTEXT) is None  # 10 tokens do not split into 4 groups
    assert "groups" in t.refusal((10, 16), NO_CONTEXT)
    assert t.infer((12, 6), NO_CONTEXT) is None  # width 6 does not split into 4 heads
    assert t.infer((12, 16), NO_CONTEXT) == (12, 16)


# -- inside architectures -------------------------------------------------------------------------

TOKENS = "(sequential (routing im2col4k4s0p (computation linear32) identity) (computation {}))"
IMAGE_16 = ("(sequential (routing im2col1k1s0p (computation linear16) col2im) "
            "(computation {}))")
# name: (derivation text, input shape, backbone output shape)
ARCHS = {
    **{name: (TOKENS, (3, 16, 16), (16, 32)) for name in (
        "mssa4h", "mssa8h", "ista", "ista_l05", "momentum_attention4h",
        "echo_attention_block2", "echo_attention_block4", "fit_block4g")},
    "fit_block7g": (TOKENS, (3, 28, 28), (49, 32)),
    "axial_attention_h": ("(computation {})", (3, 12, 10), (3, 12, 10)),
    "axial_attention_w": ("(computation {})", (3, 12, 10), (3, 12, 10)),
    "axial_attention_h4h": (IMAGE_16, (3, 12, 10), (16, 12, 10)),
    "axial_attention_w4h": (IMAGE_16, (3, 12, 10), (16, 12, 10)),
}


def test_every_terminal_has_an_architecture_test():
    assert set(ARCHS) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_builds_inside_an_architecture(name):
    text, shape, features = ARCHS[name]
    d = einspace.parse(text.format(name))
    assert einspace.annotate(d, shape).output_shape == features
    torch.manual_seed(0)
    net = einspace.build(d, shape, num_classes=5)
    module_type = type(terminal(name).build(ARCHS[name][2], NO_CONTEXT))
    assert any(type(m) is module_type for m in net.modules())
    out = net(torch.randn(3, *shape))
    assert out.shape == (3, 5)
    out.square().mean().backward()
    params = list(net.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert einspace.count(d, shape, num_classes=5).params == sum(p.numel() for p in params)


@lru_cache(maxsize=None)
def sampled_counts(shape, samples=2000):
    sampler = einspace.Sampler(einspace.load_grammar(terminal_set="seed-papers"))
    rng = random.Random(0)
    counts = Counter()
    for _ in range(samples):
        d = sampler.sample(shape, rng).derivation
        counts.update({node for _, node in d.walk() if isinstance(node, str)} & set(NAMES))
    return counts


@pytest.mark.parametrize("name", NAMES)
def test_seed_papers_grammar_samples_it(name):
    """Image-mode terminals at 3x28x28; token terminals at 3x28x28 too (im2col makes 49, 196 or
    784 tokens there, so both FIT group counts fit) and at 1x24x24 for all but fit_block7g."""
    assert terminal(name).category == "compute"
    assert sampled_counts((3, 28, 28))[name] > 0
    if name != "fit_block7g":
        assert sampled_counts((1, 24, 24))[name] > 0


# -- the CRATE seed network -----------------------------------------------------------------------

def test_crate_seed_parses_round_trips_and_builds():
    d = einspace.load_seed("crate")
    assert einspace.parse(str(d)) == d
    assert einspace.parse(d.pretty()) == d
    names = {node for _, node in d.walk() if isinstance(node, str)}
    assert {"im2col4k4s0p", "linear256", "learnable_positional_encoding", "norm", "mssa4h",
            "ista"} <= names
    for shape in ((3, 28, 28), (3, 32, 32)):
        assert 300_000 < checked_params(d, shape) < 3_000_000


def test_crate_seed_trains_one_epoch():
    """256 fixed random images, labels from a fixed random linear map; one epoch of SGD.  Every
    batch loss is finite and the loss on all 256 images drops over the epoch."""
    shape, classes = (3, 28, 28), 10
    images, labels = random_task(shape, classes, colour_cast=True)
    torch.manual_seed(0)
    net = einspace.build(einspace.load_seed("crate"), shape, num_classes=classes)

    def full_loss():
        with torch.no_grad():
            return nn.functional.cross_entropy(net(images), labels).item()

    first = full_loss()
    losses = train_one_epoch(net, images, labels)
    final = full_loss()
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses)
    assert math.isfinite(final) and final < first
