"""Canonical form and tree edit distance.

Canonical form: each covered equivalence on hand-written trees; on samples, idempotence and the
same network (output shape, parameters, FLOPs, and the same outputs once the parameters are copied
over in order).  Distance: 0 exactly for canonically equal trees, symmetric, the triangle
inequality for unit weights (hypothesis), and values against the edit counts by hand.
"""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import einspace
from einspace import Budget, EditWeights, annotate, build, canonical, canonical_hash, parse
from einspace.errors import ConfigError

SHAPE = (3, 8, 8)
SAMPLER = einspace.Sampler(budget=Budget(max_params=500_000, max_flops=50_000_000,
                                         max_activations=500_000, max_nodes=120))
# few terminals, so that random pairs are often equal networks written differently
TINY = einspace.Sampler(einspace.load_grammar(terminal_set=["identity", "norm", "permute21",
                                                            "linear16", "im2col1k1s0p",
                                                            "col2im"]),
                        Budget(max_nodes=14, max_depth=6))
TINY_SHAPE = (4, 4)
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
IDENT = "(computation identity)"


def sample(sampler, shape, seed):
    return sampler.sample(shape, random.Random(seed)).derivation


# -- canonical form -----------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    # sequences re-associated
    ("(sequential (sequential (computation norm) (computation leakyrelu)) (computation linear16))",
     "(sequential (computation norm) (sequential (computation leakyrelu) (computation linear16)))"),
    # identity computations in a chain
    (f"(sequential {IDENT} (sequential (computation norm) {IDENT}))", "(computation norm)"),
    (f"(sequential {IDENT} {IDENT})", IDENT),
    # identity routing
    ("(routing identity (computation norm) identity)", "(computation norm)"),
    # round trips
    (f"(routing permute21 {IDENT} permute21)", IDENT),
    (f"(routing permute231 {IDENT} permute312)", IDENT),
    (f"(routing im2col1k1s0p {IDENT} col2im)", IDENT),
    # adjacent routings fused: a 1x1 im2col of a col2im output is the same tokens
    ("(sequential (routing im2col3k1s1p (computation linear16) col2im)"
     " (routing im2col1k1s0p (computation leakyrelu) col2im))",
     "(routing im2col3k1s1p (sequential (computation linear16) (computation leakyrelu)) col2im)"),
    ("(sequential (routing identity (computation norm) permute21)"
     " (routing permute21 (computation linear16) identity))",
     "(sequential (computation norm) (computation linear16))"),
])
def test_each_covered_equivalence(text, expected):
    assert canonical(parse(text)) == parse(expected)
    assert canonical_hash(parse(text)) == parse(expected).hash


@pytest.mark.parametrize("text", [
    "(routing permute21 (computation norm) permute21)",  # norm sees the transposed tensor
    f"(routing permute231 {IDENT} permute231)",  # not the inverse
    f"(routing im2col3k1s1p {IDENT} col2im)",  # a 3x3 window is not a reshape
    f"(branching clone_tensor2 {IDENT} (computation norm) add_tensors)",  # a residual stays
])
def test_different_networks_stay_apart(text):
    assert canonical(parse(text)) == parse(text)


def _copy_parameters(source: torch.nn.Module, target: torch.nn.Module) -> None:
    src, dst = list(source.parameters()), list(target.parameters())
    assert [p.shape for p in src] == [p.shape for p in dst]
    with torch.no_grad():
        for s, d in zip(src, dst, strict=True):
            d.copy_(s)


@SETTINGS
@given(st.integers(0, 100_000))
def test_canonical_form_builds_the_same_network(seed):
    d = sample(SAMPLER, SHAPE, seed)
    c = canonical(d)
    assert canonical(c) == c
    ann, ann_c = annotate(d, SHAPE), annotate(c, SHAPE)
    assert ann_c.output_shape == ann.output_shape
    assert (ann_c.cost.params, ann_c.cost.flops) == (ann.cost.params, ann.cost.flops)
    torch.manual_seed(0)
    net = build(d, SHAPE, lower=False).eval()
    net_c = build(c, SHAPE, lower=False).eval()
    _copy_parameters(net, net_c)
    x = torch.randn(2, *SHAPE)
    with torch.inference_mode():
        torch.testing.assert_close(net_c(x), net(x), rtol=1e-4, atol=1e-5)


