"""Computation terminals: the leaves that transform one tensor.

``linear{N}`` acts on the last dim (features D in col mode, image width W in im mode, as in the
reference); ``norm`` is BatchNorm2d over C in im mode and LayerNorm over D in col mode.
``linear_x4`` / ``linear_4th`` scale the last dim relative to its size; they are not in the default
grammar but let seeds such as the MLP-Mixer's token-mixing MLP adapt to any input size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .registry import Context, Kind, Shape, Terminal, mode_of, numel, register_all


class SoftmaxModule(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(x, dim=-1)


class PositionalEncodingModule(nn.Module):
    def __init__(self, shape: Shape):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(1, *shape))
        nn.init.trunc_normal_(self.embedding, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.embedding


class ShapePreserving(Terminal):
    """A parameter-free operation that keeps the shape (identity, activations, softmax)."""

    kind = Kind.COMPUTATION

    def __init__(self, name: str, module: type[nn.Module], description: str,
                 allocates: bool = True):
        self.name, self.module, self.description = name, module, description
        self.allocates = allocates

    def infer(self, x: Shape, ctx: Context) -> Shape:
        return x

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return self.module()


class Linear(Terminal):
    """Dense layer with bias on the last dim; ``out`` fixed or a ratio of the input size."""

    kind = Kind.COMPUTATION

    def __init__(self, out: int | None = None, ratio: float | None = None, name: str = ""):
        self.out, self.ratio = out, ratio
        self.name = name or f"linear{out}"
        self.description = (f"dense layer on the last dim to {out} features" if out
                            else f"dense layer on the last dim to {ratio:g} x its size")

    def out_features(self, x: Shape) -> int:
        return self.out if self.out else int(x[-1] * self.ratio)

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        out = self.out_features(x)
        return x[:-1] + (out,) if out >= 1 else None

    def params(self, x: Shape, ctx: Context) -> int:
        return (x[-1] + 1) * self.out_features(x)

    def flops(self, x: Shape, ctx: Context) -> int:
        return 2 * numel(x) * self.out_features(x)

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return nn.Linear(x[-1], self.out_features(x))

    def hyperparameters(self) -> dict:
        return {"out": self.out} if self.out else {"ratio": self.ratio}


class Norm(Terminal):
    kind = Kind.COMPUTATION
    name = "norm"
    description = "BatchNorm2d over C (im) / LayerNorm over D (col)"

    def infer(self, x: Shape, ctx: Context) -> Shape:
        return x

    def params(self, x: Shape, ctx: Context) -> int:
        return 2 * (x[0] if mode_of(x) == "im" else x[-1])

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return nn.BatchNorm2d(x[0]) if mode_of(x) == "im" else nn.LayerNorm(x[-1])


class LearnablePositionalEncoding(Terminal):
    kind = Kind.COMPUTATION
    name = "learnable_positional_encoding"
    description = "adds a learned tensor shaped like one sample"

    def infer(self, x: Shape, ctx: Context) -> Shape:
        return x

    def params(self, x: Shape, ctx: Context) -> int:
        return numel(x)

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return PositionalEncodingModule(x)


LINEAR_WIDTHS = [16, 32, 64, 128, 256, 512, 1024, 2048]

register_all([ShapePreserving("identity", nn.Identity, "no-op", allocates=False)])
register_all(Linear(out=n) for n in LINEAR_WIDTHS)
register_all([Norm(), ShapePreserving("leakyrelu", nn.LeakyReLU, "LeakyReLU, slope 0.01"),
              ShapePreserving("softmax", SoftmaxModule, "softmax over the last dim"),
              LearnablePositionalEncoding()])
register_all([Linear(ratio=4.0, name="linear_x4"), Linear(ratio=0.25, name="linear_4th")])
