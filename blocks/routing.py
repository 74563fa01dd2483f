"""Routing terminals: the pre- and post-routing functions that wrap a routing module's inner module.

Permutations reorder the non-batch dims; ``im2col`` unfolds image patches into tokens
(B, C, H, W) -> (B, H'W', C k k) and records the token grid (H', W'); ``col2im`` folds tokens back
using that grid.  ``col2im`` only applies when the token count still equals H'W' (the reference's
plain reshape silently re-interleaved any divisible size).
"""

from __future__ import annotations

from typing import List

from torch import Tensor, nn

from .registry import Context, Kind, Shape, Terminal, register_all


class PermuteModule(nn.Module):
    def __init__(self, dims: List[int]):
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(self.dims)


class Im2ColModule(nn.Module):
    """Unfold patches to tokens; 1x1 stride-1 patches are a plain flatten (no Unfold copy)."""

    def __init__(self, kernel: int, stride: int, padding: int):
        super().__init__()
        self.pointwise = kernel == 1 and stride == 1 and padding == 0
        self.unfold = nn.Unfold(kernel, dilation=1, padding=padding, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        if self.pointwise:
            return x.flatten(2).transpose(1, 2)
        return self.unfold(x).transpose(1, 2)


class Col2ImModule(nn.Module):
    def __init__(self, height: int, width: int):
        super().__init__()
        self.height = height
        self.width = width

    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(1, 2).reshape(x.size(0), x.size(2), self.height, self.width)


class Identity(Terminal):
    name = "identity"
    allocates = False
    description = "no-op"

    def __init__(self, kind: Kind):
        self.kind = kind

    def infer(self, x: Shape, ctx: Context) -> Shape:
        return x

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return nn.Identity()


class Permute(Terminal):
    """``permute{order}``: the non-batch dims reordered, 1-based (``permute21`` swaps N and D)."""

    allocates = False

    def __init__(self, kind: Kind, order: tuple[int, ...]):
        self.kind = kind
        self.order = order
        self.name = "permute" + "".join(map(str, order))
        self.modes = frozenset({"col"}) if len(order) == 2 else frozenset({"im"})
        self.description = f"reorder non-batch dims to {order}"

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        if len(x) != len(self.order):
            return None
        return tuple(x[i - 1] for i in self.order)

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return PermuteModule([0] + list(self.order))


def conv_grid(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution window along one axis (0 when the window does not fit)."""
    return max((size + 2 * padding - kernel) // stride + 1, 0)


class Im2Col(Terminal):
    kind = Kind.PREROUTING
    modes = frozenset({"im"})

    def __init__(self, kernel: int, stride: int, padding: int):
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.name = f"im2col{kernel}k{stride}s{padding}p"
        self.description = (f"{kernel}x{kernel} patches, stride {stride}, padding {padding}, "
                            f"as tokens")

    def grid(self, x: Shape) -> tuple[int, int]:
        _, h, w = x
        k, s, p = self.kernel, self.stride, self.padding
        return conv_grid(h, k, s, p), conv_grid(w, k, s, p)

    def post_context(self, x: Shape) -> Context:
        return Context(grid=self.grid(x))

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        pad = 2 * self.padding
        if len(x) != 3 or x[1] + pad < self.kernel or x[2] + pad < self.kernel:
            return None
        gh, gw = self.grid(x)
        return (gh * gw, x[0] * self.kernel * self.kernel)

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return Im2ColModule(self.kernel, self.stride, self.padding)

    def refusal(self, x: Shape, ctx: Context) -> str:
        return (f"the image (padded by {self.padding}) is smaller than the "
                f"{self.kernel}x{self.kernel} window")

    def hyperparameters(self) -> dict:
        return {"kernel": self.kernel, "stride": self.stride, "padding": self.padding}


class Col2Im(Terminal):
    kind = Kind.POSTROUTING
    name = "col2im"
    modes = frozenset({"col"})
    description = "tokens back to an image on the grid of the routing module's im2col"

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        if len(x) != 2 or ctx.grid is None or x[0] != ctx.grid[0] * ctx.grid[1]:
            return None
        return (x[1], ctx.grid[0], ctx.grid[1])

    def refusal(self, x: Shape, ctx: Context) -> str:
        if ctx.grid is None:
            return "col2im needs the routing module's prerouting to be an im2col"
        return f"expected {ctx.grid[0] * ctx.grid[1]} tokens for the {ctx.grid} grid"

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return Col2ImModule(*ctx.grid)


IM_PERMUTATIONS = [(1, 3, 2), (2, 1, 3), (2, 3, 1), (3, 1, 2), (3, 2, 1)]
IM2COL_WINDOWS = [(1, 1, 0), (1, 2, 0), (3, 1, 1), (3, 2, 1), (4, 4, 0), (8, 8, 0), (16, 16, 0)]

for _kind in (Kind.PREROUTING, Kind.POSTROUTING):
    register_all([Identity(_kind), Permute(_kind, (2, 1))])
    register_all(Permute(_kind, order) for order in IM_PERMUTATIONS)
register_all(Im2Col(*window) for window in IM2COL_WINDOWS)
register_all([Col2Im()])


class FoldModule(nn.Module):
    """Move an axis into the batch: rows (B,C,H,W)->(B*H,W,C), columns (B,C,H,W)->(B*W,H,C),
    token groups (B,N,D)->(B*G,N/G,D)."""

    def __init__(self, how: str, groups: int):
        super().__init__()
        self.how = how
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        if self.how == "rows":
            return x.permute(0, 2, 3, 1).reshape(-1, x.size(3), x.size(1))
        if self.how == "cols":
            return x.permute(0, 3, 2, 1).reshape(-1, x.size(2), x.size(1))
        return x.reshape(-1, x.size(1) // self.groups, x.size(2))


class UnfoldModule(nn.Module):
    """Give the batch its folded axis back (the inverse of ``FoldModule``)."""

    def __init__(self, how: str, size: int):
        super().__init__()
        self.how = how
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        if self.how == "rows":
            return x.reshape(-1, self.size, x.size(1), x.size(2)).permute(0, 3, 1, 2)
        if self.how == "cols":
            return x.reshape(-1, self.size, x.size(1), x.size(2)).permute(0, 3, 2, 1)
        return x.reshape(-1, self.size * x.size(1), x.size(2))


FOLD_PAPER = ("Axial Attention in Multidimensional Transformers (Ho et al., 2019); "
              "FIT: Far-reaching Interleaved Transformers (Chen & Li, 2023)")


class Fold(Terminal):
    """Pre-routing that folds an axis into the batch, so the inner module runs on each row,
    column or token group separately with shared weights (axial attention, local groups).
    Paired with the post-routing ``unfold`` of the same routing module."""

    kind = Kind.PREROUTING
    family = "routing"
    paper = FOLD_PAPER
    seed_papers = (47, 31)
    category = "prerouting"

    def __init__(self, how: str, groups: int = 1):
        self.how, self.groups = how, groups
        self.name = f"fold_groups{groups}" if how == "groups" else f"fold_{how}"
        self.modes = frozenset({"col"}) if how == "groups" else frozenset({"im"})
        self.description = {"rows": "each row becomes a sequence along W (H into the batch)",
                            "cols": "each column becomes a sequence along H (W into the batch)",
                            "groups": f"{groups} contiguous token groups into the batch"}[how]

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        if self.how == "groups":
            if len(x) != 2 or x[0] % self.groups:
                return None
            return (x[0] // self.groups, x[1])
        if len(x) != 3:
            return None
        c, h, w = x
        return (w, c) if self.how == "rows" else (h, c)

    def batch_factor(self, x: Shape) -> int:
        if self.how == "groups":
            return self.groups
        return x[1] if self.how == "rows" else x[2]

    def post_context(self, x: Shape) -> Context:
        return Context(fold=(self.how, self.batch_factor(x)))

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return FoldModule(self.how, self.groups)

    def hyperparameters(self) -> dict:
        return {"groups": self.groups} if self.how == "groups" else {"axis": self.how}


class Unfold(Terminal):
    kind = Kind.POSTROUTING
    name = "unfold"
    family = "routing"
    paper = FOLD_PAPER
    seed_papers = (47, 31)
    category = "postrouting"
    modes = frozenset({"col"})
    restores_batch = True
    description = "gives the batch back the axis the routing module's fold moved into it"

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        if len(x) != 2 or ctx.fold is None:
            return None
        how, size = ctx.fold
        if how == "rows":
            return (x[1], size, x[0])
        if how == "cols":
            return (x[1], x[0], size)
        return (size * x[0], x[1])

    def refusal(self, x: Shape, ctx: Context) -> str:
        return "" if ctx.fold else "unfold needs the routing module's prerouting to be a fold"

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return UnfoldModule(*ctx.fold)


register_all([Fold("rows"), Fold("cols"), Fold("groups", 4), Fold("groups", 16), Unfold()])
