"""SearchLoop: numbering, duplicate rejection, deterministic lag ordering, asynchronous tells and
restore, simulated in-process (trials "finish" in a chosen order; scores are a fixed function of
the architecture)."""

from __future__ import annotations

import math
import random

import pytest

from einspace import Budget, Sampler, canonical_hash, load_grammar
from einspace.search.loop import DONE, WAIT, LoopTrial, SearchLoop
from einspace.search.strategies import Outcome, Strategy
from einspace.search.strategies.evolution import RegularisedEvolution
from einspace.search.strategies.random_search import RandomSearch
from einspace.tasks.status import Status

SHAPE = (3, 8, 8)
SAMPLER = Sampler(budget=Budget(max_params=50_000, max_nodes=40, max_depth=10))
# Six architectures in all: two terminals, at most five nodes.
TINY = Sampler(load_grammar(terminal_set=["identity", "norm"]),
               Budget(max_params=100, max_nodes=5, max_depth=4))
TINY_SHAPE = (1, 8, 8)


def outcome(trial: LoopTrial) -> Outcome:
    """Score from the hash; about one trial in five fails."""
    value = int(trial.hash[:8], 16)
    if value % 5 == 0:
        return Outcome(trial.index, trial.proposal.derivation, -math.inf, Status.FAILED)
    return Outcome(trial.index, trial.proposal.derivation, value / 2**32, Status.OK,
                   trial.proposal.choices)


class Spy(Strategy):
    """Records, at every ask, which outcomes the strategy had been told (in tell order)."""

    def __init__(self, inner: Strategy):
        self.inner = inner
        self.told: list[int] = []
        self.seen_at_ask: dict[int, list[int]] = {}

    def ask(self, index, rng):
        self.seen_at_ask[index] = list(self.told)
        return self.inner.ask(index, rng)

    def tell(self, outcome):
        self.told.append(outcome.index)
        self.inner.tell(outcome)


def evolution(sampler=SAMPLER, shape=SHAPE) -> RegularisedEvolution:
    return RegularisedEvolution(sampler, shape, population_size=4, tournament_size=2)


def simulate(loop: SearchLoop, workers: int, order: random.Random | None = None,
             running: list[LoopTrial] | None = None, stop_at: int | None = None):
    """Run trials with ``workers`` slots; ``order`` picks which running trial finishes next
    (None: the oldest).  Stops handing out work once ``stop_at`` trials exist and returns the
    trials still running then, and the number of WAITs seen."""
    running = list(running or [])
    waits = 0
    while True:
        while len(running) < workers and (stop_at is None or len(loop.trials) < stop_at):
            trial = loop.next()
            if trial is WAIT:
                waits += 1
                break
            if trial is DONE:
                break
            running.append(trial)
        if stop_at is not None and len(loop.trials) >= stop_at:
            return running, waits
        if not running:
            assert loop.next() is DONE
            return running, waits
        running.sort(key=lambda t: t.index)
        trial = running.pop(order.randrange(len(running)) if order else 0)
        loop.finish(trial.index, outcome(trial))


def signature(loop: SearchLoop) -> list[tuple]:
    return [(t.index, t.hash, t.proposal.origin, t.proposal.parents) for t in loop.trials]


def snapshot(loop: SearchLoop) -> list[LoopTrial]:
    """What a store gives back: copies of the trials (outcome None for unfinished ones)."""
    return [LoopTrial(t.index, t.proposal, t.outcome, t.tell_seq) for t in loop.trials]


# -- numbering, budget, stop ----------------------------------------------------------------

def test_lag_must_be_positive():
    with pytest.raises(ValueError, match="lag"):
        SearchLoop(RandomSearch(SAMPLER, SHAPE), seed=0, max_trials=3, lag=0)


def test_trials_are_numbered_and_max_trials_is_respected():
    loop = SearchLoop(RandomSearch(SAMPLER, SHAPE), seed=0, max_trials=7, lag=2)
    simulate(loop, workers=2, order=random.Random(0))
    assert [t.index for t in loop.trials] == list(range(7))
    assert len(loop.finished) == 7 and loop.running == []
    assert loop.next() is DONE
    assert not loop.exhausted
    assert len(loop.trials) == 7


def test_stop_prevents_new_proposals():
    loop = SearchLoop(RandomSearch(SAMPLER, SHAPE), seed=0, max_trials=None, lag=None)
    first = loop.next()
    second = loop.next()
    loop.stop()
    assert loop.next() is DONE
    loop.finish(first.index, outcome(first))
    loop.finish(second.index, outcome(second))
    assert loop.next() is DONE
    assert len(loop.trials) == 2


# -- duplicates and exhaustion ----------------------------------------------------------------

def all_tiny_hashes() -> set[str]:
    return {TINY.sample(TINY_SHAPE, random.Random(k)).derivation.hash for k in range(400)}


