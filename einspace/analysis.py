"""Shape annotation and cost counting, from each production's own rules; no tensors needed.

``annotate(derivation, input_shape)`` gives every node its input and output shape and the
parameters, FLOPs and new activation elements of its subtree (per sample; a module repeated k
times in a 4- or 8-way branch counts k times).  The same derivation can be annotated for any input
shape; a tree that does not fit raises ShapeError naming the node's path and what it expected.
"""

from __future__ import annotations

from dataclasses import dataclass

from einspace.blocks.registry import NO_CONTEXT, Context, Kind, Shape, get, mode_of, numel

from . import structure
from .cost import Cost
from .derivation import Child, Derivation
from .errors import ShapeError, format_path
from .productions import MODULE, production


@dataclass(frozen=True)
class NodeInfo:
    """Annotation of one node: where it is, what it receives and produces, and its subtree cost."""

    path: tuple[int, ...]
    node: Child
    slot: object  # productions.MODULE or a Kind
    input: object  # a Shape, or a tuple of Shapes for aggregations
    output: Shape | None  # None for branching terminals' k outputs: see ``parts``
    depth: int  # production nodes above this one
    cost: Cost
    context: Context = NO_CONTEXT
    repeat: int = 1  # how many times this subtree is built (product of enclosing k-way branches)
    batch: int = 1  # how many times per sample it runs with shared weights (enclosing folds)


@dataclass(frozen=True)
class Annotation:
    derivation: Derivation
    input_shape: Shape
    output_shape: Shape
    cost: Cost
    nodes: dict[tuple[int, ...], NodeInfo]

    def __getitem__(self, path: tuple[int, ...]) -> NodeInfo:
        return self.nodes[path]


def check_input_shape(shape) -> Shape:
    """Validate a user-given input shape (no batch dim): (C, H, W) or (N, D), positive ints."""
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise ShapeError(f"input shape {shape!r} must be a sequence of integers") from None
    if len(dims) not in (2, 3) or any(d <= 0 for d in dims) or any(
            isinstance(d, float) and not d.is_integer() for d in shape):
        raise ShapeError(f"input shape {shape!r} must be C,H,W or N,D (an image or tokens) "
                         f"with positive sizes, without the batch dimension")
    return dims


def parse_input_shape(text: str) -> Shape:
    """``3,28,28`` or ``3x28x28`` -> (3, 28, 28), checked by :func:`check_input_shape`: the one
    reader of a shape typed by a person, for the CLI and the benchmarks alike."""
    parts = text.replace("x", ",").replace("×", ",").split(",")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise ShapeError(f"{text!r} is not a shape; write C,H,W (e.g. 3,28,28) or N,D") from None
    return check_input_shape(dims)


def annotate(derivation: Derivation, input_shape) -> Annotation:
    """Annotate every node of ``derivation`` for ``input_shape``; ShapeError if it does not fit."""
    shape = check_input_shape(input_shape)
    nodes: dict[tuple[int, ...], NodeInfo] = {}
    out, cost = _Annotator(nodes).module(derivation, shape, (), 0, MODULE, 1, 1)
    return Annotation(derivation, shape, out, cost, nodes)


def shape_text(x) -> str:
    if isinstance(x, tuple) and x and isinstance(x[0], tuple):
        return "[" + ", ".join(shape_text(s) for s in x) + "]"
    return "(" + ",".join(map(str, x)) + f") {mode_of(x)}"


class _Annotator:
    """Applies each production's shape and cost rules (``einspace.productions``) top-down,
    recording every node; ``repeat`` and ``batch`` accumulate the enclosing multipliers."""

    def __init__(self, nodes: dict):
        self.nodes = nodes

    def terminal(self, kind: Kind, name: str, x, ctx: Context, path, depth, repeat, batch):
        terminal = get(kind, name)
        y = terminal.infer(x, ctx)
        if y is None:
            raise ShapeError(f"at {format_path(path)}: {kind.value} terminal {name!r} does not "
                             f"accept input {shape_text(x)}{_hint(terminal, x, ctx)}")
        shared = terminal.shared_flops(x, ctx)
        cost = Cost(terminal.params(x, ctx), terminal.flops(x, ctx) + shared,
                    numel(y) if terminal.allocates else 0, 1, shared)
        self.nodes[path] = NodeInfo(path, name, kind, x, y, depth, cost, ctx, repeat, batch)
        return y, cost

    def module(self, node: Derivation, x: Shape, path, depth, slot, repeat, batch):
        slots = structure.check_node(node, path)
        rule = production(node.label)
        outputs: dict[int, object] = {}
        costs: list[Cost] = [Cost()] * len(slots)
        for i in rule.order(node):
            feed = rule.feed(node, i, x, outputs, path)
            child, where = node.children[i], path + (i,)
            if slots[i] == MODULE:
                outputs[i], costs[i] = self.module(child, feed.shape, where, depth + 1, MODULE,
                                                   repeat * feed.repeat, batch * feed.batch)
            else:
                outputs[i], costs[i] = self.terminal(slots[i], child, feed.shape, feed.context,
                                                     where, depth + 1, repeat * feed.repeat,
                                                     batch * feed.batch)
        y, cost = rule.output(node, outputs), rule.cost(node, x, costs)
        self.nodes[path] = NodeInfo(path, node, slot, x, y, depth, cost, NO_CONTEXT, repeat,
                                    batch)
        return y, cost


def _hint(terminal, x, ctx: Context) -> str:
    """Why a terminal may have refused its input: the branch count, the mode, or its own word."""
    if isinstance(x, tuple) and x and isinstance(x[0], tuple):
        return f" ({len(x)} branches)"
    if mode_of(x) not in terminal.modes:
        return f"; it works in {'/'.join(sorted(terminal.modes))} mode only"
    reason = terminal.refusal(x, ctx)
    return f"; {reason}" if reason else ""
