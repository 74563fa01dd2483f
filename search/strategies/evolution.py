"""Regularised (ageing) evolution, as in Real et al. (2019) and the einspace paper.

A population of ``population_size`` scored architectures; each new candidate is a mutation (one
re-sampled subtree) of the winner of a tournament of ``tournament_size`` members drawn with
replacement; when a child's result arrives it joins the population and the oldest member leaves.
Failed and early-stopped children do not join (as in the reference), so a population only holds
full-budget scores.

Starting points:

* **from scratch** (no seeds): the first ``population_size`` proposals are grammar samples;
* **from seeds** (ResNet-18, a mix of shipped seeds, any derivation text): each seed is trained
  once, then the population is ``population_size`` copies cycling over the seeds that trained
  (the reference's protocol; copies are not trials and are never trained again).  Proposals made
  before any seed result is known mutate a seed chosen at random.

With ``growth_rate`` > 0 a mutated child is, with that probability, a growth of its parent
(:mod:`einspace.growth`: a layer widened, or repeated with its norm and activation) rather
than a re-sampled node; a parent that cannot grow within the budget is re-sampled instead.

With ``crossover_rate`` > 0 a child is, with that probability, the crossover of two tournament
winners (:func:`einspace.recombine`, which works between unrelated parents) instead of a
mutation; before the seeds' results are known, of two seeds drawn at random.  A child's
proposal ``choices`` hold ``origins``: its copied subtrees as ``[child path, parent trial index,
path in that parent]``.

With ``inherit_weights`` (on by default) a child starts from its parents' trained weights
(:mod:`einspace.inheritance`): ``choices["inherit_from"]`` lists the parents it inherits from,
those that had trained when it was made (a seed mutated before its result is known has no
weights yet), decided here so a resumed run makes the same decision.  :meth:`weight_parents`
tells the search whose weights to keep: the population's, and before the population is filled
from the seeds, the trained seeds'.

Two optional terms, both off by default (then the proposals are exactly those without them):

* ``novelty_weight`` w > 0: a tournament contestant ranks by ``score + w * novelty``, its
  novelty being its mean normalised tree edit distance (0 same network .. 1) to the other
  draws of the tournament, so a less common architecture can beat a slightly better copy;
* ``min_distance`` d > 0: a child within unit-weight tree edit distance d of the tournament
  winner it was made from is redrawn, up to ``NEAR_DUPLICATE_DRAWS`` times (exact duplicates,
  distance 0 after canonicalisation, are always rejected by the search loop).
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field

from einspace.analysis import annotate
from einspace.architecture_source import architecture_kind, resolve_architecture
from einspace.derivation import Derivation
from einspace.errors import ConfigError, EinspaceError, SamplingError
from einspace.growth import grow_traced
from einspace.mutation import mutate_traced
from einspace.recombination import recombine
from einspace.sampler import Sampler
from einspace.seeds import seed_names
from einspace.tree_distance import normalised_distance, tree_distance

from ..checks import check_integer, check_number
from .base import Outcome, Proposal, Strategy, StrategyContext
from .registry import register
from .settings import StrategySettings

NEAR_DUPLICATE_DRAWS = 10


@dataclass
class EvolutionSettings(StrategySettings):
    """The ``evolution:`` section of a search config (see the module docstring)."""

    population_size: int = 100
    tournament_size: int = 10
    seeds: list[str] = field(default_factory=lambda: ["resnet18"])
    """Shipped seed names or derivation texts; one name alone may be given as a string."""
    crossover_rate: float = 0.0
    growth_rate: float = 0.0
    """The share of mutations that grow the parent (:mod:`einspace.growth`) instead of
    re-sampling one of its nodes."""
    novelty_weight: float = 0.0
    min_distance: float = 0.0
    inherit_weights: bool = True
    """Children start from their parents' trained weights (Lamarckian evolution)."""

    def check(self, section: str) -> None:
        check_integer(f"{section}.population_size", self.population_size, 1)
        check_integer(f"{section}.tournament_size", self.tournament_size, 1)
        for key in ("crossover_rate", "growth_rate"):
            check_number(f"{section}.{key}", getattr(self, key), 0.0)
            if getattr(self, key) > 1:
                raise ConfigError(f"{section}.{key} must be at most 1, got "
                                  f"{getattr(self, key)!r}")
        check_number(f"{section}.novelty_weight", self.novelty_weight, 0.0)
        check_number(f"{section}.min_distance", self.min_distance, 0.0)
        if not isinstance(self.inherit_weights, bool):
            raise ConfigError(f"{section}.inherit_weights must be true or false, got "
                              f"{self.inherit_weights!r}")
        if isinstance(self.seeds, str):
            self.seeds = [self.seeds]
        if self.seeds is None:
            self.seeds = []
        if not isinstance(self.seeds, list) or not all(isinstance(x, str) for x in self.seeds):
            raise ConfigError(f"{section}.seeds must be a list of seed names or derivation "
                              f"texts")
        for k, spec in enumerate(self.seeds):
            _check_seed(f"{section}.seeds[{k}]", spec)


