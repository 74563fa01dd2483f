"""The productions that form derivation nodes, each declared once, and their registry.

A production says everything the rest of the code needs to know about a node of its kind: the slot
each child fills (a terminal kind or a module), the order its children are evaluated in, what
input each child receives and what the node outputs (its shape rule), and how the children's
costs add up to its own (its cost rule).  The parser, the grammar's checks, shape annotation and
the sampler all ask these objects, so the arity of ``branching`` is written here and nowhere
else.  The PCFG file only says how likely each alternative is and which terminals it offers.

Productions register themselves the way terminals do in :mod:`einspace.blocks.registry`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, NamedTuple, Union

from einspace.blocks.registry import NO_CONTEXT, Context, Kind, Shape, UnknownTerminalError, get

from .cost import Cost
from .derivation import Derivation
from .errors import ParseError, ShapeError, format_path

MODULE = "module"
"""The slot of a child that is itself a derivation node (any production)."""

Slot = Union[Kind, str]
NODE = Cost(nodes=1)
"""What a production node adds to its children's cost: itself."""


class Feed(NamedTuple):
    """What one child receives when its node is evaluated: its input shape and context, and by
    how much its subtree is multiplied (built ``repeat`` times, run ``batch`` times per sample
    with shared weights).  A named tuple: annotation makes one per child, often."""

    shape: object
    context: Context = NO_CONTEXT
    repeat: int = 1
    batch: int = 1


class Production:
    """One node-forming production; subclasses fill in the rules and register an instance."""

    name: ClassVar[str]
    #: Slot of the first child, known before the arity is.
    first: ClassVar[Slot]
    #: Whether the arity follows from the first child (a branching node's does, from its
    #: branching terminal); ``slots`` then needs that terminal's name.
    arity_from_head: ClassVar[bool] = False

    def slots(self, head: str | None) -> tuple[Slot, ...]:
        """The slot of each child position, given the first child when it is a terminal."""
        raise NotImplementedError

    def order(self, node: Derivation) -> Iterable[int]:
        """Child indices in evaluation order (the order data flows through them)."""
        return range(len(node.children))

    def feed(self, node: Derivation, i: int, x: Shape, outputs: dict[int, object],
             path: tuple[int, ...]) -> Feed:
        """What child ``i`` receives, given the node's input ``x`` and the outputs of the
        children evaluated before it; ShapeError (naming ``path + (i,)``) if it cannot fit."""
        raise NotImplementedError

    def output(self, node: Derivation, outputs: dict[int, object]) -> Shape:
        """The node's output: by default its last child's."""
        return outputs[len(node.children) - 1]

    def cost(self, node: Derivation, x: Shape, costs: list[Cost]) -> Cost:
        """The node's subtree cost from its children's (one entry per child, in child order)."""
        total = NODE
        for i, c in enumerate(costs):
            k = self.feed_multiplier(node, i, x)
            total = total + (c if k == 1 else c * k)
        return total

    def feed_multiplier(self, node: Derivation, i: int, x: Shape) -> int:
        """How many times child ``i``'s cost counts in the node's (copies of a repeated module)."""
        return 1


class Sequential(Production):
    """``(sequential A B)``: B runs on A's output."""

    name = "sequential"
    first = MODULE

    def slots(self, head):
        return (MODULE, MODULE)

    def feed(self, node, i, x, outputs, path):
        return Feed(x if i == 0 else outputs[0])


class Computation(Production):
    """``(computation t)``: one computation terminal."""

    name = "computation"
    first = Kind.COMPUTATION

    def slots(self, head):
        return (Kind.COMPUTATION,)

    def feed(self, node, i, x, outputs, path):
        return Feed(x)


