"""The search strategies (random, regularised evolution, Optuna) driven in-process, no Ray.

Scores are a deterministic function of the architecture hash, so every run is repeatable and a
strategy's behaviour can be checked against a hand computation."""

from __future__ import annotations

import math
import random

import pytest

import einspace
from einspace import Budget, Sampler
from einspace.errors import ConfigError
from einspace.search.loop import DONE, WAIT, SearchLoop
from einspace.search.strategies import Outcome, Proposal, Strategy
from einspace.search.strategies.evolution import RegularisedEvolution
from einspace.search.strategies.optuna_strategy import OptunaStrategy
from einspace.search.strategies.random_search import RandomSearch
from einspace.tasks.status import Status

SHAPE = (3, 8, 8)
SAMPLER = Sampler(budget=Budget(max_params=50_000, max_nodes=40, max_depth=10))


def score_of(derivation) -> float:
    """A fake score in [0, 1): a fixed function of the architecture."""
    return int(derivation.hash[:8], 16) / 2**32


def ok(index: int, derivation, score: float | None = None, choices=None) -> Outcome:
    return Outcome(index, derivation, score_of(derivation) if score is None else score, Status.OK,
                   choices or {})


def outcome_for(trial) -> Outcome:
    return ok(trial.index, trial.proposal.derivation, choices=trial.proposal.choices)


def run_sequential(loop: SearchLoop, outcome=outcome_for) -> None:
    """One worker: every trial finishes before the next is asked for."""
    while (trial := loop.next()) is not DONE:
        loop.finish(trial.index, outcome(trial))


def sample(seed: int):
    return SAMPLER.sample(SHAPE, random.Random(seed)).derivation


def assert_valid(derivation) -> None:
    annotation = einspace.annotate(derivation, SHAPE)
    cost = einspace.count(derivation, SHAPE)
    assert SAMPLER.budget.admits(cost, derivation.depth) == ""
    assert annotation.output_shape is not None


class Recorder(Strategy):
    """Wraps a strategy and records, at each ask, the population (evolution) or what it was
    told so far."""

    def __init__(self, inner: Strategy):
        self.inner = inner
        self.asks: list[tuple[int, Proposal, set[int]]] = []
        self.told: list[int] = []

    def ask(self, index, rng):
        population = {m.index for m in getattr(self.inner, "population", ())}
        proposal = self.inner.ask(index, rng)
        self.asks.append((index, proposal, population))
        return proposal

    def tell(self, outcome):
        self.told.append(outcome.index)
        self.inner.tell(outcome)


# -- random search ------------------------------------------------------------------------------

def random_hashes(seed: int, n: int = 12) -> list[str]:
    loop = SearchLoop(RandomSearch(SAMPLER, SHAPE), seed=seed, max_trials=n)
    run_sequential(loop)
    return [t.hash for t in loop.trials]


def test_random_search_proposals_are_valid_samples():
    loop = SearchLoop(RandomSearch(SAMPLER, SHAPE), seed=3, max_trials=15)
    run_sequential(loop)
    assert len(loop.trials) == 15
    for trial in loop.trials:
        assert trial.proposal.origin == "sample"
        assert trial.proposal.parents == ()
        assert_valid(trial.proposal.derivation)
    # trial n is the sampler's draw from the loop's per-trial stream
    drawn = SAMPLER.sample(SHAPE, random.Random("3/4")).derivation
    assert loop.trials[4].proposal.derivation == drawn


def test_random_search_is_repeatable_per_seed():
    assert random_hashes(0) == random_hashes(0)
    first, second = random_hashes(0), random_hashes(1)
    assert first != second
    assert len(set(first) & set(second)) <= 2


# -- regularised evolution ----------------------------------------------------------------------

def test_evolution_rejects_bad_settings():
    with pytest.raises(ConfigError, match="population_size"):
        RegularisedEvolution(SAMPLER, SHAPE, population_size=0)
    with pytest.raises(ConfigError, match="crossover_rate"):
        RegularisedEvolution(SAMPLER, SHAPE, crossover_rate=1.5)


def test_evolution_samples_then_mutates_population_members():
    evo = RegularisedEvolution(SAMPLER, SHAPE, population_size=6, tournament_size=3)
    spy = Recorder(evo)
    loop = SearchLoop(spy, seed=11, max_trials=40)
    run_sequential(loop)
    assert len(loop.trials) == 40
    by_index = {t.index: t for t in loop.trials}
    for trial in loop.trials[:6]:
        assert trial.proposal.origin == "sample" and trial.proposal.parents == ()
    mutations = 0
    for index, proposal, population in spy.asks:
        if index < 6:
            continue
        assert_valid(proposal.derivation)
        if proposal.origin == "mutation":
            mutations += 1
            (parent,) = proposal.parents
            assert parent in population
            assert proposal.derivation != by_index[parent].proposal.derivation
        else:  # only when no valid mutation exists
            assert proposal.origin == "sample"
    assert mutations >= 30
    # the population is the last population_size results told, oldest first (with lag 1 the
    # last trial's result is never told: no proposal comes after it)
    assert spy.told == list(range(39))
    assert [m.index for m in evo.population] == list(range(33, 39))
    assert evo.state()["population"] == [[m.index, m.score] for m in evo.population]


