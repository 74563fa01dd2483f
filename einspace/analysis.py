"""Shape annotation and cost counting: a walker that needs no tensors.

``annotate(derivation, input_shape)`` gives every node its input and output shape and the
parameters, FLOPs and new activation elements of its subtree (per sample; a module repeated k
times in a 4- or 8-way branch counts k times).  The same derivation can be annotated for any input
shape; a tree that does not fit raises ShapeError naming the node's path and what it expected.
"""

from __future__ import annotations

from dataclasses import dataclass

from einspace.blocks.registry import NO_CONTEXT, Context, Kind, Shape, get, mode_of, numel

from . import structure
from .derivation import Child, Derivation
from .errors import ShapeError, format_path


@dataclass(frozen=True)
class Cost:
    """Per-sample cost: trainable parameters, FLOPs (2 x multiply-adds), activation elements,
    and nodes as built (a module repeated k times by a 4- or 8-way branch counts k times)."""

    params: int = 0
    flops: int = 0
    activations: int = 0
    nodes: int = 0
    #: The part of ``flops`` done once per forward whatever the batch (hyper-kernel generation).
    shared_flops: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.flops + other.flops,
                    self.activations + other.activations, self.nodes + other.nodes,
                    self.shared_flops + other.shared_flops)

    def __mul__(self, k: int) -> Cost:
        return Cost(self.params * k, self.flops * k, self.activations * k, self.nodes * k,
                    self.shared_flops * k)

    def folded(self, k: int) -> Cost:
        """The cost of running one module k times per sample with shared weights (an axis
        folded into the batch): work and memory k times, parameters, nodes and once-per-forward
        work once."""
        per_slice = self.flops - self.shared_flops
        return Cost(self.params, per_slice * k + self.shared_flops, self.activations * k,
                    self.nodes, self.shared_flops)


@dataclass(frozen=True)
class NodeInfo:
    """Annotation of one node: where it is, what it receives and produces, and its subtree cost."""

    path: tuple[int, ...]
    node: Child
    slot: object  # structure.MODULE or a Kind
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
        raise ShapeError(f"input shape {shape!r} must be C,H,W (image) or N,D (tokens) with "
                         f"positive sizes, without the batch dimension")
    return dims


def annotate(derivation: Derivation, input_shape) -> Annotation:
    """Annotate every node of ``derivation`` for ``input_shape``; ShapeError if it does not fit."""
    shape = check_input_shape(input_shape)
    nodes: dict[tuple[int, ...], NodeInfo] = {}
    walker = _Annotator(nodes)
    out, cost = walker.module(derivation, shape, (), 0, structure.MODULE, 1, 1)
    return Annotation(derivation, shape, out, cost, nodes)


def shape_text(x) -> str:
    if isinstance(x, tuple) and x and isinstance(x[0], tuple):
        return "[" + ", ".join(shape_text(s) for s in x) + "]"
    return "(" + ",".join(map(str, x)) + f") {mode_of(x)}"


class _Annotator:
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
        structure.check_node(node, path)
        label, children = node.label, node.children
        d = depth + 1
        if label == "computation":
            y, cost = self.terminal(Kind.COMPUTATION, children[0], x, NO_CONTEXT, path + (0,), d,
                                    repeat, batch)
        elif label == "sequential":
            mid, c1 = self.module(children[0], x, path + (0,), d, structure.MODULE, repeat, batch)
            y, c2 = self.module(children[1], mid, path + (1,), d, structure.MODULE, repeat, batch)
            cost = c1 + c2
        elif label == "routing":
            pre = get(Kind.PREROUTING, children[0])
            inner_in, c1 = self.terminal(Kind.PREROUTING, children[0], x, NO_CONTEXT,
                                         path + (0,), d, repeat, batch)
            factor = pre.batch_factor(x)
            inner_out, c2 = self.module(children[1], inner_in, path + (1,), d, structure.MODULE,
                                        repeat, batch * factor)
            if factor > 1 and not get(Kind.POSTROUTING, children[2]).restores_batch:
                raise ShapeError(f"at {format_path(path + (2,))}: {children[0]!r} folded an axis "
                                 f"into the batch, so the routing module must end with unfold, "
                                 f"not {children[2]!r}")
            y, c3 = self.terminal(Kind.POSTROUTING, children[2], inner_out, pre.post_context(x),
                                  path + (2,), d, repeat, batch)
            cost = c1 + c2.folded(factor) + c3
        else:
            y, cost = self.branching(node, x, path, d, repeat, batch)
        cost = cost + Cost(nodes=1)
        self.nodes[path] = NodeInfo(path, node, slot, x, y, depth, cost, NO_CONTEXT, repeat,
                                    batch)
        return y, cost

    def branching(self, node: Derivation, x: Shape, path, d, repeat, batch):
        children = node.children
        splitter = get(Kind.BRANCHING, children[0])
        part, cost = self.terminal(Kind.BRANCHING, children[0], x, NO_CONTEXT, path + (0,), d,
                                   repeat, batch)
        inners = children[1:-1]
        k = splitter.branches
        copies = k // len(inners)
        outs = []
        for i, inner in enumerate(inners, start=1):
            y, c = self.module(inner, part, path + (i,), d, structure.MODULE, repeat * copies,
                               batch)
            outs += [y] * copies
            cost = cost + c * copies
        y, c = self.terminal(Kind.AGGREGATION, children[-1], tuple(outs), NO_CONTEXT,
                             path + (len(children) - 1,), d, repeat, batch)
        return y, cost + c


def _hint(terminal, x, ctx: Context) -> str:
    """Why a terminal may have refused its input: the branch count, the mode, or its own word."""
    if isinstance(x, tuple) and x and isinstance(x[0], tuple):
        return f" ({len(x)} branches)"
    if mode_of(x) not in terminal.modes:
        return f"; it works in {'/'.join(sorted(terminal.modes))} mode only"
    reason = terminal.refusal(x, ctx)
    return f"; {reason}" if reason else ""
