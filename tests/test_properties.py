"""Property tests over thousands of sampled, mutated and crossed-over architectures.

For every derivation: the text form round-trips through ``parse``, the content hash is the
documented SHA-256 prefix and is stable, the derivation fits its budget, ``count`` agrees with
``annotate`` plus the head, the network compiles with a 10-class head, a batch of 2 runs through it
with the annotated output shape, and the parameter counts match ``annotate`` / ``count`` exactly.

The sampler here uses a budget sized for a CPU test run (2 GFLOPs and 10 M parameters per sample
instead of the defaults' 20 GFLOPs and 25 M) so that every one of the 2,004 samples is built and
run within a few minutes; the shape-exactness being tested does not depend on the budget.
"""

from __future__ import annotations

import hashlib
import random
from functools import lru_cache

import pytest
import torch

import einspace
from einspace import Budget, Derivation, SamplingError, annotate, build, count, parse
from einspace.recombination import swap_matching_subtree

# thousands of networks built and run: minutes
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

SHAPES = [(3, 28, 28), (1, 24, 24), (12, 8, 8), (3, 64, 64), (1, 27, 18), (1, 64, 128)]
PER_SHAPE = 334  # 6 x 334 = 2004 samples
CHUNKS = 2
CHUNK = PER_SHAPE // CHUNKS
MUTATIONS_PER_SHAPE = 60  # 360 mutated children
CROSSOVERS_PER_SHAPE = 60  # attempts; pairs (sample, mutate(sample))
NUM_CLASSES = 10
BUDGET = Budget(max_params=10_000_000, max_flops=2_000_000_000, max_activations=20_000_000)
SAMPLER = einspace.Sampler(budget=BUDGET)


def shape_id(shape) -> str:
    return "x".join(map(str, shape))


@lru_cache(maxsize=None)
def samples(shape) -> tuple[Derivation, ...]:
    return tuple(einspace.sample(shape, seed=seed, sampler=SAMPLER) for seed in range(PER_SHAPE))


@lru_cache(maxsize=None)
def crossover_pairs(shape) -> tuple[tuple[Derivation, Derivation, Derivation], ...]:
    """(a, b, child): for each of the first samples ``a``, up to 5 mutations ``b`` are tried
    until the shape-matched swap (crossover's first choice) finds a compatible subtree (small
    samples often share none)."""
    found = []
    for i, a in enumerate(samples(shape)[:CROSSOVERS_PER_SHAPE]):
        for j in range(5):
            b = einspace.mutate(a, shape, seed=20_000 + 100 * i + j, sampler=SAMPLER)
            try:
                child = swap_matching_subtree(a, b, shape, random.Random(i), SAMPLER)
            except SamplingError:
                continue
            found.append((a, b, child))
            break
    return tuple(found)


@lru_cache(maxsize=None)
def mutations(shape) -> tuple[tuple[Derivation, Derivation], ...]:
    """(parent, child) pairs; parents are the first samples of the shape."""
    pairs = []
    for i, parent in enumerate(samples(shape)[:MUTATIONS_PER_SHAPE]):
        pairs.append((parent, einspace.mutate(parent, shape, seed=10_000 + i, sampler=SAMPLER)))
    return tuple(pairs)


def _text_and_hash(d: Derivation) -> None:
    text = str(d)
    again = parse(text)
    assert again == d
    assert str(again) == text
    assert parse(d.pretty()) == d
    assert again.hash == d.hash == d.hash  # stable across re-parse and repeated calls
    assert d.hash == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert hash(again) == hash(d)
    assert again.size == d.size and again.depth == d.depth


