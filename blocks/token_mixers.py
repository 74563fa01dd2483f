"""Token-mixing seed-paper terminals: attention variants and the CRATE white-box layers.

* ``mssa4h`` / ``mssa8h`` and ``ista`` / ``ista_l05``: CRATE (Yu et al.; CRATE-MAE, Pai et al.
  2024), multi-head subspace self-attention and one ISTA sparse-coding step;
* ``axial_attention_h`` / ``axial_attention_w`` (1 head) and ``..._h4h`` / ``..._w4h``: axial
  attention (Ho et al. 2019) along one spatial axis of an image, the other axis folded into the
  batch inside the module;
* ``momentum_attention4h``: causal attention plus an exponential moving average of past values
  (Dai et al. 2022);
* ``echo_attention_block2`` / ``echo_attention_block4``: EchoAtt (2024), a macro of k pre-norm
  transformer layers sharing the attention map of the first;
* ``fit_block4g`` / ``fit_block7g``: one interleaved FIT stage (Chen & Li 2023): local attention
  inside G groups of tokens, then read into / global attention over / write back from learnable
  latent tokens.

All act on tokens (``col`` mode, (N, D)) except axial attention (``im`` mode, (C, H, W), channels as
features).  Every product is a ``torch.matmul``, a linear layer or
``F.scaled_dot_product_attention``, so the tests' ``flop_counter()`` (tests/flops.py) counts what
``flops`` declares (a plain ``FlopCounterMode`` counts the fused CPU attention kernel as 0; the
CRATE terminals, used by the ``crate`` seed, use ``torch.matmul`` only).
"""

from __future__ import annotations

import math
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import Context, Kind, Shape, Terminal, register_all

CRATE_PAPER = ("Pai et al.: Masked Completion via Structured Diffusion with White-Box "
               "Transformers (ICLR 2024)")