def test_evolution_population_is_bounded_fifo_and_skips_unusable_results():
    evo = RegularisedEvolution(SAMPLER, SHAPE, population_size=4, tournament_size=2)
    rng = random.Random(5)
    statuses = [Status.OK, Status.FAILED, Status.OK, Status.STOPPED, Status.OK, Status.OK,
                Status.OK, Status.FAILED, Status.OK, Status.OK, Status.OK]
    usable: list[int] = []
    for index, status in enumerate(statuses):
        d = sample(100 + index)
        score = -math.inf if status == Status.FAILED else rng.random()
        evo.tell(Outcome(index, d, score, status))
        if status == Status.OK:
            usable.append(index)
        members = [m.index for m in evo.population]
        assert len(members) <= 4
        assert members == usable[-4:]
    # an ok status with a non-finite score is not a usable score either
    before = list(evo.population)
    evo.tell(Outcome(len(statuses), sample(7), math.nan, Status.OK))
    evo.tell(Outcome(len(statuses) + 1, sample(8), -math.inf, Status.OK))
    assert list(evo.population) == before
    assert all(m.index not in (1, 3, 7) for m in evo.population)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_tournament_picks_best_of_drawn_members(seed):
    evo = RegularisedEvolution(SAMPLER, SHAPE, population_size=5, tournament_size=3)
    scores = [0.3, 0.9, 0.1, 0.5, 0.7]
    for index, score in enumerate(scores):
        evo.tell(ok(index, sample(200 + index), score))
    members = list(evo.population)
    # hand computation: three members drawn with replacement from the same stream
    hand = random.Random(f"t/{seed}")
    drawn = [hand.choice(members) for _ in range(3)]
    expected = max(drawn, key=lambda m: m.score).index
    proposal = evo.ask(10, random.Random(f"t/{seed}"))
    assert proposal.origin == "mutation"
    assert proposal.parents == (expected,)
    assert scores[expected] == max(scores[m.index] for m in drawn)


def test_tournament_size_controls_selection_pressure():
    def parents(tournament_size):
        evo = RegularisedEvolution(SAMPLER, SHAPE, population_size=5,
                                   tournament_size=tournament_size)
        for index, score in enumerate([0.3, 0.9, 0.1, 0.5, 0.7]):
            evo.tell(ok(index, sample(200 + index), score))
        return {evo.ask(10, random.Random(k)).parents[0] for k in range(30)}

    assert parents(60) == {1}  # the best member is drawn (almost) surely
    assert len(parents(1)) >= 4  # a tournament of one is a uniform pick


def seed_list():
    return [("a", sample(301)), ("b", sample(302)), ("c", sample(303))]


def test_evolution_from_seeds_protocol():
    seeds = seed_list()
    evo = RegularisedEvolution(SAMPLER, SHAPE, population_size=5, tournament_size=2,
                               seeds=seeds)
    for k, (label, derivation) in enumerate(seeds):
        proposal = evo.ask(k, random.Random(k))
        assert proposal.origin == f"seed:{label}"
        assert proposal.derivation == derivation
        assert proposal.parents == ()
    # before any seed result: a mutation of some seed (not a sample, even below population_size)
    early = evo.ask(3, random.Random(3))
    assert early.origin == "mutation" and early.parents[0] in (0, 1, 2)
    assert early.derivation != seeds[early.parents[0]][1]
    assert_valid(early.derivation)
    evo.tell(ok(0, seeds[0][1], 0.4))
    evo.tell(Outcome(1, seeds[1][1], -math.inf, Status.FAILED))
    assert len(evo.population) == 0  # filled only once every seed has a result
    evo.tell(ok(2, seeds[2][1], 0.6))
    # population_size copies cycling over the seeds that trained, in index order
    assert [m.index for m in evo.population] == [0, 2, 0, 2, 0]
    assert [m.score for m in evo.population] == [0.4, 0.6, 0.4, 0.6, 0.4]
    child = evo.ask(4, random.Random(4))
    assert child.origin == "mutation" and child.parents[0] in (0, 2)
    # children push the seed copies out, oldest first
    for index in range(4, 9):
        evo.tell(ok(index, sample(400 + index), 0.1))
        assert len(evo.population) == 5
    assert [m.index for m in evo.population] == [4, 5, 6, 7, 8]


