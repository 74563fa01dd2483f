"""The shipped grammar, grammar overrides, YAML space configs, user grammar files and budgets."""

from __future__ import annotations

import math
from collections import Counter

import pytest

import einspace
from einspace import (
    Budget,
    ConfigError,
    Derivation,
    GrammarError,
    Sampler,
    annotate,
    load_grammar,
    load_space_config,
)
from einspace.blocks.registry import Kind

SHAPE = (3, 28, 28)


def terminals_in(d: Derivation) -> set[str]:
    return {node for _, node in d.walk() if isinstance(node, str)}


def labels_in(d: Derivation) -> set[str]:
    return {node.label for _, node in d.walk() if isinstance(node, Derivation)}


def draw(sampler: Sampler, n: int, shape=SHAPE, offset: int = 0) -> list[Derivation]:
    return [einspace.sample(shape, seed=offset + i, sampler=sampler) for i in range(n)]


@pytest.fixture(scope="module")
def grammar():
    return load_grammar()


# -- the shipped grammar ----------------------------------------------------------------------

def test_option_lists_match_the_reference(grammar):
    names = {kind: sorted(n for n, _ in grammar.terminals_of(kind)) for kind in Kind}
    assert len(names[Kind.BRANCHING]) == 12
    assert set(names[Kind.BRANCHING]) == (
        {f"clone_tensor{k}" for k in (2, 4, 8)}
        | {f"group_dim{k}s{d}d" for k in (2, 4, 8) for d in (1, 2, 3)})
    assert len(names[Kind.AGGREGATION]) == 12
    assert set(names[Kind.AGGREGATION]) == (
        {"dot_product", "scaled_dot_product", "add_tensors"}
        | {f"cat_tensors{d}d{k}t" for d in (1, 2, 3) for k in (2, 4, 8)})
    assert len(names[Kind.PREROUTING]) == 14
    assert set(names[Kind.PREROUTING]) == (
        {"identity", "permute21", "permute132", "permute213", "permute231", "permute312",
         "permute321"}
        | {f"im2col{w}" for w in ("1k1s0p", "1k2s0p", "3k1s1p", "3k2s1p", "4k4s0p", "8k8s0p",
                                  "16k16s0p")})
    assert len(names[Kind.POSTROUTING]) == 8
    assert set(names[Kind.POSTROUTING]) == {"identity", "permute21", "permute132", "permute213",
                                            "permute231", "permute312", "permute321", "col2im"}
    assert len(names[Kind.COMPUTATION]) == 13
    assert set(names[Kind.COMPUTATION]) == (
        {"identity", "norm", "leakyrelu", "softmax", "learnable_positional_encoding"}
        | {f"linear{n}" for n in (16, 32, 64, 128, 256, 512, 1024, 2048)})


def test_aggregation_categories_by_branch_count(grammar):
    cats = {c: sorted(n for n, _ in members) for c, members in grammar.categories.items()
            if grammar.category_kind.get(c) == Kind.AGGREGATION}
    assert len(cats) == 3
    by_size = sorted(cats.values(), key=len)
    assert [len(c) for c in by_size] == [4, 4, 6]
    two = by_size[2]
    assert set(two) == {"dot_product", "scaled_dot_product", "add_tensors", "cat_tensors1d2t",
                        "cat_tensors2d2t", "cat_tensors3d2t"}
    for k in (4, 8):
        assert {"add_tensors", f"cat_tensors1d{k}t", f"cat_tensors2d{k}t",
                f"cat_tensors3d{k}t"} in [set(c) for c in by_size[:2]]


def test_production_weights(grammar):
    module = dict(grammar.choices[grammar.module])
    assert set(module) == {"computation", "sequential", "branching", "routing"}
    assert module["computation"] == pytest.approx(0.32, abs=1e-6)
    for label in ("sequential", "branching", "routing"):
        assert module[label] == pytest.approx(0.68 / 3, abs=1e-5)
    network = dict(grammar.choices[grammar.start])
    assert set(network) == {"sequential", "branching", "routing"}  # no bare computation root
    for label in network:
        assert network[label] == pytest.approx(1 / 3, abs=1e-5)
    # terminals are uniform within their option list
    for category, members in grammar.categories.items():
        weights = [w for _, w in members]
        assert sum(weights) == pytest.approx(1, abs=1e-5)
        assert max(weights) - min(weights) < 1e-5, category


