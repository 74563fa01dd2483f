"""einspace: neural architecture search over a probabilistic grammar of tensor operations.

The public API::

    d = einspace.sample((3, 28, 28), seed=0)          # a Derivation
    d == einspace.parse(str(d))                       # canonical text round-trips
    net = einspace.build(d, (3, 28, 28), num_classes=10)
    child = einspace.mutate(d, (3, 28, 28), seed=1)
    kid = einspace.crossover(a, b, (3, 28, 28), seed=2)
"""

from __future__ import annotations

import random

from .analysis import Annotation, Cost, annotate
from .compiler import build
from .config import SpaceConfig, load_space_config
from .derivation import Derivation
from .errors import ConfigError, EinspaceError, GrammarError, ParseError, SamplingError, ShapeError
from .grammar import Grammar, load_grammar
from .heads import check_target, head_cost
from .mutation import crossover as _crossover
from .mutation import mutate as _mutate
from .sampler import Budget, Sampler
from .seeds import load_seed, seed_names
from .text import parse

__all__ = [
    "Annotation", "Budget", "ConfigError", "Cost", "Derivation", "EinspaceError", "Grammar",
    "GrammarError", "ParseError", "Sampler", "SamplingError", "ShapeError", "SpaceConfig",
    "annotate", "build", "count", "crossover", "load_grammar", "load_seed", "load_space_config",
    "mutate", "parse", "sample", "seed_names",
]

_default_sampler: Sampler | None = None


def _sampler(sampler: Sampler | None) -> Sampler:
    global _default_sampler
    if sampler is not None:
        return sampler
    if _default_sampler is None:
        _default_sampler = Sampler()
    return _default_sampler


def _rng(seed) -> random.Random:
    return seed if isinstance(seed, random.Random) else random.Random(seed)


def sample(input_shape, seed=None, *, sampler: Sampler | None = None) -> Derivation:
    """Draw one architecture for ``input_shape`` (C,H,W or N,D; no batch dim)."""
    return _sampler(sampler).sample(input_shape, _rng(seed))


def mutate(derivation: Derivation, input_shape, seed=None, *,
           sampler: Sampler | None = None) -> Derivation:
    """A child of ``derivation`` with one node re-sampled; valid and within the budget."""
    return _mutate(derivation, input_shape, _rng(seed), _sampler(sampler))


def crossover(a: Derivation, b: Derivation, input_shape, seed=None, *,
              sampler: Sampler | None = None) -> Derivation:
    """``a`` with one subtree swapped for a shape-compatible subtree of ``b``."""
    return _crossover(a, b, input_shape, _rng(seed), _sampler(sampler))


def count(derivation: Derivation, input_shape, num_classes: int | None = None,
          output_shape=None) -> Cost:
    """Parameters, FLOPs and activation elements per sample of the network ``build`` makes."""
    target = check_target(num_classes, output_shape)
    annotation = annotate(derivation, input_shape)
    return annotation.cost + head_cost(annotation.output_shape, num_classes, target)