def test_evolution_falls_back_to_sampling_when_all_seeds_fail():
    seeds = seed_list()
    evo = RegularisedEvolution(SAMPLER, SHAPE, population_size=4, tournament_size=2,
                               seeds=seeds)
    for k, (_, derivation) in enumerate(seeds):
        evo.tell(Outcome(k, derivation, -math.inf, Status.FAILED))
    assert len(evo.population) == 0
    for index in range(3, 8):
        proposal = evo.ask(index, random.Random(index))
        assert proposal.origin == "sample" and proposal.parents == ()
    # and once a sampled child succeeds, evolution resumes from it
    evo.tell(ok(3, sample(3), 0.5))
    assert evo.ask(9, random.Random(9)).parents == (3,)


def test_a_seed_listed_twice_is_trained_once():
    seeds = seed_list()
    evo = RegularisedEvolution(SAMPLER, SHAPE, population_size=4, tournament_size=2,
                               seeds=[seeds[0], ("again", seeds[0][1]), seeds[1]])
    assert evo.seeds == [seeds[0], seeds[1]]
    loop = SearchLoop(evo, seed=0, max_trials=6, lag=None)
    run_sequential(loop)
    assert not loop.exhausted and len(loop.trials) == 6
    assert [t.proposal.origin for t in loop.trials][:2] == ["seed:a", "seed:b"]


def test_children_finishing_before_the_last_seed_stay_in_the_population():
    """Asynchronous ordering: a child's result may arrive before the last seed's."""
    seeds = seed_list()[:2]
    evo = RegularisedEvolution(SAMPLER, SHAPE, population_size=3, tournament_size=2,
                               seeds=seeds)
    evo.tell(ok(0, seeds[0][1], 0.4))
    evo.tell(ok(2, sample(2), 0.9))
    evo.tell(ok(1, seeds[1][1], 0.5))
    assert [m.index for m in evo.population] == [1, 0, 2]  # the oldest seed copies made room


def test_evolution_with_seeds_runs_in_a_loop():
    seeds = seed_list()
    evo = RegularisedEvolution(SAMPLER, SHAPE, population_size=4, tournament_size=2,
                               seeds=seeds)
    loop = SearchLoop(evo, seed=2, max_trials=20, lag=2)
    pending = []
    while True:
        trial = loop.next()
        if trial is DONE:
            break
        if trial is WAIT:  # trial n-2 must finish first: finish the oldest running one
            t = pending.pop(0)
            loop.finish(t.index, outcome_for(t))
            continue
        pending.append(trial)
    for t in pending:
        loop.finish(t.index, outcome_for(t))
    origins = [t.proposal.origin for t in loop.trials]
    assert origins[:3] == ["seed:a", "seed:b", "seed:c"]
    assert all(o in ("mutation", "sample") for o in origins[3:])
    assert origins.count("mutation") >= 15


def test_crossover_rate_one_crosses_whenever_the_winners_differ():
    texts = ["(sequential (computation leakyrelu) (computation norm))",
             "(sequential (computation softmax) (computation identity))",
             "(sequential (computation identity) (computation leakyrelu))",
             "(routing identity (sequential (computation norm) (computation softmax)) identity)"]
    evo = RegularisedEvolution(SAMPLER, SHAPE, population_size=4, tournament_size=1,
                               crossover_rate=1.0)
    for index, text in enumerate(texts):
        evo.tell(ok(index, einspace.parse(text), 0.1 * index))
    members = list(evo.population)
    crossovers = 0
    for k in range(30):
        hand = random.Random(k)  # tournament, crossover coin, second tournament
        first = hand.choice(members)
        assert hand.random() < 1.0
        second = hand.choice(members)
        proposal = evo.ask(10, random.Random(k))
        assert_valid(proposal.derivation)
        assert proposal.derivation not in (first.derivation, second.derivation)
        if first.index != second.index:
            crossovers += 1
            assert proposal.origin == "crossover"
            assert proposal.parents == (first.index, second.index)
        else:  # a member cannot cross with itself: a mutation instead
            assert proposal.origin == "mutation"
            assert proposal.parents == (first.index,)
    assert crossovers >= 15


