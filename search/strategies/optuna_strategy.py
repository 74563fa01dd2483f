"""An Optuna sampler (TPE by default) drives the grammar's choices through define-by-run.

The einspace sampler makes every decision (production, terminal, branching factor) by turning one
uniform number into a pick among the options that fit.  Here each of those numbers is an Optuna
parameter: the k-th decision of a derivation is ``trial.suggest_float("draw_k", 0, 1)``.  This
sidesteps Optuna's "dynamic value space" problem (a categorical parameter's choice list must never
change, but the options that fit change with the shape at that point): the parameter's range is
always [0, 1), and the filtering of options stays in our sampler, so every proposal is valid by
construction.  The price is weak locality — "decision k" means different things in different
trees — so TPE learns which regions of the decision sequence score well rather than which
operation does (the peers digest measured that naming decisions by tree position fares no better:
every position becomes its own rarely-seen dimension).

Determinism and resume: the strategy keeps its own in-memory study; every ask builds a fresh
sampler seeded from the loop's per-trial RNG, and every tell adds the finished trial (its draws and
score) to the study, so the study after the same tells in the same order is the same, and a
resumed search rebuilds it by replaying the tells.  Failed candidates are not added (TPE ignores
failed trials).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from einspace.sampler import Sampler

from ..checks import check_choice
from .base import Outcome, Proposal, Strategy, StrategyContext
from .registry import register
from .settings import StrategySettings

SAMPLERS = ("tpe", "random")
_UNIT = FloatDistribution(0.0, 1.0)
_BELOW_ONE = math.nextafter(1.0, 0.0)


class _TrialDraws:
    """Stands in for ``random.Random`` inside the grammar sampler: each draw is a parameter."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial
        self.draws: list[float] = []

    def random(self) -> float:
        value = self.trial.suggest_float(f"draw_{len(self.draws):03d}", 0.0, 1.0)
        value = min(value, _BELOW_ONE)
        self.draws.append(value)
        return value


@dataclass
class OptunaSettings(StrategySettings):
    """The ``optuna:`` section of a search config."""

    sampler: str = "tpe"
    """The Optuna sampler that draws the decisions: ``tpe`` or ``random``."""

    def check(self, section: str) -> None:
        check_choice(f"{section}.sampler", self.sampler, SAMPLERS)


@register
class OptunaStrategy(Strategy):
    """Grammar decisions proposed by an Optuna sampler that learns from the scores."""

    name = "optuna"
    Settings = OptunaSettings

    @classmethod
    def create(cls, settings: OptunaSettings, context: StrategyContext) -> OptunaStrategy:
        return cls(context.sampler, context.input_shape, kind=settings.sampler)

    def __init__(self, sampler: Sampler, input_shape: tuple[int, ...], *, kind: str = "tpe"):
        if kind not in SAMPLERS:
            raise ValueError(f"unknown Optuna sampler {kind!r}")
        self.grammar_sampler = sampler
        self.input_shape = tuple(input_shape)
        self.kind = kind
        self.study = optuna.create_study(direction="maximize")

    def ask(self, index: int, rng: random.Random) -> Proposal:
        seed = rng.randrange(2**32)
        self.study.sampler = (optuna.samplers.TPESampler(seed=seed) if self.kind == "tpe"
                              else optuna.samplers.RandomSampler(seed=seed))
        trial = self.study.ask()
        draws = _TrialDraws(trial)
        derivation = self.grammar_sampler.sample(self.input_shape, draws).derivation
        # The asked trial only carried the sampling; the result arrives through tell().
        self.study.tell(trial, state=TrialState.FAIL)
        return Proposal(derivation, "optuna", choices={"draws": draws.draws})

    def tell(self, outcome: Outcome) -> None:
        draws = outcome.choices.get("draws")
        if not outcome.usable or not draws:
            return
        names = [f"draw_{k:03d}" for k in range(len(draws))]
        self.study.add_trial(optuna.trial.create_trial(
            params=dict(zip(names, draws, strict=True)),
            distributions=dict.fromkeys(names, _UNIT), value=outcome.score))

    def state(self) -> dict:
        complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return {"observed": len(complete)}