def test_minimum_sizes(grammar):
    assert grammar.min_depth["computation"] == 1
    assert grammar.min_nodes["computation"] == 2  # the node and its terminal
    assert grammar.min_nodes[grammar.start] == 5  # e.g. (routing identity (computation x) identity)


def test_grammar_text_round_trips(grammar, tmp_path):
    file = tmp_path / "copy.pcfg"
    file.write_text(grammar.to_text())
    again = load_grammar(file)
    assert again.choices == grammar.choices
    assert {c: sorted(m) for c, m in again.categories.items()} == \
        {c: sorted(m) for c, m in grammar.categories.items()}


def test_root_production_frequencies():
    """The network choice is uniform in the grammar (1/3 each).  Sampled roots are not exactly
    uniform: a root production whose subtree cannot be completed for the shape and budget is
    dropped and the choice redrawn, and branching fails most often (no aggregation fits the
    branch outputs, the activation share of the inner modules runs out).  Measured over 3000
    samples at 3x28x28: sequential 0.394, routing 0.376, branching 0.230."""
    counts = Counter(einspace.sample(SHAPE, seed=s).label for s in range(3000))
    freq = {label: counts[label] / 3000 for label in ("sequential", "branching", "routing")}
    assert sum(counts.values()) == 3000
    assert abs(freq["sequential"] - 1 / 3) < 0.1
    assert abs(freq["routing"] - 1 / 3) < 0.1
    assert 0.15 < freq["branching"] < 1 / 3
    # sequential and routing only fail by budget, so they stay close to each other
    assert abs(freq["sequential"] - freq["routing"]) < 0.06


def test_module_production_frequencies():
    """Below the root, computation leaves should be the most common production."""
    counts = Counter()
    for s in range(300):
        for path, node in einspace.sample(SHAPE, seed=s).walk():
            if isinstance(node, Derivation) and path:
                counts[node.label] += 1
    total = sum(counts.values())
    assert counts["computation"] / total > 0.32
    assert all(counts[label] > 0 for label in ("sequential", "branching", "routing"))


# -- overrides --------------------------------------------------------------------------------

def test_probability_override_renormalises():
    g = load_grammar(probabilities={"module": {"computation": 0.5}})
    module = dict(g.choices["module"])
    assert module["computation"] == pytest.approx(0.5)
    for label in ("sequential", "branching", "routing"):
        assert module[label] == pytest.approx(0.5 / 3, abs=1e-5)
    assert sum(module.values()) == pytest.approx(1)

    g = load_grammar(probabilities={"compute": {"linear16": 0.4, "norm": 0.1}})
    weights = dict(g.terminals_of(Kind.COMPUTATION))
    assert weights["linear16"] == pytest.approx(0.4)
    assert weights["norm"] == pytest.approx(0.1)
    others = [w for n, w in weights.items() if n not in ("linear16", "norm")]
    assert len(others) == 11
    for w in others:
        assert w == pytest.approx(0.5 / 11, abs=1e-5)


def test_probability_override_is_what_the_sampler_draws():
    g = load_grammar(probabilities={"network": {"sequential": 1.0}})
    assert dict(g.choices["network"]) == {"sequential": 1.0}  # zero-weight alternatives removed
    ds = draw(Sampler(g), 100)
    assert {d.label for d in ds} == {"sequential"}

    heavy = Sampler(load_grammar(probabilities={"module": {"computation": 0.9}}))
    mean_heavy = sum(d.size for d in draw(heavy, 200)) / 200
    mean_default = sum(d.size for d in draw(Sampler(), 200)) / 200
    assert mean_heavy < mean_default