def test_crossover_in_a_search_uses_two_population_members():
    evo = RegularisedEvolution(SAMPLER, SHAPE, population_size=5, tournament_size=2,
                               crossover_rate=1.0)
    spy = Recorder(evo)
    loop = SearchLoop(spy, seed=4, max_trials=40)
    run_sequential(loop)
    by_index = {t.index: t.proposal.derivation for t in loop.trials}
    crossovers = 0
    for index, proposal, population in spy.asks:
        assert_valid(proposal.derivation)
        if proposal.origin != "crossover":
            # shape-matched crossover is often impossible: then a mutation (or a sample)
            assert proposal.origin in ("mutation", "sample")
            assert index >= 5 or proposal.origin == "sample"
            continue
        crossovers += 1
        a, b = proposal.parents
        assert a in population and b in population
        assert by_index[a] != by_index[b]
        assert proposal.derivation != by_index[a]
    assert crossovers >= 3


def test_crossover_rate_zero_never_crosses():
    evo = RegularisedEvolution(SAMPLER, SHAPE, population_size=5, tournament_size=2)
    loop = SearchLoop(evo, seed=4, max_trials=25)
    run_sequential(loop)
    assert "crossover" not in {t.proposal.origin for t in loop.trials}


# -- Optuna --------------------------------------------------------------------------------------

class Replay:
    """Stands in for random.Random: returns recorded draws in order."""

    def __init__(self, draws):
        self.draws = list(draws)

    def random(self):
        return self.draws.pop(0)


def test_optuna_proposals_are_valid_and_record_their_draws():
    strategy = OptunaStrategy(SAMPLER, SHAPE, kind="random")
    loop = SearchLoop(strategy, seed=0, max_trials=12)
    run_sequential(loop)
    for trial in loop.trials:
        proposal = trial.proposal
        assert proposal.origin == "optuna"
        draws = proposal.choices["draws"]
        assert draws and all(0.0 <= x < 1.0 for x in draws)
        assert_valid(proposal.derivation)
        # the draws are every decision: replaying them rebuilds the same derivation
        replay = Replay(draws)
        assert SAMPLER.sample(SHAPE, replay).derivation == proposal.derivation
        assert replay.draws == []
    assert strategy.state() == {"observed": 11}  # lag 1: the last result is never needed


def test_optuna_tell_adds_only_usable_results():
    strategy = OptunaStrategy(SAMPLER, SHAPE)
    p = strategy.ask(0, random.Random(0))
    q = strategy.ask(1, random.Random(1))
    assert strategy.state() == {"observed": 0}
    strategy.tell(Outcome(0, p.derivation, 0.5, Status.OK, p.choices))
    assert strategy.state() == {"observed": 1}
    strategy.tell(Outcome(1, q.derivation, -math.inf, Status.FAILED, q.choices))
    strategy.tell(Outcome(1, q.derivation, 0.2, Status.STOPPED, q.choices))
    strategy.tell(Outcome(1, q.derivation, 0.2, Status.OK, {}))  # no draws: nothing to learn
    assert strategy.state() == {"observed": 1}
    trial = strategy.study.get_trials(deepcopy=False)[-1]
    assert trial.value == 0.5
    assert [trial.params[f"draw_{k:03d}"] for k in range(len(p.choices["draws"]))] == \
        p.choices["draws"]
    with pytest.raises(ValueError, match="unknown Optuna sampler"):
        OptunaStrategy(SAMPLER, SHAPE, kind="cmaes")


def test_optuna_replayed_tells_give_the_same_next_proposal():
    n = 14  # past TPE's ten start-up trials, so the model is in play
    strategy = OptunaStrategy(SAMPLER, SHAPE, kind="tpe")
    loop = SearchLoop(strategy, seed=8, max_trials=n)
    outcomes = []

    def record(trial):
        outcome = outcome_for(trial)
        if trial.index % 5 == 3:
            outcome = Outcome(trial.index, outcome.derivation, -math.inf, Status.FAILED,
                              outcome.choices)
        outcomes.append(outcome)
        return outcome

    run_sequential(loop, record)
    fresh = OptunaStrategy(SAMPLER, SHAPE, kind="tpe")
    for outcome in outcomes:
        fresh.tell(outcome)
    assert fresh.state() == strategy.state() == {"observed": n - 3}
    for index in (n, n + 1):
        a = strategy.ask(index, random.Random(f"8/{index}"))
        b = fresh.ask(index, random.Random(f"8/{index}"))
        assert a.derivation == b.derivation
        assert a.choices == b.choices
    # and the proposal does depend on what was told
    other = OptunaStrategy(SAMPLER, SHAPE, kind="tpe")
    for outcome in outcomes:
        other.tell(Outcome(outcome.index, outcome.derivation, 1.0 - outcome.score
                           if outcome.usable else outcome.score, outcome.status,
                           outcome.choices))
    c = other.ask(n + 2, random.Random(f"8/{n + 2}"))
    d = fresh.ask(n + 2, random.Random(f"8/{n + 2}"))
    assert c.choices["draws"] != d.choices["draws"]
