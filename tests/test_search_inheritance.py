"""Weight inheritance wired into the search, without Ray: evolution says which parents a child
inherits from, the keeper pools and releases parents' weights, a trial's builder starts from
them and records what it took, and the driver releases weights no one can inherit any more."""

from __future__ import annotations

import io
import math
import random
from types import SimpleNamespace

import pytest
import torch

from einspace import build, parse
from einspace.errors import ConfigError
from einspace.sampler import Sampler
from einspace.search.config import resolve
from einspace.search.driver import SearchDriver
from einspace.search.inheriting import InheritedBuilder, plan_for
from einspace.search.loop import SearchLoop
from einspace.search.strategies import Outcome
from einspace.search.strategies.evolution import RegularisedEvolution
from einspace.search.weights import WeightKeeper
from einspace.state_dict import serialize_state
from einspace.tasks.status import Status

SHAPE = (3, 8, 8)
CLASSES = 3
CONV = "(routing im2col3k1s1p (computation linear16) col2im)"
SEED = parse(f"(sequential {CONV} (sequential (computation norm) (sequential {CONV} "
             f"(sequential (computation leakyrelu) (computation norm)))))")
DATA = SimpleNamespace(input_shape=SHAPE, num_classes=CLASSES, target_shape=None)


def evolution(inherit: bool) -> RegularisedEvolution:
    return RegularisedEvolution(Sampler(), SHAPE, population_size=2, tournament_size=1,
                                seeds=[("conv", SEED)], inherit_weights=inherit)


def told_seed(strategy: RegularisedEvolution) -> None:
    strategy.tell(Outcome(0, SEED, 0.5, Status.OK))


def trained_state(derivation) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = build(derivation, SHAPE, num_classes=CLASSES)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    return torch.load(io.BytesIO(serialize_state(net)), weights_only=True)


def test_children_of_trained_parents_inherit_from_them():
    strategy = evolution(inherit=True)
    early = strategy.ask(1, random.Random(1))  # the seed has not trained yet: nothing to inherit
    assert early.origin == "mutation" and early.choices["inherit_from"] == []
    assert strategy.weight_parents() == set()
    told_seed(strategy)
    assert strategy.weight_parents() == {0}
    child = strategy.ask(2, random.Random(2))
    assert child.choices["inherit_from"] == [0] and child.choices["origins"]
    assert all(k == 0 for _, k, _ in child.choices["origins"])


def test_without_inheritance_the_children_are_the_same_and_keep_nothing():
    on, off = evolution(inherit=True), evolution(inherit=False)
    for strategy in (on, off):
        told_seed(strategy)
    made = [s.ask(2, random.Random(2)) for s in (on, off)]
    assert made[0].derivation == made[1].derivation and made[0].parents == made[1].parents
    assert "inherit_from" not in made[1].choices and off.weight_parents() is None


def test_inherit_weights_is_on_by_default_and_checked():
    assert resolve({}).to_dict()["evolution"]["inherit_weights"] is True
    with pytest.raises(ConfigError, match="evolution.inherit_weights must be true or false"):
        resolve({"evolution": {"inherit_weights": "yes"}})


def test_the_pool_holds_released_and_restored_weights(tmp_path):
    keeper = WeightKeeper(str(tmp_path), keep=0)
    keeper.pool(3, b"w3")
    keeper.pool(5, b"w5")
    assert keeper.get(3) == b"w3" and keeper.get(4) is None
    assert not keeper.wants(3, 1.0)  # keep=0 pools parents but keeps no top trials
    keeper.release([3])
    assert keeper.get(3) is None
    assert WeightKeeper(str(tmp_path), keep=0).pooled() == [5]  # a resumed run finds them


def child_of_seed():
    strategy = evolution(inherit=True)
    told_seed(strategy)
    proposal = strategy.ask(2, random.Random(1))  # re-samples the last norm: the convs stay
    return proposal, plan_for(proposal.choices, lambda index: SEED)


def test_a_child_starts_from_its_parents_weights_and_records_them():
    proposal, plan = child_of_seed()
    builder = InheritedBuilder(proposal.derivation, DATA, plan, {0: trained_state(SEED)}, [])
    network = builder()
    record = builder.record
    total = sum(p.numel() for p in network.parameters())
    assert record["inherited_params"] > 0
    assert record["inherited_params"] + record["fresh_params"] == total
    assert record["inherited_from"] == [[0, record["inherited_params"]]]
    assert "inherit_missing" not in record


def test_a_child_whose_parent_weights_are_missing_trains_fresh():
    proposal, plan = child_of_seed()
    builder = InheritedBuilder(proposal.derivation, DATA, plan, {}, [0])
    torch.manual_seed(4)
    network = builder()
    torch.manual_seed(4)
    plain = build(proposal.derivation, SHAPE, num_classes=CLASSES)
    assert builder.record["inherited_params"] == 0 and builder.record["inherit_missing"] == [0]
    assert all(torch.equal(a, b) for a, b in zip(network.state_dict().values(),
                                                 plain.state_dict().values(), strict=True))


def test_weights_that_do_not_fit_are_a_fresh_start_with_the_reason():
    proposal, plan = child_of_seed()
    wrong = trained_state(parse(f"(sequential {CONV} (computation norm))"))
    builder = InheritedBuilder(proposal.derivation, DATA, plan, {0: wrong}, [])
    builder()
    assert builder.record["inherited_params"] == 0 and builder.record["inherit_missing"] == [0]
    assert "do not fit" in builder.record["inherit_error"]


class Releases:
    def __init__(self):
        self.released = []
        self.release = SimpleNamespace(remote=self.released.extend)


def test_the_driver_releases_only_weights_no_one_can_inherit():
    strategy = RegularisedEvolution(Sampler(), SHAPE, population_size=1, tournament_size=1,
                                    seeds=[("conv", SEED)])
    loop = SearchLoop(strategy, seed=0, max_trials=None, lag=None)
    driver = SimpleNamespace(loop=loop, keeper_handle=Releases(), released=set())
    trials = [loop.next() for _ in range(3)]  # the seed, then two of its children
    assert [t.proposal.choices.get("inherit_from") for t in trials[1:]] == [[], []]
    loop.finish(0, Outcome(0, SEED, 0.5, Status.OK))
    child = loop.next()  # the seed is the only member: it inherits from trial 0
    assert child.proposal.choices["inherit_from"] == [0]
    for trial in trials[1:]:
        loop.finish(trial.index, Outcome(trial.index, trial.proposal.derivation,
                                         0.6 + trial.index, Status.OK))
    SearchDriver._release_weights(driver)
    # Trial 2 is the whole population now; trial 0 (aged out) is still the running child's
    # parent; trial 1 aged out and has no running child.
    assert driver.keeper_handle.released == [1]
    loop.finish(child.index, Outcome(child.index, child.proposal.derivation, -math.inf,
                                     Status.FAILED))
    SearchDriver._release_weights(driver)
    assert driver.keeper_handle.released == [1, 0, 3]  # 3 failed: never anyone's parent