@pytest.mark.parametrize("kwargs,words", [
    ({"probabilities": {"nosuch": {"a": 0.5}}}, ["nosuch"]),
    ({"probabilities": {"module": {"convolution": 0.5}}}, ["convolution"]),
    ({"probabilities": {"module": {"computation": 0.8, "routing": 0.5}}}, ["module", "1.3"]),
    ({"probabilities": {"module": {"computation": 1.5}}}, ["computation", "1.5"]),
    ({"disable": ["nosuch_terminal"]}, ["nosuch_terminal"]),
    ({"add": {"nosuch_category": ["linear16"]}}, ["nosuch_category"]),
    ({"add": {"compute": ["linear_x5"]}}, ["linear_x5"]),
])
def test_bad_overrides_raise_grammar_error(kwargs, words):
    with pytest.raises(GrammarError) as info:
        load_grammar(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_disabled_terminals_never_appear():
    disabled = ["softmax", "permute21", "clone_tensor2", "im2col3k1s1p", "add_tensors"]
    g = load_grammar(disable=disabled)
    for kind in Kind:
        assert not set(disabled) & {n for n, _ in g.terminals_of(kind)}
    seen = set()
    for d in draw(Sampler(g), 300):
        seen |= terminals_in(d)
    assert not set(disabled) & seen
    assert {"leakyrelu", "permute132", "group_dim2s1d"} <= seen  # the rest still appears


EIGHT_WAY = ["clone_tensor8", "group_dim8s1d", "group_dim8s2d", "group_dim8s3d"]


def test_disabling_a_whole_category_removes_its_alternative():
    g = load_grammar(disable=EIGHT_WAY)
    assert len(g.options["branching"]) == 8
    assert {o.terminal for o in g.options["branching"]} == \
        {f"clone_tensor{k}" for k in (2, 4)} | {f"group_dim{k}s{d}d" for k in (2, 4)
                                               for d in (1, 2, 3)}
    assert sum(o.weight for o in g.options["branching"]) == pytest.approx(1)
    for d in draw(Sampler(g), 200):
        assert not any(n.endswith("8t") or n in EIGHT_WAY for n in terminals_in(d))


def test_terminals_of_and_mutation_after_disabling_a_whole_category():
    g = load_grammar(disable=EIGHT_WAY)
    names = {n for n, _ in g.terminals_of(Kind.BRANCHING)}
    assert names == {f"clone_tensor{k}" for k in (2, 4)} | \
        {f"group_dim{k}s{d}d" for k in (2, 4) for d in (1, 2, 3)}
    assert not any("8t" in n for n, _ in g.terminals_of(Kind.AGGREGATION))
    sampler = Sampler(g)
    for i, d in enumerate(draw(sampler, 50)):
        child = einspace.mutate(d, SHAPE, seed=i, sampler=sampler)
        assert not any(n.endswith("8t") or n in EIGHT_WAY for n in terminals_in(child))


def test_disabling_every_computation_terminal_is_an_error():
    everything = [n for n, _ in load_grammar().terminals_of(Kind.COMPUTATION)]
    with pytest.raises(GrammarError):
        load_grammar(disable=everything)


def test_added_terminal_appears():
    g = load_grammar(add={"compute": ["linear_x4"]})
    weights = dict(g.terminals_of(Kind.COMPUTATION))
    assert len(weights) == 14
    assert weights["linear_x4"] == pytest.approx(1 / 14, abs=1e-5)
    uses = sum("linear_x4" in terminals_in(d) for d in draw(Sampler(g), 300))
    assert uses > 10
    for d in draw(Sampler(g), 30):  # and the result still fits its shape
        annotate(d, SHAPE)


def test_computation_probability_zero_makes_the_grammar_unproductive():
    """computation is the only production that ends in terminals alone: giving it probability 0
    removes the alternative, nothing can finish, and loading says so (no sampling loop)."""
    with pytest.raises(GrammarError) as info:
        load_grammar(probabilities={"module": {"computation": 0.0}})
    message = str(info.value)
    assert "can never finish" in message
    assert "module" in message


# -- YAML configs -----------------------------------------------------------------------------

def test_space_config_from_yaml(tmp_path):
    config = tmp_path / "space.yaml"
    config.write_text(
        "grammar:\n"
        "  probabilities:\n"
        "    module: {computation: 0.5}\n"
        "  disable: [softmax, permute21]\n"
        "  add: {compute: [linear_x4]}\n"
        "budget:\n"
        "  max_params: 200000\n"
        "  max_flops: 50000000\n"
        "  max_nodes: 120\n"
        "  max_depth: 12\n")
    space = load_space_config(config)
    assert space.budget == Budget(max_params=200_000, max_flops=50_000_000, max_nodes=120,
                                  max_depth=12)
    assert dict(space.grammar.choices["module"])["computation"] == pytest.approx(0.5)
    names = {n for n, _ in space.grammar.terminals_of(Kind.COMPUTATION)}
    assert "softmax" not in names and "linear_x4" in names
    sampler = space.sampler()
    for d in draw(sampler, 200):
        cost = annotate(d, SHAPE).cost
        assert cost.params <= 200_000 and cost.flops <= 50_000_000
        assert d.size <= 120 and d.depth <= 12
        assert not {"softmax", "permute21"} & terminals_in(d)


def test_default_space_config():
    space = load_space_config(None)
    assert space.budget == Budget()
    assert space.grammar.choices == load_grammar().choices


def test_empty_yaml_gives_defaults(tmp_path):
    config = tmp_path / "empty.yaml"
    config.write_text("")
    assert load_space_config(config).budget == Budget()


@pytest.mark.parametrize("text,key", [
    ("optimizer:\n  lr: 0.1\n", "optimizer"),
    ("grammar:\n  probabilites: {}\n", "probabilites"),
    ("budget:\n  max_parameters: 10\n", "max_parameters"),
    ("budget:\n  max_params: 10\n  maxdepth: 3\n", "maxdepth"),
])
def test_unknown_config_keys_are_named(tmp_path, text, key):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_space_config(config)
    assert key in str(info.value)


@pytest.mark.parametrize("text", [
    "budget:\n  max_params: -5\n",
    "budget:\n  max_params: 1.5\n",
    "budget:\n  max_depth: true\n",
    "grammar:\n  disable: softmax\n",
    "budget: [1, 2]\n",
    "- a\n- b\n",
    "grammar: {file: missing.pcfg}\n",
    "grammar:\n  probabilities: {module: {computation: 0.5\n",
])
def test_invalid_configs_raise_einspace_errors(tmp_path, text):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(einspace.EinspaceError):
        load_space_config(config)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_space_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value)


