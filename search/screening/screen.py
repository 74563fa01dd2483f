"""Rank K candidate derivations cheaply and pick the one to train.

A :class:`Screener` lives for one search.  For every candidate it computes the zero-cost proxies
on the search's screening batch (the same seeded initialisation for all, so they compare fairly)
and the candidate's features.  Until ``min_trials`` finished trials have a score, candidates are
ranked by their mean proxy rank; from then on by the online surrogate's predicted score.  A
candidate that cannot be built or that every proxy fails on is ranked last with its reason.

Ranking is deterministic: the same candidates after the same observations give the same order,
ties kept in proposal order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from einspace.derivation import Derivation
from einspace.errors import ConfigError, EinspaceError
from einspace.proxies import ProxyScores, score_proxies

from .features import FeatureSpace
from .options import ScreeningOptions
from .surrogate import Surrogate

SURROGATE, PROXIES = "surrogate", "proxies"


@dataclass(frozen=True)
class Ranked:
    """One screened candidate: the value it was ranked by (higher is better; None when it
    failed) and, for a failed one, why."""

    derivation: Derivation
    value: float | None
    proxies: ProxyScores
    failure: str = ""


@dataclass(frozen=True)
class Screening:
    """The candidates best first, how they were ranked, and the wall-clock time it took."""

    ranking: tuple[Ranked, ...]
    method: str
    seconds: float

    @property
    def best(self) -> Derivation:
        """The candidate to train: the first, even when every candidate failed (training it
        then records the failure as a trial, as an unscreened search would)."""
        return self.ranking[0].derivation

    @property
    def seconds_per_candidate(self) -> float:
        return self.seconds / len(self.ranking)


class Screener:
    """Screens candidates for one search and learns from its finished trials."""

    def __init__(self, options: ScreeningOptions, batch: np.ndarray, *,
                 num_classes: int | None = None, output_shape=None, seed: int = 0):
        self.options = options
        self.batch = batch
        self.num_classes = num_classes
        self.output_shape = output_shape
        self.seed = seed
        self.features = FeatureSpace(batch.shape[1:], options.proxies)
        self.surrogate = Surrogate(options.surrogate, seed)
        self._pending: dict[str, np.ndarray] = {}
        #: Wall-clock seconds spent screening and observing, for the run's overhead figures.
        self.seconds = 0.0

    def screen(self, candidates: Sequence[Derivation]) -> Screening:
        """Rank ``candidates`` (at least one) best first."""
        if not candidates:
            raise ConfigError("screening needs at least one candidate")
        start = time.perf_counter()
        scored = [(c, self._proxies(c)) for c in candidates]
        vectors: dict[int, np.ndarray] = {}
        failures: dict[int, str] = {}
        for i, (candidate, proxies) in enumerate(scored):
            vector, failure = self._vector(candidate, proxies)
            if vector is None:
                failures[i] = failure
            else:
                vectors[i] = vector
        use_surrogate = bool(vectors) and self.surrogate.count >= self.options.min_trials
        if use_surrogate:
            predicted = self.surrogate.predict(np.stack(list(vectors.values())))
            values = dict(zip(vectors, predicted.tolist(), strict=True))
        else:
            values = _mean_proxy_rank({i: scored[i][1] for i in vectors}, self.options.proxies)
        order = sorted(range(len(scored)), key=lambda i: (i in failures, -values.get(i, 0.0), i))
        ranking = tuple(Ranked(scored[i][0], values.get(i), scored[i][1], failures.get(i, ""))
                        for i in order)
        if order[0] in vectors:
            self._pending[ranking[0].derivation.hash] = vectors[order[0]]
        elapsed = time.perf_counter() - start
        self.seconds += elapsed
        return Screening(ranking, SURROGATE if use_surrogate else PROXIES, elapsed)

    def observe(self, derivation: Derivation, score: float | None) -> None:
        """Learn from a finished trial; a derivation that was not screened (a seed, a resumed
        trial) has its proxies computed now.  A trial without a finite score teaches nothing
        (see :class:`Surrogate`) and costs nothing."""
        start = time.perf_counter()
        vector = self._pending.pop(derivation.hash, None)
        if score is not None and math.isfinite(score):
            if vector is None:
                vector = self._vector(derivation, self._proxies(derivation))[0]
            if vector is not None:
                self.surrogate.observe(vector, score)
        self.seconds += time.perf_counter() - start

    def _proxies(self, derivation: Derivation) -> ProxyScores:
        return score_proxies(derivation, self.batch, self.options.proxies, seed=self.seed,
                             num_classes=self.num_classes, output_shape=self.output_shape)

    def _vector(self, derivation: Derivation,
                proxies: ProxyScores) -> tuple[np.ndarray | None, str]:
        """The candidate's features, or None and why it failed."""
        if not proxies.ok:
            return None, proxies.reason
        try:
            return self.features.vector(derivation, proxies), ""
        except EinspaceError as e:
            return None, str(e)


def _mean_proxy_rank(scores: dict[int, ProxyScores], names: Sequence[str]) -> dict[int, float]:
    """Each candidate's mean over proxies of its rank fraction (1 best, 0 worst); a proxy that
    failed on a candidate ranks it below every candidate it succeeded on."""
    if not scores:
        return {}
    total = dict.fromkeys(scores, 0.0)
    for name in names:
        values = {i: s.values[name].value if s.values[name].ok else -np.inf
                  for i, s in scores.items()}
        ordered = sorted(values, key=lambda i: (values[i], -i))
        span = max(len(ordered) - 1, 1)
        for position, i in enumerate(ordered):
            total[i] += position / span
    return {i: t / len(names) for i, t in total.items()}
