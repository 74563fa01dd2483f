"""Growth mutations (einspace.growth): a child is its parent with one layer widened to the next
width of its family, or with one layer (and the norm and activation after it) repeated; the
origin map lets the child inherit every copied node bit for bit; evolution uses growth only
when ``growth_rate`` asks for it."""

from __future__ import annotations

import random

import pytest
import torch

import einspace
from einspace import Budget, Sampler, parse
from einspace.analysis import annotate
from einspace.errors import ConfigError, SamplingError
from einspace.growth import grow_traced
from einspace.inheritance import Parent, inherit
from einspace.search.loop import SearchLoop
from einspace.search.strategies.evolution import EvolutionSettings, RegularisedEvolution
from tests.test_evolution_operators import run
from tests.test_inheritance import trained

SHAPE = (1, 1, 40)
WIDTHS = [16, 32, 64, 128, 256, 512, 1024, 2048]
CLASSES = 10


def chain(node) -> list:
    """The steps of a right-nested sequential chain."""
    steps = []
    while isinstance(node, einspace.Derivation) and node.label == "sequential":
        steps.append(node.children[0])
        node = node.children[1]
    return steps + [node]


def leaves(node) -> list[str]:
    return [n for _, n in node.walk() if isinstance(n, str)]


def widened(parent, child) -> bool:
    """``child`` is ``parent`` with one linearN replaced by the next width up."""
    a, b = leaves(parent), leaves(child)
    if len(a) != len(b):
        return False
    changed = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
    if len(changed) != 1:
        return False
    (old, new), = changed
    return (old.startswith("linear") and new.startswith("linear")
            and WIDTHS.index(int(new[6:])) == WIDTHS.index(int(old[6:])) + 1)


def deepened(parent, child) -> bool:
    """``child``'s top chain is ``parent``'s with a run of steps, starting at a linear layer,
    repeated right after itself."""
    old, new = chain(parent), chain(child)
    extra = len(new) - len(old)
    for at in range(len(old)):
        segment = old[at - extra + 1: at + 1] if at - extra + 1 >= 0 else None
        if (segment and new == old[:at + 1] + segment + old[at + 1:]
                and any(leaf.startswith("linear") for leaf in leaves(segment[0]))):
            return True
    return False


@pytest.mark.parametrize("seed_name", ["small_cnn", "mlp"])
def test_every_growth_widens_one_layer_or_repeats_one(seed_name):
    parent = einspace.load_seed(seed_name)
    kinds = set()
    for k in range(30):
        made = grow_traced(parent, SHAPE, random.Random(k))
        wide, deep = widened(parent, made.child), deepened(parent, made.child)
        assert wide != deep, made.child.text
        kinds.add("widen" if wide else "deepen")
        assert annotate(made.child, SHAPE).cost.params > annotate(parent, SHAPE).cost.params
    assert kinds == {"widen", "deepen"}


def test_a_repeated_layer_takes_its_norm_and_activation_with_it():
    parent = einspace.load_seed("small_cnn")
    repeats = set()
    for k in range(40):
        child = grow_traced(parent, SHAPE, random.Random(k)).child
        if deepened(parent, child):
            old, new = chain(parent), chain(child)
            pairs = enumerate(zip(old, new, strict=False))
            at = next((i for i, (x, y) in pairs if x != y), len(old))
            repeats.add(tuple(step.text for step in new[at:at + len(new) - len(old)]))
    assert repeats  # each repeat is conv, norm, leakyrelu (the last conv's chain ends there)
    for steps in repeats:
        assert len(steps) == 3 and "linear" in steps[0]
        assert steps[1:] == ("(computation norm)", "(computation leakyrelu)")


