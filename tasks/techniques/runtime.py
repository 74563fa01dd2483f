"""The enabled techniques of one training run, called by the trainer at each point of a step."""

from __future__ import annotations

from typing import Callable, ContextManager

import torch
from torch import Tensor, nn

from ..data import TaskData
from .base import Batch, Context, registered

#: The order the trainer applies the techniques: the losses that read the main forward's
#: recordings before ordered dropout's extra forward overwrites them; noise last, on the final
#: gradient.  Every registered technique appears once (a test checks it).
APPLICATION_ORDER = ("layernorm_scaling", "tract", "mask_augmentation", "proj_head", "guidance",
                     "prototype_losses", "ordered_dropout", "grad_noise")


class TrainingTechniques:
    """The enabled techniques of one training run, at the points of a step where the trainer
    calls them: :meth:`attach` (before the optimiser is made), :meth:`augment` (the batch),
    :meth:`loss` (after the forward), :meth:`before_step` (after backward) and :meth:`detach`
    (after training: hooks go, the scaled norms stay).  Task mismatches and guides that do not
    fit raise :class:`ConfigError` here, before training starts."""

    def __init__(self, techniques, data: TaskData, device: torch.device, seed: int,
                 autocast: Callable[[], ContextManager]):
        ctx = Context(data, device, seed, autocast)
        kinds = registered()
        self.active = [kinds[name](getattr(techniques, name), ctx) for name in APPLICATION_ORDER
                       if getattr(techniques, name) is not None]

    def attach(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for technique in self.active for p in technique.attach(model)]

    def augment(self, x: Tensor) -> Tensor:
        for technique in self.active:
            x = technique.augment(x)
        return x

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, out: Tensor, loss: Tensor,
             classification: bool) -> Tensor:
        """The training loss with every technique's terms added to the task ``loss``."""
        batch = Batch(model, x, y, out, classification)
        try:
            for technique in self.active:
                loss = technique.loss(loss, batch)
        finally:
            for technique in self.active:
                technique.forget()
        return loss

    def before_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        for technique in self.active:
            technique.before_step(optimizer, step)

    def detach(self) -> None:
        for technique in self.active:
            technique.detach()
