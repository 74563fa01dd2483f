"""LayerNorm scaling (seed paper 24, the curse of depth): options and run-time hooks.

``layernorm_scaling`` (Sun et al.): the l-th LayerNorm of the grammar's ``norm`` terminal, in
the order the compiled network holds them (its forward order), outputs ``LN(x) / sqrt(l)``.
The paper's l counts transformer layers (attention and FFN pre-norms share one); a sampled
network has no such layers, so each norm counts as one.  Norms inside terminal modules (QK
norms, macro blocks) and BatchNorm (the ``norm`` of image mode) are not scaled.  The scaled
norms stay in the trained model, as part of its function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from einspace.modules import Branching, Network, Residual

from .base import Technique, register


@dataclass(frozen=True)
class LayerNormScaling:
    """The l-th grammar LayerNorm outputs ``LN(x) / sqrt(l)``."""


class DepthScaledLayerNorm(nn.LayerNorm):
    """``LN(x) / sqrt(depth)`` (LayerNorm scaling), sharing the parameters of the LayerNorm it
    replaces, so the state dict keeps its keys."""

    def __init__(self, norm: nn.LayerNorm, depth: int):
        super().__init__(norm.normalized_shape, norm.eps, norm.elementwise_affine,
                         bias=norm.bias is not None)
        self.weight, self.bias = norm.weight, norm.bias
        self.depth = depth
        self.scale = 1.0 / math.sqrt(depth)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) * self.scale


_CONTAINERS = (nn.Sequential, nn.ModuleList, Residual, Branching, Network)


def grammar_layernorms(model: nn.Module) -> list[tuple[nn.Module, str, nn.LayerNorm]]:
    """(parent, name, norm) of each plain LayerNorm reached through the compiler's containers
    only (the grammar's ``norm`` terminals, not the norms inside terminal modules), in module
    order."""
    found = []

    def walk(module: nn.Module) -> None:
        for name, child in module.named_children():
            if type(child) is nn.LayerNorm:
                found.append((module, name, child))
            elif isinstance(child, _CONTAINERS):
                walk(child)

    walk(model)
    return found


@register
class LayerNormScalingTechnique(Technique):
    name = "layernorm_scaling"
    options_class = LayerNormScaling

    def attach(self, model: nn.Module) -> list[nn.Parameter]:
        for depth, (parent, name, norm) in enumerate(grammar_layernorms(model), start=1):
            setattr(parent, name, DepthScaledLayerNorm(norm, depth))
        return []
