"""The ask/tell interface every search strategy implements, independent of Ray and storage.

A strategy proposes derivations (:meth:`Strategy.ask`) and learns from finished trials
(:meth:`Strategy.tell`).  It never trains anything and never touches Ray: the
:class:`~einspace.search.loop.SearchLoop` numbers proposals, removes duplicates and decides which
results a strategy has seen, and the engine runs the trials.  All randomness comes from the
``random.Random`` handed to ``ask``, derived from the search seed and the trial index, so a
strategy's proposals are a pure function of what it has been told; replaying the same tells in
the same order restores it exactly after a crash.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

from einspace.derivation import Derivation
from einspace.sampler import Sampler
from einspace.tasks.status import Status

from .settings import StrategySettings


@dataclass(frozen=True)
class Proposal:
    """One candidate a strategy wants trained.

    ``parents`` are trial indices; ``origin`` says how it was made (``sample``, ``seed:NAME``,
    ``mutation``, ``crossover``, ``optuna``); ``choices`` is strategy data worth storing with the
    trial (for the Optuna strategy, the grammar decisions it drew; for a child, ``origins``, its
    copied subtrees as ``[child path, parent trial index, path in that parent]``, and with
    weight inheritance ``inherit_from``, the parents whose trained weights it starts from)."""

    derivation: Derivation
    origin: str
    parents: tuple[int, ...] = ()
    choices: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What a strategy learns about one finished trial: its score (higher is better; ``-inf``
    for a failed candidate) and status (``ok``, ``failed``, ``stopped`` early by a scheduler, or
    ``rejected`` before it was launched)."""

    index: int
    derivation: Derivation
    score: float
    status: Status
    choices: dict = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        """Whether the score is a full-budget score a strategy may compare with others."""
        return self.status == Status.OK and math.isfinite(self.score)


@dataclass(frozen=True)
class StrategyContext:
    """What a search knows when it builds its strategy: the grammar sampler of its space and
    the task's input shape (the strategy's own settings come separately, typed)."""

    sampler: Sampler
    input_shape: tuple[int, ...]


class Strategy(ABC):
    """Proposes candidates and learns from their outcomes.

    A subclass registered with :func:`~einspace.search.strategies.registry.register` declares
    all the search needs to offer it: ``name`` (``search.strategy`` in a config, ``--strategy``
    on the command line), ``Settings`` (its typed config section, named like the strategy; None
    for a strategy without settings) and :meth:`create`."""

    name: ClassVar[str] = ""
    Settings: ClassVar[type[StrategySettings] | None] = None
    supports_screening: ClassVar[bool] = False
    """Whether a ``screening:`` section may ask this strategy for several candidates per trial
    (see :meth:`screens`); a strategy whose proposals are not interchangeable draws (Optuna's
    trials are its sampler's own) says no, and the config refuses screening for it."""

    @classmethod
    def create(cls, settings: StrategySettings | None, context: StrategyContext) -> Strategy:
        """The strategy a search with these settings uses; one without settings only needs the
        sampler and the input shape."""
        del settings
        return cls(context.sampler, context.input_shape)

    @abstractmethod
    def ask(self, index: int, rng: random.Random) -> Proposal:
        """The proposal for trial ``index``; may be called again for the same index with the
        same ``rng`` stream continued when the previous proposal was a duplicate."""

    def screens(self, index: int) -> bool:
        """Whether proposal ``index`` may be one of several screened candidates: asking again
        with the same stream continued then gives another candidate for the same slot.
        Proposals a search must train as they are (seeds, a starting population) say no."""
        del index
        return self.supports_screening

    def tell(self, outcome: Outcome) -> None:
        """Learn from a finished trial (strategies that do not learn ignore it)."""
        del outcome

    def weight_parents(self) -> set[int] | None:
        """The trials whose trained weights a future child may still inherit, so the search
        must keep them; None for a strategy whose children never inherit weights (the search
        then keeps no parents' weights at all)."""
        return None

    def state(self) -> dict:
        """A JSON-able summary of what the strategy holds (stored with the run, for humans)."""
        return {}
