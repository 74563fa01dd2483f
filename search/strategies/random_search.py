"""Random search: every proposal is an independent sample from the grammar (best of K)."""

from __future__ import annotations

import random

from einspace.sampler import Sampler

from .base import Proposal, Strategy
from .registry import register


@register
class RandomSearch(Strategy):
    """Samples each candidate afresh; the best of the budget wins."""

    name = "random"
    supports_screening = True

    def __init__(self, sampler: Sampler, input_shape: tuple[int, ...]):
        self.sampler = sampler
        self.input_shape = tuple(input_shape)

    def ask(self, index: int, rng: random.Random) -> Proposal:
        return Proposal(self.sampler.sample(self.input_shape, rng).derivation, "sample")