@pytest.mark.parametrize("make", [lambda: RandomSearch(TINY, TINY_SHAPE),
                                  lambda: evolution(TINY, TINY_SHAPE)],
                         ids=["random", "evolution"])
def test_duplicates_are_never_handed_out_and_exhaustion_ends_the_search(make):
    space = all_tiny_hashes()
    assert len(space) == 6
    # the six texts build three networks: norm twice, norm, and the identity (written as
    # identity routings, identity chains, ...); each network is trained once
    networks = {canonical_hash(TINY.sample(TINY_SHAPE, random.Random(k)).derivation)
                for k in range(400)}
    assert len(networks) == 3
    loop = SearchLoop(make(), seed=1, max_trials=50, lag=2, max_duplicate_draws=40)
    simulate(loop, workers=2, order=random.Random(3))
    hashes = [t.hash for t in loop.trials]
    assert len(hashes) == len(set(hashes))
    assert set(hashes) <= space
    assert {canonical_hash(t.proposal.derivation) for t in loop.trials} == networks
    assert len(hashes) == 3  # everything the space holds, then no more
    assert loop.exhausted
    assert loop.duplicates >= 40
    assert loop.next() is DONE


def test_duplicates_do_not_break_repeatability():
    def run():
        loop = SearchLoop(RandomSearch(TINY, TINY_SHAPE), seed=9, max_trials=5, lag=1)
        simulate(loop, workers=1)
        return [t.hash for t in loop.trials], loop.duplicates

    first = run()
    assert first == run()
    assert first[1] > 0  # five of six architectures: redraws were needed


# -- deterministic ordering ------------------------------------------------------------------

def test_wait_until_trial_n_minus_lag_finishes():
    spy = Spy(RandomSearch(SAMPLER, SHAPE))
    loop = SearchLoop(spy, seed=0, max_trials=10, lag=2)
    t0, t1 = loop.next(), loop.next()
    assert (t0.index, t1.index) == (0, 1)
    assert loop.next() is WAIT
    assert loop.finish(1, outcome(t1)) is None  # not told yet: deterministic ordering
    assert loop.next() is WAIT  # trial 0 is still running
    assert spy.told == []
    assert loop.finish(0, outcome(t0)) is None
    t2 = loop.next()
    assert t2.index == 2
    assert spy.told == [0]  # trial 2 sees exactly trial 0's result
    assert (t0.tell_seq, t1.tell_seq) == (0, None)
    t3 = loop.next()
    assert t3.index == 3 and spy.told == [0, 1] and t1.tell_seq == 1
    assert loop.next() is WAIT  # trial 2 is running


@pytest.mark.parametrize("lag", [1, 2, 3])
def test_deterministic_lag_is_independent_of_completion_order(lag):
    def run(order, workers):
        spy = Spy(evolution())
        loop = SearchLoop(spy, seed=21, max_trials=30, lag=lag)
        _, waits = simulate(loop, workers, order)
        for index, seen in spy.seen_at_ask.items():
            assert seen == list(range(max(0, index - lag + 1)))
        return signature(loop), waits

    reference, _ = run(None, lag)
    origins = {origin for _, _, origin, _ in reference}
    assert {"sample", "mutation"} <= origins  # the strategy really learns from the tells
    waited = 0
    for seed in range(3):
        shuffled, waits = run(random.Random(seed), lag)
        assert shuffled == reference
        waited += waits
    if lag > 1:
        assert waited > 0  # out-of-order completions did make slots wait
    # fewer workers than the lag: still the same trials
    assert run(None, 1)[0] == reference


def test_asynchronous_order_depends_on_completion_order():
    """The control for the deterministic test above: without the lag, timing changes the
    search."""
    def run(order):
        loop = SearchLoop(evolution(), seed=21, max_trials=30, lag=None)
        simulate(loop, 3, order)
        return signature(loop)

    assert run(random.Random(0)) != run(None)
    assert run(random.Random(0)) == run(random.Random(0))


def test_asynchronous_tells_in_completion_order():
    spy = Spy(RandomSearch(SAMPLER, SHAPE))
    loop = SearchLoop(spy, seed=0, max_trials=None, lag=None)
    trials = [loop.next() for _ in range(3)]
    assert [t.index for t in trials] == [0, 1, 2]
    assert loop.finish(2, outcome(trials[2])) == 0
    assert loop.finish(0, outcome(trials[0])) == 1
    t3 = loop.next()  # never waits
    assert t3.index == 3 and spy.seen_at_ask[3] == [2, 0]
    assert loop.finish(1, outcome(trials[1])) == 2
    assert loop.finish(1, outcome(trials[1])) == 2  # a repeated finish is not told twice
    assert spy.told == [2, 0, 1]
    assert [t.tell_seq for t in loop.trials] == [1, 2, 0, None]
    assert [t.index for t in loop.running] == [3]


# -- restore -----------------------------------------------------------------------------------

