"""The online surrogate: a scikit-learn regressor from derivation features to trial score.

It learns from the search's own finished trials (no transfer from other tasks), refits lazily
when it is asked to predict after new observations, and is deterministic given its seed (one job,
a fixed ``random_state``).  Tree ensembles suit the features: counts and log-sizes on unrelated
scales, a few informative columns among many zeros, and too few trials to tune anything.
"""

from __future__ import annotations

import math

import numpy as np

from einspace.errors import ConfigError


def _random_forest(seed: int):
    from sklearn.ensemble import RandomForestRegressor
    return RandomForestRegressor(n_estimators=64, min_samples_leaf=2, random_state=seed,
                                 n_jobs=1)


def _gradient_boosting(seed: int):
    from sklearn.ensemble import GradientBoostingRegressor
    return GradientBoostingRegressor(n_estimators=64, max_depth=3, learning_rate=0.1,
                                     subsample=0.8, random_state=seed)


SURROGATES = {"random_forest": _random_forest, "gradient_boosting": _gradient_boosting}
"""Regressor factories by name; scikit-learn is imported when one is made (it takes seconds),
so reading a config that names a surrogate does not load it."""


class Surrogate:
    """Score predictions for feature vectors, learned from (features, score) of finished trials.

    A trial without a finite score (failed, stopped before a score) is not learned from: why it
    failed (memory, a fault) says little about how well it would have trained, and an infinite
    target would break the regression."""

    def __init__(self, kind: str = "random_forest", seed: int = 0):
        if kind not in SURROGATES:
            raise ConfigError(f"unknown surrogate {kind!r}; known: {', '.join(SURROGATES)}")
        self.kind = kind
        self.seed = seed
        self._features: list[np.ndarray] = []
        self._scores: list[float] = []
        self._model = None
        self._fitted_on = 0

    @property
    def count(self) -> int:
        """Trials learned from so far."""
        return len(self._scores)

    def observe(self, features: np.ndarray, score: float) -> bool:
        """Learn from one finished trial; False (ignored) when its score is not finite."""
        if score is None or not math.isfinite(score):
            return False
        self._features.append(np.asarray(features, dtype=np.float64))
        self._scores.append(float(score))
        return True

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted scores of the rows of ``features`` (refits first if trials arrived)."""
        if not self._scores:
            raise ConfigError("the surrogate has no finished trials to predict from")
        if self._fitted_on != self.count:
            self._model = SURROGATES[self.kind](self.seed)
            self._model.fit(np.stack(self._features), np.asarray(self._scores))
            self._fitted_on = self.count
        return self._model.predict(np.atleast_2d(np.asarray(features, dtype=np.float64)))