# -- user grammar files -----------------------------------------------------------------------

TINY = """
# a grammar of MLPs: sequences of linear layers and activations
network -> sequential [1.0]
module -> computation [0.6] | sequential [0.4]
sequential -> module module [1.0]
computation -> ops [1.0]
ops -> 'linear16' [0.4] | 'linear32' [0.3] | 'leakyrelu' [0.3]
"""


def test_user_grammar_file(tmp_path):
    file = tmp_path / "tiny.pcfg"
    file.write_text(TINY)
    g = load_grammar(file)
    assert g.start == "network" and g.module == "module"
    assert {n for n, _ in g.terminals_of(Kind.COMPUTATION)} == {"linear16", "linear32",
                                                                "leakyrelu"}
    assert g.terminals_of(Kind.BRANCHING) == []
    sampler = Sampler(g)
    seen = set()
    for shape in (SHAPE, (10, 24)):
        for d in draw(sampler, 150, shape):
            assert d.label == "sequential"
            assert labels_in(d) <= {"sequential", "computation"}
            names = terminals_in(d)
            assert names <= {"linear16", "linear32", "leakyrelu"}
            seen |= names
            annotate(d, shape)
    assert seen == {"linear16", "linear32", "leakyrelu"}
    # mutation stays inside the user grammar too
    d = einspace.sample(SHAPE, seed=0, sampler=sampler)
    for i in range(20):
        child = einspace.mutate(d, SHAPE, seed=i, sampler=sampler)
        assert child != d
        assert labels_in(child) <= {"sequential", "computation"}
        assert terminals_in(child) <= {"linear16", "linear32", "leakyrelu"}


def test_user_grammar_from_config_relative_path(tmp_path):
    (tmp_path / "grammars").mkdir()
    (tmp_path / "grammars" / "tiny.pcfg").write_text(TINY)
    config = tmp_path / "space.yaml"
    config.write_text("grammar:\n  file: grammars/tiny.pcfg\n  disable: [linear32]\n"
                      "budget:\n  max_nodes: 40\n")
    space = load_space_config(config)
    sampler = space.sampler()
    for d in draw(sampler, 100):
        assert terminals_in(d) <= {"linear16", "leakyrelu"}
        assert d.size <= 40


