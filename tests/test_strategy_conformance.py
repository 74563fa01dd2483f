"""The contract every registered search strategy must keep, checked for each one (as optuna's
``testing/pytest_samplers.py`` checks every sampler).

A strategy's proposals must be valid architectures of the search space (they parse back from
their text, fit the input shape and the space's budget, and carry JSON-able choices for the trial
database); they must be a pure function of the seed and of what the strategy was told, so the
same seed gives the same search and a resumed search, which replays the stored tells into a fresh
strategy, continues exactly as the uninterrupted one; and failed, early-stopped and rejected
results must neither break it nor end its proposals.

The checks are plain functions of a strategy's name, so a test that registers its own strategy
(``test_toy_strategy.py``) runs the same suite.  Everything runs in-process, without Ray;
scores are a fixed function of the architecture."""

from __future__ import annotations

import json
import math

import pytest

import einspace
from einspace.search.config import resolve
from einspace.search.loop import DONE, LoopTrial, SearchLoop
from einspace.search.strategies import Outcome, StrategyContext, create_strategy, strategy_names
from einspace.tasks.status import Status

SHAPE = (3, 8, 8)
SUITE_CONFIG = {
    "budget": {"max_params": 300_000, "max_nodes": 40, "max_depth": 10},
    "evolution": {"population_size": 4, "tournament_size": 2, "seeds": ["mlp"]},
}
"""A small space and small settings so the suite runs in seconds; a strategy this does not name
runs with its default settings."""
TRIALS = 24


def new_loop(name: str, *, seed: int, trials: int, lag: int | None = 1,
             screen=None) -> SearchLoop:
    """A loop around a fresh instance of strategy ``name``, built the way a search builds it
    (the config's settings section, the space's sampler)."""
    config = resolve({**SUITE_CONFIG, "search": {"strategy": name}})
    strategy = create_strategy(name, config.settings,
                               StrategyContext(config.space.sampler(), SHAPE))
    return SearchLoop(strategy, seed=seed, max_trials=trials, lag=lag, screen=screen)


def score_of(trial: LoopTrial) -> float:
    return int(trial.hash[:8], 16) / 2**32


def full_result(trial: LoopTrial) -> Outcome:
    p = trial.proposal
    return Outcome(trial.index, p.derivation, score_of(trial), Status.OK, p.choices)


def mixed_result(trial: LoopTrial) -> Outcome:
    """Every third trial failed, every fourth stopped early with half its score."""
    p = trial.proposal
    if trial.index % 3 == 2:
        return Outcome(trial.index, p.derivation, -math.inf, Status.FAILED, p.choices)
    if trial.index % 4 == 3:
        return Outcome(trial.index, p.derivation, score_of(trial) / 2, Status.STOPPED,
                       p.choices)
    return full_result(trial)


def failed_result(trial: LoopTrial) -> Outcome:
    p = trial.proposal
    return Outcome(trial.index, p.derivation, -math.inf, Status.FAILED, p.choices)


def reject_some(proposal) -> str | None:
    """Rejects about a quarter of the proposals, by their hash (a pure function, as screens
    must be)."""
    return "screened out" if proposal.derivation.hash[0] in "0123" else None


def run(loop: SearchLoop, result=mixed_result) -> SearchLoop:
    """One worker: each trial finishes before the next is asked for."""
    while (trial := loop.next()) is not DONE:
        loop.finish(trial.index, result(trial))
    return loop


def trace(loop: SearchLoop) -> list[tuple]:
    return [(t.index, t.hash, t.proposal.origin, t.proposal.parents,
             json.dumps(t.proposal.choices, sort_keys=True)) for t in loop.trials]


# -- the checks ----------------------------------------------------------------------------------

