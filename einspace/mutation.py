"""Mutation of derivations; children are valid by construction and within budget.

Mutation picks one node uniformly (modules and terminals alike, inside repeated branches too, where
the change reaches every copy because the copies share one subtree) and re-samples it at its slot
with the node's own input shape, excluding its current symbol so the child differs.  A terminal
swap keeps the rest of the tree; a changed branching arity keeps one or duplicates the inner module
and re-picks the aggregation if the old one no longer fits.  Downstream nodes are re-annotated
(linears re-size); a proposal that breaks a later node or the budget is dropped and another node
is tried, so the returned child always compiles.

``mutate_traced`` also says where the child came from (the re-sampled site, and which parent
path each copied node has), for weight inheritance; ``mutate`` is the child alone.  Both make the
same random draws.  Crossover lives in :mod:`einspace.recombination`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from einspace.blocks.registry import Kind, get

from .analysis import Annotation, NodeInfo, annotate
from .cost import Cost
from .derivation import Derivation
from .errors import SamplingError, ShapeError
from .sampler import Sampler

MAX_ATTEMPTS = 200

Path = tuple[int, ...]


@dataclass(frozen=True)
class Mutation:
    """A mutated child and where its nodes came from.

    ``site`` is the child path of the re-sampled node (the branching node when its splitter
    changed, since its inner modules may move).  ``origins`` maps every child path copied from
    the parent to ``(0, path in the parent)``, the form of :attr:`Crossover.origins
    <einspace.recombination.Crossover.origins>` so weight inheritance reads both alike.  A copied
    node may still see a new input shape (a linear after a widened node re-sizes): whoever
    reuses its weights checks that."""

    child: Derivation
    site: Path
    origins: dict[Path, tuple[int, Path]]

    def regions(self) -> list[tuple[Path, int, Path]]:
        """The maximal copied subtrees as (child path, parent, parent path), in path order."""
        return copied_regions(self.origins)


def copied_regions(origins: dict[Path, tuple[int, Path]]) -> list[tuple[Path, int, Path]]:
    """An origin map in its compact form, the one a trial record keeps: the maximal copied
    subtrees as (child path, parent, parent path), in path order (the inverse of
    :func:`einspace.inheritance.origins_from_regions`)."""
    found = []
    for path, (parent, source) in sorted(origins.items()):
        above = origins.get(path[:-1]) if path else None
        if above is None or above != (parent, source[:-1]):
            found.append((path, parent, source))
    return found


def mutate(derivation: Derivation, input_shape, rng: random.Random,
           sampler: Sampler | None = None) -> Derivation:
    """A child differing from ``derivation`` in one re-sampled node."""
    return mutate_traced(derivation, input_shape, rng, sampler).child


def mutate_traced(derivation: Derivation, input_shape, rng: random.Random,
                  sampler: Sampler | None = None) -> Mutation:
    """``mutate``, with the re-sampled site and the origin of every copied node."""
    sampler = sampler or Sampler()
    parent = annotate(derivation, input_shape)
    sites = sorted(parent.nodes)
    for _ in range(MAX_ATTEMPTS):
        info = parent.nodes[rng.choice(sites)]
        proposed = _propose(derivation, parent, info, sampler, rng)
        if (proposed is not None and proposed.child != derivation
                and within_budget(proposed.child, parent, sampler)):
            return proposed
    raise SamplingError(f"no valid mutation found in {MAX_ATTEMPTS} attempts")


def outside(child: Derivation, site: Path) -> dict[Path, tuple[int, Path]]:
    """Nodes neither inside ``site`` nor above it: a replacement keeps their paths (the origin
    map of a child that differs from its parent only at ``site``)."""
    n = len(site)
    return {path: (0, path) for path, _ in child.walk()
            if path[:n] != site and path != site[:len(path)]}


def within_budget(child: Derivation, parent: Annotation, sampler: Sampler) -> bool:
    """Whether ``child`` fits the parent's input shape and the sampler's budget."""
    try:
        annotation = annotate(child, parent.input_shape)
    except ShapeError:
        return False
    return not sampler.budget.admits(annotation.cost, child.depth)


def _room(parent: Annotation, info: NodeInfo, budget) -> Cost:
    """What a replacement of ``info``'s subtree may use, per copy, so the whole stays in budget."""
    total, r, runs = parent.cost, info.repeat, info.repeat * info.batch
    return Cost((budget.max_params - total.params + r * info.cost.params) // r,
                (budget.max_flops - total.flops + runs * info.cost.flops) // runs,
                (budget.max_activations - total.activations + runs * info.cost.activations)
                // runs,
                (budget.max_nodes - total.nodes + r * info.cost.nodes) // r)


def _propose(derivation, parent: Annotation, info: NodeInfo, sampler: Sampler, rng):
    node = info.node
    if isinstance(node, Derivation):
        symbol = sampler.grammar.start if not info.path else sampler.grammar.module
        room = _room(parent, info, sampler.budget)
        result = sampler.sample_module(symbol, info.input, info.depth, room, rng,
                                       exclude=node.label)
        return None if result is None else replaced(derivation, info.path, result[0])
    if info.slot == Kind.BRANCHING:
        return _swap_splitter(derivation, parent, info, sampler, rng)
    members = [(get(info.slot, n), n, w) for n, w in sampler.grammar.terminals_of(info.slot)
               if n != node]
    picked = sampler.pick_terminal(members, info.input, info.context,
                                   _room(parent, info, sampler.budget), rng)
    return None if picked is None else replaced(derivation, info.path, picked[0])


def replaced(derivation: Derivation, site: Path, new) -> Mutation:
    """The child with the node at ``site`` replaced by ``new``, and its origin map."""
    child = derivation.replace(site, new)
    return Mutation(child, site, outside(child, site))


def _swap_splitter(derivation, parent: Annotation, info: NodeInfo, sampler: Sampler, rng):
    """Change a branching terminal; adapt the inner modules to its arity and the aggregation to
    the new branch count."""
    branch_path = info.path[:-1]
    branch = derivation.get(branch_path)
    members = [(get(Kind.BRANCHING, n), n, w)
               for n, w in sampler.grammar.terminals_of(Kind.BRANCHING) if n != info.node]
    picked = sampler.pick_terminal(members, info.input, info.context,
                                   _room(parent, info, sampler.budget), rng)
    if picked is None:
        return None
    name = picked[0]
    inners = list(branch.children[1:-1])
    sources = list(range(1, len(inners) + 1))  # child index -> parent index of each inner
    wanted = get(Kind.BRANCHING, name).inner_modules
    if wanted < len(inners):
        kept = rng.choice(range(len(inners)))  # the same draw as choosing the inner itself
        inners, sources = [inners[kept]], [sources[kept]]
    elif wanted > len(inners):
        inners, sources = inners * wanted, sources * wanted
    merges = [branch.children[-1]] + [
        n for n, _ in sampler.grammar.terminals_of(Kind.AGGREGATION) if n != branch.children[-1]]
    branch_input = parent.nodes[branch_path].input
    for merge in merges:
        candidate = Derivation("branching", (name, *inners, merge))
        try:
            annotate(candidate, branch_input)
        except ShapeError:
            continue
        child = derivation.replace(branch_path, candidate)
        return Mutation(child, branch_path,
                        _splitter_origins(child, branch, branch_path, sources, merge))
    return None


def _splitter_origins(child: Derivation, old: Derivation, branch_path: Path,
                      sources: list[int], merge: str) -> dict[Path, tuple[int, Path]]:
    """Origins after a splitter change: the tree around the branch, each inner module from the
    parent inner it copies, and the aggregation when it was kept."""
    origins = outside(child, branch_path)
    new = child.get(branch_path)
    for index, source in enumerate(sources, start=1):
        for path, _ in new.children[index].walk():
            origins[branch_path + (index,) + path] = (0, branch_path + (source,) + path)
    if merge == old.children[-1]:
        origins[branch_path + (len(new.children) - 1,)] = (
            0, branch_path + (len(old.children) - 1,))
    return origins