class Routing(Production):
    """``(routing pre M post)``: reshape, run M, reshape back.  A prerouting terminal may fold an
    axis into the batch (M then runs once per slice with shared weights), and then ``post``
    must restore the batch."""

    name = "routing"
    first = Kind.PREROUTING

    def slots(self, head):
        return (Kind.PREROUTING, MODULE, Kind.POSTROUTING)

    def feed(self, node, i, x, outputs, path):
        if i == 0:
            return Feed(x)
        pre = get(Kind.PREROUTING, node.children[0])
        if i == 1:
            return Feed(outputs[0], batch=pre.batch_factor(x))
        post = node.children[2]
        if pre.batch_factor(x) > 1 and not get(Kind.POSTROUTING, post).restores_batch:
            raise ShapeError(f"at {format_path(path + (2,))}: {node.children[0]!r} folded an "
                             f"axis into the batch, so the routing module must end with "
                             f"unfold, not {post!r}")
        return Feed(outputs[1], pre.post_context(x))

    def cost(self, node, x, costs):
        factor = get(Kind.PREROUTING, node.children[0]).batch_factor(x)
        return costs[0] + costs[1].folded(factor) + costs[2] + NODE


class Branching(Production):
    """``(branching split M... merge)``: split the input into k parts, run the inner modules on
    them and merge the k outputs.  The branching terminal decides the arity: two-way branches
    hold two inner modules, 4- and 8-way branches one inner module built k times."""

    name = "branching"
    first = Kind.BRANCHING
    arity_from_head = True

    def slots(self, head):
        inner = branching_terminal(head).inner_modules
        return (Kind.BRANCHING,) + (MODULE,) * inner + (Kind.AGGREGATION,)

    def copies(self, node: Derivation) -> int:
        """How many times each inner module is built."""
        return branching_terminal(node.children[0]).branches // (len(node.children) - 2)

    def feed(self, node, i, x, outputs, path):
        last = len(node.children) - 1
        if i == 0:
            return Feed(x)
        copies = self.copies(node)
        if i < last:
            return Feed(outputs[0], repeat=copies)
        return Feed(tuple(outputs[j] for j in range(1, last) for _ in range(copies)))

    def feed_multiplier(self, node, i, x):
        return self.copies(node) if 0 < i < len(node.children) - 1 else 1


def branching_terminal(name: str):
    """The branching terminal ``name`` (its branch count sets the node's arity)."""
    return get(Kind.BRANCHING, name)


_REGISTRY: dict[str, Production] = {}


def register(production: Production) -> Production:
    """Add a production; its name becomes a node label the grammar and the parser accept."""
    if production.name in _REGISTRY:
        raise ValueError(f"production {production.name!r} is registered twice")
    _REGISTRY[production.name] = production
    return production


def names() -> tuple[str, ...]:
    """Every registered production name, in registration order."""
    return tuple(_REGISTRY)


def is_production(label: str) -> bool:
    return label in _REGISTRY


def production(label: str, path: tuple[int, ...] | None = None) -> Production:
    """The production of a node labelled ``label``; ParseError (naming ``path`` when given) if
    none is."""
    try:
        return _REGISTRY[label]
    except KeyError:
        where = "" if path is None else f"at {format_path(path)}: "
        raise ParseError(f"{where}unknown production {label!r}; expected one of "
                         f"{', '.join(_REGISTRY)}") from None


def child_slots(node: Derivation, path: tuple[int, ...] = ()) -> tuple[Slot, ...]:
    """The slot of each child position of ``node``; ParseError naming the node otherwise."""
    rule = production(node.label, path)
    first = node.children[0] if node.children else None
    if not rule.arity_from_head:
        return rule.slots(None)
    if not isinstance(first, str):
        raise ParseError(f"at {format_path(path)}: {rule.name} must start with a "
                         f"{rule.first.value} terminal, got {_describe(first)}")
    try:
        return rule.slots(first)
    except UnknownTerminalError as e:
        raise ParseError(f"at {format_path(path + (0,))}: {e}") from None


def _describe(child) -> str:
    if child is None:
        return "nothing"
    return f"({child.label} ...)" if isinstance(child, Derivation) else repr(child)


for _production in (Sequential(), Branching(), Routing(), Computation()):
    register(_production)
