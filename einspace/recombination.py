"""Crossover of two derivations, related or not; every child compiles and fits the budget.

Why grafts: a shape-matched subtree swap (a subtree of ``b`` in place of a subtree of ``a`` with
the same input and output shapes) only exists between near relatives; ResNet-18 and a random
sample share no such pair.  So a child is one parent (the *base*) with one of its subtrees
replaced by a subtree of the other (the *donor*), and where the shapes at a seam differ a short
adapter from :mod:`einspace.seams` restores them, so no other node of the child changes shape and
each copied node keeps the input shape it had in its parent (its weights fit, for inheritance).
(Reshaped grafts, the fallback, keep the subtree but not its inner shapes.)  A graft at the end
of the base's top-level chain (a *tail* site) needs no adapter after it: the
child's output is the donor's.

Order of preference, the first that gives a child within the budget:

1. the shape-matched swap of ``b``'s subtree into ``a`` (the operator einspace always had, with
   the same random draws, so near relatives cross exactly as before);
2. a graft into ``a``: (site, donor) shape groups are weighted 4 without an adapter, 2 with one
   and 1 with two, and up to ``MAX_BUILDS`` drawn children are checked;
3. a *reshaped* graft into ``a``: a donor subtree that also accepts the site's input shape (its
   linears re-size) is placed there as it is, with an adapter after it unless the site is a
   tail; up to ``MAX_RESHAPED`` random (site, donor) pairs are tried;
4. steps 2 and 3 with ``b`` as the base;

and then :class:`SamplingError`.  Work is bounded: at most ``MAX_PAIRS`` shape-group pairs and
``MAX_NEW_SHAPES`` fresh adapter enumerations per base, no enumeration of alignments.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from .analysis import Annotation, NodeInfo, annotate
from .derivation import Derivation
from .errors import SamplingError, ShapeError
from .mutation import copied_regions
from .productions import MODULE
from .sampler import Sampler
from .seams import SeamAdapters

Path = tuple[int, ...]
MAX_ATTEMPTS = 200  # budget retries of the shape-matched swap (as the swap always had)
MAX_PAIRS = 4000
MAX_NEW_SHAPES = 48
MAX_BUILDS = 24
MAX_RESHAPED = 32
ADAPTER_WEIGHTS = (4.0, 2.0, 1.0)  # a graft needing 0, 1 or 2 adapters
_ADAPTERS: WeakKeyDictionary[Sampler, SeamAdapters] = WeakKeyDictionary()


@dataclass(frozen=True)
class Crossover:
    """A crossover child and where its nodes came from.

    ``origins`` maps every child path whose whole subtree is a copy from a parent to
    ``(parent, path in that parent)``, parent 0 being ``a`` and 1 ``b``; the spine above the
    graft (which mixes both) and the adapters (``adapters``, new nodes) are not in it.
    ``method`` is ``swap``, ``graft`` (every copied node keeps the input shape it had in its
    parent) or ``reshaped`` (the donor's nodes see new shapes); ``site`` is the child path of the
    grafted region."""

    child: Derivation
    origins: dict[Path, tuple[int, Path]]
    method: str
    site: Path
    adapters: tuple[Path, ...] = ()

    def regions(self) -> list[tuple[Path, int, Path]]:
        """The maximal copied subtrees as (child path, parent, parent path), in path order."""
        return copied_regions(self.origins)


def recombine(a: Derivation, b: Derivation, input_shape, rng: random.Random,
              sampler: Sampler | None = None) -> Crossover:
    """A child of ``a`` and ``b`` for ``input_shape`` (see the module doc for how)."""
    sampler = sampler or Sampler()
    ann_a, ann_b = annotate(a, input_shape), annotate(b, input_shape)
    swapped = _swap(ann_a, ann_b, rng, sampler)
    if swapped is not None:
        return swapped
    adapters = _ADAPTERS.get(sampler)
    if adapters is None:
        adapters = _ADAPTERS[sampler] = SeamAdapters(sampler)
    for base, donor, parents in ((ann_a, ann_b, (0, 1)), (ann_b, ann_a, (1, 0))):
        graft = _Graft(base, donor, parents, adapters, sampler)
        found = graft.draw(rng, (a, b)) or graft.draw_reshaped(rng, (a, b))
        if found is not None:
            return found
    raise SamplingError("crossover: no graft of one parent into the other fits the shapes and "
                        f"the budget within {MAX_BUILDS + MAX_RESHAPED} tries each way")


def swap_matching_subtree(a: Derivation, b: Derivation, input_shape, rng: random.Random,
                          sampler: Sampler | None = None) -> Derivation:
    """``a`` with one module subtree replaced by a different subtree of ``b`` that has the same
    input and output shapes; SamplingError when the parents share no such pair."""
    sampler = sampler or Sampler()
    found = _swap(annotate(a, input_shape), annotate(b, input_shape), rng, sampler)
    if found is None:
        raise SamplingError("crossover: the parents share no subtrees with the same input and "
                            "output shapes (within the budget)")
    return found.child


def _swap(ann_a: Annotation, ann_b: Annotation, rng: random.Random,
          sampler: Sampler) -> Crossover | None:
    donors: dict[tuple, dict[str, NodeInfo]] = {}
    for info in ann_b.nodes.values():
        if info.slot == MODULE and info.path:
            donors.setdefault((info.input, info.output), {})[info.node.text] = info
    sites = [info for _, info in sorted(ann_a.nodes.items())
             if info.slot == MODULE and info.path
             and any(text != info.node.text
                     for text in donors.get((info.input, info.output), {}))]
    if not sites:
        return None
    for _ in range(MAX_ATTEMPTS):
        site = rng.choice(sites)
        options = [d for t, d in sorted(donors[(site.input, site.output)].items())
                   if t != site.node.text]
        donor = rng.choice(options)
        child = ann_a.derivation.replace(site.path, donor.node)
        if _fits(child, ann_a.input_shape, sampler):
            return Crossover(child, _origins(child, site.path, (), (0, 1), donor.path),
                             "swap", site.path)
    return None


class _Graft:
    """Grafts of the donor's subtrees into the base, grouped by the shapes at their seams."""

    def __init__(self, base: Annotation, donor: Annotation, parents: tuple[int, int],
                 adapters: SeamAdapters, sampler: Sampler):
        self.base, self.donor, self.parents = base, donor, parents
        self.adapters, self.sampler = adapters, sampler
        self.new_shapes = 0
        tails, node, path = set(), base.derivation, ()
        while node.label == "sequential":  # the top-level chain's last modules
            node, path = node.children[1], path + (1,)
            tails.add(path)
        self.sites: dict[tuple, list[NodeInfo]] = {}
        for path, info in sorted(base.nodes.items()):
            if info.slot == MODULE and path:
                key = (info.input, info.output, path in tails)
                self.sites.setdefault(key, []).append(info)
        unique: dict[tuple, dict[str, NodeInfo]] = {}
        for _, info in sorted(donor.nodes.items()):
            if info.slot == MODULE:
                unique.setdefault((info.input, info.output), {}).setdefault(info.node.text, info)
        self.donors = {key: list(by_text.values()) for key, by_text in unique.items()}

    def _adapter(self, x, y) -> Derivation | None:
        if not self.adapters.knows(x):
            if self.new_shapes >= MAX_NEW_SHAPES:
                return None
            self.new_shapes += 1
        return self.adapters.adapter(x, y)

    def pairs(self) -> list[tuple[float, tuple, tuple, Derivation | None, Derivation | None]]:
        found, checked = [], 0
        for skey in self.sites:
            s_in, s_out, tail = skey
            for dkey in self.donors:
                checked += 1
                if checked > MAX_PAIRS:
                    return found
                t_in, t_out = dkey
                if (s_in, s_out) == dkey:
                    continue  # the shape-matched swap's ground, already tried
                pre = None if s_in == t_in else self._adapter(s_in, t_in)
                if s_in != t_in and pre is None:
                    continue
                post = None if tail or s_out == t_out else self._adapter(t_out, s_out)
                if not tail and s_out != t_out and post is None:
                    continue
                weight = ADAPTER_WEIGHTS[(pre is not None) + (post is not None)]
                found.append((weight, skey, dkey, pre, post))
        return found

    def draw(self, rng: random.Random, parents: tuple[Derivation, Derivation]
             ) -> Crossover | None:
        pairs = self.pairs()
        if not pairs:
            return None
        weights = [p[0] for p in pairs]
        for _ in range(MAX_BUILDS):
            _, skey, dkey, pre, post = rng.choices(pairs, weights)[0]
            site, donor = rng.choice(self.sites[skey]), rng.choice(self.donors[dkey])
            if self._over_budget(site, donor):
                continue
            found = self._child(site, donor, pre, post, parents)
            if found is not None:
                return found
        return None

    def _over_budget(self, site: NodeInfo, donor: NodeInfo) -> bool:
        """Whether the child is over the budget before its adapters are even counted (exact for
        a donor that keeps its input shape, so no annotation is spent on it)."""
        total, budget = self.base.cost, self.sampler.budget
        runs = site.repeat * site.batch
        return (total.params + site.repeat * (donor.cost.params - site.cost.params)
                > budget.max_params
                or total.flops + runs * (donor.cost.flops - site.cost.flops) > budget.max_flops
                or total.activations + runs * (donor.cost.activations - site.cost.activations)
                > budget.max_activations)

    def draw_reshaped(self, rng: random.Random, parents: tuple[Derivation, Derivation]
                      ) -> Crossover | None:
        sites = [(key[2], info) for key, infos in self.sites.items() for info in infos]
        donors = [info for infos in self.donors.values() for info in infos]
        if not sites:
            return None
        for _ in range(MAX_RESHAPED):
            (tail, site), donor = rng.choice(sites), rng.choice(donors)
            try:
                out = annotate(donor.node, site.input).output_shape
            except ShapeError:
                continue
            post = None if tail or out == site.output else self._adapter(out, site.output)
            if tail or out == site.output or post is not None:
                found = self._child(site, donor, None, post, parents, "reshaped")
                if found is not None:
                    return found
        return None

    def _child(self, site: NodeInfo, donor: NodeInfo, pre: Derivation | None,
               post: Derivation | None, parents: tuple[Derivation, Derivation],
               method: str = "graft") -> Crossover | None:
        """The base with ``donor`` (between the adapters given) at ``site``, if it fits."""
        graft, offset, adapters = donor.node, (), []
        if pre is not None:
            graft, offset, adapters = Derivation("sequential", (pre, graft)), (1,), [(0,)]
        if post is not None:
            graft = Derivation("sequential", (graft, post))
            offset, adapters = (0,) + offset, [(0,) + p for p in adapters] + [(1,)]
        child = self.base.derivation.replace(site.path, graft)
        if child in parents or not _fits(child, self.base.input_shape, self.sampler):
            return None
        origins = _origins(child, site.path, offset, self.parents, donor.path)
        return Crossover(child, origins, method, site.path,
                         tuple(site.path + p for p in adapters))


def _fits(child: Derivation, input_shape, sampler: Sampler) -> bool:
    try:
        cost = annotate(child, input_shape).cost
    except ShapeError:
        return False
    return not sampler.budget.admits(cost, child.depth)


def _origins(child: Derivation, site: Path, offset: Path, parents: tuple[int, int],
             donor_path: Path) -> dict[Path, tuple[int, Path]]:
    """Copied subtrees of ``child``: the donor's below ``site + offset``, the base's outside the
    path to ``site`` (same paths as in the base, since a replacement keeps every other path)."""
    base, donor = parents
    n, graft_root = len(site), site + offset
    origins = {}
    for path, _ in child.walk():
        if path[:len(graft_root)] == graft_root:
            origins[path] = (donor, donor_path + path[len(graft_root):])
        elif path[:n] != site and path != site[:len(path)]:
            origins[path] = (base, path)
    return origins
