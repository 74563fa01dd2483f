"""Attention-family seed-paper primitives (token mode) and the SLAB normalisations.

Every attention terminal here is one atomic computation terminal that builds a whole multi-head
attention layer (projections included) on ``(N, D)`` tokens and returns ``(N, D)``:

* ``sigmoid_attention{1,4,8}h`` -- sigmoid self-attention with bias ``b = -ln N`` and QK-norm
  (Ramapuram et al., 2024);
* ``gpsa{4,9,16}h`` -- ConViT's gated positional self-attention on a square token grid
  (d'Ascoli et al., 2021);
* ``sla_attention{4,8}h`` -- SLAB's simplified linear attention (ReLU kernel plus a 5x5 depthwise
  convolution of V on the square token grid) (Guo et al., 2024);
* ``rf_attention4h`` / ``rf_attention4h_zeromean`` -- random-feature attention: frozen random
  query-key matrices, trainable values (Fu et al., 2023);
* ``ssa_attention{4,8}h`` / ``ssa_attention4h_causal`` -- selective attention with a
  position-aware query temperature (Zhang et al., 2024).

and two normalisation terminals from SLAB: ``repbn`` (BatchNorm plus a learnable scaled identity)
and ``prepbn`` (LayerNorm progressively replaced by RepBN, following the ``training_progress``
buffer of :mod:`blocks.progress`).

FLOPs follow ``torch.utils.flop_counter``: only matrix products and convolutions count.  Frozen
tensors (random query-key matrices, relative-position tables, the ``-ln N`` bias) are buffers or
plain numbers, so ``params`` counts exactly the trainable parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .progress import PROGRESS_BUFFER, progress_buffer
from .registry import Context, Kind, Shape, Terminal, mode_of, register_all


def _is_square(n: int) -> int:
    """The side S when ``n == S * S``, else 0."""
    s = math.isqrt(n)
    return s if s * s == n else 0


class TokenAttention(Terminal):
    """Shared shape rule of the token attention terminals: (N, D) -> (N, D), D divisible by the
    head count, optionally a square token count."""

    kind = Kind.COMPUTATION
    modes = frozenset({"col"})
    family = "attention"
    category = "compute"
    needs_square_grid = False

    def __init__(self, name: str, heads: int):
        self.name = name
        self.heads = heads

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        if len(x) != 2 or x[1] % self.heads:
            return None
        if self.needs_square_grid and not _is_square(x[0]):
            return None
        return x

    def refusal(self, x: Shape, ctx: Context) -> str:
        if len(x) == 2 and x[1] % self.heads:
            return f"the width {x[1]} is not divisible by {self.heads} heads"
        if len(x) == 2 and self.needs_square_grid:
            return f"{x[0]} tokens do not form a square grid"
        return ""


# --------------------------------------------------------------------------------------------
# #33 Sigmoid self-attention
# --------------------------------------------------------------------------------------------


class SigmoidAttentionModule(nn.Module):
    """y = W_o concat_h( sigmoid(LN(q_h) LN(k_h)^T / sqrt(d_h) + b) v_h ), b = -ln N.

    Follows ``apple/ml-sigmoid-attention``, ``attention_simulator/.../layers/attention.py``
    (class ``Attention``): one bias-free qkv projection, LayerNorm over each head's d_h (shared
    by the heads) on q and k, the bias a constant (a buffer there, not learnable), no row
    normalisation, a bias-free output projection."""

    def __init__(self, dim: int, heads: int, tokens: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.bias = -math.log(tokens)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm = nn.LayerNorm(self.head_dim)
        self.k_norm = nn.LayerNorm(self.head_dim)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.size(0), x.size(1), x.size(2)
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = self.q_norm(qkv[0]) * self.scale
        k = self.k_norm(qkv[1])
        attn = torch.sigmoid(torch.matmul(q, k.transpose(-2, -1)) + self.bias)
        out = torch.matmul(attn, qkv[2]).transpose(1, 2).reshape(b, n, d)
        return self.proj(out)


class SigmoidAttention(TokenAttention):
    """Sigmoid self-attention (Ramapuram et al., 2024), ``b = -ln N`` with N the token count of
    the input the terminal is built for (recomputed when the same text is built for another
    shape), QK-norm on.  The paper's other stabiliser, LayerScale on the attention output, is a
    block-level choice and left to the grammar."""

    paper = ("Theory, Analysis, and Best Practices for Sigmoid Self-Attention "
             "(Ramapuram et al., 2024)")
    seed_papers = (33,)
    reference = ("apple/ml-sigmoid-attention: attention_simulator/src/attention_simulator/"
                 "layers/attention.py (Attention)")

    def __init__(self, heads: int):
        super().__init__(f"sigmoid_attention{heads}h", heads)
        self.description = (f"{heads}-head sigmoid self-attention, bias -ln N, QK-norm, "
                            f"no softmax row normalisation")

    def params(self, x: Shape, ctx: Context) -> int:
        d = x[1]
        return 4 * d * d + 4 * (d // self.heads)

    def flops(self, x: Shape, ctx: Context) -> int:
        n, d = x
        return 8 * n * d * d + 4 * n * n * d

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return SigmoidAttentionModule(x[1], self.heads, x[0])

    def hyperparameters(self) -> dict:
        return {"heads": self.heads, "bias": "-ln N", "qk_norm": True}


# --------------------------------------------------------------------------------------------
# #25 ConViT gated positional self-attention
# --------------------------------------------------------------------------------------------


def relative_indices(side: int) -> Tensor:
    """(N*N, 3) table of (dx, dy, dx^2 + dy^2) from query patch i to key patch j on a
    side x side grid, tokens in row-major order (row i // side, column i % side)."""
    idx = torch.arange(side)
    col = idx.repeat(side)
    row = idx.repeat_interleave(side)
    dx = (col.view(1, -1) - col.view(-1, 1)).float()
    dy = (row.view(1, -1) - row.view(-1, 1)).float()
    return torch.stack([dx, dy, dx * dx + dy * dy], dim=-1).reshape(-1, 3)


class GPSAModule(nn.Module):
    """Gated positional self-attention (ConViT), after ``facebookresearch/convit``,
    ``convit.py`` class ``GPSA``:

    * content scores C = softmax(q k^T / sqrt(d_h)) with q, k from one bias-free D -> 2D linear;
    * position scores P = softmax(pos_proj(r_ij)), r_ij = (dx, dy, dx^2 + dy^2), pos_proj a
      3 -> H linear with bias (computed once per batch: it depends on the weights only);
    * A = (1 - sigmoid(lambda_h)) C + sigmoid(lambda_h) P, rows renormalised; y = W_o (A v).

    Initialisation as the reference: trunc-normal(0.02) linears, zero biases, lambda_h = 1, and
    the local init: W_v = I and head (h1, h2) of the sqrt(H) x sqrt(H) lattice gets
    pos_proj = alpha * (2 (h2 - c), 2 (h1 - c), -1), so it attends around offset (h2 - c, h1 - c).
    """

    def __init__(self, dim: int, heads: int, side: int, locality: float = 1.0):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.tokens = side * side
        self.qk = nn.Linear(dim, 2 * dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.pos_proj = nn.Linear(3, heads)
        self.gating_param = nn.Parameter(torch.ones(heads))
        self.register_buffer("rel_indices", relative_indices(side))
        for linear in (self.qk, self.v, self.proj, self.pos_proj):
            nn.init.trunc_normal_(linear.weight, std=0.02)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
        self.local_init(locality)

    @torch.no_grad()
    def local_init(self, locality: float) -> None:
        self.v.weight.copy_(torch.eye(self.v.weight.size(0)))
        kernel = math.isqrt(self.heads)
        center = (kernel - 1) / 2 if kernel % 2 == 0 else kernel // 2
        for h1 in range(kernel):
            for h2 in range(kernel):
                head = h1 + kernel * h2
                self.pos_proj.weight[head, 2] = -1.0
                self.pos_proj.weight[head, 1] = 2.0 * (h1 - center)
                self.pos_proj.weight[head, 0] = 2.0 * (h2 - center)
        self.pos_proj.weight.mul_(locality)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.size(0), x.size(1), x.size(2)
        qk = self.qk(x).reshape(b, n, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        content = torch.softmax(torch.matmul(qk[0], qk[1].transpose(-2, -1)) * self.scale, -1)
        pos = self.pos_proj(self.rel_indices).reshape(n, n, self.heads).permute(2, 0, 1)
        pos = torch.softmax(pos, dim=-1)
        gate = torch.sigmoid(self.gating_param).view(-1, 1, 1)
        attn = (1.0 - gate) * content + gate * pos
        attn = attn / attn.sum(dim=-1, keepdim=True)
        v = self.v(x).reshape(b, n, self.heads, self.head_dim).transpose(1, 2)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, d)
        return self.proj(out)


class GPSA(TokenAttention):
    """ConViT GPSA on a square token grid N = S^2 (no class token), H a perfect square for the
    local initialisation, locality strength alpha = 1."""

    paper = ("ConViT: Improving Vision Transformers with Soft Convolutional Inductive Biases "
             "(d'Ascoli et al., 2021)")
    seed_papers = (25,)
    reference = "facebookresearch/convit: convit.py (GPSA: get_attention, local_init, " \
                "get_rel_indices)"
    needs_square_grid = True

    def __init__(self, heads: int, locality: float = 1.0):
        assert math.isqrt(heads) ** 2 == heads, "GPSA's local init needs a square head count"
        super().__init__(f"gpsa{heads}h", heads)
        self.locality = locality
        self.description = (f"{heads}-head gated positional self-attention on a square token "
                            f"grid (content softmax mixed with a relative-position softmax)")
        self.examples = ((16, 18), (4, 9)) if heads == 9 else ()

    def params(self, x: Shape, ctx: Context) -> int:
        d, h = x[1], self.heads
        return 4 * d * d + d + 5 * h

    def flops(self, x: Shape, ctx: Context) -> int:
        n, d = x
        return 8 * n * d * d + 4 * n * n * d

    def shared_flops(self, x: Shape, ctx: Context) -> int:
        n = x[0]
        return 2 * n * n * 3 * self.heads  # position scores: once per batch

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return GPSAModule(x[1], self.heads, _is_square(x[0]), self.locality)

    def hyperparameters(self) -> dict:
        return {"heads": self.heads, "locality_strength": self.locality, "gate_init": 1.0,
                "local_init": True}


# --------------------------------------------------------------------------------------------
# #26 SLAB: simplified linear attention, RepBN, PRepBN
# --------------------------------------------------------------------------------------------


class SLAModule(nn.Module):
    """Simplified linear attention, after ``xinghaochen/SLAB``, ``classification/models/
    slab_deit.py`` class ``Attention``:

    q, k, v = x W_qkv (with bias); k += P (learned, zero init); phi = ReLU;
    o_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j) + 1e-6) per head, in
    fp32, with the cheaper association order (k^T v first when N > d_h, as the reference);
    o += DWConv_kxk(v on the S x S grid), one depthwise conv of d_h channels shared by the heads;
    y = W_o o."""

    def __init__(self, dim: int, heads: int, side: int, kernel: int = 5):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.side = side
        self.kv_first = side * side > self.head_dim
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.padding = kernel // 2
        # the depthwise conv's weights as plain parameters (initialised like nn.Conv2d's), so
        # the literal build holds no nn.Conv2d for the lowering checks to mistake for a lowering
        self.dwc_weight = nn.Parameter(torch.empty(self.head_dim, 1, kernel, kernel))
        self.dwc_bias = nn.Parameter(torch.empty(self.head_dim))
        nn.init.kaiming_uniform_(self.dwc_weight, a=math.sqrt(5))
        nn.init.uniform_(self.dwc_bias, -1.0 / kernel, 1.0 / kernel)  # 1 / sqrt(fan_in)
        self.positional_encoding = nn.Parameter(torch.zeros(1, side * side, dim))

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.size(0), x.size(1), x.size(2)
        h, c = self.heads, self.head_dim
        qkv = self.qkv(x).reshape(b, n, 3, d).permute(2, 0, 1, 3)
        q = torch.relu(qkv[0])
        k = torch.relu(qkv[1] + self.positional_encoding)
        v = qkv[2]
        work = torch.promote_types(x.dtype, torch.float32)  # at least fp32 (traceable)
        q = q.reshape(b, n, h, c).transpose(1, 2).reshape(b * h, n, c).to(work)
        k = k.reshape(b, n, h, c).transpose(1, 2).reshape(b * h, n, c).to(work)
        v = v.reshape(b, n, h, c).transpose(1, 2).reshape(b * h, n, c).to(work)
        z = 1.0 / (torch.matmul(q, k.sum(dim=1).unsqueeze(-1)) + 1e-6)
        if self.kv_first:
            out = torch.matmul(q, torch.matmul(k.transpose(1, 2), v)) * z
        else:
            out = torch.matmul(torch.matmul(q, k.transpose(1, 2)), v) * z
        grid = v.reshape(b * h, self.side, self.side, c).permute(0, 3, 1, 2)
        local = F.conv2d(grid, self.dwc_weight.to(work), self.dwc_bias.to(work),
                         padding=self.padding, groups=c)
        out = out + local.permute(0, 2, 3, 1).reshape(b * h, n, c)
        out = out.to(x.dtype).reshape(b, h, n, c).transpose(1, 2).reshape(b, n, d)
        return self.proj(out)


class SLAAttention(TokenAttention):
    """SLAB simplified linear attention on a square token grid (the depthwise conv needs the
    grid); k_dwc = 5; the positional encoding P is sized from the token count."""

    paper = ("SLAB: Efficient Transformers with Simplified Linear Attention and Progressive "
             "Re-parameterized Batch Normalization (Guo et al., 2024)")
    seed_papers = (26,)
    reference = "xinghaochen/SLAB: classification/models/slab_deit.py (Attention)"
    needs_square_grid = True

    def __init__(self, heads: int, kernel: int = 5):
        super().__init__(f"sla_attention{heads}h", heads)
        self.kernel = kernel
        self.description = (f"{heads}-head ReLU linear attention plus a {kernel}x{kernel} "
                            f"depthwise conv of V on the square token grid")

    def params(self, x: Shape, ctx: Context) -> int:
        n, d = x
        c = d // self.heads
        return 4 * d * d + 4 * d + c * self.kernel ** 2 + c + n * d

    def flops(self, x: Shape, ctx: Context) -> int:
        n, d = x
        c = d // self.heads
        attention = 4 * n * d * c if n > c else 4 * n * n * d
        return 8 * n * d * d + 2 * n * d + attention + 2 * n * d * self.kernel ** 2

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return SLAModule(x[1], self.heads, _is_square(x[0]), self.kernel)

    def hyperparameters(self) -> dict:
        return {"heads": self.heads, "kernel": self.kernel, "kernel_fn": "relu", "eps": 1e-6}


class RepBNModule(nn.Module):
    """RepBN(x) = BN(x) + alpha * x, alpha a learnable scalar initialised to 1; BN over the
    channel dim (D of tokens with statistics over batch and tokens, C of images)."""

    def __init__(self, channels: int, tokens: bool):
        super().__init__()
        self.tokens = tokens
        self.alpha = nn.Parameter(torch.ones(1))
        self.bn = nn.BatchNorm1d(channels) if tokens else nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        if self.tokens:
            return self.bn(x.transpose(1, 2)).transpose(1, 2) + self.alpha * x
        return self.bn(x) + self.alpha * x


class RepBN(Terminal):
    """SLAB's RepBN, after ``classification/models/prepbn.py`` (RepBN): BatchNorm plus a learned
    scaled identity (can be folded into the next linear at inference)."""

    name = "repbn"
    kind = Kind.COMPUTATION
    family = "normalisation"
    category = "compute"
    paper = SLAAttention.paper
    seed_papers = (26,)
    reference = "xinghaochen/SLAB: classification/models/prepbn.py (RepBN)"
    description = "BatchNorm over D (tokens) / C (images) plus alpha * x, alpha learned (init 1)"

    def infer(self, x: Shape, ctx: Context) -> Shape:
        return x

    def params(self, x: Shape, ctx: Context) -> int:
        return 2 * (x[1] if mode_of(x) == "col" else x[0]) + 1

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        tokens = mode_of(x) == "col"
        return RepBNModule(x[1] if tokens else x[0], tokens)

    def hyperparameters(self) -> dict:
        return {"alpha_init": 1.0}


class PRepBNModule(nn.Module):
    """Progressive RepBN (SLAB's ``LinearNorm`` with LayerNorm and RepBN): in training
    y = lam LN(x) + (1 - lam) RepBN(x); in evaluation y = RepBN(x).

    The reference decrements a step counter on every training forward; here the schedule reads
    the ``training_progress`` buffer p in [0, 1] that the trainer sets once per step
    (:func:`blocks.progress.set_training_progress`): lam = 1 during a warm-up fraction ``warmup``,
    then lam = r0 * max(0, 1 - (p - warmup) / decay) -- linear from r0 to 0 over the fraction
    ``decay`` of training.  A trainer that never sets the progress leaves lam = 1 (pure
    LayerNorm) in training while evaluation uses RepBN."""

    def __init__(self, dim: int, r0: float = 1.0, warmup: float = 0.0, decay: float = 1.0,
                 eps: float = 1e-6):
        super().__init__()
        self.r0 = r0
        self.warmup = warmup
        self.decay = decay
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.norm2 = RepBNModule(dim, True)
        self.register_buffer(PROGRESS_BUFFER, progress_buffer())

    def mix(self) -> Tensor:
        p = self.training_progress
        lam = self.r0 * torch.clamp(1.0 - (p - self.warmup) / self.decay, 0.0, 1.0)
        return torch.where(p < self.warmup, torch.ones_like(lam), lam)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return self.norm2(x)
        lam = self.mix()
        return lam * self.norm1(x) + (1.0 - lam) * self.norm2(x)


class PRepBN(Terminal):
    """SLAB's progressive re-parameterised BatchNorm in token mode, r0 = 1, no warm-up, LN eps
    1e-6.  The paper decays lam over T = 60k iterations of a DeiT/Swin run of 300 epochs
    (about 16% of training; PVT's library default 300k is most of it): the default here decays
    over the first 16% of training progress."""

    name = "prepbn"
    kind = Kind.COMPUTATION
    modes = frozenset({"col"})
    family = "normalisation"
    category = "compute"
    paper = SLAAttention.paper
    seed_papers = (26,)
    reference = "xinghaochen/SLAB: classification/models/prepbn.py (LinearNorm, RepBN)"
    description = ("LayerNorm blended into RepBN over training (lam: 1 -> 0 with the "
                   "training_progress buffer); RepBN alone at evaluation")

    def __init__(self, r0: float = 1.0, warmup: float = 0.0, decay: float = 0.16):
        self.r0, self.warmup, self.decay = r0, warmup, decay

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        return x if len(x) == 2 else None

    def params(self, x: Shape, ctx: Context) -> int:
        return 4 * x[1] + 1

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return PRepBNModule(x[1], self.r0, self.warmup, self.decay)

    def hyperparameters(self) -> dict:
        return {"r0": self.r0, "warmup": self.warmup, "decay": self.decay, "ln_eps": 1e-6}


# --------------------------------------------------------------------------------------------
# #23 Random-feature attention (Fu et al., 2023)
# --------------------------------------------------------------------------------------------


class RFAttentionModule(nn.Module):
    """y_i = sum_m sum_j softmax_j(x_i^T W_m x_j / D) v_m^T x_j with W_m frozen, v_m trainable.

    W_m = mean * I + G_m, G_m with i.i.d. N(0, 1) entries, stored as the buffer ``qk`` of shape
    (D, M D) (so it is saved but not trained and not counted as a parameter).  The 1/D logit
    scale keeps logits O(1) for tokens with O(1) entries (the paper's inputs lie on a sphere).
    The M value maps D -> D are one bias-free linear over the concatenated head features."""

    def __init__(self, dim: int, heads: int, mean: float):
        super().__init__()
        self.heads = heads
        self.scale = 1.0 / dim
        weights = torch.randn(heads, dim, dim) + mean * torch.eye(dim)
        self.register_buffer("qk", weights.permute(1, 0, 2).reshape(dim, heads * dim))
        self.value = nn.Linear(heads * dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.size(0), x.size(1), x.size(2)
        queries = torch.matmul(x, self.qk).reshape(b, n, self.heads, d).transpose(1, 2)
        keys = x.unsqueeze(1)
        attn = torch.softmax(torch.matmul(queries, keys.transpose(-2, -1)) * self.scale, -1)
        features = torch.matmul(attn, keys).transpose(1, 2).reshape(b, n, self.heads * d)
        return self.value(features)


class RFAttention(TokenAttention):
    """Random-feature attention (Fu, Guo, Bai & Mei, 2023): M heads whose query-key matrices
    are drawn once and frozen; only the value maps train.  Not RFA (Peng et al., 2021) nor
    Performer.  No public code: the mean matrix (identity), the logit scale 1/D and the unit
    variance are this implementation's choices; the paper's point is that a non-zero mean beats
    a zero mean for natural targets, hence the ``_zeromean`` variant."""

    paper = ("What can a Single Attention Layer Learn? A Study Through the Random Features "
             "Lens (Fu et al., 2023)")
    seed_papers = (23,)
    reference = ""

    def __init__(self, heads: int, mean: float):
        suffix = "" if mean else "_zeromean"
        super().__init__(f"rf_attention{heads}h{suffix}", 1)
        self.rf_heads = heads
        self.mean = mean
        self.description = (f"{heads} frozen random query-key heads (W ~ {mean:g} I + N(0,1)), "
                            f"trainable values summed over heads")

    def params(self, x: Shape, ctx: Context) -> int:
        d = x[1]
        return self.rf_heads * d * d

    def flops(self, x: Shape, ctx: Context) -> int:
        n, d = x
        m = self.rf_heads
        return 4 * m * n * d * d + 4 * m * n * n * d

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return RFAttentionModule(x[1], self.rf_heads, self.mean)

    def hyperparameters(self) -> dict:
        return {"heads": self.rf_heads, "qk_mean": f"{self.mean:g} I", "qk_std": 1.0,
                "logit_scale": "1/D", "frozen": "query-key"}


# --------------------------------------------------------------------------------------------
# #14 Selective attention
# --------------------------------------------------------------------------------------------


class SSAModule(nn.Module):
    """Selective self-attention: softmax attention whose queries and values carry temperatures.

    * position-aware query temperature (as ``umich-sota/selective_attention``,
      ``lit_gpt/gpt_2_PTS.py``): tau_pos(i) = 1 + exp(-exp(beta)) ln n_i, beta one learnable
      scalar (init 1.5), n_i = i + 1 visible keys when causal, N otherwise;
    * token-aware temperatures (this implementation's simple form; the paper's exact tau_tok is
      not in the released code): per head h, tau_q = tau_pos(i) + tanh(u_h^T x_i) and
      tau_v = 1 + tanh(w_h^T x_j), u and w one bias-free D -> 2H linear initialised to zero (so
      the layer starts as position-scaled attention; tau_q > 0 always);
    * A = softmax((tau_q q) k^T / sqrt(d_h)) (causal optional), y = W_o concat_h(A (tau_v v)).
    """

    def __init__(self, dim: int, heads: int, tokens: int, causal: bool, beta: float = 1.5):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.causal = causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.temperature = nn.Linear(dim, 2 * heads, bias=False)
        nn.init.zeros_(self.temperature.weight)
        self.beta = nn.Parameter(torch.tensor(float(beta)))
        counts = torch.arange(1, tokens + 1) if causal else torch.full((tokens,), tokens)
        self.register_buffer("log_n", torch.log(counts.float()).unsqueeze(-1))

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.size(0), x.size(1), x.size(2)
        h = self.heads
        qkv = self.qkv(x).reshape(b, n, 3, h, self.head_dim).permute(2, 0, 3, 1, 4)
        tau = torch.tanh(self.temperature(x)).transpose(1, 2).unsqueeze(-1)  # (b, 2h, n, 1)
        tau_pos = 1.0 + torch.exp(-torch.exp(self.beta)) * self.log_n  # (n, 1)
        q = qkv[0] * (tau_pos + tau[:, :h])
        v = qkv[2] * (1.0 + tau[:, h:])
        out = F.scaled_dot_product_attention(q, qkv[1], v, is_causal=self.causal)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class SSAAttention(TokenAttention):
    """Selective attention (Zhang et al., 2024): position-aware query temperature with a
    learnable beta (code-verified) plus a documented simple token-aware gate on queries and
    values (the paper's own token term is unverified)."""

    paper = ("Selective Attention: Enhancing Transformer through Principled Context Control "
             "(Zhang et al., 2024)")
    seed_papers = (14,)
    reference = "umich-sota/selective_attention: lit_gpt/gpt_2_PTS.py, " \
                "lit_gpt/model_finetune_att.py (tau_pos only)"

    def __init__(self, heads: int, causal: bool = False):
        super().__init__(f"ssa_attention{heads}h" + ("_causal" if causal else ""), heads)
        self.causal = causal
        self.description = (f"{heads}-head softmax attention with position- and token-aware "
                            f"query/value temperatures" + (", causal" if causal else ""))

    def params(self, x: Shape, ctx: Context) -> int:
        d = x[1]
        return 4 * d * d + 4 * d + 2 * d * self.heads + 1

    def flops(self, x: Shape, ctx: Context) -> int:
        n, d = x
        return 8 * n * d * d + 4 * n * d * self.heads + 4 * n * n * d

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return SSAModule(x[1], self.heads, x[0], self.causal)

    def hyperparameters(self) -> dict:
        return {"heads": self.heads, "beta_init": 1.5, "causal": self.causal,
                "token_temperature": "tanh gate, zero init"}


register_all([SigmoidAttention(h) for h in (1, 4, 8)])
register_all([GPSA(h) for h in (4, 9, 16)])
register_all([SLAAttention(h) for h in (4, 8)])
register_all([RepBN(), PRepBN()])
register_all([RFAttention(4, 1.0), RFAttention(4, 0.0)])
register_all([SSAAttention(4), SSAAttention(8), SSAAttention(4, causal=True)])
