"""PixPro's pixel propagation module (Xie et al. 2020), family ``propagation``:
``pixel_propagation``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import Context, Kind, Shape, Terminal, mode_of, register_all

PIXPRO = ("Xie et al., Propagate Yourself: Exploring Pixel-Level Consistency for Unsupervised "
          "Visual Representation Learning, 2020")


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


register_all([PixelPropagation()])
