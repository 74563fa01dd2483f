"""Convolutional and feature-map seed-paper primitives.

* **Low rank** (Maestro, Horváth et al. 2023): ``lowrank_linear{r}`` and ``lowrank_conv{k}k{r}r``,
  a dense layer or a k x k convolution factorised as U(Vᵀx) + b through rank r.  Both keep the
  shape (D -> r -> D features, C -> r -> C channels): the rank is the bottleneck, and ``linear{N}``
  / ``routing(im2col, linear, col2im)`` already change widths.
* **Residual** (Inception-ResNet, Szegedy et al. 2016): the constant scales ``scale0.1``,
  ``scale0.17`` and ``scale0.2`` (y = s x, the grammar's general "constant scale"; with
  ``branching(clone_tensor2, ..., identity, add_tensors)`` they make the paper's scaled residual
  x + s F(x)), and the atomic macro blocks ``inception_resnet_a``, ``_b`` and ``_c``.
* **Propagation** (PixPro, Xie et al. 2020): ``pixel_propagation``, the pixel propagation module.
* **Masking** (layer masking, Balasubramanian & Feizi 2022): ``masked_conv3k``, ``masked_norm``
  and ``masked_leakyrelu`` carry a mask in the last channel (see ``MASK_CONVENTION``).  The
  seed-papers terminal set includes them so every paper's primitive is reachable; on an ordinary
  feature map the "mask" is then whatever the last channel learns to be.  ``family_weights:
  {masking: 0}`` drops them; with the einspace set a user whose data carries a mask channel adds
  them with ``grammar: {add: {compute: [masked_conv3k, masked_norm, masked_leakyrelu]}}``.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import Context, Kind, Shape, Terminal, mode_of, numel, register_all

MAESTRO = ("Horváth et al., Maestro: Uncovering Low-Rank Structures via Trainable Decomposition, "
           "2023")
INCEPTION = ("Szegedy et al., Inception-v4, Inception-ResNet and the Impact of Residual "
             "Connections on Learning, 2016")
PIXPRO = ("Xie et al., Propagate Yourself: Exploring Pixel-Level Consistency for Unsupervised "
          "Visual Representation Learning, 2020")
MASKING = ("Balasubramanian & Feizi, Towards Improved Input Masking for Convolutional Neural "
           "Networks, 2022")

MASK_CONVENTION = (
    "image input (C, H, W), C >= 2: channels 0..C-2 are data, channel C-1 is the mask m, clamped "
    "to [0, 1] (1 = pixel present, 0 = masked out) and carrying no gradient; the output has the "
    "same layout, the updated mask in its last channel")


# -- Maestro low-rank layers --------------------------------------------------------------------

class LowRankLinearModule(nn.Module):
    """y = U (Vᵀ x) + b on the last dim: ``down`` is Vᵀ (D -> r, no bias), ``up`` is U (r -> D)."""

    def __init__(self, features: int, rank: int):
        super().__init__()
        self.down = nn.Linear(features, rank, bias=False)
        self.up = nn.Linear(rank, features)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.down(x))

    def factors(self) -> tuple[Tensor, Tensor]:
        """(V as r x fan-in, U as r x fan-out): row i is the i-th rank component."""
        return self.down.weight.flatten(1), self.up.weight.flatten(1).t()

    def group_lasso(self, hierarchical: bool = True) -> Tensor:
        """Maestro's (hierarchical) group-lasso penalty over the rank components, for a trainer
        to add to the loss (lambda_gl 5e-3 in the reference options)."""
        v, u = self.factors()
        if hierarchical:  # component i's group holds components i..r (ordered importance)
            v_norm = v.pow(2).flip(0).cumsum(0).flip(0).sum(1).sqrt()
            u_norm = u.pow(2).flip(0).cumsum(0).flip(0).sum(1).sqrt()
        else:
            v_norm, u_norm = v.norm(dim=1), u.norm(dim=1)
        return (v_norm + u_norm).sum()

    @torch.no_grad()
    def importance(self) -> Tensor:
        """‖u_i‖·‖v_i‖ per rank component (Maestro shrinks components below 1e-5)."""
        v, u = self.factors()
        return v.norm(dim=1) * u.norm(dim=1)


class LowRankConvModule(LowRankLinearModule):
    """k x k conv C -> r (no bias, same padding) then 1 x 1 conv r -> C with bias (MaestroConv2d's
    conv_u / conv_v)."""

    def __init__(self, channels: int, rank: int, kernel: int):
        nn.Module.__init__(self)
        self.down = nn.Conv2d(channels, rank, kernel, padding=kernel // 2, bias=False)
        self.up = nn.Conv2d(rank, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.down(x))


class LowRankLinear(Terminal):
    """``lowrank_linear{r}``: Maestro's low-rank dense layer on the last dim, D -> r -> D.

    Forward y = U(Vᵀx) + b with Vᵀ: D -> r (no bias) and U: r -> D (bias), both initialised like
    ``nn.Linear`` (the reference's default when no pretrained layer is decomposed).  The output
    keeps the width D (a shape-preserving rank-r map; ``linear{N}`` changes widths).  Refuses
    r > D: the rank of a D x D map is at most D (Maestro's ``inner_dim = min(in, out)``).
    Maestro's training part (ordered dropout of rank components, hierarchical group lasso,
    shrinking) is a training-time option, not part of the forward: the module exposes
    ``group_lasso()`` and ``importance()`` for a trainer.  Reference:
    ``SamuelHorvath/Maestro-LoD``, ``maestro/layers/linear.py`` (MaestroLinear).
    """

    kind = Kind.COMPUTATION
    family = "low-rank"
    paper = MAESTRO
    seed_papers = (27,)
    reference = "SamuelHorvath/Maestro-LoD maestro/layers/linear.py (MaestroLinear)"
    category = "compute"

    def __init__(self, rank: int):
        self.rank = rank
        self.name = f"lowrank_linear{rank}"
        self.examples = ((2, 3, rank), (5, rank))  # full rank: r = D on the image width / tokens
        self.description = f"rank-{rank} factorised dense layer on the last dim, D -> {rank} -> D"

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        return x if self.rank <= x[-1] else None

    def refusal(self, x: Shape, ctx: Context) -> str:
        return f"rank {self.rank} exceeds the last dim {x[-1]}"

    def params(self, x: Shape, ctx: Context) -> int:
        return 2 * x[-1] * self.rank + x[-1]

    def flops(self, x: Shape, ctx: Context) -> int:
        return 4 * numel(x) * self.rank

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return LowRankLinearModule(x[-1], self.rank)

    def hyperparameters(self) -> dict:
        return {"rank": self.rank, "out": "input width", "lambda_gl (trainer)": 5e-3}


class LowRankConv(Terminal):
    """``lowrank_conv{k}k{r}r``: Maestro's low-rank convolution in image mode, C -> r -> C.

    A k x k convolution C -> r (stride 1, same padding, no bias) followed by a 1 x 1 convolution
    r -> C with bias: the k x k kernel W (C x Ck²) factorised as U Vᵀ through rank r, exactly
    MaestroConv2d's ``conv_u`` / ``conv_v``.  The channel count is kept (shape-preserving), the
    rank is capped by it (refuses r > C).  Reference: ``SamuelHorvath/Maestro-LoD``,
    ``maestro/layers/conv.py`` (MaestroConv2d).
    """

    kind = Kind.COMPUTATION
    modes = frozenset({"im"})
    family = "low-rank"
    paper = MAESTRO
    seed_papers = (27,)
    reference = "SamuelHorvath/Maestro-LoD maestro/layers/conv.py (MaestroConv2d)"
    category = "compute"

    def __init__(self, kernel: int, rank: int):
        self.kernel, self.rank = kernel, rank
        self.name = f"lowrank_conv{kernel}k{rank}r"
        self.description = (f"{kernel}x{kernel} conv to rank {rank} then 1x1 conv back to C "
                            f"(same padding, stride 1)")

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        return x if mode_of(x) == "im" and self.rank <= x[0] else None

    def refusal(self, x: Shape, ctx: Context) -> str:
        return f"rank {self.rank} exceeds the {x[0]} channels"

    def params(self, x: Shape, ctx: Context) -> int:
        c = x[0]
        return c * self.rank * self.kernel ** 2 + self.rank * c + c

    def flops(self, x: Shape, ctx: Context) -> int:
        c, h, w = x
        return 2 * h * w * self.rank * c * (self.kernel ** 2 + 1)

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return LowRankConvModule(x[0], self.rank, self.kernel)

    def hyperparameters(self) -> dict:
        return {"kernel": self.kernel, "rank": self.rank, "out": "input channels",
                "lambda_gl (trainer)": 5e-3}


# -- Inception-ResNet ---------------------------------------------------------------------------

class ScaleModule(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class Scale(Terminal):
    """``scale{s}``: multiply by the fixed constant s (not learned).

    Inception-ResNet scales a residual branch by 0.1-0.3 before the addition; in the grammar that
    is ``branching(clone_tensor2, sequential(F, computation scale{s}), identity, add_tensors)``.
    """

    kind = Kind.COMPUTATION
    family = "residual"
    paper = INCEPTION
    seed_papers = (21,)
    reference = "huggingface/pytorch-image-models timm/models/inception_resnet_v2.py (scale)"
    category = "compute"

    def __init__(self, scale: float):
        self.scale = scale
        self.name = f"scale{scale:g}"
        self.description = f"multiply by the constant {scale:g}"

    def infer(self, x: Shape, ctx: Context) -> Shape:
        return x

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return ScaleModule(self.scale)

    def hyperparameters(self) -> dict:
        return {"scale": self.scale}


def basic_conv(cin: int, cout: int, kh: int, kw: int) -> nn.Sequential:
    """Inception's BasicConv2d: conv (no bias, same padding) -> BatchNorm (eps 1e-3) -> ReLU."""
    conv = nn.Conv2d(cin, cout, (kh, kw), padding=(kh // 2, kw // 2), bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout, eps=1e-3), nn.ReLU())


class InceptionResNetModule(nn.Module):
    """y = ReLU(x + s * Conv1x1(concat_b branch_b(x)))."""

    def __init__(self, channels: int, branches: list, scale: float):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*[basic_conv(cin, cout, kh, kw) for cin, cout, kh, kw in branch])
            for branch in branches)
        concat = sum(branch[-1][1] for branch in branches)
        self.project = nn.Conv2d(concat, channels, 1)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        outs: List[Tensor] = []
        for branch in self.branches:
            outs.append(branch(x))
        return torch.relu(x + self.scale * self.project(torch.cat(outs, 1)))


class InceptionResNetBlock(Terminal):
    """``inception_resnet_{a,b,c}``: an Inception-ResNet-v2 block as one atomic macro terminal.

    y = ReLU(x + s · Conv1x1(concat_b branch_b(x))); every branch conv is BasicConv2d (conv
    without bias, BatchNorm eps 1e-3, ReLU); the 1 x 1 projection back to C has a bias and no
    BN/ReLU.  Branches (Inception-ResNet-v2 widths at the paper's input width C_ref):

    * A (Block35, C_ref 320, s 0.17): [1x1 32], [1x1 32, 3x3 32], [1x1 32, 3x3 48, 3x3 64]
    * B (Block17, C_ref 1088, s 0.10): [1x1 192], [1x1 128, 1x7 160, 7x1 192]
    * C (Block8, C_ref 2080, s 0.20): [1x1 192], [1x1 192, 1x3 224, 3x1 256]

    Channels adapt to the input C: every width w becomes max(1, round(w · C / C_ref)), so at
    C = C_ref the block is exactly timm's Block35 / Block17 / Block8.  Stride 1, same padding:
    the shape is kept.  (The network's last Block8 with s = 1 and no ReLU is not offered.)
    Reference: ``huggingface/pytorch-image-models``, ``timm/models/inception_resnet_v2.py``.
    """

    kind = Kind.COMPUTATION
    modes = frozenset({"im"})
    family = "residual"
    paper = INCEPTION
    seed_papers = (21,)
    reference = "huggingface/pytorch-image-models timm/models/inception_resnet_v2.py"
    category = "compute"

    SPECS = {
        "a": (320, 0.17, "Block35", [[(1, 1, 32)], [(1, 1, 32), (3, 3, 32)],
                                     [(1, 1, 32), (3, 3, 48), (3, 3, 64)]]),
        "b": (1088, 0.10, "Block17", [[(1, 1, 192)], [(1, 1, 128), (1, 7, 160), (7, 1, 192)]]),
        "c": (2080, 0.20, "Block8", [[(1, 1, 192)], [(1, 1, 192), (1, 3, 224), (3, 1, 256)]]),
    }

    def __init__(self, variant: str):
        self.variant = variant
        self.reference_width, self.scale, self.block, self.spec = self.SPECS[variant]
        self.name = f"inception_resnet_{variant}"
        self.description = (f"Inception-ResNet-v2 {self.block} (branches, concat, 1x1 back to C, "
                            f"x + {self.scale:g} * F(x), ReLU), widths scaled to C")

    def width(self, w: int, c: int) -> int:
        ref = self.reference_width
        return max(1, (w * c + ref // 2) // ref)

    def layers(self, c: int) -> list:
        """Per branch, its convs as (c_in, c_out, kh, kw)."""
        branches = []
        for branch in self.spec:
            cin, convs = c, []
            for kh, kw, w in branch:
                cout = self.width(w, c)
                convs.append((cin, cout, kh, kw))
                cin = cout
            branches.append(convs)
        return branches

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        return x if mode_of(x) == "im" else None

    def params(self, x: Shape, ctx: Context) -> int:
        c = x[0]
        branches = self.layers(c)
        total = sum(ci * co * kh * kw + 2 * co for b in branches for ci, co, kh, kw in b)
        concat = sum(b[-1][1] for b in branches)
        return total + concat * c + c

    def flops(self, x: Shape, ctx: Context) -> int:
        c, h, w = x
        branches = self.layers(c)
        macs = sum(ci * co * kh * kw for b in branches for ci, co, kh, kw in b)
        macs += sum(b[-1][1] for b in branches) * c
        return 2 * h * w * macs

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return InceptionResNetModule(x[0], self.layers(x[0]), self.scale)

    def hyperparameters(self) -> dict:
        return {"block": self.block, "scale": self.scale, "reference width": self.reference_width,
                "branches": [[f"{kh}x{kw} {w}" for kh, kw, w in b] for b in self.spec],
                "bn_eps": 1e-3}


# -- PixPro pixel propagation -------------------------------------------------------------------

class PixelPropagationModule(nn.Module):
    """y_i = Σ_j max(cos(x_i, x_j), 0)^γ · normalize(g(x))_j, g a 1 x 1 conv (im) / linear (col)."""

    def __init__(self, features: int, gamma: float, image: bool):
        super().__init__()
        self.transform = (nn.Conv2d(features, features, 1) if image
                          else nn.Linear(features, features))
        self.gamma = gamma
        self.image = image

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        value = self.transform(x)
        if self.image:  # (B, C, H, W) -> (B, HW, C) tokens
            x = x.flatten(2).transpose(1, 2)
            value = value.flatten(2).transpose(1, 2)
        feat = F.normalize(x, dim=-1)
        value = F.normalize(value, dim=-1)
        similarity = torch.pow(torch.bmm(feat, feat.transpose(1, 2)).clamp(min=0.0), self.gamma)
        out = torch.bmm(similarity, value)
        if self.image:
            out = out.transpose(1, 2).reshape(shape)
        return out


class PixelPropagation(Terminal):
    """``pixel_propagation``: PixPro's pixel propagation module (PPM), γ = 2, g = one 1 x 1 conv.

    x̂ = normalize(x) over channels (im) / features (col); s_ij = max(x̂_i · x̂_j, 0)^γ;
    y_i = Σ_j s_ij · normalize(g(x))_j with g a 1 x 1 conv with bias (a linear layer in col mode)
    and the value normalised as in the reference's ``featprop``.  No softmax and no row
    normalisation: the output grows with the number of similar positions (the paper follows it
    with a normalisation).  Cost O((HW)^2).  Reference: ``zdaxie/PixPro``,
    ``contrast/models/PixPro.py`` (``featprop``, ``--pixpro-transform-layer 1``).
    """

    kind = Kind.COMPUTATION
    family = "propagation"
    paper = PIXPRO
    seed_papers = (22,)
    reference = "zdaxie/PixPro contrast/models/PixPro.py (featprop)"
    category = "compute"
    name = "pixel_propagation"
    description = ("pixel propagation: y_i = sum_j max(cos(x_i, x_j), 0)^2 normalize(g(x))_j, g "
                   "a 1x1 conv / linear")
    gamma = 2.0

    def infer(self, x: Shape, ctx: Context) -> Shape:
        return x

    def params(self, x: Shape, ctx: Context) -> int:
        d = x[0] if mode_of(x) == "im" else x[-1]
        return d * d + d

    def flops(self, x: Shape, ctx: Context) -> int:
        if mode_of(x) == "im":
            d, n = x[0], x[1] * x[2]
        else:
            n, d = x
        return 2 * n * d * d + 4 * n * n * d

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        image = mode_of(x) == "im"
        return PixelPropagationModule(x[0] if image else x[-1], self.gamma, image)

    def hyperparameters(self) -> dict:
        return {"gamma": self.gamma, "clamp": 0.0, "transform": "1x1 conv / linear, with bias"}


# -- layer masking ------------------------------------------------------------------------------

def split_mask(x: Tensor) -> tuple[Tensor, Tensor]:
    """(data, mask): the mask is the last channel, clamped to [0, 1], without gradient."""
    return x[:, :-1], x[:, -1:].clamp(0.0, 1.0).detach()


class MaskedConvModule(nn.Module):
    """Layer masking's conv: fill masked pixels by k rounds of 3 x 3 neighbour means (no gradient
    through the fill), convolve, keep the positions the max-pooled mask covers."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
        self.kernel = kernel
        self.iterations = kernel
        self.eps = 1e-5

    def forward(self, x: Tensor) -> Tensor:
        data, mask = split_mask(x)
        c = self.conv.in_channels  # static, so exported graphs keep a fixed kernel shape
        ones = data.new_ones((c, 1, 3, 3))
        img = data * mask
        fill_mask = mask
        for _ in range(self.iterations):
            num = F.conv2d(img.detach(), ones, None, 1, 1, 1, c)
            den = F.conv2d(fill_mask, ones[:1], None, 1, 1)
            img = img + ((1.0 - fill_mask) * num / (den + self.eps)).detach()
            fill_mask = (fill_mask + den).clamp(0.0, 1.0)
        out_mask = F.max_pool2d(mask, self.kernel, 1, self.kernel // 2)
        return torch.cat([self.conv(img) * out_mask, out_mask], 1)


class MaskedNormModule(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        data, mask = split_mask(x)
        return torch.cat([self.norm(data * mask) * mask, mask], 1)


class MaskedLeakyReLUModule(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        data, mask = split_mask(x)
        return torch.cat([F.leaky_relu(data * mask, 0.01) * mask, mask], 1)


class MaskedTerminal(Terminal):
    """Shared shape rule of the mask-aware terminals: image mode, at least 2 channels."""

    kind = Kind.COMPUTATION
    modes = frozenset({"im"})
    family = "masking"
    paper = MASKING
    seed_papers = (49,)
    reference = "SriramB-98/layer_masking sal_layers.py"
    category = "compute"

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        return x if mode_of(x) == "im" and x[0] >= 2 else None

    def refusal(self, x: Shape, ctx: Context) -> str:
        return "needs at least 2 channels: data and the mask in the last channel"

    def hyperparameters(self) -> dict:
        return {"mask": "last channel, 1 = present"}


class MaskedConv(MaskedTerminal):
    """``masked_conv{k}k``: layer masking's mask-aware convolution (MyConv2d with fast_fmm).

    With d = x[:C-1] and the mask m = clamp(x[C-1], 0, 1) (no gradient):
    x̃ = d ⊙ m, then k rounds of in-painting, each adding (1 − m_t) ⊙ Σ_3x3 x̃ / (Σ_3x3 m_t + 1e-5)
    (detached) and growing m_{t+1} = clamp(m_t + Σ_3x3 m_t, 0, 1); y = Conv_kxk(x̃) (C−1 -> C−1,
    bias, same padding); m' = MaxPool_{k, 1, k//2}(m); output concat(y ⊙ m', m').
    Reference: ``SriramB-98/layer_masking``, ``sal_layers.py`` (``fast_fmm``, ``MyConv2d``).
    """

    def __init__(self, kernel: int):
        self.kernel = kernel
        self.name = f"masked_conv{kernel}k"
        self.description = (f"mask-aware {kernel}x{kernel} conv: in-paint masked pixels, conv, "
                            f"max-pool the mask (mask = last channel)")

    def params(self, x: Shape, ctx: Context) -> int:
        c = x[0] - 1
        return c * c * self.kernel ** 2 + c

    def flops(self, x: Shape, ctx: Context) -> int:
        channels, h, w = x
        c = channels - 1
        fill = self.kernel * 2 * h * w * 9 * (c + 1)  # neighbour sums of the data and the mask
        return fill + 2 * h * w * c * c * self.kernel ** 2

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return MaskedConvModule(x[0] - 1, self.kernel)

    def hyperparameters(self) -> dict:
        return {"kernel": self.kernel, "fill iterations": self.kernel, "fill eps": 1e-5,
                "mask": "last channel, 1 = present"}


class MaskedNorm(MaskedTerminal):
    """``masked_norm``: BatchNorm2d of the masked data, masked again: (BN(d ⊙ m) ⊙ m, m)
    (layer masking's MyBatchNorm2d)."""

    name = "masked_norm"
    description = "mask-aware BatchNorm: BN(data * mask) * mask, mask passed through"

    def params(self, x: Shape, ctx: Context) -> int:
        return 2 * (x[0] - 1)

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return MaskedNormModule(x[0] - 1)


class MaskedLeakyReLU(MaskedTerminal):
    """``masked_leakyrelu``: (LeakyReLU(d ⊙ m) ⊙ m, m), layer masking's activation rule (MyReLU)
    with einspace's LeakyReLU (slope 0.01)."""

    name = "masked_leakyrelu"
    description = "mask-aware LeakyReLU: act(data * mask) * mask, mask passed through"

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return MaskedLeakyReLUModule()


register_all([LowRankLinear(r) for r in (8, 16, 32)])
register_all([LowRankConv(3, 8), LowRankConv(3, 16), LowRankConv(5, 8)])
register_all([Scale(0.1), Scale(0.17), Scale(0.2)])
register_all([InceptionResNetBlock(v) for v in "abc"])
register_all([PixelPropagation()])
register_all([MaskedConv(3), MaskedNorm(), MaskedLeakyReLU()])
