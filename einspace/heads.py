"""Task heads put on top of a backbone, with their symbolic costs.

Classification pools the backbone output (mean over H, W in im mode, over tokens in col mode — the
reference averaged the features instead) and applies a linear layer.  Dense prediction maps every
position to ``out_channels`` values on a target ``(H, W)`` grid.

A backbone that keeps the target's resolution (a fully-convolutional network) gets a per-position
linear layer and nothing else.  A backbone that shrinks the input (ResNet-18 ends at 2x2 on a
32x32 field, the MLP at one token) cannot draw a field through that layer alone: its coarse map,
stretched to the target grid, is piecewise flat, and such networks scored below the train-mean
field on darcy_lite.  So those also get a field decoder: a linear layer from the pooled features
to every output value, which can draw any field in the span of its weights (and the train mean
through its bias); the stretched coarse map is added to it.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from einspace.blocks.registry import Shape, mode_of

from .cost import Cost
from .errors import ShapeError


class ClassifierHead(nn.Module):
    def __init__(self, features: Shape, classes: int):
        super().__init__()
        self.image = mode_of(features) == "im"
        width = features[0] if self.image else features[-1]
        self.fc = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.mean((2, 3)) if self.image else x.mean(1)
        return self.fc(pooled)


def keeps_resolution(features: Shape, target: Shape) -> bool:
    """Whether the backbone output has one position per target pixel."""
    _, height, width = target
    if mode_of(features) == "im":
        return tuple(features[1:]) == (height, width)
    return features[0] == height * width


class DenseHead(nn.Module):
    def __init__(self, features: Shape, target: Shape):
        super().__init__()
        self.image = mode_of(features) == "im"
        self.out_channels, self.height, self.width = target
        width = features[0] if self.image else features[-1]
        # Decided at build time (not by comparing shapes in forward) so torch.fx can trace it.
        self.pool = not keeps_resolution(features, target)
        self.proj = (nn.Conv2d(width, self.out_channels, 1) if self.image
                     else nn.Linear(width, self.out_channels))
        self.field = nn.Linear(width, self.out_channels * self.height * self.width) if self.pool \
            else None

    def forward(self, x: Tensor) -> Tensor:
        local = self._local(x)
        if self.field is None:
            return local
        pooled = x.mean((2, 3)) if self.image else x.mean(1)
        return local + self.field(pooled).view_as(local)

    def _local(self, x: Tensor) -> Tensor:
        """The per-position projection, stretched to the target grid when the backbone shrank."""
        if self.image:
            if self.pool:
                x = F.adaptive_avg_pool2d(x, (self.height, self.width))
            return self.proj(x)
        y = self.proj(x).transpose(1, 2)
        if self.pool:
            y = F.adaptive_avg_pool1d(y, self.height * self.width)
        return y.reshape(y.size(0), self.out_channels, self.height, self.width)


def check_target(num_classes: int | None, output_shape) -> Shape | None:
    if num_classes is not None and output_shape is not None:
        raise ShapeError("give either num_classes (classification) or output_shape (dense), "
                         "not both")
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ShapeError(f"num_classes must be a positive integer, got {num_classes!r}")
        return None
    if output_shape is None:
        return None
    target = tuple(output_shape)
    if len(target) == 2:
        target = (1,) + target
    if len(target) != 3 or any(not isinstance(d, int) or d < 1 for d in target):
        raise ShapeError(f"output_shape must be (H, W) or (C, H, W) positive ints, got "
                         f"{output_shape!r}")
    return target


def make_head(features: Shape, num_classes: int | None, target: Shape | None) -> nn.Module | None:
    if num_classes is not None:
        return ClassifierHead(features, num_classes)
    if target is not None:
        return DenseHead(features, target)
    return None


def head_cost(features: Shape, num_classes: int | None, target: Shape | None) -> Cost:
    """Parameters and FLOPs of the head ``make_head`` builds (pooling counts no FLOPs)."""
    width = features[0] if mode_of(features) == "im" else features[-1]
    if num_classes is not None:
        return Cost((width + 1) * num_classes, 2 * width * num_classes, num_classes)
    if target is None:
        return Cost()
    channels, h, w = target
    if mode_of(features) == "im":
        positions = h * w
    else:
        positions = features[0]
    out = channels * h * w
    local = Cost((width + 1) * channels, 2 * width * channels * positions, out)
    if keeps_resolution(features, target):
        return local
    return local + Cost((width + 1) * out, 2 * width * out, out)