def check_valid_proposals(name: str) -> None:
    loop = run(new_loop(name, seed=0, trials=TRIALS, screen=reject_some))
    sampler_budget = resolve({**SUITE_CONFIG, "search": {"strategy": name}}).space.budget
    assert loop.trained == TRIALS and not loop.exhausted
    for trial in loop.trials:
        proposal = trial.proposal
        derivation = proposal.derivation
        assert einspace.parse(derivation.text) == derivation
        assert einspace.annotate(derivation, SHAPE).output_shape is not None
        assert sampler_budget.admits(einspace.count(derivation, SHAPE), derivation.depth) == ""
        assert isinstance(proposal.origin, str) and proposal.origin
        assert all(0 <= parent < trial.index for parent in proposal.parents), proposal.parents
        json.dumps(proposal.choices)  # stored with the trial
    json.dumps(loop.strategy.state())  # stored with the run


def check_deterministic_per_seed(name: str) -> None:
    first = trace(run(new_loop(name, seed=5, trials=TRIALS, screen=reject_some)))
    again = trace(run(new_loop(name, seed=5, trials=TRIALS, screen=reject_some)))
    other = trace(run(new_loop(name, seed=6, trials=TRIALS, screen=reject_some)))
    assert first == again
    assert [t[1] for t in first] != [t[1] for t in other]


def check_replayed_tells_continue_the_search(name: str, lag: int | None) -> None:
    """A search stopped after ``half`` trials and resumed (its stored trials restored into a
    fresh strategy, which replays their tells) proposes what the uninterrupted one proposed."""
    half = TRIALS // 2
    whole = run(new_loop(name, seed=2, trials=TRIALS, lag=lag, screen=reject_some))
    stopped = run(new_loop(name, seed=2, trials=half, lag=lag, screen=reject_some))
    resumed = new_loop(name, seed=2, trials=TRIALS, lag=lag, screen=reject_some)
    resumed.restore([LoopTrial(t.index, t.proposal, t.outcome, t.tell_seq)
                     for t in stopped.trials])
    run(resumed)
    assert len(stopped.trials) < len(whole.trials)
    assert trace(resumed) == trace(whole)


def check_unusable_results_are_handled(name: str) -> None:
    """Failed, stopped and rejected results are told like any other; a strategy that has only
    ever been told failures keeps proposing new, valid candidates."""
    mixed = run(new_loop(name, seed=9, trials=TRIALS, screen=reject_some))
    statuses = {t.outcome.status for t in mixed.trials}
    assert {Status.OK, Status.FAILED, Status.STOPPED, Status.REJECTED} <= statuses
    failures = run(new_loop(name, seed=9, trials=TRIALS), failed_result)
    assert failures.trained == TRIALS and not failures.exhausted
    for trial in failures.trials:
        einspace.annotate(trial.proposal.derivation, SHAPE)
    strategy = failures.strategy
    derivation = failures.trials[0].proposal.derivation
    strategy.tell(Outcome(TRIALS, derivation, math.nan, Status.OK))
    strategy.tell(Outcome(TRIALS + 1, derivation, -math.inf, Status.REJECTED))
    strategy.tell(Outcome(TRIALS + 2, derivation, 0.5, Status.STOPPED))
    json.dumps(strategy.state())


# -- every registered strategy -------------------------------------------------------------------

SHIPPED = strategy_names()


def test_the_shipped_strategies_are_registered():
    assert SHIPPED == ("evolution", "random", "optuna")


@pytest.mark.parametrize("name", SHIPPED)
def test_proposals_are_valid(name):
    check_valid_proposals(name)


@pytest.mark.parametrize("name", SHIPPED)
def test_same_seed_same_search(name):
    check_deterministic_per_seed(name)


@pytest.mark.parametrize("lag", [1, 3, None], ids=["lag1", "lag3", "asynchronous"])
@pytest.mark.parametrize("name", SHIPPED)
def test_replaying_the_tells_gives_the_same_next_proposals(name, lag):
    check_replayed_tells_continue_the_search(name, lag)


@pytest.mark.parametrize("name", SHIPPED)
def test_failed_stopped_and_rejected_results_are_handled(name):
    check_unusable_results_are_handled(name)
