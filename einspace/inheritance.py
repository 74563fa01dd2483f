"""Weight inheritance (Lamarckian evolution): a child starts from its parents' trained weights.

A mutated or crossed-over child shares most of its derivation with its parent(s).  Every node
whose subtree text and input shape are unchanged compiles to the same modules with the same
tensor shapes, so it takes the parent's trained tensors bit for bit (BatchNorm running statistics
and every other buffer included); new or changed nodes, and nodes that now see another input
shape, keep the fresh initialisation of the child's build.

Matching goes by derivation path, never by parameter order or module name: flattened sequences
and lowered patterns (a routing that became one ``Conv2d``) mean compiled names do not follow the
tree, and a mutation shifts them.  Each state-dict entry is attributed to the deepest derivation
node it was compiled from (:func:`einspace.compiler.build_traced`) plus its name inside that
node's module, and the k copies of a module repeated by a k-way branch are told apart by their
order.  The origin map (:attr:`Mutation.origins <einspace.mutation.Mutation.origins>`,
:attr:`Crossover.origins <einspace.recombination.Crossover.origins>`) says which parent path a
child node came from.  The head is not part of the derivation: it is inherited from a parent
whose last module (the end of the top-level chain, whose output the head read) the child
inherited unchanged.

**The child's training schedule** is every trial's: the same epochs and the same cosine schedule
restarted at the full learning rate, for inherited and fresh parameters alike.  This is what
LEMONADE (Elsken, Metzen and Hutter, ICLR 2019) and its predecessor NASH (Elsken et al. 2017) do:
each child, warm-started from its parent by a network morphism, trains for the same short fixed
budget with cosine annealing restarted from the initial rate (SGDR's warm restart).  The saving is
not a shorter schedule but a better start: the same budget ends higher, and training accumulates
along a lineage.  Not fewer epochs, because the fresh node needs a whole schedule to learn and a
fixed budget keeps scores comparable between trials of one fidelity.  Not a lower rate for the
inherited part, because the morphism work restarts the whole network at the full rate: the
layers around a changed node must adapt to it, and a second rate would be one more knob per
trial.  Measured (``benchmarks/bench_inheritance.py``, mnist1d, 6 epochs): at the recipe's rate
the child reached its parent's score in 3 epochs (4 from scratch); at a tenth of it, not in 6.
Unlike a network morphism, a re-sampled einspace node does not preserve the parent's function,
so a child starts below its parent and must win its score back.  An inherited child's score
includes its ancestors' training, so the search's final retraining (from scratch, the same
protocol for every architecture) is what compares architectures fairly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .analysis import Annotation, annotate
from .compiler import build_traced
from .derivation import Child, Derivation
from .errors import EinspaceError, format_path
from .modules import Network

Path = tuple[int, ...]
Origins = Mapping[Path, tuple[int, Path]]
#: A state-dict entry's place in the architecture: (owning node's path, or None for the head;
#: its name inside that node's module; which copy of a repeated module it is).
Slot = tuple[Path | None, str, int]
HEAD = "head."


class InheritanceError(EinspaceError):
    """Parent weights that cannot be inherited from: they do not fit the parent's architecture,
    or the origin map names a parent that was not given."""


@dataclass(frozen=True)
class Parent:
    """A trained parent: its derivation, the input shape it was built for, its ``state_dict``."""

    derivation: Derivation
    input_shape: tuple[int, ...]
    state: Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class InheritanceRecord:
    """Trainable parameters (elements, buffers not counted) the child took from its parents and
    those it starts fresh; ``per_parent[k]`` is how many came from parent ``k``.  The caller
    attaches the parents' trial ids."""

    inherited: int
    fresh: int
    per_parent: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"inherited_params": self.inherited, "fresh_params": self.fresh,
                "per_parent": list(self.per_parent)}


@dataclass(frozen=True)
class Inheritance:
    """The child network, initialised (its ``state_dict`` is the child's initial state), and
    what it inherited."""

    network: Network
    record: InheritanceRecord


def inherit(child: Derivation, input_shape, parents: Sequence[Parent], origins: Origins, *,
            num_classes: int | None = None, output_shape=None,
            lower: bool = True) -> Inheritance:
    """Build ``child`` for ``input_shape`` (fresh weights drawn from the global torch RNG, as
    :func:`einspace.build` would) and overwrite every tensor of an unchanged node with its
    parent's.  ``origins`` maps child paths to ``(parent index, path in that parent)``; the head
    arguments and ``lower`` must be those the parents were trained with."""
    network, owners = build_traced(child, input_shape, num_classes, output_shape, lower)
    state = network.state_dict()
    sources = [_Source(parent, k, num_classes, output_shape, lower)
               for k, parent in enumerate(parents)]
    for path, (k, _) in origins.items():
        if not 0 <= k < len(sources):
            raise InheritanceError(f"the origin of child node {format_path(path)} is parent {k}, "
                                   f"but {len(sources)} parent(s) were given")
    matcher = _Matcher(annotate(child, input_shape), sources, origins)
    parameters = {name: p.numel() for name, p in network.named_parameters()}
    per_parent = [0] * len(sources)
    for key, slot in _slots(state, owners).items():
        found = matcher.source(slot)
        if found is None:
            continue
        k, tensor = found
        if tensor.shape != state[key].shape:
            continue
        state[key] = tensor.detach().clone()
        per_parent[k] += parameters.get(key, 0)
    network.load_state_dict(state, strict=True)
    inherited = sum(per_parent)
    return Inheritance(network, InheritanceRecord(inherited, sum(parameters.values()) - inherited,
                                                  tuple(per_parent)))