def test_restore_continues_a_deterministic_search_exactly():
    lag = 3
    uninterrupted = SearchLoop(evolution(), seed=4, max_trials=30, lag=lag)
    simulate(uninterrupted, lag, random.Random(1))

    crashed = SearchLoop(evolution(), seed=4, max_trials=30, lag=lag)
    running, _ = simulate(crashed, lag, random.Random(2), stop_at=14)
    unfinished = sorted(t.index for t in running)
    assert unfinished and len(crashed.finished) == 14 - len(unfinished)

    spy = Spy(evolution())
    resumed = SearchLoop(spy, seed=4, max_trials=30, lag=lag)
    assert resumed.restore(snapshot(crashed)) == unfinished
    assert spy.told == []  # deterministic tells happen lazily, as in the uninterrupted run
    reruns = [resumed.next() for _ in unfinished]
    assert [t.index for t in reruns] == unfinished  # unfinished trials are run again first
    assert [t.hash for t in reruns] == [crashed.trials[i].hash for i in unfinished]
    simulate(resumed, lag, random.Random(3), running=reruns)
    assert signature(resumed) == signature(uninterrupted)
    for index, seen in spy.seen_at_ask.items():
        assert seen == list(range(index - lag + 1))
    with pytest.raises(RuntimeError):
        resumed.restore(snapshot(crashed))


def test_restore_continues_an_asynchronous_search_exactly():
    order = random.Random(5)
    loop = SearchLoop(evolution(), seed=6, max_trials=30, lag=None)
    running, _ = simulate(loop, 3, order, stop_at=15)
    stored = snapshot(loop)
    state = order.getstate()
    simulate(loop, 3, order, running=running)  # the run as if nothing had happened

    spy = Spy(evolution())
    resumed = SearchLoop(spy, seed=6, max_trials=30, lag=None)
    unfinished = resumed.restore(stored)
    assert unfinished == sorted(t.index for t in running)
    told = sorted((t for t in stored if t.tell_seq is not None), key=lambda t: t.tell_seq)
    assert spy.told == [t.index for t in told]  # replayed in the recorded tell order
    reruns = [resumed.next() for _ in unfinished]
    resumed_order = random.Random()
    resumed_order.setstate(state)
    simulate(resumed, 3, resumed_order, running=reruns)
    assert signature(resumed) == signature(loop)
    assert [t.tell_seq for t in resumed.trials] == [t.tell_seq for t in loop.trials]


def test_restore_tells_finished_but_untold_trials_after_the_recorded_ones():
    loop = SearchLoop(RandomSearch(SAMPLER, SHAPE), seed=0, max_trials=None, lag=None)
    trials = [loop.next() for _ in range(4)]
    for index in (3, 1, 0):
        loop.finish(index, outcome(trials[index]))
    stored = snapshot(loop)
    stored[1].tell_seq = None  # finished, but the crash came before its tell was stored
    spy = Spy(RandomSearch(SAMPLER, SHAPE))
    resumed = SearchLoop(spy, seed=0, max_trials=None, lag=None)
    assert resumed.restore(stored) == [2]
    assert spy.told == [3, 0, 1]
    assert resumed.next() is resumed.trials[2]
    assert resumed.next().index == 4


def test_restore_respects_stop_and_max_trials_after_reruns():
    loop = SearchLoop(RandomSearch(SAMPLER, SHAPE), seed=0, max_trials=3, lag=3)
    first = loop.next()
    loop.finish(0, outcome(first))
    assert loop.next().index == 1 and loop.next().index == 2
    resumed = SearchLoop(RandomSearch(SAMPLER, SHAPE), seed=0, max_trials=3, lag=3)
    assert resumed.restore(snapshot(loop)) == [1, 2]
    resumed.stop()
    assert [resumed.next().index, resumed.next().index] == [1, 2]  # re-runs still go
    assert resumed.next() is DONE


def test_restore_rejects_gaps():
    loop = SearchLoop(RandomSearch(SAMPLER, SHAPE), seed=0, max_trials=None)
    trials = [loop.next()]
    loop.finish(0, outcome(trials[0]))
    trials.append(loop.next())
    stored = snapshot(loop)
    stored[1].index = 2
    with pytest.raises(ValueError, match="without gaps"):
        SearchLoop(RandomSearch(SAMPLER, SHAPE), seed=0, max_trials=None).restore(stored)


def test_a_budget_no_candidate_fits_ends_the_search_with_its_reason():
    loop = SearchLoop(RandomSearch(SAMPLER, SHAPE), seed=0, max_trials=10, lag=1,
                      max_rejections_in_a_row=25, screen=lambda proposal: "over budget")
    assert loop.next() is DONE
    rejected = loop.take_rejections()
    assert len(rejected) == 25 and all(t.rejected for t in rejected)
    assert loop.trained == 0
    assert loop.exhausted == ("the last 25 candidates were all rejected before training "
                              "(over the memory or time budget)")
    assert loop.next() is DONE
