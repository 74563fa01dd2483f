"""Layer masking (Balasubramanian & Feizi 2022), family ``masking``.

``masked_conv3k``, ``masked_norm`` and ``masked_leakyrelu`` carry a mask in the last channel (see
``MASK_CONVENTION``).  The seed-papers terminal set includes them so every paper's primitive is
reachable; on an ordinary feature map the "mask" is then whatever the last channel learns to be.
``family_weights: {masking: 0}`` drops them; with the einspace set a user whose data carries a
mask channel adds them with ``grammar: {add: {compute: [masked_conv3k, masked_norm,
masked_leakyrelu]}}``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import Context, Kind, Shape, Terminal, mode_of, register_all

MASKING = ("Balasubramanian & Feizi, Towards Improved Input Masking for Convolutional Neural "
           "Networks, 2022")

MASK_CONVENTION = (
    "image input (C, H, W), C >= 2: channels 0..C-2 are data, channel C-1 is the mask m, clamped "
    "to [0, 1] (1 = pixel present, 0 = masked out) and carrying no gradient; the output has the "
    "same layout, the updated mask in its last channel")


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


register_all([MaskedConv(3), MaskedNorm(), MaskedLeakyReLU()])
