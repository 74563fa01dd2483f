"""Growth mutations: children that are wider or deeper than their parent.

Re-sampling a node (:mod:`einspace.mutation`) mostly makes a trained seed smaller: a random
replacement rarely has more units than a layer chosen by hand, and on mnist1d only 49 of the 209
children small_cnn's search made had more FLOPs than small_cnn.  Yet a wider small_cnn
retrains to a better test score on each of mnist1d, chesseract_wdl and language_lite (the README's
search-quality section).  Network morphisms (Wei et al. 2016) and LEMONADE (Elsken et al. 2019)
grow a network instead; these are their two operators in grammar form:

* **widen**: a layer with a fixed width (a terminal with an integer ``out`` hyperparameter, such
  as ``linear64``) becomes the next wider terminal of its family in the grammar (``linear128``);
  the layers after it re-size to the new width;
* **deepen**: a layer of a sequential chain, with the norm and activation that follow it, is
  repeated right after itself, the copy initialised afresh.

One operator is drawn (each with probability 1/2; the other is the fallback), then its sites
are shuffled with the caller's generator and tried in turn; the first child that fits its input
shape and the budget is returned, so growth is deterministic given the generator.  The result
is a :class:`~einspace.mutation.Mutation`, whose ``origins`` say which parent node each copied
node comes from (weight inheritance reads them).
"""

from __future__ import annotations

import random

from einspace.blocks.registry import Kind, get

from .analysis import Annotation, annotate
from .derivation import Derivation
from .errors import SamplingError
from .mutation import Mutation, Path, outside, replaced, within_budget
from .sampler import Sampler

MAX_SEGMENT = 3
"""The most chain steps deepen repeats: a layer, its norm and its activation."""


def grow_traced(derivation: Derivation, input_shape, rng: random.Random,
                sampler: Sampler | None = None) -> Mutation:
    """A wider or deeper child of ``derivation`` within the sampler's budget; a
    :class:`SamplingError` when no growth of it fits."""
    sampler = sampler or Sampler()
    parent = annotate(derivation, input_shape)
    operators = [_widenings(parent, sampler), _deepenings(parent)]
    if rng.random() < 0.5:
        operators.reverse()
    for growths in operators:
        rng.shuffle(growths)
        for make in growths:
            made = make()
            if within_budget(made.child, parent, sampler):
                return made
    raise SamplingError("no growth of this architecture fits its input shape and the budget")


def _widenings(parent: Annotation, sampler: Sampler) -> list:
    """One widening per fixed-width terminal that has a wider sibling in the grammar."""
    found = []
    for path, info in sorted(parent.nodes.items()):
        if not isinstance(info.node, str) or not isinstance(info.slot, Kind):
            continue
        wider = _next_wider(info.slot, info.node, sampler)
        if wider is not None:
            found.append(lambda path=path, wider=wider: replaced(parent.derivation, path, wider))
    return found


def _width(kind: Kind, name: str) -> tuple[type, int] | None:
    """A terminal's family (its class) and fixed width, or None when it has none."""
    terminal = get(kind, name)
    out = terminal.hyperparameters().get("out")
    return (type(terminal), out) if isinstance(out, int) else None


def _next_wider(kind: Kind, name: str, sampler: Sampler) -> str | None:
    """The narrowest terminal of the same family the grammar has that is wider than ``name``."""
    own = _width(kind, name)
    if own is None:
        return None
    wider = []
    for other, _ in sampler.grammar.terminals_of(kind):
        width = _width(kind, other)
        if width is not None and width[0] is own[0] and width[1] > own[1]:
            wider.append((width[1], other))
    return min(wider)[1] if wider else None


def _deepenings(parent: Annotation) -> list:
    """One deepening per layer of each sequential chain: the layer (a step holding a fixed-width
    terminal) with the steps after it up to the next layer (its norm and activation), at most
    :data:`MAX_SEGMENT` steps, so a norm or an activation alone is never what is repeated, nor
    two layers without a nonlinearity between them."""
    found = []
    for root in _chain_roots(parent.derivation):
        steps = _chain(parent.derivation, root)
        layers = [_holds_layer(parent, step) for step in steps]
        for first in (k for k, layer in enumerate(layers) if layer):
            last = first
            while (last + 1 < len(steps) and not layers[last + 1]
                   and last + 1 - first < MAX_SEGMENT):
                last += 1
            found.append(lambda root=root, steps=steps, first=first, last=last:
                         _repeated(parent.derivation, root, steps, first, last))
    return found


def _holds_layer(parent: Annotation, step: Path) -> bool:
    n = len(step)
    return any(path[:n] == step and isinstance(info.node, str) and isinstance(info.slot, Kind)
               and _width(info.slot, info.node) is not None
               for path, info in parent.nodes.items())


def _chain_roots(derivation: Derivation) -> list[Path]:
    """The sequential nodes that start a chain: not the second step of a sequential above."""
    roots = []
    for path, node in derivation.walk():
        if isinstance(node, Derivation) and node.label == "sequential":
            above = derivation.get(path[:-1]) if path else None
            if not (isinstance(above, Derivation) and above.label == "sequential"
                    and path[-1] == 1):
                roots.append(path)
    return roots


def _chain(derivation: Derivation, root: Path) -> list[Path]:
    """The paths of a chain's steps: each first child down the right spine, then its last."""
    steps, path = [], root
    while True:
        node = derivation.get(path)
        if not (isinstance(node, Derivation) and node.label == "sequential"):
            return steps + [path]
        steps.append(path + (0,))
        path = path + (1,)


def _step_path(root: Path, position: int, count: int) -> Path:
    """Where step ``position`` of a right-nested chain of ``count`` steps sits."""
    return root + (1,) * position + ((0,) if position < count - 1 else ())


def _repeated(derivation: Derivation, root: Path, steps: list[Path], first: int,
              last: int) -> Mutation:
    """The chain at ``root`` with steps ``first..last`` repeated right after ``last``."""
    nodes = [derivation.get(p) for p in steps]
    order = list(range(last + 1)) + [None] * (last + 1 - first) + list(range(last + 1, len(nodes)))
    copies = nodes[first:last + 1]
    built = nodes[:last + 1] + copies + nodes[last + 1:]
    chain = built[-1]
    for node in reversed(built[:-1]):
        chain = Derivation("sequential", (node, chain))
    child = derivation.replace(root, chain)
    origins = outside(child, root)
    for position, source in enumerate(order):
        if source is None:
            continue
        at = _step_path(root, position, len(built))
        for path, _ in nodes[source].walk():
            origins[at + path] = (0, steps[source] + path)
    return Mutation(child, root, origins)

