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
