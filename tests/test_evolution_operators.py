"""Evolution with crossover between unrelated seeds, the novelty term, near-duplicate rejection, and
the search loop's de-duplication by network (canonical hash); all without Ray."""

from __future__ import annotations

import random

import pytest

import einspace
from einspace import Budget, Sampler, canonical_hash, parse
from einspace.search.loop import DONE, WAIT, SearchLoop
from einspace.search.strategies import Outcome, Proposal, Strategy
from einspace.search.strategies.evolution import Member, RegularisedEvolution
from einspace.tasks.status import Status

SHAPE = (1, 12, 12)
SEEDS = ["resnet18", "wrn16_4", "vit", "mlp_mixer"]


def fake_outcome(trial) -> Outcome:
    return Outcome(trial.index, trial.proposal.derivation, int(trial.hash[:6], 16) / 2**24,
                   Status.OK, trial.proposal.choices)


def run(loop: SearchLoop, workers: int = 2) -> None:
    """Finish the oldest running trial whenever the loop waits (deterministic ordering)."""
    while (trial := loop.next()) is not DONE:
        if trial is WAIT:
            oldest = loop.running[0]
            loop.finish(oldest.index, fake_outcome(oldest))
        elif len(loop.running) > workers:
            oldest = loop.running[0]
            loop.finish(oldest.index, fake_outcome(oldest))


def test_evolution_from_mixed_seeds_makes_crossover_children_of_different_seeds():
    seeds = [(name, einspace.load_seed(name)) for name in SEEDS]
    evo = RegularisedEvolution(Sampler(), SHAPE, population_size=100, tournament_size=10,
                               seeds=seeds, crossover_rate=0.5)
    loop = SearchLoop(evo, seed=0, max_trials=12, lag=4)
    run(loop)
    by_index = {t.index: t.proposal.derivation for t in loop.trials}
    crossed = [t for t in loop.trials if t.proposal.origin == "crossover"]
    assert len(crossed) >= 2
    for trial in crossed:
        child = trial.proposal.derivation
        einspace.annotate(child, SHAPE)
        first, second = trial.proposal.parents
        assert by_index[first] != by_index[second]
        origins = trial.proposal.choices["origins"]
        assert origins and {k for _, k, _ in origins} <= {first, second}
        for path, parent, source in origins:  # each region is that parent's subtree
            assert child.get(tuple(path)) == by_index[parent].get(tuple(source))


def _member(index: int, text: str, score: float) -> Member:
    return Member(index, parse(text), score)


@pytest.mark.parametrize("second_copy", [1, 0], ids=["two-trials", "seed-copies"])
def test_novelty_term_lets_a_different_network_beat_a_slightly_better_copy(second_copy):
    """Copies count as crowding whether they are two trials or two copies of one seed (which
    share its trial index)."""
    copies = "(sequential (computation linear16) (computation norm))"
    other = ("(routing permute21 (sequential (computation softmax) (computation linear32))"
             " permute21)")
    population = [_member(0, copies, 0.50), _member(second_copy, copies, 0.50),
                  _member(2, other, 0.45)]
    plain = RegularisedEvolution(Sampler(), (3, 8, 8), population_size=3, tournament_size=3)
    novel = RegularisedEvolution(Sampler(), (3, 8, 8), population_size=3, tournament_size=3,
                                 novelty_weight=1.0)
    for evo in (plain, novel):
        evo.population.extend(population)
    # with all three drawn, a copy's novelty is half the other's (it is at distance 0 from the
    # other copy), so the different network wins by more than the 0.05 it lacks in score
    both_kinds = 0
    for k in range(30):
        rng = random.Random(k)
        drawn = {rng.randrange(3) for _ in range(3)}  # what rng.choice draws from 3
        winner_plain = plain._tournament(random.Random(k))
        winner_novel = novel._tournament(random.Random(k))
        assert winner_plain.score == 0.50 or drawn == {2}
        if drawn == {0, 1, 2}:
            both_kinds += 1
            assert winner_novel.index == 2
        elif 2 not in drawn:
            assert winner_novel.score == 0.50
    assert both_kinds >= 2


def test_zero_novelty_and_min_distance_propose_exactly_as_before():
    sampler = Sampler(budget=Budget(max_params=50_000, max_nodes=40, max_depth=10))
    runs = []
    for extra in ({}, {"novelty_weight": 0.0, "min_distance": 0.0}):
        evo = RegularisedEvolution(sampler, (3, 8, 8), population_size=5, tournament_size=2,
                                   crossover_rate=0.3, **extra)
        loop = SearchLoop(evo, seed=3, max_trials=20, lag=1)
        run(loop, workers=1)
        runs.append([(t.hash, t.proposal.origin) for t in loop.trials])
    assert runs[0] == runs[1]


def test_min_distance_rejects_children_too_close_to_their_parent():
    sampler = Sampler(budget=Budget(max_params=50_000, max_nodes=40, max_depth=10))
    evo = RegularisedEvolution(sampler, (3, 8, 8), population_size=4, tournament_size=2,
                               min_distance=2.0)
    parents = {}
    for index in range(4):
        d = sampler.sample((3, 8, 8), random.Random(index)).derivation
        parents[index] = d
        evo.tell(Outcome(index, d, 0.1 * index, Status.OK))
    far = 0
    for k in range(20):
        proposal = evo.ask(10 + k, random.Random(k))
        if proposal.origin == "sample":
            continue
        far += einspace.distance(proposal.derivation, parents[proposal.parents[0]]) > 2.0
    assert far >= 18  # redrawn up to NEAR_DUPLICATE_DRAWS times, so nearly always far


class Scripted(Strategy):
    """Proposes the given texts in order, whatever the index."""

    def __init__(self, texts):
        self.queue = [parse(t) for t in texts]

    def ask(self, index, rng):
        return Proposal(self.queue.pop(0), "sample")


def test_the_loop_never_trains_one_network_under_two_names():
    texts = ["(computation norm)",
             "(sequential (computation norm) (computation identity))",  # norm again
             "(computation linear16)",
             "(routing identity (computation linear16) identity)",  # linear16 again
             "(computation leakyrelu)"]
    loop = SearchLoop(Scripted(texts), seed=0, max_trials=3, lag=None)
    proposed = []
    while (trial := loop.next()) is not DONE:
        proposed.append(trial.proposal.derivation.text)
        loop.finish(trial.index, fake_outcome(trial))
    assert proposed == ["(computation norm)", "(computation linear16)", "(computation leakyrelu)"]
    assert loop.duplicates == 2
    hashes = [canonical_hash(parse(t)) for t in proposed]
    assert len(set(hashes)) == 3
