"""Mask augmentation (seed paper 53, All in tokens): options and run-time hooks.

``mask_augmentation`` (Ning et al., AiT): each training input has ``ceil(ratio * P)`` of its P
patches set to 0 (the train mean when inputs are normalised), drawn without replacement per sample
as AiT's ``MaskGenerator``; patches of ``patch`` positions tile H and W of an image, the token
axis of (N, D) samples and the feature axis of (D,) samples.  Targets stay whole.  AiT's
defaults (ratio 0.5, 16-pixel patches) were set for 480-pixel depth maps; small images want a
smaller ``patch``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from einspace.errors import ConfigError

from .base import Context, Technique, check_number, derived_seed, option_path, register


@dataclass(frozen=True)
class MaskAugmentation:
    """Zero ``ceil(ratio * P)`` of the P patches (``patch`` positions a side) of each input."""

    ratio: float = 0.5
    patch: int = 16

    def __post_init__(self) -> None:
        check_number("mask_augmentation", "ratio", self.ratio, 0.0, strict=True, below=1.0)
        if isinstance(self.patch, bool) or not isinstance(self.patch, int) or self.patch < 1:
            raise ConfigError(f"{option_path('mask_augmentation', 'patch')} must be a positive "
                              f"integer, got {self.patch!r}")


def patch_mask(shape: tuple[int, ...], ratio: float, patch: int,
               generator: torch.Generator) -> Tensor:
    """A float mask broadcasting against a batch of ``shape``: 0 on ``ceil(ratio * P)`` of each
    sample's P patches (chosen without replacement), 1 elsewhere.  Patches of ``patch``
    positions a side tile H and W of images (B, C, H, W), else axis 1 (tokens or features);
    the last patch along an axis may be cut short."""
    batch = shape[0]
    sizes = tuple(shape[2:]) if len(shape) == 4 else (shape[1],)
    grid = [math.ceil(size / patch) for size in sizes]
    count = math.prod(grid)
    order = torch.rand(batch, count, generator=generator).argsort(1)
    keep = torch.ones(batch, count).scatter_(1, order[:, :math.ceil(ratio * count)], 0.0)
    keep = keep.reshape(batch, *grid)
    for axis, size in enumerate(sizes, start=1):
        keep = keep.repeat_interleave(patch, dim=axis).narrow(axis, 0, size)
    if len(shape) == 4:
        return keep.unsqueeze(1)
    return keep.reshape(batch, shape[1], *([1] * (len(shape) - 2)))


@register
class MaskAugmentationTechnique(Technique):
    name = "mask_augmentation"
    options_class = MaskAugmentation

    def __init__(self, options: MaskAugmentation, ctx: Context):
        super().__init__(options, ctx)
        self.generator = torch.Generator().manual_seed(derived_seed(ctx.seed, "mask"))

    def augment(self, x: Tensor) -> Tensor:
        mask = patch_mask(tuple(x.shape), self.options.ratio, self.options.patch, self.generator)
        return x * mask.to(device=x.device, dtype=x.dtype)
