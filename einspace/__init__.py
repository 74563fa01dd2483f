"""einspace: neural architecture search over a probabilistic grammar of tensor operations.

The public API::

    d = einspace.sample((3, 28, 28), seed=0)          # a Derivation
    d == einspace.parse(str(d))                       # canonical text round-trips
    net = einspace.build(d, (3, 28, 28), num_classes=10)
    child = einspace.mutate(d, (3, 28, 28), seed=1)
    kid = einspace.crossover(a, b, (3, 28, 28), seed=2)
    einspace.distance(a, b)                           # tree edit distance, 0 = same network
    einspace.canonical_hash(d)                        # equal for trees that build one network
"""

from __future__ import annotations

import random

from .analysis import Annotation, Cost, annotate
from .canonical_form import canonical, canonical_hash
from .compiler import build
from .config import SpaceConfig, load_space_config
from .derivation import Derivation
from .errors import ConfigError, EinspaceError, GrammarError, ParseError, SamplingError, ShapeError
from .grammar import Grammar, load_grammar
from .heads import check_target, head_cost
from .mutation import mutate as _mutate
from .recombination import Crossover
from .recombination import recombine as _recombine
from .sampler import Budget, Sampler
from .seeds import load_seed, seed_names
from .text import parse
from .tree_distance import UNIT, EditWeights, tree_distance

__all__ = [
    "Annotation", "Budget", "ConfigError", "Cost", "Crossover", "Derivation", "EditWeights",
    "EinspaceError", "Grammar", "GrammarError", "ParseError", "Sampler", "SamplingError",
    "ShapeError", "SpaceConfig", "annotate", "build", "canonical", "canonical_hash", "count",
    "crossover", "distance", "load_grammar", "load_seed", "load_space_config", "mutate", "parse",
    "recombine", "sample", "seed_names",
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
    """A child of ``a`` and ``b`` (related or not): a subtree of one grafted into the other,
    shape seams repaired; valid and within the budget, SamplingError when none is found."""
    return recombine(a, b, input_shape, seed, sampler=sampler).child


def recombine(a: Derivation, b: Derivation, input_shape, seed=None, *,
              sampler: Sampler | None = None) -> Crossover:
    """``crossover``, with where each node of the child came from (``Crossover.origins``:
    child path -> (0 for ``a`` / 1 for ``b``, path in that parent))."""
    return _recombine(a, b, input_shape, _rng(seed), _sampler(sampler))


def distance(a: Derivation, b: Derivation, weights: EditWeights = UNIT) -> float:
    """Weighted tree edit distance between the canonical forms (``einspace.tree_distance``)."""
    return tree_distance(a, b, weights)


def count(derivation: Derivation, input_shape, num_classes: int | None = None,
          output_shape=None) -> Cost:
    """Parameters, FLOPs and activation elements per sample of the network ``build`` makes."""
    target = check_target(num_classes, output_shape)
    annotation = annotate(derivation, input_shape)
    return annotation.cost + head_cost(annotation.output_shape, num_classes, target)
