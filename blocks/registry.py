"""The terminal registry: every grammar terminal declares its shape rule, costs and builder here.

A terminal is one object that knows, for an input shape, whether it applies (``infer`` returns
``None`` when it does not), what it costs (parameters, FLOPs, new activation elements) and how to
build the torch module.  Keeping all of this in one class per family is what lets the sampler be
shape-exact and budget-aware without ever running a tensor.

Shapes never include the batch dimension: ``(C, H, W)`` is image mode (``im``) and ``(N, D)`` is
token mode (``col``).
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Iterable

from torch import Tensor, nn

Shape = tuple[int, ...]
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


class Kind(str, Enum):
    """The grammar slot a terminal can fill."""

    BRANCHING = "branching"
    AGGREGATION = "aggregation"
    PREROUTING = "prerouting"
    POSTROUTING = "postrouting"
    COMPUTATION = "computation"


def mode_of(shape: Shape) -> str:
    """``im`` for (C, H, W), ``col`` for (N, D)."""
    return "im" if len(shape) == 3 else "col"


def numel(shape: Shape) -> int:
    return math.prod(shape)


def features_of(shape: Shape) -> int:
    """The feature width: channels C of an image, token width D of tokens."""
    return shape[0] if len(shape) == 3 else shape[1]


def positions_of(shape: Shape) -> int:
    """The number of positions the features repeat over: H x W of an image, N of tokens."""
    return shape[1] * shape[2] if len(shape) == 3 else shape[0]


def mean_over_positions(x: Tensor, image: bool) -> Tensor:
    """(B, C) channel means of an image batch, or (B, D) token means of a token batch."""
    if image:
        return x.mean(dim=[2, 3])
    return x.mean(dim=1)


@dataclass(frozen=True)
class Context:
    """What a terminal may know beyond its input shape.

    ``grid`` is the (H', W') token grid of the im2col that opened the enclosing routing module;
    ``col2im`` needs it to fold tokens back into an image.  ``fold`` is (how, size) of the
    fold-to-batch terminal that opened it; ``unfold`` needs it to give the batch its axis back.
    """

    grid: tuple[int, int] | None = None
    fold: tuple[str, int] | None = None


NO_CONTEXT = Context()


class Terminal:
    """Base class of every terminal; subclasses override what differs from these defaults.

    Class attributes describe the terminal for listings (``einspace terminals``) and for the
    grammar loader; methods are the shape rule, the symbolic costs and the builder.
    """

    name: str
    kind: Kind
    modes: frozenset[str] = frozenset({"im", "col"})
    #: Grouping for listings and per-family probabilities; "einspace" marks the reference set.
    family: str = "einspace"
    paper: str = "einspace (Ericsson et al., NeurIPS 2024)"
    #: Numbers of the papers in the seed list (shared/seeds) whose primitive this terminal is.
    seed_papers: tuple[int, ...] = ()
    #: Public implementation the terminal was checked against (repository and path), if any.
    reference: str = ""
    #: Grammar category the "seed-papers" terminal set adds this terminal to (None: not added).
    category: str | None = None
    description: str = ""
    #: Extra inputs (shapes, or tuples of shapes for aggregations) the conformance suite tries,
    #: for terminals that only accept particular shapes (e.g. a square token grid).
    examples: tuple = ()
    #: Why the built module cannot be scripted with TorchScript ("" when it can).
    script_exception: str = ""
    #: Post-routing terminals that give the batch back an axis a fold moved into it; after a
    #: fold only these may close the routing module.
    restores_batch: bool = False
    #: False for terminals that return views or aliases of their input (no new memory).
    allocates: bool = True
    #: Branching terminals only: tensors produced, and distinct inner modules in the tree.
    branches: int = 1
    inner_modules: int = 1

    def infer(self, x, ctx: Context):
        """Output shape for input ``x`` (a tuple of shapes for aggregations), or None."""
        raise NotImplementedError

    def params(self, x, ctx: Context) -> int:
        return 0

    def flops(self, x, ctx: Context) -> int:
        """FLOPs per sample, counted like ``torch.utils.flop_counter``: 2 x multiply-adds of
        matrix products and convolutions; element-wise work is not counted."""
        return 0

    def shared_flops(self, x, ctx: Context) -> int:
        """FLOPs done once per batch whatever its size (e.g. generating a hyper-kernel); a
        batch of B costs ``B * flops + shared_flops``."""
        return 0

    def build(self, x, ctx: Context) -> nn.Module:
        raise NotImplementedError

    def refusal(self, x, ctx: Context) -> str:
        """Why ``infer`` refused ``x`` when the mode alone does not explain it ("" if obvious)."""
        return ""

    def post_context(self, x: Shape) -> Context:
        """What a pre-routing terminal tells the post-routing terminal of the same routing module
        (im2col: its token grid; a fold: what it moved into the batch)."""
        return NO_CONTEXT

    def batch_factor(self, x: Shape) -> int:
        """Pre-routing terminals that fold an axis into the batch multiply it by this; the inner
        module then runs this many times per sample (its FLOPs and activations count so)."""
        return 1

    def hyperparameters(self) -> dict:
        """Named settings of this terminal (shown by listings)."""
        return {}

    def __repr__(self) -> str:
        return f"<{self.kind.value} terminal {self.name}>"


_REGISTRY: dict[tuple[Kind, str], Terminal] = {}


class UnknownTerminalError(LookupError):
    """Raised for a terminal name the registry does not hold in the requested kind."""


def register(terminal: Terminal) -> Terminal:
    """Add a terminal instance; names are unique within a kind."""
    if not NAME_PATTERN.match(terminal.name):
        raise ValueError(f"terminal name {terminal.name!r} must match {NAME_PATTERN.pattern}")
    key = (terminal.kind, terminal.name)
    if key in _REGISTRY:
        raise ValueError(f"{terminal.kind.value} terminal {terminal.name!r} is registered twice")
    _REGISTRY[key] = terminal
    return terminal


def register_all(terminals: Iterable[Terminal]) -> None:
    for terminal in terminals:
        register(terminal)


def get(kind: Kind, name: str) -> Terminal:
    """The terminal ``name`` of ``kind``; a clear error with close matches otherwise."""
    try:
        return _REGISTRY[(kind, name)]
    except KeyError:
        known = [n for (k, n) in _REGISTRY if k == kind]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownTerminalError(f"unknown {kind.value} terminal {name!r}{hint}") from None


def terminals(kind: Kind | None = None) -> list[Terminal]:
    """Registered terminals in registration order, optionally of one kind."""
    return [t for (k, _), t in _REGISTRY.items() if kind is None or k == kind]
