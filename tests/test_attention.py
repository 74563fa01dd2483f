"""Attention-family seed-paper terminals (``blocks/attention.py``) and the ConViT / SLAB seeds.

Each primitive's forward pass is recomputed here from the paper's equations with explicit loops
or ``torch.einsum`` on the module's own weights; gradients must reach every trainable parameter;
each terminal is built inside an architecture, and the sampler must draw it.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
import torch
from seed_checks import checked_params
from training import random_task, train_one_epoch

import einspace
from einspace.blocks import Kind, get
from einspace.blocks.progress import set_training_progress
from einspace.blocks.registry import NO_CONTEXT

SIGMOID = ["sigmoid_attention1h", "sigmoid_attention4h", "sigmoid_attention8h"]
GPSA = ["gpsa4h", "gpsa9h", "gpsa16h"]
SLA = ["sla_attention4h", "sla_attention8h"]
NORMS = ["repbn", "prepbn"]
RF = ["rf_attention4h", "rf_attention4h_zeromean"]
SSA = ["ssa_attention4h", "ssa_attention8h", "ssa_attention4h_causal"]
ALL = SIGMOID + GPSA + SLA + NORMS + RF + SSA


def build(name, shape):
    terminal = get(Kind.COMPUTATION, name)
    assert terminal.infer(shape, NO_CONTEXT) == shape
    return terminal, terminal.build(shape, NO_CONTEXT)


def randomise(module, std=0.5):
    """Move every parameter off its (often symmetric) initial value."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * std)


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def heads_of(t, h):
    """(B, N, D) -> (B, H, N, D/H)."""
    b, n, d = t.shape
    return t.reshape(b, n, h, d // h).permute(0, 2, 1, 3)


def merge_heads(t):
    b, h, n, c = t.shape
    return t.permute(0, 2, 1, 3).reshape(b, n, h * c)


def check_gradients(module, x, frozen=()):
    out = module(x)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in module.named_parameters():
        if name in frozen:
            assert p.grad is None or torch.count_nonzero(p.grad) == 0, name
            continue
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert torch.count_nonzero(p.grad) > 0, name


# -- #33 sigmoid attention -------------------------------------------------------------------


@pytest.mark.parametrize("name,heads", [("sigmoid_attention4h", 4), ("sigmoid_attention1h", 1)])
def test_sigmoid_attention_forward(name, heads):
    torch.manual_seed(0)
    n, d = 9, 16
    _, m = build(name, (n, d))
    randomise(m, 0.2)
    x = torch.randn(2, n, d)
    wq, wk, wv = m.qkv.weight.chunk(3, dim=0)
    q = heads_of(x @ wq.T, heads)
    k = heads_of(x @ wk.T, heads)
    v = heads_of(x @ wv.T, heads)
    q = layer_norm(q, m.q_norm.weight, m.q_norm.bias, m.q_norm.eps)
    k = layer_norm(k, m.k_norm.weight, m.k_norm.bias, m.k_norm.eps)
    logits = torch.einsum("bhic,bhjc->bhij", q, k) / math.sqrt(d // heads) - math.log(n)
    y = merge_heads(torch.einsum("bhij,bhjc->bhic", torch.sigmoid(logits), v)) @ m.proj.weight.T
    torch.testing.assert_close(m(x), y)
    assert m.bias == pytest.approx(-math.log(n))
    assert "bias" not in dict(m.named_parameters())  # a constant, not a parameter


def test_sigmoid_attention_gradients():
    torch.manual_seed(0)
    _, m = build("sigmoid_attention8h", (16, 32))
    check_gradients(m, torch.randn(3, 16, 32))


# -- #25 ConViT GPSA ----------------------------------------------------------------------------


def gpsa_reference(m, x, side):
    """GPSA from the equations, relative offsets computed from patch coordinates in loops."""
    b, n, d = x.shape
    h = m.heads
    c = d // h
    rel = torch.zeros(n, n, 3)
    for i in range(n):
        for j in range(n):
            dx = j % side - i % side
            dy = j // side - i // side
            rel[i, j] = torch.tensor([dx, dy, dx * dx + dy * dy], dtype=torch.float)
    pos = torch.einsum("ijr,hr->hij", rel, m.pos_proj.weight) + m.pos_proj.bias.view(h, 1, 1)
    pos = torch.softmax(pos, -1)
    wq, wk = m.qk.weight.chunk(2, dim=0)
    q, k = heads_of(x @ wq.T, h), heads_of(x @ wk.T, h)
    content = torch.softmax(torch.einsum("bhic,bhjc->bhij", q, k) / math.sqrt(c), -1)
    g = torch.sigmoid(m.gating_param).view(h, 1, 1)
    attn = (1 - g) * content + g * pos
    attn = attn / attn.sum(-1, keepdim=True)
    v = heads_of(x @ m.v.weight.T, h)
    return merge_heads(torch.einsum("bhij,bhjc->bhic", attn, v)) @ m.proj.weight.T + m.proj.bias


@pytest.mark.parametrize("name,shape", [("gpsa4h", (16, 8)), ("gpsa9h", (9, 18)),
                                        ("gpsa16h", (4, 32))])
def test_gpsa_forward(name, shape):
    torch.manual_seed(0)
    _, m = build(name, shape)
    randomise(m, 0.3)
    x = torch.randn(2, *shape)
    torch.testing.assert_close(m(x), gpsa_reference(m, x, math.isqrt(shape[0])))


def test_gpsa_local_init_and_shape_rule():
    terminal, m = build("gpsa9h", (25, 18))
    assert torch.equal(m.v.weight, torch.eye(18))
    assert torch.equal(m.gating_param, torch.ones(9))
    assert torch.count_nonzero(m.pos_proj.bias) == 0
    # head h1 + 3 h2 starts as the kernel pixel at offset (row h1 - 1, column h2 - 1)
    pos = m.pos_proj(m.rel_indices).reshape(25, 25, 9)
    center = 12  # patch (2, 2) of the 5x5 grid
    for h1 in range(3):
        for h2 in range(3):
            j = int(pos[center, :, h1 + 3 * h2].argmax())
            assert (j // 5 - 2, j % 5 - 2) == (h1 - 1, h2 - 1)
    assert terminal.infer((24, 18), NO_CONTEXT) is None  # not a square grid
    assert terminal.infer((25, 16), NO_CONTEXT) is None  # 16 not divisible by 9 heads
    assert "square" in terminal.refusal((24, 18), NO_CONTEXT)


def test_gpsa_gradients():
    torch.manual_seed(0)
    _, m = build("gpsa4h", (16, 16))
    check_gradients(m, torch.randn(2, 16, 16))


# -- #26 SLAB -----------------------------------------------------------------------------------


def sla_reference(m, x):
    """Loops over batch, head and query: ReLU linear attention plus the depthwise 5x5 conv."""
    b, n, d = x.shape
    h, c, s = m.heads, m.head_dim, m.side
    wq, wk, wv = m.qkv.weight.chunk(3, dim=0)
    bq, bk, bv = m.qkv.bias.chunk(3)
    q = torch.relu(x @ wq.T + bq)
    k = torch.relu(x @ wk.T + bk + m.positional_encoding)
    v = x @ wv.T + bv
    out = torch.zeros(b, n, d)
    weight, bias = m.dwc_weight[:, 0], m.dwc_bias  # (c, 5, 5), (c,)
    r = weight.size(-1) // 2
    for bi in range(b):
        for hi in range(h):
            sl = slice(hi * c, (hi + 1) * c)
            qh, kh, vh = q[bi, :, sl], k[bi, :, sl], v[bi, :, sl]
            kv = sum(torch.outer(kh[j], vh[j]) for j in range(n))
            ksum = kh.sum(0)
            for i in range(n):
                o = (qh[i] @ kv) / (qh[i] @ ksum + 1e-6)
                row, col = divmod(i, s)
                conv = bias.clone()
                for dr in range(-r, r + 1):
                    for dc in range(-r, r + 1):
                        rr, cc = row + dr, col + dc
                        if 0 <= rr < s and 0 <= cc < s:
                            conv = conv + weight[:, dr + r, dc + r] * vh[rr * s + cc]
                out[bi, i, sl] = o + conv
    return out @ m.proj.weight.T + m.proj.bias


@pytest.mark.parametrize("name,shape", [("sla_attention4h", (16, 8)),    # k^T v first
                                        ("sla_attention4h", (4, 32)),    # q k^T first
                                        ("sla_attention8h", (9, 16))])
def test_sla_attention_forward(name, shape):
    torch.manual_seed(0)
    _, m = build(name, shape)
    randomise(m, 0.3)
    assert m.kv_first == (shape[0] > shape[1] // m.heads)
    x = torch.randn(2, *shape)
    torch.testing.assert_close(m(x), sla_reference(m, x), rtol=1e-4, atol=1e-4)


def test_sla_attention_gradients_and_shape_rule():
    torch.manual_seed(0)
    terminal, m = build("sla_attention4h", (16, 16))
    check_gradients(m, torch.randn(2, 16, 16))
    assert terminal.infer((12, 16), NO_CONTEXT) is None
    assert terminal.params((16, 16), NO_CONTEXT) == sum(p.numel() for p in m.parameters())


def test_repbn_forward_tokens_and_images():
    torch.manual_seed(0)
    for shape in [(6, 8), (4, 5, 5)]:
        _, m = build("repbn", shape)
        randomise(m, 0.3)
        x = torch.randn(3, *shape)
        dims = (0, 1) if len(shape) == 2 else (0, 2, 3)
        view = (1, 1, -1) if len(shape) == 2 else (1, -1, 1, 1)
        mean = x.mean(dims, keepdim=True)
        var = x.var(dims, unbiased=False, keepdim=True)
        bn = (x - mean) / torch.sqrt(var + m.bn.eps) * m.bn.weight.view(view) + \
            m.bn.bias.view(view)
        torch.testing.assert_close(m(x), bn + m.alpha * x)
        m.eval()  # running statistics after one training forward
        rm = m.bn.running_mean.view(view)
        rv = m.bn.running_var.view(view)
        bn = (x - rm) / torch.sqrt(rv + m.bn.eps) * m.bn.weight.view(view) + m.bn.bias.view(view)
        torch.testing.assert_close(m(x), bn + m.alpha * x)


def test_prepbn_schedule_follows_training_progress():
    torch.manual_seed(0)
    terminal, m = build("prepbn", (6, 8))
    randomise(m, 0.3)
    x = torch.randn(4, 6, 8)
    ln = layer_norm(x, m.norm1.weight, m.norm1.bias, 1e-6)
    assert m.norm1.eps == 1e-6
    mean = x.mean((0, 1), keepdim=True)
    var = x.var((0, 1), unbiased=False, keepdim=True)
    rep = (x - mean) / torch.sqrt(var + 1e-5) * m.norm2.bn.weight + m.norm2.bn.bias + \
        m.norm2.alpha * x
    decay = terminal.hyperparameters()["decay"]
    for progress, lam in [(0.0, 1.0), (decay / 2, 0.5), (decay, 0.0), (0.7, 0.0)]:
        assert set_training_progress(m, progress) == 1
        torch.testing.assert_close(m(x), lam * ln + (1 - lam) * rep)
    m.eval()
    set_training_progress(m, 0.0)  # evaluation is RepBN whatever the progress
    torch.testing.assert_close(m(x), m.norm2(x))


def test_prepbn_gradients():
    """Mid-schedule both norms train; in evaluation the LayerNorm is unused (no gradient)."""
    torch.manual_seed(0)
    _, m = build("prepbn", (6, 8))
    set_training_progress(m, 0.05)
    check_gradients(m, torch.randn(3, 6, 8))
    m.zero_grad(set_to_none=True)
    m.eval()
    check_gradients(m, torch.randn(3, 6, 8), frozen=("norm1.weight", "norm1.bias"))


# -- #23 random-feature attention ----------------------------------------------------------------


@pytest.mark.parametrize("name,mean", [("rf_attention4h", 1.0), ("rf_attention4h_zeromean", 0.0)])
def test_rf_attention_forward_and_frozen_query_keys(name, mean):
    torch.manual_seed(0)
    n, d, heads = 9, 64, 4
    terminal, m = build(name, (n, d))
    x = torch.randn(2, n, d)
    w = m.qk.reshape(d, heads, d).permute(1, 0, 2)  # W_m, (M, D, D)
    values = m.value.weight.T.reshape(heads, d, d)  # v_m, (M, D, D_out)
    logits = torch.einsum("bic,mce,bje->bmij", x, w, x) / d
    y = torch.einsum("bmij,bjc,mco->bio", torch.softmax(logits, -1), x, values)
    torch.testing.assert_close(m(x), y, rtol=1e-4, atol=1e-5)
    # the query-key matrices are frozen buffers: saved, not trained, not counted
    assert [n for n, _ in m.named_parameters()] == ["value.weight"]
    assert "qk" in m.state_dict() and not m.qk.requires_grad
    assert terminal.params((n, d), NO_CONTEXT) == heads * d * d
    eye = torch.eye(d, dtype=torch.bool)
    assert abs(float(w[:, eye].mean()) - mean) < 0.3
    assert abs(float(w[:, ~eye].mean())) < 0.05 and abs(float(w[:, ~eye].std()) - 1) < 0.05


def test_rf_attention_gradients_reach_values_only():
    torch.manual_seed(0)
    _, m = build("rf_attention4h", (16, 8))
    check_gradients(m, torch.randn(2, 16, 8))
    assert m.qk.grad is None


# -- #14 selective attention ---------------------------------------------------------------------


@pytest.mark.parametrize("name", SSA)
def test_ssa_attention_forward(name):
    torch.manual_seed(0)
    n, d = 6, 16
    terminal, m = build(name, (n, d))
    heads, causal = terminal.heads, terminal.causal
    randomise(m, 0.3)
    x = torch.randn(2, n, d)
    wq, wk, wv = m.qkv.weight.chunk(3, dim=0)
    bq, bk, bv = m.qkv.bias.chunk(3)
    q = heads_of(x @ wq.T + bq, heads)
    k = heads_of(x @ wk.T + bk, heads)
    v = heads_of(x @ wv.T + bv, heads)
    gates = torch.tanh(torch.einsum("bic,gc->bgi", x, m.temperature.weight))  # (b, 2h, n)
    visible = torch.arange(1, n + 1, dtype=torch.float) if causal else torch.full((n,), n * 1.)
    tau_pos = 1 + math.exp(-math.exp(float(m.beta.detach()))) * torch.log(visible)
    tau_q = tau_pos.view(1, 1, n) + gates[:, :heads]
    tau_v = 1 + gates[:, heads:]
    logits = torch.einsum("bhic,bhjc->bhij", q * tau_q[..., None], k) / math.sqrt(d // heads)
    if causal:
        logits = logits.masked_fill(torch.ones(n, n).triu(1).bool(), float("-inf"))
    attn = torch.softmax(logits, -1)
    y = merge_heads(torch.einsum("bhij,bhjc->bhic", attn, v * tau_v[..., None]))
    y = y @ m.proj.weight.T + m.proj.bias
    torch.testing.assert_close(m(x), y, rtol=1e-4, atol=1e-5)


def test_ssa_attention_initial_temperature_and_gradients():
    torch.manual_seed(0)
    _, m = build("ssa_attention4h", (16, 16))
    assert float(m.beta.detach()) == 1.5 and torch.count_nonzero(m.temperature.weight) == 0
    check_gradients(m, torch.randn(2, 16, 16))


# -- inside architectures ------------------------------------------------------------------------


def host(name):
    """A derivation giving ``name`` tokens it accepts, and its input shape."""
    if name == "gpsa9h":  # 3x3 patches of 3 channels: 27 features, 6x6 tokens
        return (f"(sequential (routing im2col3k2s1p (computation identity) identity) "
                f"(computation {name}))"), (3, 12, 12)
    return (f"(sequential (routing im2col4k4s0p (computation linear32) identity) "
            f"(computation {name}))"), (3, 16, 16)


@pytest.mark.parametrize("name", ALL)
def test_terminal_inside_an_architecture(name):
    torch.manual_seed(0)
    text, shape = host(name)
    d = einspace.parse(text)
    net = einspace.build(d, shape, num_classes=5)
    x = torch.randn(4, *shape)
    out = net(x)
    assert out.shape == (4, 5)
    out.sum().backward()
    trainable = [p for p in net.parameters()]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
    assert einspace.count(d, shape, num_classes=5).params == sum(p.numel() for p in trainable)


def test_sampler_draws_every_terminal():
    sampler = einspace.Sampler(einspace.load_grammar(terminal_set="seed-papers"))
    seen = Counter()
    samples = 3000
    for i in range(samples):
        text = str(sampler.sample((1, 24, 24), random.Random(i)).derivation)
        seen.update(name for name in ALL if f"(computation {name})" in text)
    print({name: f"{seen[name] / samples:.1%}" for name in ALL})
    assert all(seen[name] > 0 for name in ALL), seen


# -- seeds ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", ["convit", "slab"])
def test_seed_parses_builds_and_trains(seed):
    d = einspace.load_seed(seed)
    assert einspace.parse(str(d)) == d
    assert einspace.parse(d.pretty()) == d
    for shape in [(3, 28, 28), (3, 32, 32)]:
        assert 200_000 < checked_params(d, shape) < 5_000_000
    torch.manual_seed(0)
    shape = (3, 28, 28)
    net = einspace.build(d, shape, num_classes=10)
    images, labels = random_task(shape, colour_cast=True)
    losses = train_one_epoch(net, images, labels)
    assert all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < losses[0], losses
    net.eval()
    with torch.no_grad():
        assert torch.isfinite(net(images[:8])).all()