def _check_seed(key: str, spec: str) -> None:
    """A seed is a shipped seed's name or derivation text that parses, found before the task is
    loaded (whether it fits the task's input shape is checked once that is known).  Never a
    file: a resumed run must find its seeds the same from any directory."""
    if architecture_kind(spec, files=False) == "unknown":
        raise ConfigError(f"{key} = {spec!r} is neither a shipped seed "
                          f"({', '.join(seed_names())}) nor derivation text")
    try:
        resolve_architecture(spec, what=key, files=False)
    except EinspaceError as e:
        raise ConfigError(f"{key}: {e}") from None


def resolve_seeds(specs: list[str], input_shape: tuple[int, ...]) -> list[tuple[str, Derivation]]:
    """Checked seed specs as (label, derivation), each checked against the task's input shape."""
    seeds = []
    for k, spec in enumerate(specs):
        key = f"evolution.seeds[{k}]"
        _check_seed(key, spec)
        derivation = resolve_architecture(spec, what=key, files=False)
        label = spec if architecture_kind(spec, files=False) == "seed" else f"text{k}"
        try:
            annotate(derivation, input_shape)
        except Exception as e:
            raise ConfigError(f"{key} ({label}) does not fit the task's input "
                              f"shape {input_shape}: {e}") from None
        seeds.append((label, derivation))
    return seeds


@dataclass(frozen=True)
class Member:
    """A population entry: the trial it came from and its score."""

    index: int
    derivation: Derivation
    score: float


