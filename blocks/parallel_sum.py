"""Make Deep Networks Shallow Again (Bermeitinger et al. 2023), family ``residual``.

* ``parallel_sum{2,4}`` (compute, im/col): ``y = x + sum_{j=1..k} LeakyReLU(F_j(x))`` with F_j a
  3x3 convolution C -> C (same padding) on images, a linear D -> D on tokens; k separately
  weighted layers run as one C -> kC layer.  A macro: it equals the grammar expression
  ``(branching clone_tensor2 (branching clone_tensor{k} (sequential F (computation leakyrelu))
  add_tensors) (computation identity) add_tensors)`` with F = ``(routing im2col3k1s1p
  (computation linear{C}) col2im)`` or ``(computation linear{D})`` (tested), which the grammar
  can already sample; the terminal works for any width and gives the "shallow-wide" form one
  grammar option.  An aggregation could not express it: it never sees the branching input.
  LeakyReLU (einspace's activation) stands for the paper's unnamed activation.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from .registry import (
    Context,
    Kind,
    Shape,
    Terminal,
    features_of,
    mode_of,
    positions_of,
    register_all,
)


class ParallelSumModule(nn.Module):
    """``x + sum_j LeakyReLU(F_j(x))``; the k layers F_j are one layer with k times the outputs
    (output j * C + c is channel c of F_j)."""

    def __init__(self, features: int, branches: int, image: bool):
        super().__init__()
        self.branches = branches
        self.image = image
        if image:
            self.layer = nn.Conv2d(features, branches * features, 3, padding=1)
        else:
            self.layer = nn.Linear(features, branches * features)

    def forward(self, x: Tensor) -> Tensor:
        if self.image:
            y = F.leaky_relu(self.layer(x))
            return x + y.unflatten(1, (self.branches, x.size(1))).sum(dim=1)
        y = F.leaky_relu(self.layer(x))
        return x + y.unflatten(-1, (self.branches, x.size(-1))).sum(dim=-2)


class ParallelSum(Terminal):
    kind = Kind.COMPUTATION
    modes = frozenset({"im", "col"})
    family = "residual"
    paper = "Bermeitinger, Hrycej & Handschuh, Make Deep Networks Shallow Again, 2023"
    seed_papers = (58,)
    category = "compute"

    def __init__(self, branches: int):
        self.branches = branches
        self.name = f"parallel_sum{branches}"
        self.description = (f"x + sum of {branches} parallel LeakyReLU(3x3 conv) layers (images) "
                            f"or LeakyReLU(linear) layers (tokens), widths kept")

    def infer(self, x: Shape, ctx: Context) -> Shape:
        return x

    def params(self, x: Shape, ctx: Context) -> int:
        c = features_of(x)
        window = 9 if len(x) == 3 else 1
        return self.branches * (c * c * window + c)

    def flops(self, x: Shape, ctx: Context) -> int:
        c = features_of(x)
        window = 9 if len(x) == 3 else 1
        return 2 * positions_of(x) * self.branches * c * c * window

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return ParallelSumModule(features_of(x), self.branches, mode_of(x) == "im")

    def hyperparameters(self) -> dict:
        return {"branches": self.branches, "layer": "conv3x3 (im) / linear (col)",
                "activation": "leakyrelu"}


register_all([ParallelSum(2), ParallelSum(4)])
