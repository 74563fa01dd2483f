"""Prototype losses (seed paper 35): options and run-time hooks.

``prototype_losses`` (Li et al.): for networks with ``prototype_layer`` terminals, R1 (mean
over prototypes of the smallest squared distance to a token of the batch) and R2 (mean over
tokens of the smallest distance to a prototype), weighted ``r1`` and ``r2``.  The paper weighs
cross-entropy 20 and each of R1, R2 1; with cross-entropy at 1 that ratio is 0.05.  Without
such layers it is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from einspace.blocks.codebooks import PrototypeModule

from .base import Batch, Technique, check_number, register


@dataclass(frozen=True)
class PrototypeLosses:
    """The prototype paper's R1 and R2 interpretability losses."""

    r1: float = 0.05
    r2: float = 0.05

    def __post_init__(self) -> None:
        check_number("prototype_losses", "r1", self.r1, 0.0)
        check_number("prototype_losses", "r2", self.r2, 0.0)


@register
class PrototypeLossesTechnique(Technique):
    name = "prototype_losses"
    options_class = PrototypeLosses

    def attach(self, model: nn.Module) -> list[nn.Parameter]:
        layers = [m for m in model.modules() if isinstance(m, PrototypeModule)]
        self.recorder = self.record(layers)
        return []

    def loss(self, loss: Tensor, batch: Batch) -> Tensor:
        for distances in self.recorder.outputs.values():
            d = distances.float().reshape(-1, distances.shape[-1])  # (tokens, prototypes)
            r1 = d.min(0).values.mean()      # every prototype near some token
            r2 = d.min(1).values.mean()      # every token near some prototype
            loss = loss + self.options.r1 * r1 + self.options.r2 * r2
        return loss


# The order the trainer applies them: the losses that read the main forward's recordings
# before ordered dropout's extra forward overwrites them; noise last, on the final gradient.
