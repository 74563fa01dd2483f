"""Screening wired into the search: the ``screening:`` section, K candidates per slot through the
loop, seeds left alone, the choice recorded, and determinism (including a resumed loop).

Searches are simulated in-process as in tests/test_search_loop.py: trials "finish" oldest first
with a score that is a fixed function of the architecture."""

from __future__ import annotations

import math

import numpy as np
import pytest

from einspace import Budget, Sampler
from einspace.errors import ConfigError
from einspace.search.config import resolve
from einspace.search.loop import DONE, WAIT, LoopTrial, SearchLoop
from einspace.search.screening import CandidatePicker, ScreeningOptions, search_picker
from einspace.search.strategies import Outcome
from einspace.search.strategies.evolution import RegularisedEvolution
from einspace.search.strategies.random_search import RandomSearch
from einspace.seeds import load_seed
from einspace.tasks.data import CLASSIFICATION, Split, TaskData
from einspace.tasks.status import Status

SHAPE = (1, 8, 8)
SAMPLER = Sampler(budget=Budget(max_params=20_000, max_nodes=20, max_depth=8))
ON = {"candidates": 3, "min_trials": 4, "batch_size": 4}


class LabelTrap(Split):
    """A split whose labels fail the test the moment anything reads them."""

    def __getattribute__(self, name):
        if name == "y":
            raise AssertionError("screening read the task's labels")
        return super().__getattribute__(name)


def task() -> TaskData:
    rng = np.random.default_rng(0)
    splits = {"train": LabelTrap(rng.standard_normal((20,) + SHAPE).astype(np.float32),
                                 np.zeros(20, dtype=np.int64))}
    return TaskData("toy", SHAPE, CLASSIFICATION, splits, num_classes=2)


def picker(**options) -> CandidatePicker | None:
    return search_picker(ScreeningOptions.from_dict(options or None), task(), seed=0)


def outcome(trial: LoopTrial) -> Outcome:
    value = int(trial.hash[:8], 16)
    if value % 7 == 0:
        return Outcome(trial.index, trial.proposal.derivation, -math.inf, Status.FAILED)
    return Outcome(trial.index, trial.proposal.derivation, value / 2**32, Status.OK,
                   trial.proposal.choices)


def run(loop: SearchLoop, stop_at: int | None = None) -> list[LoopTrial]:
    """Two workers; the oldest running trial finishes first."""
    running: list[LoopTrial] = []
    while True:
        while len(running) < 2 and (stop_at is None or len(loop.trials) < stop_at):
            trial = loop.next()
            if trial is WAIT or trial is DONE:
                break
            running.append(trial)
        if not running or (stop_at is not None and len(loop.trials) >= stop_at):
            return loop.trials
        trial = running.pop(0)
        loop.finish(trial.index, outcome(trial))


def random_loop(screening: CandidatePicker | None, trials: int = 8) -> SearchLoop:
    return SearchLoop(RandomSearch(SAMPLER, SHAPE), seed=5, max_trials=trials, lag=4,
                      picker=screening)


def evolution_loop(screening: CandidatePicker | None, trials: int = 8) -> SearchLoop:
    strategy = RegularisedEvolution(SAMPLER, SHAPE, population_size=3, tournament_size=2,
                                    seeds=[("mlp", load_seed("mlp"))])
    return SearchLoop(strategy, seed=5, max_trials=trials, lag=4, picker=screening)


def trials_of(trials: list[LoopTrial]) -> list[tuple]:
    return [(t.index, t.hash, t.outcome.score if t.outcome else None) for t in trials]


def test_the_section_is_off_by_default_and_stored_in_plain_form():
    config = resolve({})
    assert not config.screening.enabled
    assert config.raw["screening"] == ScreeningOptions().to_section()
    on = resolve({"search": {"strategy": "random"}, "screening": {"candidates": 4,
                                                                  "proxies": ["naswot"]}})
    assert on.screening.candidates == 4
    assert on.raw["screening"]["proxies"] == ["naswot"]
    assert resolve(on.to_dict()).screening == on.screening


@pytest.mark.parametrize("section, message", [
    ({"candidate": 4}, "unknown config key 'screening.candidate'"),
    ({"candidates": 0}, "screening.candidates must be a positive integer"),
    ({"proxies": ["nope"]}, "nope"),
])
def test_bad_screening_sections_are_config_errors(section, message):
    with pytest.raises(ConfigError, match=message):
        resolve({"screening": section})


def test_optuna_refuses_screening_with_a_clear_error():
    assert resolve({"search": {"strategy": "optuna"}, "screening": {"candidates": 1}})
    with pytest.raises(ConfigError, match="optuna strategy does not screen"):
        resolve({"search": {"strategy": "optuna"}, "screening": {"candidates": 2}})


@pytest.mark.parametrize("make", [random_loop, evolution_loop], ids=["random", "evolution"])
def test_with_screening_off_a_search_is_identical_to_one_without_the_section(make):
    assert picker() is None and picker(candidates=1) is None
    assert trials_of(run(make(None))) == trials_of(run(make(picker(candidates=1))))


def test_random_search_trains_the_best_of_k_and_records_how_it_was_chosen():
    screened = run(random_loop(picker(**ON), trials=12))
    plain = run(random_loop(None, trials=12))
    assert trials_of(screened) != trials_of(plain)
    for trial in screened:
        record = trial.proposal.choices["screening"]
        assert record["method"] in ("proxies", "surrogate")
        assert len(record["ranking"]) == ON["candidates"]
        assert record["ranking"][0][0] == trial.proposal.derivation.hash
        assert record["seconds"] >= 0
    assert {t.proposal.choices["screening"]["method"] for t in screened} == {"proxies",
                                                                             "surrogate"}


def test_evolution_screens_children_but_never_its_seeds():
    trials = run(evolution_loop(picker(**ON)))
    assert trials[0].proposal.origin == "seed:mlp"
    assert "screening" not in trials[0].proposal.choices
    children = trials[1:]
    assert children and all(len(t.proposal.choices["screening"]["ranking"]) == 3
                            for t in children)


def test_candidates_over_the_memory_screen_are_dropped_before_ranking():
    rejected = set()

    def memory(proposal):
        if len(rejected) < 2 and proposal.derivation.hash not in rejected:
            rejected.add(proposal.derivation.hash)
            return "too large"
        return None

    loop = SearchLoop(RandomSearch(SAMPLER, SHAPE), seed=5, max_trials=1, lag=4,
                      screen=memory, picker=picker(**ON))
    trial = loop.next()
    record = trial.proposal.choices["screening"]
    assert len(record["ranking"]) == 1
    assert list(record["failures"].values()) == ["too large", "too large"]


def test_screened_searches_repeat_and_resume_exactly():
    """Deterministic ordering: the same trials twice, and after a restore from a run stopped
    with trials still running (the surrogate relearns from the replayed tells)."""
    def loop():
        return SearchLoop(RandomSearch(SAMPLER, SHAPE), seed=5, max_trials=9, lag=4,
                          picker=picker(**ON))

    whole = run(loop())
    assert trials_of(whole) == trials_of(run(loop()))
    first = loop()
    run(first, stop_at=6)
    assert any(t.outcome is None for t in first.trials)
    resumed = loop()
    resumed.restore([LoopTrial(t.index, t.proposal, t.outcome, t.tell_seq)
                     for t in first.trials])
    assert trials_of(run(resumed)) == trials_of(whole)