def test_a_deepened_child_inherits_every_copied_layer_and_starts_the_repeat_fresh():
    parent = einspace.load_seed("small_cnn")
    made = next(m for k in range(40)
                if deepened(parent, (m := grow_traced(parent, SHAPE, random.Random(k))).child)
                and "linear32" in chain(m.child)[3].text)  # the first conv block repeated
    state = trained(parent, SHAPE, classes=CLASSES)
    result = inherit(made.child, SHAPE, [Parent(parent, SHAPE, state)], made.origins,
                     num_classes=CLASSES)
    child_state = result.network.state_dict()
    # the child's backbone: conv32 norm act [conv32 norm act] conv64 ...: the parent's layers
    # 0-2 keep their keys, its later layers (the conv64 still sees 32 channels) and the head
    # (the backbone's output is unchanged) hold the parent's tensors three places down.
    for key, tensor in state.items():
        part, layer, rest = key.split(".", 2)
        if part == "backbone" and int(layer) >= 3:
            key = f"backbone.{int(layer) + 3}.{rest}"
        assert torch.equal(child_state[key], tensor), key
    assert result.record.inherited == sum(t.numel() for k, t in state.items()
                                          if k.endswith(("weight", "bias")))
    assert result.record.fresh == 32 * (32 * 9 + 1) + 2 * 32  # the repeated conv and its norm


def test_a_widened_child_inherits_everything_upstream_of_the_wider_layer():
    parent = einspace.load_seed("small_cnn")
    made = next(m for k in range(40)
                if widened(parent, (m := grow_traced(parent, SHAPE, random.Random(k))).child)
                and "linear256" in m.child.text)  # the last conv widened: 128 -> 256
    state = trained(parent, SHAPE, classes=CLASSES)
    result = inherit(made.child, SHAPE, [Parent(parent, SHAPE, state)], made.origins,
                     num_classes=CLASSES)
    child_state = result.network.state_dict()
    for key, tensor in state.items():
        if key.split(".")[1] in {"0", "1", "3", "4"}:  # conv32, norm, conv64, norm
            assert torch.equal(child_state[key], tensor), key
    assert result.record.inherited == 32 * 10 + 2 * 32 + 64 * (32 * 9 + 1) + 2 * 64
    assert result.record.fresh == 256 * (64 * 9 + 1) + 2 * 256 + CLASSES * 257


def test_growth_is_deterministic_and_respects_the_budget():
    parent = einspace.load_seed("small_cnn")
    first = [grow_traced(parent, SHAPE, random.Random(k)).child for k in range(5)]
    assert first == [grow_traced(parent, SHAPE, random.Random(k)).child for k in range(5)]
    own = annotate(parent, SHAPE).cost
    tight = Sampler(budget=Budget(max_params=own.params + 10, max_nodes=own.nodes + 1))
    with pytest.raises(SamplingError, match="no growth"):
        grow_traced(parent, SHAPE, random.Random(0), tight)
    roomy = Sampler(budget=Budget(max_params=own.params * 3))
    for k in range(10):
        child = grow_traced(parent, SHAPE, random.Random(k), roomy).child
        assert annotate(child, SHAPE).cost.params <= own.params * 3


def evolution(growth_rate: float) -> list[tuple[str, str]]:
    seeds = [("small_cnn", einspace.load_seed("small_cnn"))]
    evo = RegularisedEvolution(Sampler(), SHAPE, population_size=4, tournament_size=2,
                               seeds=seeds, growth_rate=growth_rate)
    loop = SearchLoop(evo, seed=3, max_trials=12, lag=1)
    run(loop, workers=1)
    return [(t.hash, t.proposal.origin) for t in loop.trials]


def test_zero_growth_rate_proposes_exactly_as_before():
    seeds = [("small_cnn", einspace.load_seed("small_cnn"))]
    evo = RegularisedEvolution(Sampler(), SHAPE, population_size=4, tournament_size=2,
                               seeds=seeds)
    loop = SearchLoop(evo, seed=3, max_trials=12, lag=1)
    run(loop, workers=1)
    assert evolution(0.0) == [(t.hash, t.proposal.origin) for t in loop.trials]


def test_a_full_growth_rate_grows_every_child():
    trials = evolution(1.0)
    assert [origin for _, origin in trials[1:]] == ["growth"] * (len(trials) - 1)
    assert evolution(1.0) == trials


@pytest.mark.parametrize("bad", [-0.1, 1.5, "half"])
def test_a_growth_rate_outside_zero_to_one_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="growth_rate"):
        EvolutionSettings(growth_rate=bad).check("evolution")


def test_parse_round_trip_of_a_grown_child():
    child = grow_traced(einspace.load_seed("mlp"), SHAPE, random.Random(1)).child
    assert parse(child.text) == child
