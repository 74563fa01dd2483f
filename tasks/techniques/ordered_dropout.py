"""Ordered dropout (seed paper 27, Maestro): options and run-time hooks.

``ordered_dropout`` (Horváth et al., Maestro): for networks with ``lowrank_linear`` /
``lowrank_conv`` terminals, each step adds a second forward in which one uniformly drawn
(layer, k) pair keeps only the first k rank components, its loss against the full pass's
detached predictions (soft labels, as the reference), and ``group_lasso`` times the layers'
hierarchical group lasso (5e-3, the reference option default).  Without such layers it is a
no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from einspace.blocks.low_rank import LowRankConvModule, LowRankLinearModule

from .base import Batch, Context, Technique, check_number, derived_seed, register


@dataclass(frozen=True)
class OrderedDropout:
    """Maestro's extra pass through one truncated low-rank layer, plus group lasso."""

    group_lasso: float = 5e-3

    def __post_init__(self) -> None:
        check_number("ordered_dropout", "group_lasso", self.group_lasso, 0.0)


@register
class OrderedDropoutTechnique(Technique):
    name = "ordered_dropout"
    options_class = OrderedDropout

    def __init__(self, options: OrderedDropout, ctx: Context):
        super().__init__(options, ctx)
        self.generator = torch.Generator().manual_seed(derived_seed(ctx.seed, "ordered"))
        self.kept: tuple[nn.Module, int] | None = None

    def attach(self, model: nn.Module) -> list[nn.Parameter]:
        self.layers = [m for m in model.modules() if isinstance(m, LowRankLinearModule)]
        # every (layer, kept rank) pair, drawn uniformly (Maestro's single-layer sampler)
        self.choices = [(layer.down, k) for layer in self.layers
                        for k in range(1, layer.down.weight.shape[0] + 1)]
        self.handles.extend(layer.down.register_forward_hook(self._truncate)
                            for layer in self.layers)
        self.convolutional = {layer.down for layer in self.layers
                              if isinstance(layer, LowRankConvModule)}
        return []

    def _truncate(self, module: nn.Module, inputs, output: Tensor) -> Tensor | None:
        if self.kept is None or self.kept[0] is not module:
            return None
        keep = (torch.arange(module.weight.shape[0], device=output.device) < self.kept[1])
        keep = keep.to(output.dtype)
        return output * (keep.reshape(-1, 1, 1) if module in self.convolutional else keep)

    def loss(self, loss: Tensor, batch: Batch) -> Tensor:
        if not self.choices:
            return loss
        pick = int(torch.randint(len(self.choices), (1,), generator=self.generator))
        self.kept = self.choices[pick]
        try:
            with self.ctx.autocast():
                partial = batch.model(batch.x)
        finally:
            self.kept = None
        partial, full = partial.float(), batch.out.detach()
        distil = (F.cross_entropy(partial, full.softmax(1)) if batch.classification
                  else F.mse_loss(partial, full))
        lasso = sum(layer.group_lasso() for layer in self.layers)
        return loss + distil + self.options.group_lasso * lasso
