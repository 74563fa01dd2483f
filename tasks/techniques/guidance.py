"""Guidance by an untrained network (seed paper 16): options and run-time hooks.

``guidance`` (Subramaniam et al.): a frozen guide network (a shipped seed by name, or
architecture text), randomly initialised from the recipe seed (the paper's untrained guide;
there are no pretrained weights to load), runs in eval mode on each batch; the loss gains
``alpha * sum(1 - CKA_linear)`` over matched layers.  Layers are the backbone's main path: the
top-level modules of its sequential chain that hold parameters.  With L_t target and L_g guide
layers, ``min(L_t, L_g)`` pairs are taken evenly spaced in both (first with first, last with
last): the paper's map ``i -> round(i (L_t - 1) / (L_g - 1))`` when the guide is the shallower
one.  ``alpha`` 1 as in the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from einspace.architecture_source import architecture_kind, resolve_architecture
from einspace.compiler import build
from einspace.derivation import Derivation
from einspace.errors import ConfigError, EinspaceError
from einspace.seeds import seed_names

from .base import Batch, Context, Technique, check_number, derived_seed, option_path, register


@dataclass(frozen=True)
class Guidance:
    """``alpha * sum(1 - linear CKA)`` to a frozen, randomly initialised ``guide`` network
    (a shipped seed's name or architecture text)."""

    guide: str = "resnet18"
    alpha: float = 1.0

    def __post_init__(self) -> None:
        guide_derivation(self.guide)
        check_number("guidance", "alpha", self.alpha, 0.0, strict=True)


def guide_derivation(guide: Any) -> Derivation:
    """The guide architecture: a shipped seed's name, or derivation text ``"(...)"`` (never a
    file: a recipe is stored with its run and must resolve the same anywhere)."""
    where = option_path("guidance", "guide")
    if not isinstance(guide, str):
        raise ConfigError(f"{where} must be a seed name or architecture text, got {guide!r}")
    kind = architecture_kind(guide, files=False)
    if kind == "unknown":
        raise ConfigError(f"{where} {guide!r} is not a shipped seed; seeds: "
                          f"{', '.join(seed_names())}")
    try:
        return resolve_architecture(guide, what=where, files=False)
    except EinspaceError as error:
        raise ConfigError(f"{where} is not a valid architecture: {error}") from None


def linear_cka(x: Tensor, y: Tensor, eps: float = 1e-12) -> Tensor:
    """Linear CKA of two batches of representations (each flattened per sample):
    <HKH, HLH> / (|HKH| |HLH|) with K = XXᵀ, L = YYᵀ over the batch.  Each side is centred and
    scaled to unit norm first (CKA ignores scale), which keeps float32 sums in range; a constant
    representation gives 0 with zero gradient instead of nan."""
    grams = []
    for r in (x, y):
        r = r.float().flatten(1)
        r = r - r.mean(0, keepdim=True)
        r = r * torch.rsqrt((r * r).sum().clamp_min(eps))
        grams.append(r @ r.T)
    kx, ky = grams
    return (kx * ky).sum() * torch.rsqrt(((kx * kx).sum() * (ky * ky).sum()).clamp_min(eps))


def representation_points(model: nn.Module) -> list[nn.Module]:
    """The layers guidance compares: the top-level modules of the backbone's sequential chain
    (``model.backbone`` of a compiled network, else the model) that hold parameters; the
    backbone itself when there are none."""
    backbone = getattr(model, "backbone", model)
    chain = list(backbone) if isinstance(backbone, nn.Sequential) else [backbone]
    points = [m for m in chain if next(m.parameters(), None) is not None]
    return points or [backbone]


def matched_layers(target: int, guide: int) -> list[tuple[int, int]]:
    """``min(target, guide)`` (target index, guide index) pairs evenly spaced in both, first
    with first and last with last (a single pair matches the last layers)."""
    pairs = min(target, guide)
    if pairs == 1:
        return [(target - 1, guide - 1)]

    def spaced(count: int) -> list[int]:
        return [math.floor(j * (count - 1) / (pairs - 1) + 0.5) for j in range(pairs)]

    return list(zip(spaced(target), spaced(guide), strict=True))


def build_guide(options: Guidance, input_shape: tuple[int, ...], seed: int) -> nn.Module:
    """The frozen guide: built without a head (only its backbone is compared), its weights drawn
    from ``seed`` without touching the caller's RNG; eval mode, no gradients."""
    derivation = guide_derivation(options.guide)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(seed, "guidance"))
        try:
            guide = build(derivation, input_shape)
        except EinspaceError as error:
            raise ConfigError(f"{option_path('guidance', 'guide')} {options.guide!r} does not "
                              f"fit the task's input shape {tuple(input_shape)}: "
                              f"{error}") from None
    return guide.eval().requires_grad_(False)


@register
class GuidanceTechnique(Technique):
    name = "guidance"
    options_class = Guidance

    def __init__(self, options: Guidance, ctx: Context):
        super().__init__(options, ctx)
        self.guide = build_guide(options, ctx.data.input_shape, ctx.seed).to(ctx.device)

    def attach(self, model: nn.Module) -> list[nn.Parameter]:
        target, guide = representation_points(model), representation_points(self.guide)
        pairs = matched_layers(len(target), len(guide))
        self.target = self.record([target[t] for t, _ in pairs])
        self.reference = self.record([guide[g] for _, g in pairs], training_only=False)
        self.pairs = len(pairs)
        return []

    def loss(self, loss: Tensor, batch: Batch) -> Tensor:
        with torch.no_grad(), self.ctx.autocast():
            self.guide(batch.x)
        misalignment = sum(1.0 - linear_cka(self.target.outputs[i], self.reference.outputs[i])
                           for i in range(self.pairs))
        return loss + self.options.alpha * misalignment
