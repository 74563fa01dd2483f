"""Shape-exact adapters: the smallest modules of the grammar that turn one shape into another.

Crossover grafts a subtree of one parent into the other; where the shapes at a seam differ, an
adapter module restores them so nothing else in the child changes shape.  Adapters are built
from the grammar's own terminals and their shape rules, as the sampler builds everything, in two
forms: ``(computation c)`` (e.g. ``linear64`` to change the feature width) and
``(routing p (computation c) q)`` with ``c`` a linear or the identity (a 1x1 or strided
convolution, a permutation, patches to tokens).  Token shapes can never become images again
(``col2im`` needs its routing's ``im2col``), so some seams have no adapter.

Everything one input shape reaches is enumerated once (pre-routing x inner x post-routing
terminals, about a thousand shape-rule calls) and kept per shape, so a crossover pays a
dictionary look-up for a shape seen before.
"""

from __future__ import annotations

from einspace.blocks.computation import Linear
from einspace.blocks.registry import NO_CONTEXT, Kind, Shape, get

from .derivation import Derivation
from .sampler import Sampler

MAX_SHAPES = 4096  # cached input shapes per grammar before the cache starts afresh


class SeamAdapters:
    """Adapters between shapes for one sampler's grammar."""

    def __init__(self, sampler: Sampler):
        g = sampler.grammar
        computations = sorted(n for n, _ in g.terminals_of(Kind.COMPUTATION))
        self.computations = [(get(Kind.COMPUTATION, n), n) for n in computations]
        self.inner = [(t, n) for t, n in self.computations
                      if n == "identity" or isinstance(t, Linear)]
        self.routes = []
        for option in sorted(g.options.get("routing", []), key=lambda o: o.terminal or ""):
            if option.terminal is None:
                continue
            posts = sorted(n for n, _ in g.categories.get(option.rhs[-1], []))
            self.routes.append((get(Kind.PREROUTING, option.terminal), option.terminal,
                                [(get(Kind.POSTROUTING, n), n) for n in posts]))
        self._reach: dict[Shape, dict[Shape, tuple[str, ...]]] = {}

    def knows(self, x: Shape) -> bool:
        """Whether the adapters from ``x`` are already enumerated (a look-up is then free)."""
        return x in self._reach

    def adapter(self, x: Shape, y: Shape) -> Derivation | None:
        """A module mapping shape ``x`` to shape ``y`` (the cheapest form first), or None."""
        names = self.reach(x).get(y)
        if names is None:
            return None
        if len(names) == 1:
            return Derivation("computation", names)
        pre, inner, post = names
        return Derivation("routing", (pre, Derivation("computation", (inner,)), post))

    def reach(self, x: Shape) -> dict[Shape, tuple[str, ...]]:
        """Every shape one adapter makes from ``x``, with the adapter's terminal names (first
        found wins: single computations, then routings with the identity inside, then with a
        linear).  Names, not derivations: tuples of strings cost the garbage collector
        nothing, and the cache holds thousands."""
        found = self._reach.get(x)
        if found is not None:
            return found
        if len(self._reach) >= MAX_SHAPES:
            self._reach.clear()
        found = {}
        for terminal, name in self.computations:
            y = terminal.infer(x, NO_CONTEXT)
            if y is not None and y != x:
                found.setdefault(y, (name,))
        for inner, inner_name in self.inner:
            for pre, pre_name, posts in self.routes:
                if pre.batch_factor(x) != 1:
                    continue
                z = pre.infer(x, NO_CONTEXT)
                w = None if z is None else inner.infer(z, NO_CONTEXT)
                if w is None:
                    continue
                ctx = pre.post_context(x)
                for post, post_name in posts:
                    y = post.infer(w, ctx)
                    if y is not None and y != x and y not in found:
                        found[y] = (pre_name, inner_name, post_name)
        self._reach[x] = found
        return found

