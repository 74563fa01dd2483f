"""A data fidelity ladder: successive halving over (training data fraction, epochs).

```yaml
fidelity:
  rungs: [[0.25, 1], [0.5, 2], [1.0, 4]]   # (fraction of the training set, epochs), low to high
  eta: 3                                   # promote the top 1/eta of each rung
```

With no rungs (the default) the ladder is off and a search runs exactly as without it.  With a
ladder every new candidate first trains at rung 0.  Promotion follows asynchronous successive
halving (ASHA's rule), but is decided by the search loop rather than by Tune's scheduler: each
time a result at rung ``r`` is told, the best ``floor(n_r / eta)`` of the ``n_r`` results told
at that rung so far (ties: lower index) that were not promoted yet are queued, and each becomes
a new trial of the same network at rung ``r + 1`` (trained again from scratch: the weights of a
rung are not carried over).  The tells happen in the loop's fixed order, so with ``ordering:
deterministic`` the same seed gives the same promotions, and a resumed run repeats them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from einspace.errors import ConfigError
from einspace.tasks.status import Status

from .checks import check_integer, check_number
from .strategies import Outcome

FIDELITY_DEFAULTS: dict = {"rungs": [], "eta": 3}
"""The ``fidelity`` section of a search config: no rungs, no ladder."""


@dataclass(frozen=True)
class Rung:
    """One fidelity: train on ``fraction`` of the training set for ``epochs`` epochs."""

    level: int
    fraction: float
    epochs: int

    def record(self) -> dict:
        """How the trial database stores the fidelity a result was measured at."""
        return {"level": self.level, "fraction": self.fraction, "epochs": self.epochs}


def check_fidelity(section: dict) -> None:
    """Validate the ``fidelity`` section in place (rungs stored as lists of two numbers)."""
    check_integer("fidelity.eta", section["eta"], 2)
    rungs = section["rungs"]
    if rungs is None:
        section["rungs"] = rungs = []
    if not isinstance(rungs, list) or len(rungs) == 1:
        raise ConfigError(f"fidelity.rungs must be a list of at least two [fraction, epochs] "
                          f"pairs (or empty for no ladder), got {rungs!r}")
    for k, pair in enumerate(rungs):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ConfigError(f"fidelity.rungs[{k}] must be a [fraction, epochs] pair, "
                              f"got {pair!r}")
        check_number(f"fidelity.rungs[{k}] fraction", pair[0], 0.0, strict=True)
        if pair[0] > 1:
            raise ConfigError(f"fidelity.rungs[{k}] fraction must be at most 1, got {pair[0]!r}")
        check_integer(f"fidelity.rungs[{k}] epochs", pair[1], 1)
        rungs[k] = [pair[0], pair[1]]
    for k in range(1, len(rungs)):
        (f0, e0), (f1, e1) = rungs[k - 1], rungs[k]
        if f1 < f0 or e1 < e0 or (f1, e1) == (f0, e0):
            raise ConfigError(f"fidelity.rungs must rise: rung {k} {rungs[k]} does not exceed "
                              f"rung {k - 1} {rungs[k - 1]} (neither value may fall)")


def successive_halving(section: dict) -> SuccessiveHalving | None:
    """The ladder of a checked ``fidelity`` section, None when it has no rungs (off)."""
    if not section["rungs"]:
        return None
    rungs = tuple(Rung(k, float(f), int(e)) for k, (f, e) in enumerate(section["rungs"]))
    return SuccessiveHalving(rungs, section["eta"])


class SuccessiveHalving:
    """Which finished trials to promote, from the results told at each rung in tell order.

    It never proposes by itself: :meth:`told` queues promotions and the loop hands them out
    (:meth:`next_promotion`) before asking the strategy for a new candidate."""

    def __init__(self, rungs: tuple[Rung, ...], eta: int):
        self.rungs = rungs
        self.eta = eta
        self._results: list[list[tuple[float, int]]] = [[] for _ in rungs]
        self._promoted: set[int] = set()
        self._queue: deque[tuple[int, Rung]] = deque()

    @property
    def top(self) -> Rung:
        return self.rungs[-1]

    def told(self, outcome: Outcome, level: int) -> None:
        """Take a result at rung ``level`` and queue the candidates it lets through.  A failed
        or stopped result counts towards ``n`` (it took a place at the rung) but is never
        promoted; a rejected one never ran and counts for nothing."""
        if level >= self.top.level or outcome.status == Status.REJECTED:
            return
        score = outcome.score if outcome.usable else float("-inf")
        results = self._results[level]
        results.append((score, outcome.index))
        winners = sorted(results, key=lambda r: (-r[0], r[1]))[:len(results) // self.eta]
        for score, index in winners:
            if index not in self._promoted and score != float("-inf"):
                self._promoted.add(index)
                self._queue.append((index, self.rungs[level + 1]))

    def promoted(self, source: int) -> None:
        """A promotion of ``source`` already exists (a resumed run's stored trials)."""
        self._promoted.add(source)

    def next_promotion(self) -> tuple[int, Rung] | None:
        """The next queued (source trial index, rung to train it at), or None."""
        return self._queue.popleft() if self._queue else None
