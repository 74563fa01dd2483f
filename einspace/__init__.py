"""einspace: neural architecture search over a probabilistic grammar of tensor operations.

The public API::

    d = einspace.sample((3, 28, 28), seed=0)          # a Derivation
    d == einspace.parse(str(d))                       # canonical text round-trips
    net = einspace.build(d, (3, 28, 28), num_classes=10)
    child = einspace.mutate(d, (3, 28, 28), seed=1)
    kid = einspace.crossover(a, b, (3, 28, 28), seed=2)
    einspace.distance(a, b)                           # tree edit distance, 0 = same network
    einspace.canonical_hash(d)                        # equal for trees that build one network

The names are imported on first use (module ``__getattr__``): the terminals import torch and
the grammar imports nltk, which together take seconds, and ``einspace --help`` or a command
that needs neither should not wait for them.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import random
from typing import TYPE_CHECKING

from .errors import ConfigError, EinspaceError, GrammarError, ParseError, SamplingError, ShapeError

if TYPE_CHECKING:
    from .analysis import Annotation, annotate
    from .canonical_form import canonical, canonical_hash
    from .compiler import build
    from .config import SpaceConfig, load_space_config
    from .cost import Cost
    from .derivation import Derivation
    from .grammar import Grammar, load_grammar
    from .recombination import Crossover
    from .sampler import Budget, Sampler
    from .seeds import load_seed, seed_names
    from .text import parse
    from .tree_distance import EditWeights

__all__ = [
    "Annotation", "Budget", "ConfigError", "Cost", "Crossover", "Derivation", "EditWeights",
    "EinspaceError", "Grammar", "GrammarError", "ParseError", "Sampler", "SamplingError",
    "ShapeError", "SpaceConfig", "annotate", "build", "canonical", "canonical_hash", "count",
    "crossover", "distance", "load_grammar", "load_seed", "load_space_config", "mutate", "parse",
    "recombine", "sample", "seed_names",
]

#: Public name -> the submodule that defines it.
_LAZY = {
    "Annotation": "analysis", "Cost": "cost", "annotate": "analysis",
    "canonical": "canonical_form", "canonical_hash": "canonical_form",
    "build": "compiler",
    "SpaceConfig": "config", "load_space_config": "config",
    "Derivation": "derivation",
    "Grammar": "grammar", "load_grammar": "grammar",
    "check_target": "heads", "head_cost": "heads",
    "Crossover": "recombination",
    "Budget": "sampler", "Sampler": "sampler",
    "load_seed": "seeds", "seed_names": "seeds",
    "parse": "text",
    "EditWeights": "tree_distance",
}


def __getattr__(name: str):
    """A public name on first use; a submodule (``einspace.blocks``) as an eager import made it
    reachable before."""
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
    elif importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


_default_sampler: Sampler | None = None


def _sampler(sampler: Sampler | None) -> Sampler:
    global _default_sampler
    if sampler is not None:
        return sampler
    if _default_sampler is None:
        from .sampler import Sampler

        _default_sampler = Sampler()
    return _default_sampler


def _rng(seed) -> random.Random:
    return seed if isinstance(seed, random.Random) else random.Random(seed)


def sample(input_shape, seed=None, *, sampler: Sampler | None = None) -> Derivation:
    """Draw one architecture for ``input_shape`` (C,H,W or N,D; no batch dim)."""
    return _sampler(sampler).sample(input_shape, _rng(seed)).derivation


def mutate(derivation: Derivation, input_shape, seed=None, *,
           sampler: Sampler | None = None) -> Derivation:
    """A child of ``derivation`` with one node re-sampled; valid and within the budget."""
    from .mutation import mutate as mutate_tree

    return mutate_tree(derivation, input_shape, _rng(seed), _sampler(sampler))


def crossover(a: Derivation, b: Derivation, input_shape, seed=None, *,
              sampler: Sampler | None = None) -> Derivation:
    """A child of ``a`` and ``b`` (related or not): a subtree of one grafted into the other,
    shape seams repaired; valid and within the budget, SamplingError when none is found."""
    return recombine(a, b, input_shape, seed, sampler=sampler).child


def recombine(a: Derivation, b: Derivation, input_shape, seed=None, *,
              sampler: Sampler | None = None) -> Crossover:
    """``crossover``, with where each node of the child came from (``Crossover.origins``:
    child path -> (0 for ``a`` / 1 for ``b``, path in that parent))."""
    from .recombination import recombine as recombine_trees

    return recombine_trees(a, b, input_shape, _rng(seed), _sampler(sampler))


def distance(a: Derivation, b: Derivation, weights: EditWeights | None = None) -> float:
    """Weighted tree edit distance between the canonical forms (``einspace.tree_distance``;
    unit weights by default)."""
    from .tree_distance import UNIT, tree_distance

    return tree_distance(a, b, weights or UNIT)


def count(derivation: Derivation, input_shape, num_classes: int | None = None,
          output_shape=None) -> Cost:
    """Parameters, FLOPs and activation elements per sample of the network ``build`` makes.

    Remembered for the last few hundred networks: a search's driver asks for the same
    proposal's cost from its budget, memory and bookkeeping steps, and a derivation never
    changes (``Cost`` is frozen, so sharing the answer is safe)."""
    return _count(derivation, tuple(input_shape), num_classes,
                  None if output_shape is None else tuple(output_shape))


@functools.lru_cache(maxsize=512)
def _count(derivation: Derivation, input_shape: tuple, num_classes: int | None,
           output_shape: tuple | None) -> Cost:
    from .analysis import annotate
    from .heads import check_target, head_cost

    target = check_target(num_classes, output_shape)
    annotation = annotate(derivation, input_shape)
    return annotation.cost + head_cost(annotation.output_shape, num_classes, target)