@pytest.mark.parametrize("text,words", [
    ("network -> sequential [1.0]\nmodule -> computation [1.0]\n"
     "sequential -> module module [1.0]\ncomputation -> ops [1.0]\nops -> 'linear17' [1.0]\n",
     ["linear17"]),
    ("network -> sequential [1.0]\nmodule -> computation [0.5] | 'linear16' [0.5]\n"
     "sequential -> module module [1.0]\ncomputation -> ops [1.0]\nops -> 'linear16' [1.0]\n",
     ["module"]),
    ("network -> sequential [0.5]\nmodule -> computation [1.0]\n"
     "sequential -> module module [1.0]\ncomputation -> ops [1.0]\nops -> 'linear16' [1.0]\n",
     []),
    ("network -> sequential [1.0]\nmodule -> sequential [1.0]\n"
     "sequential -> module module [1.0]\n", ["never finish"]),
    ("network -> sequential [1.0]\nmodule -> computation [1.0]\n"
     "sequential -> module module module [1.0]\ncomputation -> ops [1.0]\n"
     "ops -> 'linear16' [1.0]\n", ["two"]),
    ("this is not a grammar", []),
])
def test_bad_user_grammars(tmp_path, text, words):
    file = tmp_path / "bad.pcfg"
    file.write_text(text)
    with pytest.raises(GrammarError) as info:
        load_grammar(file)
    for word in words:
        assert word in str(info.value)


def test_missing_grammar_file(tmp_path):
    with pytest.raises(GrammarError):
        load_grammar(tmp_path / "missing.pcfg")


# -- budgets ----------------------------------------------------------------------------------

@pytest.mark.parametrize("budget,check", [
    (Budget(max_params=5_000), lambda d, c: c.params <= 5_000),
    (Budget(max_flops=1_000_000), lambda d, c: c.flops <= 1_000_000),
    (Budget(max_activations=20_000), lambda d, c: c.activations <= 20_000),
    (Budget(max_nodes=15), lambda d, c: d.size <= 15),
    (Budget(max_depth=4), lambda d, c: d.depth <= 4),
], ids=["params", "flops", "activations", "nodes", "depth"])
def test_budgets_are_respected(budget, check):
    sampler = Sampler(budget=budget)
    ds = draw(sampler, 300)
    for d in ds:
        cost = annotate(d, SHAPE).cost
        assert check(d, cost), (d, cost)
        assert budget.admits(cost, d.depth) == ""
    assert len({d.hash for d in ds}) > 100  # still a search space
    # mutations respect the budget too
    for i, d in enumerate(ds[:30]):
        child = einspace.mutate(d, SHAPE, seed=i, sampler=sampler)
        assert budget.admits(annotate(child, SHAPE).cost, child.depth) == ""


def test_default_budget_binds():
    """With a tight budget the typical architecture is smaller than with the default."""
    tight = Sampler(budget=Budget(max_params=5_000))
    default = [annotate(d, SHAPE).cost.params for d in draw(Sampler(), 200)]
    small = [annotate(d, SHAPE).cost.params for d in draw(tight, 200)]
    assert max(default) > 5_000
    assert sum(small) / len(small) < sum(default) / len(default)


def test_budget_admits_names_the_limit():
    budget = Budget(max_params=10, max_depth=3)
    assert budget.admits(einspace.Cost(10, 0, 0, 5), 3) == ""
    assert "params" in budget.admits(einspace.Cost(11, 0, 0, 5), 3)
    assert "depth" in budget.admits(einspace.Cost(0, 0, 0, 5), 4)
    assert "nodes" in Budget(max_nodes=4).admits(einspace.Cost(nodes=5), 1)


@pytest.mark.parametrize("kwargs", [{"max_params": 0}, {"max_flops": -1}, {"max_depth": True},
                                    {"max_nodes": 2.0}])
def test_invalid_budgets(kwargs):
    with pytest.raises(ConfigError):
        Budget(**kwargs)


def test_impossible_budget_raises_sampling_error():
    sampler = Sampler(budget=Budget(max_nodes=3))  # a network needs at least 5 nodes
    with pytest.raises(einspace.SamplingError):
        einspace.sample(SHAPE, seed=0, sampler=sampler)
    sampler = Sampler(budget=Budget(max_depth=1))  # a network is at least 2 deep
    with pytest.raises(einspace.SamplingError):
        einspace.sample(SHAPE, seed=0, sampler=sampler)


def test_min_depth_respected_by_the_depth_limit():
    g = load_grammar()
    assert g.min_depth[g.start] == 2  # network -> production -> computation
    sampler = Sampler(budget=Budget(max_depth=2))
    for d in draw(sampler, 100):
        assert d.depth == 2
    assert math.isfinite(g.min_depth["branching"])