CRATE_REFERENCE = "Ma-Lab-Berkeley/CRATE: model/crate.py (Attention, FeedForward)"


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, L, D) -> (B, heads, L, D / heads)."""
    return x.reshape(x.size(0), x.size(1), heads, x.size(2) // heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """(B, heads, L, E) -> (B, L, heads * E)."""
    return x.transpose(1, 2).reshape(x.size(0), x.size(2), x.size(1) * x.size(3))


class _TokenTerminal(Terminal):
    """A shape-preserving computation terminal on tokens whose width must split into heads."""

    kind = Kind.COMPUTATION
    modes = frozenset({"col"})
    heads = 1

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        if len(x) != 2 or x[1] % self.heads:
            return None
        return x

    def refusal(self, x: Shape, ctx: Context) -> str:
        if len(x) == 2 and x[1] % self.heads:
            return f"token width {x[1]} is not divisible by {self.heads} heads"
        return ""


# --------------------------------------------------------------------------------------------
# CRATE: MSSA and ISTA


class MSSAModule(nn.Module):
    """Multi-head subspace self-attention: one bias-free projection ``U`` gives w = Uᵀx, used as
    query, key and value; per head softmax(w_h w_hᵀ / sqrt(d_h)) w_h; heads concatenated and
    projected by a linear layer with bias (CRATE ``Attention``: ``qkv`` then ``to_out``).
    Written with ``torch.matmul`` as in the reference (a plain ``FlopCounterMode`` counts it; it
    counts the fused CPU attention kernel as 0, see tests/flops.py)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = 1.0 / math.sqrt(dim // heads)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        w = _split_heads(self.proj(x), self.heads)
        attn = torch.softmax(torch.matmul(w, w.transpose(-2, -1)) * self.scale, dim=-1)
        return self.out(_merge_heads(torch.matmul(attn, w)))


class MSSA(_TokenTerminal):
    """CRATE's MSSA operator on (N, D) tokens, D split into ``heads`` subspaces of D/heads.

    Reference: ``Ma-Lab-Berkeley/CRATE`` ``model/crate.py`` class ``Attention`` (dim_head =
    dim / heads, so the inner width equals D).  Used in a block as z + MSSA(LN(z)); the residual
    and the norm are separate grammar nodes.
    """

    family = "attention"
    paper = CRATE_PAPER
    seed_papers = (46,)
    reference = CRATE_REFERENCE
    category = "compute"

    def __init__(self, heads: int):
        self.heads = heads
        self.name = f"mssa{heads}h"
        self.description = (f"CRATE multi-head subspace self-attention, {heads} heads, one shared "
                            f"projection as Q=K=V, output projection")

    def params(self, x: Shape, ctx: Context) -> int:
        d = x[1]
        return 2 * d * d + d

    def flops(self, x: Shape, ctx: Context) -> int:
        n, d = x
        return 4 * n * d * d + 4 * n * n * d

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return MSSAModule(x[1], self.heads)

    def hyperparameters(self) -> dict:
        return {"heads": self.heads}


class ISTAModule(nn.Module):
    """One ISTA step with dictionary D (d x d, Kaiming-uniform):
    y = ReLU(x + eta * Dᵀ(x - D x) - eta * lambda), applied to every token."""

    def __init__(self, dim: int, eta: float, lam: float):
        super().__init__()
        self.eta = eta
        self.lam = lam
        self.weight = nn.Parameter(torch.empty(dim, dim))
        nn.init.kaiming_uniform_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        residual = x - F.linear(x, self.weight)  # x - D x   (per token, rows of x)
        step = torch.matmul(residual, self.weight)  # Dᵀ (x - D x)
        return torch.relu(x + self.eta * step - self.eta * self.lam)


class ISTA(_TokenTerminal):
    """CRATE's ISTA sparse-coding step on (N, D) tokens (the block's 'MLP').

    Reference: ``Ma-Lab-Berkeley/CRATE`` ``model/crate.py`` class ``FeedForward``, which computes
    Dᵀx - DᵀDx with three products; the same value is computed here as Dᵀ(x - Dx) with two.  The
    output is non-negative and there is no residual to the block input: in CRATE the step starts
    from LN(z), i.e. ``(sequential (computation norm) (computation ista))``.
    """

    family = "bottleneck"
    paper = CRATE_PAPER
    seed_papers = (46,)
    reference = CRATE_REFERENCE
    category = "compute"

    def __init__(self, name: str, eta: float, lam: float, note: str):
        self.name, self.eta, self.lam = name, eta, lam
        self.description = (f"CRATE ISTA step ReLU(x + eta D^T(x - Dx) - eta lambda), "
                            f"eta={eta:g}, lambda={lam:g} ({note})")

    def params(self, x: Shape, ctx: Context) -> int:
        return x[1] * x[1]

    def flops(self, x: Shape, ctx: Context) -> int:
        n, d = x
        return 4 * n * d * d

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return ISTAModule(x[1], self.eta, self.lam)

    def hyperparameters(self) -> dict:
        return {"eta": self.eta, "lambda": self.lam}


# --------------------------------------------------------------------------------------------
# Axial attention


class AxialAttentionModule(nn.Module):
    """Multi-head self-attention along one spatial axis of (B, C, H, W), channels as features.

    Along W (row attention) every row is a sequence: (B, C, H, W) -> (B*H, W, C); along H every
    column is: (B, C, H, W) -> (B*W, H, C).  Projections follow lucidrains ``SelfAttention``:
    ``to_q`` and ``to_kv`` without bias, ``to_out`` with bias.
    """

    def __init__(self, channels: int, heads: int, along_height: bool):
        super().__init__()
        self.heads = heads
        self.along_height = along_height
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_kv = nn.Linear(channels, 2 * channels, bias=False)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.size(0), x.size(1), x.size(2), x.size(3)
        if self.along_height:
            seq = x.permute(0, 3, 2, 1).reshape(b * w, h, c)
        else:
            seq = x.permute(0, 2, 3, 1).reshape(b * h, w, c)
        q = _split_heads(self.to_q(seq), self.heads)
        kv = self.to_kv(seq)
        k = _split_heads(kv[:, :, :c], self.heads)
        v = _split_heads(kv[:, :, c:], self.heads)
        y = self.to_out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))
        if self.along_height:
            return y.reshape(b, w, h, c).permute(0, 3, 2, 1).contiguous()
        return y.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()