def check_derivation(d: Derivation, shape, budget: Budget = BUDGET) -> None:
    """Every property of one derivation, the build and a batch-2 forward included."""
    _text_and_hash(d)
    annotation = annotate(d, shape)
    assert budget.admits(annotation.cost, d.depth) == ""
    with_head = count(d, shape, num_classes=NUM_CLASSES)
    assert count(d, shape) == annotation.cost
    feature_width = (annotation.output_shape[0] if len(annotation.output_shape) == 3
                     else annotation.output_shape[-1])
    assert with_head.params == annotation.cost.params + (feature_width + 1) * NUM_CLASSES
    torch.manual_seed(0)
    net = build(d, shape, num_classes=NUM_CLASSES)
    assert sum(p.numel() for p in net.backbone.parameters()) == annotation.cost.params
    assert sum(p.numel() for p in net.parameters()) == with_head.params
    x = torch.randn(2, *shape)
    with torch.inference_mode():
        features = net.backbone(x)
        assert tuple(features.shape) == (2, *annotation.output_shape)
        logits = net.head(features)
        assert tuple(logits.shape) == (2, NUM_CLASSES)


# -- samples ---------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", range(CHUNKS))
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_sampled_derivations(shape, chunk):
    ds = samples(shape)[chunk * CHUNK:(chunk + 1) * CHUNK]
    assert len(ds) == CHUNK
    for d in ds:
        check_derivation(d, shape)


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_sampling_is_deterministic(shape):
    for seed in range(0, PER_SHAPE, 7):
        again = einspace.sample(shape, seed=seed, sampler=SAMPLER)
        assert again == samples(shape)[seed]
        assert again.hash == samples(shape)[seed].hash
    # a Random instance is used as is, so two equal generators give the same stream
    a, b = random.Random(5), random.Random(5)
    assert [einspace.sample(shape, seed=a, sampler=SAMPLER) for _ in range(3)] == \
        [einspace.sample(shape, seed=b, sampler=SAMPLER) for _ in range(3)]


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_samples_are_diverse(shape):
    ds = samples(shape)
    assert len({d.hash for d in ds}) >= 0.9 * len(ds)
    assert {d.label for d in ds} == {"sequential", "branching", "routing"}


def test_default_budget_samples_fit_and_annotate():
    """With the default budget the samples are bigger; every one fits it and annotates."""
    for shape in SHAPES:
        for seed in range(40):
            d = einspace.sample(shape, seed=seed)
            assert Budget().admits(annotate(d, shape).cost, d.depth) == ""


# -- mutation --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_mutated_children(shape):
    pairs = mutations(shape)
    for parent, child in pairs:
        assert child != parent
        assert child.hash != parent.hash
        check_derivation(child, shape)
    assert len({child.hash for _, child in pairs}) >= 0.9 * len(pairs)


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_mutation_is_deterministic(shape):
    for i, (parent, child) in enumerate(mutations(shape)[:15]):
        assert einspace.mutate(parent, shape, seed=10_000 + i, sampler=SAMPLER) == child
    parent = samples(shape)[0]
    children = {einspace.mutate(parent, shape, seed=s, sampler=SAMPLER).hash for s in range(20)}
    assert len(children) > 1  # different seeds explore different children


@pytest.mark.parametrize("shape", [(3, 28, 28), (3, 64, 64)], ids=shape_id)
@pytest.mark.parametrize("name", einspace.seed_names())
def test_seed_mutations(name, shape):
    seed = einspace.load_seed(name)
    check_derivation(seed, shape, Budget())
    for i in range(4):
        child = einspace.mutate(seed, shape, seed=i)
        assert child != seed
        check_derivation(child, shape, Budget())


def test_mutation_chain_stays_valid():
    """Repeated mutation (what evolution does) keeps every child valid and in budget."""
    shape = (3, 28, 28)
    d = samples(shape)[1]
    for i in range(40):
        child = einspace.mutate(d, shape, seed=i, sampler=SAMPLER)
        assert child != d
        check_derivation(child, shape)
        d = child


# -- crossover -------------------------------------------------------------------------


def _differences(a, b, path=()):
    """Maximal paths where two trees differ."""
    if isinstance(a, str) or isinstance(b, str):
        return [] if a == b else [path]
    if a == b:
        return []
    if a.label != b.label or len(a.children) != len(b.children):
        return [path]
    found = []
    for i, (x, y) in enumerate(zip(a.children, b.children, strict=True)):
        found += _differences(x, y, path + (i,))
    return found


