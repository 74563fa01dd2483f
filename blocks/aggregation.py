"""Aggregation terminals: merge the outputs of a branching module's inner modules.

The shape rule receives the real tuple of branch output shapes, so an aggregation can never be
chosen for a branch count it does not fit (the reference's ``cat_tensors*4t`` on two branches) and
the branch count can never be lost through nesting.
"""

from __future__ import annotations

import math
from typing import List

import torch
from torch import Tensor, nn

from .registry import Context, Kind, Shape, Terminal, numel, register_all


class MatMulModule(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, xs: List[Tensor]) -> Tensor:
        out = torch.matmul(xs[0], xs[1])
        if self.scale != 1.0:
            out = out * self.scale
        return out


class AddModule(nn.Module):
    def forward(self, xs: List[Tensor]) -> Tensor:
        out = xs[0]
        for t in xs[1:]:
            out = out + t
        return out


class CatModule(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, xs: List[Tensor]) -> Tensor:
        return torch.cat(xs, self.dim)


class DotProduct(Terminal):
    """``a @ b`` over the last two dims: (N, D) @ (D, M) in col mode, (C, H, W) @ (C, W, M) in
    im mode."""

    kind = Kind.AGGREGATION

    def __init__(self, scaled: bool):
        self.scaled = scaled
        self.name = "scaled_dot_product" if scaled else "dot_product"
        self.description = "a @ b / sqrt(a.size(-1))" if scaled else "a @ b"

    def infer(self, xs: tuple[Shape, ...], ctx: Context) -> Shape | None:
        if len(xs) != 2:
            return None
        a, b = xs
        if len(a) != len(b) or a[-1] != b[-2] or a[:-2] != b[:-2]:
            return None
        return a[:-1] + (b[-1],)

    def flops(self, xs: tuple[Shape, ...], ctx: Context) -> int:
        a, b = xs
        return 2 * numel(a) * b[-1]

    def build(self, xs: tuple[Shape, ...], ctx: Context) -> nn.Module:
        return MatMulModule(1.0 / math.sqrt(xs[0][-1]) if self.scaled else 1.0)


class Add(Terminal):
    kind = Kind.AGGREGATION
    name = "add_tensors"
    description = "element-wise sum of all branches"

    def infer(self, xs: tuple[Shape, ...], ctx: Context) -> Shape | None:
        return xs[0] if all(x == xs[0] for x in xs[1:]) else None

    def build(self, xs: tuple[Shape, ...], ctx: Context) -> nn.Module:
        return AddModule()


class Concat(Terminal):
    kind = Kind.AGGREGATION

    def __init__(self, dim: int, count: int):
        self.dim = dim
        self.count = count
        self.name = f"cat_tensors{dim}d{count}t"
        self.modes = frozenset({"im"}) if dim == 3 else frozenset({"im", "col"})
        self.description = f"concatenate exactly {count} branches along non-batch dim {dim}"

    def infer(self, xs: tuple[Shape, ...], ctx: Context) -> Shape | None:
        first = xs[0]
        if len(xs) != self.count or self.dim > len(first):
            return None
        i = self.dim - 1
        rest = first[:i] + first[i + 1:]
        if any(len(x) != len(first) or x[:i] + x[i + 1:] != rest for x in xs):
            return None
        return first[:i] + (sum(x[i] for x in xs),) + first[i + 1:]

    def build(self, xs: tuple[Shape, ...], ctx: Context) -> nn.Module:
        return CatModule(self.dim)

    def hyperparameters(self) -> dict:
        return {"dim": self.dim, "branches": self.count}


register_all([DotProduct(False), DotProduct(True), Add()])
register_all([Concat(d, k) for d in (1, 2, 3) for k in (2, 4, 8)])
