"""Conformance suite run by every registered terminal: the shape rule and the symbolic costs agree
with the module the terminal builds, in every mode it accepts, and the module scripts."""

import warnings

import pytest
import torch
from flops import flop_counter

from einspace.blocks import Kind, terminals
from einspace.blocks.registry import NO_CONTEXT, Context, mode_of, numel

IMAGE_SHAPES = [(3, 8, 8), (4, 6, 10), (2, 1, 1), (8, 16, 4), (2, 16, 18), (16, 8, 8), (32, 4, 4)]
TOKEN_SHAPES = [(6, 8), (16, 4), (1, 3), (16, 32), (64, 16), (9, 24)]


def cases(terminal):
    """(input, context) pairs to try: single shapes, or branch lists for aggregations."""
    shapes = IMAGE_SHAPES + TOKEN_SHAPES
    if terminal.kind == Kind.AGGREGATION:
        lists = [tuple([s] * k) for s in shapes for k in (2, 4, 8)]
        lists += [((3, 5, 6), (3, 6, 2)), ((6, 8), (8, 3)), ((4, 6), (5, 6)), ((4, 6), (4, 2))]
        return [(x, NO_CONTEXT) for x in lists + list(terminal.examples)]
    shapes = shapes + list(terminal.examples)
    if terminal.kind == Kind.POSTROUTING:
        return [(x, NO_CONTEXT) for x in shapes] + [
            ((12, 5), Context(grid=(3, 4))), ((12, 5), Context(grid=(2, 2))),
            ((12, 5), Context(fold=("rows", 3))), ((12, 5), Context(fold=("cols", 4))),
            ((12, 5), Context(fold=("groups", 4)))]
    return [(x, NO_CONTEXT) for x in shapes]


def accepted(terminal):
    return [(x, ctx) for x, ctx in cases(terminal) if terminal.infer(x, ctx) is not None]


def example_input(terminal, x, ctx):
    """A batch of 2 samples for ``x``; inside a fold the batch holds every folded slice."""
    if terminal.kind == Kind.AGGREGATION:
        return [torch.randn(2, *s) for s in x]
    return torch.randn(2 * (ctx.fold[1] if ctx.fold else 1), *x)


ALL = terminals()


def test_registry_holds_the_reference_terminal_lists():
    counts = {kind: len([t for t in terminals(kind) if t.family == "einspace"]) for kind in Kind}
    assert counts[Kind.BRANCHING] == 12 and counts[Kind.AGGREGATION] == 12
    assert counts[Kind.PREROUTING] == 14 and counts[Kind.POSTROUTING] == 8
    assert counts[Kind.COMPUTATION] >= 13


@pytest.mark.parametrize("terminal", ALL, ids=lambda t: f"{t.kind.value}-{t.name}")
def test_shape_rule_and_costs_match_the_built_module(terminal):
    found = accepted(terminal)
    assert found, f"{terminal.name} accepts none of the test inputs"
    modes = {mode_of(x[0] if isinstance(x[0], tuple) else x) for x, _ in found}
    assert modes <= set(terminal.modes)
    if terminal.kind != Kind.AGGREGATION:
        assert modes == set(terminal.modes), f"{terminal.name} never accepted some of its modes"
    for x, ctx in found:
        expected = terminal.infer(x, ctx)
        module = terminal.build(x, ctx)
        inputs = example_input(terminal, x, ctx)
        with flop_counter() as counter:
            out = module(inputs)
        if terminal.kind == Kind.BRANCHING:
            assert len(out) == terminal.branches
            assert all(tuple(o.shape[1:]) == expected for o in out)
        else:
            assert tuple(out.shape[1:]) == expected, (terminal.name, x)
        assert sum(p.numel() for p in module.parameters()) == terminal.params(x, ctx)
        # a batch of 2: per-sample work twice, per-batch work once
        assert counter.get_total_flops() == 2 * terminal.flops(x, ctx) + \
            terminal.shared_flops(x, ctx)
        if terminal.allocates and terminal.kind != Kind.BRANCHING:
            assert numel(expected) > 0


@pytest.mark.parametrize("terminal", ALL, ids=lambda t: f"{t.kind.value}-{t.name}")
def test_terminal_module_scripts(terminal):
    if terminal.script_exception:
        pytest.skip(f"{terminal.name} is not scriptable: {terminal.script_exception}")
    x, ctx = accepted(terminal)[0]
    module = terminal.build(x, ctx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(module)
    inputs = example_input(terminal, x, ctx)
    torch.manual_seed(0)
    eager = module(inputs)
    again = scripted(inputs)
    if terminal.kind == Kind.BRANCHING:
        assert all(torch.equal(a, b) for a, b in zip(eager, again, strict=True))
    else:
        assert torch.allclose(eager, again)
