"""The data fidelity ladder: the training subset, the promotion rule, the loop's rungs and its
resume, and the ``fidelity`` config section; all Ray-free (see test_ray_fidelity.py for a real
search)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from einspace import Budget, Sampler, load_seed
from einspace.errors import ConfigError
from einspace.search.config import resolve
from einspace.search.fidelity import Rung, SuccessiveHalving, successive_halving
from einspace.search.loop import DONE, WAIT, LoopTrial, SearchLoop
from einspace.search.outputs import best_seed, ranked, seed_origin
from einspace.search.store import StoredTrial
from einspace.search.strategies import Outcome, Strategy
from einspace.search.strategies.evolution import RegularisedEvolution
from einspace.tasks.data import CLASSIFICATION, REGRESSION, Split, TaskData
from einspace.tasks.status import Status
from einspace.tasks.subset import subset_indices, training_subset

SHAPE = (3, 8, 8)
SAMPLER = Sampler(budget=Budget(max_params=50_000, max_nodes=40, max_depth=10))
LADDER = {"rungs": [[0.25, 1], [0.5, 2], [1.0, 4]], "eta": 3}


def task(labels: np.ndarray, task_type: str = CLASSIFICATION) -> TaskData:
    n = len(labels)
    x = np.arange(n, dtype=np.float32).reshape(n, 1)
    return TaskData("toy", (1,), task_type,
                    {"train": Split(x, labels), "valid": Split(x[:5], labels[:5])},
                    num_classes=int(labels.max()) + 1 if task_type == CLASSIFICATION else None)


# -- the training subset ---------------------------------------------------------------------

def test_the_subset_is_deterministic_nested_and_of_the_right_size():
    labels = np.repeat(np.arange(4), [100, 60, 30, 10])
    quarter = subset_indices(labels, 200, 0.25, seed=7)
    assert len(quarter) == 50 and len(set(quarter)) == 50
    assert np.array_equal(quarter, subset_indices(labels, 200, 0.25, seed=7))
    assert not np.array_equal(quarter, subset_indices(labels, 200, 0.25, seed=8))
    assert set(quarter) <= set(subset_indices(labels, 200, 0.5, seed=7))
    assert len(subset_indices(None, 10, 0.01, seed=0)) == 1


def test_a_class_subset_is_stratified():
    labels = np.repeat(np.arange(4), [100, 60, 30, 10])
    counts = np.bincount(labels[subset_indices(labels, 200, 0.3, seed=1)], minlength=4)
    assert all(abs(c - 0.3 * n) <= 1 for c, n in zip(counts, (100, 60, 30, 10), strict=True))


def test_training_subset_cuts_train_only():
    data = task(np.arange(40) % 3)
    part = training_subset(data, 0.5, seed=0)
    assert len(part.split("train")) == 20 and part.split("valid") is data.split("valid")
    assert np.array_equal(part.split("train").y,
                          data.split("train").y[subset_indices(data.split("train").y, 40, 0.5, 0)])
    assert training_subset(data, 1.0, seed=0) is data
    regression = task(np.linspace(0, 1, 40), REGRESSION)
    assert len(training_subset(regression, 0.25, seed=0).split("train")) == 10


def test_a_bad_fraction_is_a_config_error():
    with pytest.raises(ConfigError, match="fraction"):
        subset_indices(None, 10, 1.5, seed=0)


# -- the promotion rule ------------------------------------------------------------------------

def told(halving: SuccessiveHalving, index: int, score: float, level: int = 0,
         status: Status = Status.OK) -> list[tuple[int, int]]:
    """Tell one result; return the promotions it queued as (source, rung level)."""
    halving.told(Outcome(index, None, score, status), level)
    out = []
    while (promotion := halving.next_promotion()) is not None:
        out.append((promotion[0], promotion[1].level))
    return out


def test_the_top_third_seen_so_far_is_promoted_once():
    halving = successive_halving(LADDER)
    assert [told(halving, i, s) for i, s in enumerate([0.5, 0.2])] == [[], []]
    assert told(halving, 2, 0.1) == [(0, 1)]  # 3 results: the best one goes up
    assert told(halving, 3, 0.9) == [(3, 1)]  # 4 results, 1 place: 3 overtakes 0
    assert told(halving, 4, 0.3) == []
    assert told(halving, 5, 0.4) == []        # 6 results, 2 places: 3 and 0, both up
    assert told(halving, 6, -math.inf, status=Status.FAILED) == []
    assert told(halving, 7, 0.0) == []
    assert told(halving, 8, 0.45) == [(8, 1)]  # 9 results, 3 places: 3, 0, 8


def test_ties_go_to_the_lower_index_and_the_top_rung_promotes_nothing():
    halving = successive_halving(LADDER)
    assert [told(halving, i, 0.5) for i in range(3)] == [[], [], [(0, 1)]]
    assert [told(halving, i, 0.5, level=2) for i in range(3, 9)] == [[]] * 6


def test_failed_and_rejected_results_are_never_promoted():
    halving = successive_halving({"rungs": [[0.5, 1], [1.0, 1]], "eta": 2})
    assert told(halving, 0, -math.inf, status=Status.FAILED) == []
    assert told(halving, 1, -math.inf, status=Status.FAILED) == []
    assert told(halving, 2, -math.inf, status=Status.REJECTED) == []
    assert told(halving, 3, 0.1) == [(3, 1)]  # 3 counted results (not the rejected), 1 place
    assert told(halving, 4, 0.2) == [(4, 1)]


def test_no_rungs_is_no_ladder():
    assert successive_halving({"rungs": [], "eta": 3}) is None
    assert successive_halving(LADDER).rungs[1] == Rung(1, 0.5, 2)


# -- the loop with a ladder --------------------------------------------------------------------

class Recorder(Strategy):
    """Evolution that remembers every outcome it is told."""

    def __init__(self):
        self.inner = RegularisedEvolution(SAMPLER, SHAPE, population_size=4, tournament_size=2)
        self.told: list[Outcome] = []

    def ask(self, index, rng):
        return self.inner.ask(index, rng)

    def tell(self, outcome):
        self.told.append(outcome)
        self.inner.tell(outcome)


def score(trial: LoopTrial) -> Outcome:
    """A score from the network and a bonus per rung, so a higher rung scores higher."""
    value = int(trial.hash[:8], 16) / 2**32 + trial.rung
    return Outcome(trial.index, trial.proposal.derivation, value, Status.OK)


def run(loop: SearchLoop, workers: int, stop_at: int | None = None, seed: int = 0,
        running: list[LoopTrial] | None = None) -> list[LoopTrial]:
    """Finish trials in a seeded random order with ``workers`` slots; returns those still
    running once ``stop_at`` trials exist."""
    order = random.Random(seed)
    running = list(running or [])
    while True:
        while len(running) < workers and (stop_at is None or len(loop.trials) < stop_at):
            trial = loop.next()
            if trial is WAIT or trial is DONE:
                break
            running.append(trial)
        if (stop_at is not None and len(loop.trials) >= stop_at) or not running:
            return running
        trial = running.pop(order.randrange(len(running)))
        loop.finish(trial.index, score(trial))


def ladder_loop(strategy: Strategy, lag: int | None = 4) -> SearchLoop:
    return SearchLoop(strategy, seed=5, max_trials=30, lag=lag,
                      ladder=successive_halving(LADDER))


def signature(loop: SearchLoop) -> list[tuple]:
    return [(t.index, t.hash, t.rung, t.proposal.origin, t.proposal.parents) for t in loop.trials]


def test_promotions_are_new_trials_of_the_same_network_and_the_strategy_sees_rung_0_only():
    strategy = Recorder()
    loop = ladder_loop(strategy)
    run(loop, workers=2)
    promoted = [t for t in loop.trials if t.rung > 0]
    assert promoted and max(t.rung for t in promoted) == 2
    for trial in promoted:
        source = loop.trials[trial.proposal.parents[0]]
        assert trial.proposal.origin == "promotion" and source.rung == trial.rung - 1
        assert source.hash == trial.hash and source.index < trial.index
    rung_0 = [t.index for t in loop.trials if t.rung == 0]
    told_indices = [o.index for o in strategy.told]
    assert set(told_indices) <= set(rung_0) and len(told_indices) >= len(rung_0) - 4  # lag 4
    assert len(loop.trials) == 30


def test_deterministic_ordering_gives_the_same_rungs_however_trials_finish():
    first, second = ladder_loop(Recorder()), ladder_loop(Recorder())
    run(first, workers=2, seed=1)
    run(second, workers=3, seed=2)
    assert signature(first) == signature(second)


@pytest.mark.parametrize("lag", [4, None])
def test_a_resumed_loop_keeps_its_rungs_and_promotes_as_the_uninterrupted_one(lag):
    reference = ladder_loop(Recorder(), lag)
    run(reference, workers=1)
    interrupted = ladder_loop(Recorder(), lag)
    running = run(interrupted, workers=1, stop_at=17)
    stored = [LoopTrial(t.index, t.proposal, t.outcome, t.tell_seq, rung=t.rung)
              for t in interrupted.trials]
    resumed = ladder_loop(Recorder(), lag)
    assert resumed.restore(stored) == [t.index for t in running]
    run(resumed, workers=1, running=[resumed.trials[t.index] for t in running])
    assert signature(resumed) == signature(reference)


# -- the config section ------------------------------------------------------------------------

def test_the_ladder_is_off_by_default_and_stored_resolved():
    assert resolve({}).raw["fidelity"] == {"rungs": [], "eta": 3}
    assert resolve({"fidelity": {"rungs": [(0.5, 1), [1, 2]]}}).raw["fidelity"]["rungs"] == [
        [0.5, 1], [1, 2]]


@pytest.mark.parametrize("section, message", [
    ({"rungs": [[0.5, 1]]}, "at least two"),
    ({"rungs": [[0.5, 1], [1.0]]}, r"rungs\[1\] must be a \[fraction, epochs\] pair"),
    ({"rungs": [[0.0, 1], [1.0, 1]]}, r"rungs\[0\] fraction"),
    ({"rungs": [[0.5, 1], [1.5, 1]]}, "at most 1"),
    ({"rungs": [[0.5, 1], [1.0, 0]]}, r"rungs\[1\] epochs"),
    ({"rungs": [[0.5, 2], [1.0, 1]]}, "must rise"),
    ({"rungs": [[0.5, 1], [0.5, 1]]}, "must rise"),
    ({"eta": 1}, "fidelity.eta"),
])
def test_a_bad_ladder_is_a_config_error(section, message):
    with pytest.raises(ConfigError, match=message):
        resolve({"fidelity": section})


def test_the_ladder_and_asha_do_not_mix():
    with pytest.raises(ConfigError, match="use one of them"):
        resolve({"fidelity": LADDER, "search": {"scheduler": "asha"}})


# -- the leaderboard's order -------------------------------------------------------------------

def stored(index: int, origin: str, score: float, level: int, parents=()) -> StoredTrial:
    rung = {"level": level, "fraction": (0.25, 1.0)[level], "epochs": (1, 4)[level]}
    return StoredTrial(index, index, load_seed("mlp"), origin,
                       {"rung": rung, "parents": list(parents)}, Status.OK, score)


def test_the_top_rung_ranks_first_and_the_seed_is_compared_at_that_rung():
    trials = [stored(0, "seed:mlp", 0.9, 0), stored(1, "mutation", 0.95, 0),
              stored(2, "promotion", 0.5, 1, [1]), stored(3, "promotion", 0.4, 1, [0])]
    order = ranked(trials)
    assert [t.index for t in order] == [2, 3, 1, 0]
    assert best_seed(order).index == 3 and seed_origin(best_seed(order), order) == "seed:mlp"
    assert best_seed(ranked(trials[:3])) is None  # the seed never reached the top rung
