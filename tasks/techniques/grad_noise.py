"""Gradient noise (seed paper 6): options and run-time hooks.

``grad_noise`` (Neelakantan et al.): after backward, every gradient gets Gaussian noise of
variance ``eta / (1 + t)^gamma`` at step ``t`` (0-based), before weight decay and momentum.
``eta`` 0.01 is the smallest of the paper's tuned values {0.01, 0.3, 1}; gamma 0.55.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Context, Technique, check_number, derived_seed, register


@dataclass(frozen=True)
class GradNoise:
    """Gaussian gradient noise of variance ``eta / (1 + t)^gamma`` at step t."""

    eta: float = 0.01
    gamma: float = 0.55

    def __post_init__(self) -> None:
        check_number("grad_noise", "eta", self.eta, 0.0, strict=True)
        check_number("grad_noise", "gamma", self.gamma, 0.0)


def grad_noise_std(options: GradNoise, step: int) -> float:
    """The noise standard deviation at (0-based) step ``step``: sqrt(eta / (1 + t)^gamma)."""
    return math.sqrt(options.eta / (1 + step) ** options.gamma)


@register
class GradNoiseTechnique(Technique):
    name = "grad_noise"
    options_class = GradNoise

    def __init__(self, options: GradNoise, ctx: Context):
        super().__init__(options, ctx)
        self.generator = torch.Generator(device=ctx.device)
        self.generator.manual_seed(derived_seed(ctx.seed, "grad_noise"))

    def before_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        std = grad_noise_std(self.options, step)
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    noise = torch.randn(p.grad.shape, generator=self.generator,
                                        device=p.grad.device, dtype=p.grad.dtype)
                    p.grad.add_(noise, alpha=std)