def origins_from_regions(child: Derivation, regions: Sequence[tuple[Path, int, Path]]
                         ) -> dict[Path, tuple[int, Path]]:
    """The full origin map from maximal copied regions (``Crossover.regions()``, the compact form
    a trial record keeps): every node under a region's child path, mapped into its parent."""
    origins = {}
    for root, k, source in regions:
        node = child.get(tuple(root))
        inside = node.walk() if isinstance(node, Derivation) else [((), node)]
        for path, _ in inside:
            origins[tuple(root) + path] = (k, tuple(source) + path)
    return origins


class _Source:
    """One parent, indexed by slot: which of its tensors sits where in its derivation."""

    def __init__(self, parent: Parent, index: int, num_classes, output_shape, lower: bool):
        self.parent = parent
        self.annotation = annotate(parent.derivation, parent.input_shape)
        # Built for its layout only (some terminals compute on tensors while they initialise, so
        # the meta device will not do); the forked RNG leaves the caller's draws untouched.
        with torch.random.fork_rng(devices=[]):
            network, owners = build_traced(parent.derivation, parent.input_shape, num_classes,
                                           output_shape, lower)
        expected = network.state_dict()
        _check_fits(index, expected, parent.state)
        self.keys = {slot: key for key, slot in _slots(expected, owners).items()}

    def tensor(self, slot: Slot) -> torch.Tensor | None:
        key = self.keys.get(slot)
        return None if key is None else self.parent.state[key]


class _Matcher:
    """Decides, per child slot, which parent tensor (if any) it inherits."""

    def __init__(self, child: Annotation, sources: list[_Source], origins: Origins):
        self.child, self.sources, self.origins = child, sources, origins
        self.head_parent = self._head_parent()

    def source(self, slot: Slot) -> tuple[int, torch.Tensor] | None:
        owner, local, copy = slot
        if owner is None:
            if self.head_parent is None:
                return None
            k, parent_owner = self.head_parent, None
        else:
            origin = self.origins.get(owner)
            if origin is None or not self._unchanged(owner, *origin):
                return None
            k, parent_owner = origin
        tensor = self.sources[k].tensor((parent_owner, local, copy))
        return None if tensor is None else (k, tensor)

    def _unchanged(self, path: Path, k: int, source: Path) -> bool:
        """Whether the child's node at ``path`` is parent ``k``'s node at ``source``: the same
        subtree seeing the same input shape (so it compiles to the same tensors)."""
        parent = self.sources[k].annotation
        if source not in parent.nodes:
            return False
        mine, theirs = self.child[path], parent[source]
        return _text(mine.node) == _text(theirs.node) and mine.input == theirs.input

    def _head_parent(self) -> int | None:
        tail = _tail(self.child.derivation)
        origin = self.origins.get(tail)
        if origin is None or not self._unchanged(tail, *origin):
            return None
        k, source = origin
        return k if source == _tail(self.sources[k].parent.derivation) else None


def _slots(state: Mapping[str, torch.Tensor], owners: Mapping[str, Path]) -> dict[str, Slot]:
    """Each state-dict key's slot: the deepest node whose module holds it (a fused module's inner
    layers were not compiled from a node of their own), its name below that module, and its copy
    number among the keys with the same owner and name."""
    slots, seen = {}, {}
    for key in state:
        if key.startswith(HEAD):
            owner, local = None, key[len(HEAD):]
        else:
            module = key.rpartition(".")[0]
            while module not in owners:
                module = module.rpartition(".")[0]
            owner, local = owners[module], key[len(module) + 1:]
        copy = seen.get((owner, local), 0)
        seen[(owner, local)] = copy + 1
        slots[key] = (owner, local, copy)
    return slots


def _check_fits(index: int, expected: Mapping[str, torch.Tensor],
                given: Mapping[str, torch.Tensor]) -> None:
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(k for k in set(expected) & set(given)
                   if tuple(given[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        first = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
                 if unexpected else f"shape of {wrong[0]}")
        raise InheritanceError(
            f"parent {index}'s weights do not fit its architecture and input shape "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} misshapen "
            f"keys; first: {first})")


def _tail(derivation: Derivation) -> Path:
    """The path of the last module of the top-level chain: what the head reads."""
    path, node = (), derivation
    while node.label == "sequential":
        path, node = path + (1,), node.children[1]
    return path


def _text(node: Child) -> str:
    return node if isinstance(node, str) else node.text