class AxialAttention(Terminal):
    """Axial attention (Ho et al. 2019) along H (column attention) or W (row attention).

    Reference: ``lucidrains/axial-attention`` ``axial_attention/axial_attention.py``
    (``SelfAttention``, ``PermuteToFrom``).  One axis per terminal: the paper's alternating
    row/column layers are ``(sequential h w)``, lucidrains' summed form is a clone + add.
    """

    kind = Kind.COMPUTATION
    modes = frozenset({"im"})
    family = "attention"
    paper = "Ho et al.: Axial Attention in Multidimensional Transformers (2019)"
    seed_papers = (47,)
    reference = "lucidrains/axial-attention: axial_attention/axial_attention.py"
    category = "compute"

    def __init__(self, axis: str, heads: int):
        self.axis, self.heads = axis, heads
        suffix = "" if heads == 1 else f"{heads}h"
        self.name = f"axial_attention_{axis}{suffix}"
        what = "each column (along H)" if axis == "h" else "each row (along W)"
        self.description = (f"self-attention over {what} of the image, channels as features, "
                            f"{heads} head{'s' if heads > 1 else ''}")

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        if len(x) != 3 or x[0] % self.heads:
            return None
        return x

    def refusal(self, x: Shape, ctx: Context) -> str:
        if len(x) == 3 and x[0] % self.heads:
            return f"{x[0]} channels are not divisible by {self.heads} heads"
        return ""

    def params(self, x: Shape, ctx: Context) -> int:
        c = x[0]
        return 4 * c * c + c

    def flops(self, x: Shape, ctx: Context) -> int:
        c, h, w = x
        length = h if self.axis == "h" else w
        return 8 * h * w * c * c + 4 * h * w * length * c

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return AxialAttentionModule(x[0], self.heads, self.axis == "h")

    def hyperparameters(self) -> dict:
        return {"axis": self.axis.upper(), "heads": self.heads}


# --------------------------------------------------------------------------------------------
# Momentum attention