def _common_prefix(paths):
    prefix = paths[0]
    for p in paths[1:]:
        n = 0
        while n < min(len(prefix), len(p)) and prefix[n] == p[n]:
            n += 1
        prefix = prefix[:n]
    return prefix


def _check_crossover_child(a, b, child, shape, budget: Budget = BUDGET) -> None:
    """``child`` is ``a`` with one subtree replaced by a subtree of ``b`` (the deepest node
    holding every difference is part of what ``b`` donated)."""
    assert child != a
    diffs = _differences(a, child)
    assert diffs
    path = _common_prefix(diffs)
    donated = child.get(path)
    donor_texts = {n if isinstance(n, str) else n.text for _, n in b.walk()}
    donated_text = donated if isinstance(donated, str) else donated.text
    assert donated_text in donor_texts
    # the swapped subtree keeps the shapes, so nothing else changed shape
    ann_a, ann_child = annotate(a, shape), annotate(child, shape)
    assert ann_child.output_shape == ann_a.output_shape
    check_derivation(child, shape, budget)


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_crossover_children(shape):
    triples = crossover_pairs(shape)
    # measured: 36..44 of 60 parents per shape give a crossover
    assert len(triples) >= 0.45 * CROSSOVERS_PER_SHAPE, f"only {len(triples)} crossovers"
    for a, b, child in triples:
        _check_crossover_child(a, b, child, shape)
    for a, b, child in triples[:10]:  # same seed, same child
        assert einspace.crossover(a, b, shape, seed=samples(shape).index(a),
                                  sampler=SAMPLER) == child  # the swap comes first


def test_crossover_of_seeds_and_their_mutations():
    shape = (3, 32, 32)
    made = 0
    # The mlp seed is a plain chain whose mutants change the shapes at every module boundary, so
    # crossing it with its own mutants legitimately finds no shape-matched subtree.
    names = [name for name in einspace.seed_names() if name != "mlp"]
    for name in names:
        seed = einspace.load_seed(name)
        for i in range(3):
            child = einspace.mutate(seed, shape, seed=100 + i)
            for a, b in ((seed, child), (child, seed)):
                kid = einspace.crossover(a, b, shape, seed=i)
                _check_crossover_child(a, b, kid, shape, Budget())
                made += 1
    # seeds of the same family of shapes cross with each other too
    resnet, wrn = einspace.load_seed("resnet18"), einspace.load_seed("wrn16_4")
    kid = einspace.crossover(resnet, wrn, shape, seed=0)
    _check_crossover_child(resnet, wrn, kid, shape, Budget())
    assert made == 6 * len(names)


def test_swap_without_compatible_subtrees_raises():
    """The shape-matched swap alone cannot cross these; ``einspace.crossover`` grafts instead
    (tests/test_crossover.py)."""
    shape = (3, 28, 28)
    a = parse("(sequential (computation linear16) (computation leakyrelu))")
    b = parse("(routing permute213 (computation norm) permute213)")
    with pytest.raises(SamplingError):
        swap_matching_subtree(a, b, shape, random.Random(0))


# -- the seed-papers terminal set -------------------------------------------------------------

PAPER_SAMPLER = einspace.Sampler(einspace.load_grammar(terminal_set="seed-papers"), BUDGET)


@pytest.mark.parametrize("shape", [(3, 28, 28), (1, 24, 24), (1, 27, 18)], ids=shape_id)
def test_seed_papers_samples_and_children(shape):
    """Samples drawn with every paper primitive in the grammar, and their mutations, pass the
    same checks."""
    for seed in range(100):
        d = einspace.sample(shape, seed=seed, sampler=PAPER_SAMPLER)
        check_derivation(d, shape)
        if seed % 4 == 0:
            child = einspace.mutate(d, shape, seed=seed, sampler=PAPER_SAMPLER)
            assert child != d
            check_derivation(child, shape)
