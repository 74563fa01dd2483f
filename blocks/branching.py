"""Branching terminals: turn one tensor into k tensors for the inner modules of a branch.

``clone_tensor{k}`` hands the same tensor to every branch (no copy: no module changes its input in
place, so aliasing is safe and saves the memory the reference's ``torch.clone`` spent).
``group_dim{k}s{d}d`` splits dimension ``d`` (1-based over the non-batch dims) into k equal chunks.
With k = 2 the tree holds two independently sampled inner modules; with k = 4 or 8 it holds one
inner module that is built k times with separate weights.
"""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn

from .registry import Context, Kind, Shape, Terminal, mode_of, register_all


class CloneModule(nn.Module):
    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x: Tensor) -> List[Tensor]:
        return [x for _ in range(self.k)]


class SplitModule(nn.Module):
    def __init__(self, k: int, dim: int):
        super().__init__()
        self.k = k
        self.dim = dim

    def forward(self, x: Tensor) -> List[Tensor]:
        parts = torch.chunk(x, self.k, self.dim)  # exactly k: infer admits only divisible sizes
        return [parts[i] for i in range(self.k)]  # indexed, not list(): torch.fx can trace it


class Clone(Terminal):
    kind = Kind.BRANCHING
    allocates = False

    def __init__(self, k: int):
        self.name = f"clone_tensor{k}"
        self.branches = k
        self.inner_modules = 2 if k == 2 else 1
        self.description = f"the input, handed unchanged to {k} branches"

    def infer(self, x: Shape, ctx: Context) -> Shape:
        return x

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return CloneModule(self.branches)

    def hyperparameters(self) -> dict:
        return {"branches": self.branches}


class GroupSplit(Terminal):
    kind = Kind.BRANCHING
    allocates = False

    def __init__(self, k: int, dim: int):
        self.name = f"group_dim{k}s{dim}d"
        self.branches = k
        self.inner_modules = 2 if k == 2 else 1
        self.dim = dim
        self.modes = frozenset({"im"}) if dim == 3 else frozenset({"im", "col"})
        self.description = f"split non-batch dim {dim} into {k} equal chunks"

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        if mode_of(x) not in self.modes or self.dim > len(x):
            return None
        size = x[self.dim - 1]
        if size % self.branches:
            return None
        return x[: self.dim - 1] + (size // self.branches,) + x[self.dim:]

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return SplitModule(self.branches, self.dim)

    def hyperparameters(self) -> dict:
        return {"branches": self.branches, "dim": self.dim}


register_all([Clone(k) for k in (2, 4, 8)])
register_all([GroupSplit(k, d) for k in (2, 4, 8) for d in (1, 2, 3)])