@register
class RegularisedEvolution(Strategy):
    """Tournament selection, subtree-resampling mutation, removal of the oldest member."""

    name = "evolution"
    Settings = EvolutionSettings
    supports_screening = True

    @classmethod
    def create(cls, settings: EvolutionSettings, context: StrategyContext) -> RegularisedEvolution:
        return cls(context.sampler, context.input_shape,
                   population_size=settings.population_size,
                   tournament_size=settings.tournament_size,
                   seeds=resolve_seeds(settings.seeds, context.input_shape),
                   crossover_rate=settings.crossover_rate, growth_rate=settings.growth_rate,
                   novelty_weight=settings.novelty_weight, min_distance=settings.min_distance,
                   inherit_weights=settings.inherit_weights)

    def __init__(self, sampler: Sampler, input_shape: tuple[int, ...], *,
                 population_size: int = 100, tournament_size: int = 10,
                 seeds: list[tuple[str, Derivation]] | None = None,
                 crossover_rate: float = 0.0, growth_rate: float = 0.0,
                 novelty_weight: float = 0.0, min_distance: float = 0.0,
                 inherit_weights: bool = True):
        if population_size < 1 or tournament_size < 1:
            raise ConfigError("evolution needs population_size >= 1 and tournament_size >= 1")
        if not 0.0 <= crossover_rate <= 1.0:
            raise ConfigError(f"crossover_rate must be in [0, 1], got {crossover_rate!r}")
        if not 0.0 <= growth_rate <= 1.0:
            raise ConfigError(f"growth_rate must be in [0, 1], got {growth_rate!r}")
        if novelty_weight < 0 or min_distance < 0:
            raise ConfigError("novelty_weight and min_distance must be >= 0")
        self.sampler = sampler
        self.input_shape = tuple(input_shape)
        self.population_size = population_size
        self.tournament_size = tournament_size
        # A seed listed twice is trained once: its repeat would be a duplicate the loop redraws
        # forever (ask returns the same seed for that index), ending the search as "exhausted".
        self.seeds: list[tuple[str, Derivation]] = []
        for label, derivation in seeds or []:
            if all(derivation != other for _, other in self.seeds):
                self.seeds.append((label, derivation))
        self.crossover_rate = crossover_rate
        self.growth_rate = growth_rate
        self.novelty_weight = novelty_weight
        self.min_distance = min_distance
        self.inherit_weights = inherit_weights
        self.population: deque[Member] = deque()
        self._seed_outcomes: dict[int, Outcome] = {}

    def ask(self, index: int, rng: random.Random) -> Proposal:
        if index < len(self.seeds):
            label, derivation = self.seeds[index]
            return Proposal(derivation, f"seed:{label}")
        if not self.seeds and index < self.population_size:
            return self._sample(rng)
        parent = self._tournament(rng) or self._untrained_seed(rng)
        if parent is None:
            return self._sample(rng)
        proposal = self._child(parent, rng)
        for _ in range(NEAR_DUPLICATE_DRAWS if self.min_distance else 0):
            if proposal.origin == "sample" or not self._near_duplicate(proposal, parent):
                break
            proposal = self._child(parent, rng)
        return proposal

    def screens(self, index: int) -> bool:
        """Children are screened; seeds and a from-scratch starting population are not."""
        return index >= (len(self.seeds) if self.seeds else self.population_size)

    def _child(self, parent: Member, rng: random.Random) -> Proposal:
        if self.crossover_rate and rng.random() < self.crossover_rate:
            other = self._tournament(rng) or self._untrained_seed(rng)
            if other is not None and other.derivation != parent.derivation:
                try:
                    made = recombine(parent.derivation, other.derivation, self.input_shape, rng,
                                     self.sampler)
                except SamplingError:
                    pass
                else:
                    return self._made(made, "crossover", (parent, other))
        if self.growth_rate and rng.random() < self.growth_rate:
            try:
                made = grow_traced(parent.derivation, self.input_shape, rng, self.sampler)
            except SamplingError:
                pass
            else:
                return self._made(made, "growth", (parent,))
        try:
            made = mutate_traced(parent.derivation, self.input_shape, rng, self.sampler)
        except SamplingError:
            return self._sample(rng)
        return self._made(made, "mutation", (parent,))

    def _made(self, made, origin: str, parents: tuple[Member, ...]) -> Proposal:
        """The proposal of a mutated or crossed-over child, with its lineage in ``choices``."""
        indices = tuple(m.index for m in parents)
        choices = {"origins": [[list(path), indices[k], list(source)]
                               for path, k, source in made.regions()]}
        if self.inherit_weights:
            choices["inherit_from"] = sorted({m.index for m in parents if math.isfinite(m.score)})
        return Proposal(made.child, origin, indices, choices)

    def _near_duplicate(self, proposal: Proposal, parent: Member) -> bool:
        """Whether the child is within ``min_distance`` of the parent it was made from."""
        return tree_distance(proposal.derivation, parent.derivation) <= self.min_distance

    def tell(self, outcome: Outcome) -> None:
        if outcome.index < len(self.seeds):
            self._seed_outcomes[outcome.index] = outcome
            if len(self._seed_outcomes) == len(self.seeds):
                self._fill_from_seeds()
            return
        if outcome.usable:
            self.population.append(Member(outcome.index, outcome.derivation, outcome.score))
            while len(self.population) > self.population_size:
                self.population.popleft()

    def weight_parents(self) -> set[int] | None:
        if not self.inherit_weights:
            return None
        living = {m.index for m in self.population}
        if len(self._seed_outcomes) < len(self.seeds):
            living |= {i for i, o in self._seed_outcomes.items() if o.usable}
        return living

    def state(self) -> dict:
        return {"population": [[m.index, m.score] for m in self.population]}

    def _fill_from_seeds(self) -> None:
        trained = [Member(o.index, o.derivation, o.score)
                   for _, o in sorted(self._seed_outcomes.items()) if o.usable]
        copies = [trained[k % len(trained)] for k in range(self.population_size if trained else 0)]
        # Children whose results arrived before the last seed's (asynchronous ordering) are
        # younger than the seed copies: they stay and the oldest copies make room.
        self.population = deque(copies + list(self.population))
        while len(self.population) > self.population_size:
            self.population.popleft()

    def _tournament(self, rng: random.Random) -> Member | None:
        if not self.population:
            return None
        members = list(self.population)
        drawn = [rng.choice(members) for _ in range(self.tournament_size)]
        if not self.novelty_weight:
            return max(drawn, key=lambda m: m.score)
        ranks = [m.score + self.novelty_weight * _novelty(i, drawn) for i, m in enumerate(drawn)]
        return drawn[max(range(len(drawn)), key=ranks.__getitem__)]

    def _untrained_seed(self, rng: random.Random) -> Member | None:
        """A seed to mutate while no seed result is known yet (None once all seeds failed)."""
        if not self.seeds or len(self._seed_outcomes) == len(self.seeds):
            return None
        index = rng.randrange(len(self.seeds))
        return Member(index, self.seeds[index][1], float("nan"))

    def _sample(self, rng: random.Random) -> Proposal:
        return Proposal(self.sampler.sample(self.input_shape, rng).derivation, "sample")


def _novelty(position: int, drawn: list[Member]) -> float:
    """Mean normalised distance from contestant ``position`` to the other draws (0 if none).

    Every other draw counts, repeats and copies included (the seed copies share one trial
    index), so an architecture that is common in the population is less novel."""
    me, others = drawn[position], drawn[:position] + drawn[position + 1:]
    if not others:
        return 0.0
    return sum(normalised_distance(me.derivation, m.derivation) for m in others) / len(others)
