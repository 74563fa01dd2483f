"""Terminal sets: the reference's terminals only, every seed-paper primitive added, or a list."""

import pytest
import torch

import einspace
from einspace import GrammarError, load_grammar
from einspace.blocks import Kind, terminals
from einspace.blocks.seed_papers import PRIMITIVE_PAPERS

PAPER_TERMINALS = [t for t in terminals() if t.family != "einspace"]


def grammar_terminals(grammar) -> set[tuple[Kind, str]]:
    return {(kind, name) for kind in Kind for name, _ in grammar.terminals_of(kind)}


def test_einspace_set_is_the_reference_grammar():
    assert grammar_terminals(load_grammar(terminal_set="einspace")) == \
        grammar_terminals(load_grammar())
    assert all(t.family == "einspace" for t in terminals()
               if (t.kind, t.name) in grammar_terminals(load_grammar()))


def test_seed_papers_adds_every_paper_primitive_with_a_category():
    base = grammar_terminals(load_grammar())
    papers = grammar_terminals(load_grammar(terminal_set="seed-papers"))
    assert base <= papers
    for t in PAPER_TERMINALS:
        if t.category:
            assert (t.kind, t.name) in papers, f"{t.name} missing from seed-papers"


def test_every_paper_terminal_names_its_paper_and_family():
    for t in PAPER_TERMINALS:
        assert t.paper and "einspace" not in t.paper, t.name
        assert t.family and t.description, t.name
        assert set(t.seed_papers) <= set(PRIMITIVE_PAPERS), t.name


def test_every_primitive_paper_has_a_terminal():
    covered = {number for t in terminals() for number in t.seed_papers}
    missing = sorted(set(PRIMITIVE_PAPERS) - covered)
    assert not missing, f"papers without a terminal: {missing}"


def test_explicit_list_keeps_only_those_terminals():
    names = ["linear64", "norm", "identity", "clone_tensor2", "add_tensors", "im2col3k1s1p",
             "col2im", "leakyrelu"]
    grammar = load_grammar(terminal_set=names)
    assert {name for _, name in grammar_terminals(grammar)} == set(names)
    sampler = einspace.Sampler(grammar)
    for seed in range(100):
        d = einspace.sample((3, 16, 16), seed=seed, sampler=sampler)
        leaves = {node for _, node in d.walk() if isinstance(node, str)}
        assert leaves <= set(names)


@pytest.mark.parametrize("bad,expected", [
    ("all-of-them", "terminal_set must be"),
    (["linear64", "no_such_terminal"], "unknown terminals no_such_terminal"),
])
def test_bad_terminal_sets(bad, expected):
    with pytest.raises(GrammarError, match=expected):
        load_grammar(terminal_set=bad)


def test_family_weights_scale_and_remove_families():
    grammar = load_grammar(terminal_set="seed-papers", family_weights={"einspace": 2.0})
    plain = load_grammar(terminal_set="seed-papers")
    for members in grammar.categories.values():
        assert sum(p for _, p in members) == pytest.approx(1.0)
    if PAPER_TERMINALS:
        family = PAPER_TERMINALS[0].family
        without = load_grammar(terminal_set="seed-papers", family_weights={family: 0.0})
        gone = {t.name for t in PAPER_TERMINALS if t.family == family}
        assert not gone & {name for _, name in grammar_terminals(without)}
        assert grammar_terminals(plain) != grammar_terminals(without)
    with pytest.raises(GrammarError, match="unknown families"):
        load_grammar(family_weights={"no-such-family": 1.0})


def test_terminal_set_from_yaml(tmp_path):
    config = tmp_path / "space.yaml"
    config.write_text("grammar:\n  terminal_set: [linear16, identity, leakyrelu, permute21]\n")
    space = einspace.load_space_config(config)
    assert {n for _, n in grammar_terminals(space.grammar)} == \
        {"linear16", "identity", "leakyrelu", "permute21"}


def test_every_paper_primitive_trains_inside_a_sampled_architecture():
    """For each primitive paper, the first sampled architecture (seed-papers set) that uses one
    of its terminals builds, and a forward and backward pass give finite gradients."""
    budget = einspace.Budget(max_params=2_000_000, max_flops=300_000_000,
                             max_activations=5_000_000)
    sampler = einspace.Sampler(load_grammar(terminal_set="seed-papers"), budget)
    wanted = {number: {t.name for t in terminals() if number in t.seed_papers}
              for number in PRIMITIVE_PAPERS}
    found = {}
    for seed in range(3000):
        shape = (3, 28, 28) if seed % 2 else (1, 24, 24)
        d = einspace.sample(shape, seed=seed, sampler=sampler)
        used = {node for _, node in d.walk() if isinstance(node, str)}
        for number, names in wanted.items():
            if number not in found and used & names:
                found[number] = (d, shape)
        if len(found) == len(wanted):
            break
    assert set(found) == set(wanted), f"never sampled: {sorted(set(wanted) - set(found))}"
    for number, (d, shape) in sorted(found.items()):
        torch.manual_seed(0)
        net = einspace.build(d, shape, num_classes=3)
        loss = net(torch.randn(2, *shape)).square().mean()
        loss.backward()
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert torch.isfinite(loss), number
        assert all(torch.isfinite(g).all() for g in grads), number
