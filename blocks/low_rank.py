"""Maestro's low-rank layers (Horváth et al. 2023), family ``low-rank``.

``lowrank_linear{r}`` and ``lowrank_conv{k}k{r}r``: a dense layer or a k x k convolution factorised
as U(Vᵀx) + b through rank r.  Both keep the shape (D -> r -> D features, C -> r -> C channels): the
rank is the bottleneck, and ``linear{N}`` / ``routing(im2col, linear, col2im)`` already change
widths.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .registry import Context, Kind, Shape, Terminal, mode_of, numel, register_all

MAESTRO = ("Horváth et al., Maestro: Uncovering Low-Rank Structures via Trainable Decomposition, "
           "2023")


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


register_all([LowRankLinear(r) for r in (8, 16, 32)])
register_all([LowRankConv(3, 8), LowRankConv(3, 16), LowRankConv(5, 8)])