# -- distance -----------------------------------------------------------------------------

tiny = st.integers(0, 5_000).map(lambda s: sample(TINY, TINY_SHAPE, s))


@SETTINGS
@given(tiny, tiny)
def test_distance_is_zero_exactly_for_canonically_equal_trees(a, b):
    d = einspace.distance(a, b)
    assert (d == 0) == (canonical(a) == canonical(b))
    assert d == einspace.distance(b, a)


def test_zero_distance_matches_canonical_equality_on_all_pairs_of_tiny_samples():
    trees = [sample(TINY, TINY_SHAPE, s) for s in range(60)]
    equal_written_apart = 0
    for x in trees:
        for y in trees:
            same = canonical(x) == canonical(y)
            assert (einspace.distance(x, y) == 0) == same
            equal_written_apart += same and x != y
    assert equal_written_apart >= 20


def test_equal_networks_written_differently_are_at_distance_zero():
    a = parse("(sequential (computation norm) (computation linear16))")
    b = parse(f"(sequential (routing identity (sequential {IDENT} (computation norm)) identity)"
              f" (sequential (computation linear16) (routing permute21 {IDENT} permute21)))")
    assert einspace.distance(a, b) == 0 and a.hash != b.hash
    # transposes that cancel only across nested routings are not covered
    c = parse("(sequential (computation norm) (routing permute21 (routing permute21"
              " (computation linear16) permute21) permute21))")
    assert einspace.distance(a, c) > 0


@SETTINGS
@given(st.integers(0, 100_000), st.integers(0, 100_000), st.integers(0, 100_000))
def test_unit_distance_is_a_metric_on_samples(i, j, k):
    a, b, c = (sample(SAMPLER, SHAPE, s) for s in (i, j, k))
    ab, bc, ac = einspace.distance(a, b), einspace.distance(b, c), einspace.distance(a, c)
    assert ab == einspace.distance(b, a)
    assert ac <= ab + bc
    assert ab >= 0


@SETTINGS
@given(tiny, tiny, tiny)
def test_triangle_inequality_on_tiny_trees(a, b, c):
    assert einspace.distance(a, c) <= einspace.distance(a, b) + einspace.distance(b, c)


def test_distances_against_hand_counted_edits():
    a = parse("(sequential (computation norm) (computation linear16))")
    relabelled = parse("(sequential (computation norm) (computation linear32))")
    assert einspace.distance(a, relabelled) == 1  # one terminal relabelled
    weights = EditWeights(relabel_terminal=0.75, relabel_production=7, indel_node=0.5)
    assert einspace.distance(a, relabelled, weights) == 0.75
    # a relabel dearer than deleting and inserting the leaf is never used
    assert einspace.distance(a, relabelled, EditWeights(relabel_terminal=5)) == 2
    # sequential -> routing (1); align [(c norm), (c linear16)] with [permute21, (c norm),
    # permute21]: insert a permute21 (1), match (c norm) (0), delete the 2-node (c linear16)
    # (2), insert a permute21 (1)
    routed = parse("(routing permute21 (computation norm) permute21)")
    assert einspace.distance(a, routed) == 1 + 1 + 2 + 1
    assert einspace.distance(a, routed, weights) == 7 + 0.5 * 4
    # (c linear16) against (sequential (c leakyrelu) (c linear16)): relabel (1), then the leaf
    # linear16 against two 2-node modules: delete it (1), insert both (4); cheaper than
    # deleting (c linear16) (2) and inserting the 5-node sequence (5)
    longer = parse("(sequential (computation norm) (sequential (computation leakyrelu) "
                   "(computation linear16)))")
    assert einspace.distance(a, longer) == 1 + 1 + 4


def test_bad_weights_are_config_errors():
    with pytest.raises(ConfigError, match="indel_node"):
        EditWeights(indel_node=0)


def test_distance_from_resnet18_to_itself_and_a_mutant():
    resnet = einspace.load_seed("resnet18")
    assert einspace.distance(resnet, resnet) == 0
    child = einspace.mutate(resnet, (3, 28, 28), seed=3)
    d = einspace.distance(resnet, child)
    assert 0 < d <= resnet.size + child.size
    assert d == einspace.distance(child, resnet)
