"""Inception-ResNet's residual primitives (Szegedy et al. 2016), family ``residual``.

The constant scales ``scale0.1``, ``scale0.17`` and ``scale0.2`` (y = s x, the grammar's general
"constant scale"; with ``branching(clone_tensor2, ..., identity, add_tensors)`` they make the
paper's scaled residual x + s F(x)), and the atomic macro blocks ``inception_resnet_a``, ``_b`` and
``_c``.
"""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn

from .registry import Context, Kind, Shape, Terminal, mode_of, register_all

INCEPTION = ("Szegedy et al., Inception-v4, Inception-ResNet and the Impact of Residual "
             "Connections on Learning, 2016")


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


register_all([Scale(0.1), Scale(0.17), Scale(0.2)])
register_all([InceptionResNetBlock(v) for v in "abc"])