class MomentumAttentionModule(nn.Module):
    """Causal multi-head attention plus an EMA of past values, per head:
    o_t = sum_{i<=t} softmax_i(q_t k_i / sqrt(d_h)) v_i + sum_{i<t} eta^(t-i) v_i,
    then the output projection.  The EMA is the fixed Toeplitz matrix T[t, i] = eta^(t-i) [i<t]
    added to the attention probabilities."""

    def __init__(self, tokens: int, dim: int, heads: int, eta: float):
        super().__init__()
        self.heads = heads
        self.scale = 1.0 / math.sqrt(dim // heads)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        index = torch.arange(tokens)
        lag = index[:, None] - index[None, :]
        mask = torch.zeros(tokens, tokens).masked_fill(lag < 0, float("-inf"))
        momentum = torch.where(lag > 0, torch.tensor(float(eta)) ** lag.clamp(min=0).float(),
                               torch.zeros(()))
        self.register_buffer("causal_mask", mask, persistent=False)
        self.register_buffer("momentum", momentum, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        q = _split_heads(self.query(x), self.heads)
        k = _split_heads(self.key(x), self.heads)
        v = _split_heads(self.value(x), self.heads)
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale + self.causal_mask
        weights = torch.softmax(scores, dim=-1) + self.momentum
        return self.out(_merge_heads(torch.matmul(weights, v)))


class MomentumAttention(_TokenTerminal):
    """Momentum-based attention (Dai et al. 2022, Sec. 5): causal softmax attention plus the
    exponential moving average of past values, by analogy with SGD with momentum.

    No implementation is published (the paper's ``microsoft/LMOps`` ``understand_icl`` holds
    analysis code only).  Projections follow fairseq's ``MultiheadAttention`` (q, k, v, out, all
    with bias).  eta is fixed; the paper does not fix one value, 0.1 is our default.  Token order
    is the causal order, so on image tokens the raster order matters.
    """

    family = "attention"
    paper = ("Dai et al.: Why Can GPT Learn In-Context? Language Models Implicitly Perform "
             "Gradient Descent as Meta-Optimizers (2022)")
    seed_papers = (55,)
    reference = ""
    category = "compute"

    def __init__(self, heads: int, eta: float):
        self.heads, self.eta = heads, eta
        self.name = f"momentum_attention{heads}h"
        self.description = (f"causal {heads}-head attention plus an EMA of past values, "
                            f"eta={eta:g}")

    def params(self, x: Shape, ctx: Context) -> int:
        d = x[1]
        return 4 * d * d + 4 * d

    def flops(self, x: Shape, ctx: Context) -> int:
        n, d = x
        return 8 * n * d * d + 4 * n * n * d

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return MomentumAttentionModule(x[0], x[1], self.heads, self.eta)

    def hyperparameters(self) -> dict:
        return {"heads": self.heads, "eta": self.eta, "causal": True}


# --------------------------------------------------------------------------------------------
# EchoAtt


class EchoLayer(nn.Module):
    """One pre-norm layer that reuses a given attention map: only V and O are its own.
    x <- x + W_O(A · V(LN(x))); x <- x + FFN(LN(x)) with a GELU MLP of ratio 4."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor, attn: Tensor) -> Tensor:
        v = _split_heads(self.value(self.attn_norm(x)), self.heads)
        x = x + self.out(_merge_heads(torch.matmul(attn, v)))
        return x + self.fc2(F.gelu(self.fc1(self.ffn_norm(x))))


class EchoAttentionModule(nn.Module):
    """k layers sharing A = softmax(Q K^T / sqrt(d_h)), computed once from the first layer's
    normalised input; only the first layer has query and key projections."""

    def __init__(self, dim: int, heads: int, depth: int):
        super().__init__()
        self.heads = heads
        self.scale = 1.0 / math.sqrt(dim // heads)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.first = EchoLayer(dim, heads)
        self.rest = nn.ModuleList([EchoLayer(dim, heads) for _ in range(depth - 1)])

    def forward(self, x: Tensor) -> Tensor:
        h = self.first.attn_norm(x)
        q = _split_heads(self.query(h), self.heads)
        k = _split_heads(self.key(h), self.heads)
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        x = self.first(x, attn)
        for layer in self.rest:
            x = layer(x, attn)
        return x


class EchoAttentionBlock(_TokenTerminal):
    """EchoAtt macro (2024): k pre-norm transformer layers share one attention map.

    Computed as a single atomic terminal because the shared map would otherwise be a second
    input reaching across the tree.  No official code exists; this follows the paper's
    description: layer 1 computes A from LN_1(x) with its own Q/K; layers 1..k each have their
    own V, O, two LayerNorms and a GELU FFN of ratio 4.  Bidirectional (no causal mask), since
    einspace classifies; the paper's LLM setting is causal.  The distillation recipe is not part
    of the terminal.
    """

    family = "attention"
    paper = ("EchoAtt: Attend, Copy, then Adjust for More Efficient Large Language Models "
             "(2024)")
    seed_papers = (39,)
    reference = ""
    category = "compute"

    def __init__(self, depth: int, heads: int = 4):
        self.depth, self.heads = depth, heads
        self.name = f"echo_attention_block{depth}"
        self.description = (f"{depth} pre-norm transformer layers ({heads} heads, MLP x4) sharing "
                            f"the first layer's attention map")

    def params(self, x: Shape, ctx: Context) -> int:
        d = x[1]
        return 2 * d * d + 2 * d + self.depth * (10 * d * d + 11 * d)

    def flops(self, x: Shape, ctx: Context) -> int:
        n, d = x
        return 4 * n * d * d + 2 * n * n * d + self.depth * (20 * n * d * d + 2 * n * n * d)

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return EchoAttentionModule(x[1], self.heads, self.depth)

    def hyperparameters(self) -> dict:
        return {"layers": self.depth, "heads": self.heads, "mlp_ratio": 4, "causal": False}


# --------------------------------------------------------------------------------------------
# FIT


class Attention(nn.Module):
    """Multi-head attention of ``x`` over ``context`` with q, k, v, out projections (bias)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        q = _split_heads(self.query(x), self.heads)
        k = _split_heads(self.key(context), self.heads)
        v = _split_heads(self.value(context), self.heads)
        return self.out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer: x + MHA(LN x); x + MLP(LN x), GELU MLP of ratio 4."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ffn_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.attn_norm(x)
        x = x + self.attn(h, h)
        return x + self.fc2(F.gelu(self.fc1(self.ffn_norm(x))))


class CrossLayer(nn.Module):
    """x + MHA(LN x, LN context): pix2seq's cross-attention layer (no MLP, enc LN on)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.query_norm = nn.LayerNorm(dim)
        self.context_norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        return x + self.attn(self.query_norm(x), self.context_norm(context))


class FITModule(nn.Module):
    """One FIT stage with write-back; tokens (B, N, D) are split into G groups of n = N/G."""

    def __init__(self, tokens: int, dim: int, groups: int, latents: int, heads: int):
        super().__init__()
        self.groups = groups
        self.per_group = tokens // groups
        self.latents_per_group = latents
        self.latents = nn.Parameter(torch.empty(groups, latents, dim))
        nn.init.trunc_normal_(self.latents, std=0.02)
        self.local_layer = EncoderLayer(dim, heads)
        self.read = CrossLayer(dim, heads)
        self.global_layer = EncoderLayer(dim, heads)
        self.write = CrossLayer(dim, heads)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.size(0), x.size(1), x.size(2)
        g, m = self.groups, self.latents_per_group
        local = self.local_layer(x.reshape(b * g, self.per_group, d))
        lat = self.latents.unsqueeze(0).expand(b, g, m, d).reshape(b * g, m, d)
        lat = self.read(lat, local)
        lat = self.global_layer(lat.reshape(b, g * m, d)).reshape(b * g, m, d)
        return self.write(local, lat).reshape(b, n, d)


class FITBlock(_TokenTerminal):
    """FIT macro (Chen & Li 2023): one interleaved stage '(1)1' with write-back.

    Reference: ``google-research/pix2seq`` ``architectures/transformers.py`` class ``FIT``:
    tokens fold into G groups (batch); a local pre-norm transformer layer acts inside each group;
    m learnable latents per group (a (G, m, D) embedding) read their group by cross-attention
    (LN on both sides, no MLP); the G*m latents pass a global transformer layer; the group's
    tokens read their latents back.  Latent width equals D (so the cross-attention width
    min(D, D_lat) is D), 4 heads, MLP ratio 4.  The reference's stem, token positional embedding
    and output LayerNorms are left to other grammar nodes; the reference skips the write-back
    after its last stage, which a one-stage terminal must keep for the latents to matter.
    """

    family = "attention"
    paper = "Chen, Li: FIT: Far-reaching Interleaved Transformers (2023)"
    seed_papers = (31,)
    reference = "google-research/pix2seq: architectures/transformers.py (class FIT)"
    category = "compute"

    def __init__(self, groups: int, latents: int = 4, heads: int = 4):
        self.groups, self.latents, self.heads = groups, latents, heads
        self.name = f"fit_block{groups}g"
        self.description = (f"FIT stage: local attention in {groups} token groups, {latents} "
                            f"learnable latents per group with global attention, read/write "
                            f"cross-attention")
        self.examples = ((4 * groups, 8), (2 * groups, 16))

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        if len(x) != 2 or x[0] % self.groups or x[1] % self.heads:
            return None
        return x

    def refusal(self, x: Shape, ctx: Context) -> str:
        if len(x) == 2 and x[0] % self.groups:
            return f"{x[0]} tokens are not divisible into {self.groups} groups"
        return super().refusal(x, ctx)

    def params(self, x: Shape, ctx: Context) -> int:
        d = x[1]
        return self.groups * self.latents * d + 32 * d * d + 42 * d

    def flops(self, x: Shape, ctx: Context) -> int:
        n, d = x
        per_group = n // self.groups
        lat = self.groups * self.latents
        return (32 * n * d * d + 32 * lat * d * d + 4 * n * per_group * d + 4 * lat * lat * d
                + 8 * n * self.latents * d)

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return FITModule(x[0], x[1], self.groups, self.latents, self.heads)

    def hyperparameters(self) -> dict:
        return {"groups": self.groups, "latents_per_group": self.latents, "heads": self.heads,
                "layers": "(1)1", "mlp_ratio": 4}


TERMINALS: List[Terminal] = [
    MSSA(4), MSSA(8),
    ISTA("ista", 0.1, 0.1, "CRATE classification"),
    ISTA("ista_l05", 0.1, 0.5, "CRATE-MAE encoder"),
    AxialAttention("h", 1), AxialAttention("w", 1), AxialAttention("h", 4), AxialAttention("w", 4),
    MomentumAttention(4, 0.1),
    EchoAttentionBlock(2), EchoAttentionBlock(4),
    FITBlock(4), FITBlock(7),
]

register_all(TERMINALS)
