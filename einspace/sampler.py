"""Shape-exact, budget-aware sampling of derivations from the grammar.

Every choice is drawn only among options that fit: a terminal is eligible when its shape rule
accepts the current input and its symbolic cost fits what is left of the budget; a production is
eligible when the grammar's least depth and node count for it still fit.  A production whose
subtree cannot be completed (for example no aggregation fits the two branch outputs) is removed at
that node and the choice is drawn again, as in the reference.  Because every accepted terminal was
checked, every sampled derivation compiles and runs; no tensor is created while sampling.
Randomness comes only from the ``random.Random`` passed in, so a seed fixes the result.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import dataclass, fields
from functools import cached_property
from itertools import accumulate

from einspace.blocks.registry import NO_CONTEXT, Context, Kind, Shape, get, numel

from .analysis import Annotation, annotate, check_input_shape
from .cost import Cost
from .derivation import Derivation
from .errors import ConfigError, SamplingError
from .grammar import Grammar, load_grammar
from .productions import production
from .walker import Walker


@dataclass(frozen=True)
class Budget:
    """Limits every sampled (and mutated, crossed-over) architecture respects, per sample."""

    max_params: int = 25_000_000
    max_flops: int = 20_000_000_000
    max_activations: int = 50_000_000
    max_nodes: int = 1_500
    max_depth: int = 48

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"budget {f.name} must be a positive integer, got {value!r}")

    def room(self) -> Cost:
        """The whole budget as the room a sampled tree may fill (depth is checked apart)."""
        return Cost(self.max_params, self.max_flops, self.max_activations, self.max_nodes)

    def admits(self, cost: Cost, depth: int) -> str:
        """'' when within budget, else which limit is broken."""
        for name, value, limit in (("params", cost.params, self.max_params),
                                   ("flops", cost.flops, self.max_flops),
                                   ("activations", cost.activations, self.max_activations),
                                   ("nodes", cost.nodes, self.max_nodes),
                                   ("depth", depth, self.max_depth)):
            if value > limit:
                return f"{name} {value:,} > max_{name} {limit:,}"
        return ""


@dataclass(frozen=True)
class Sampled:
    """A sampled derivation and its annotation for the input shape it was drawn for.

    The annotation is made on first use and kept with the sample, so a caller that needs shapes
    or costs (the ``sample`` command, budget and memory checks) never annotates it again, and
    one that needs only the tree does not pay for it.  It is not the sampler's own tally, which
    bounds shared work from above to decide what fits (see ``_tally``)."""

    derivation: Derivation
    input_shape: Shape

    @cached_property
    def annotation(self) -> Annotation:
        return annotate(self.derivation, self.input_shape)


_FAILED = None
MAX_STEPS = 20_000


class _OutOfSteps(Exception):
    pass


def _by_mode(members: list[tuple]) -> dict[int, tuple[list[tuple], list[float]]]:
    """Members split by the rank of the shapes they accept (3: im mode, 2: col mode), each with
    its cumulative weights."""
    split = {}
    for rank, mode in ((3, "im"), (2, "col")):
        kept = [m for m in members if mode in m[0].modes]
        split[rank] = (kept, list(accumulate(m[2] for m in kept)))
    return split


def _draw(rng: random.Random, weights: list[float]) -> int:
    r = rng.random() * sum(weights)
    for i, w in enumerate(weights):
        r -= w
        if r < 0:
            return i
    return len(weights) - 1


def _tally(terminal, x, ctx: Context, y) -> Cost:
    """What a drawn terminal uses of the room: work done once per forward (``shared_flops``) is
    counted with the per-sample work, so a fold multiplies it too: an upper bound."""
    return Cost(terminal.params(x, ctx), terminal.flops(x, ctx) + terminal.shared_flops(x, ctx),
                numel(y) if terminal.allocates else 0, 1)


class Sampler(Walker):
    """Draws derivations for an input shape from a grammar within a budget.

    One rule per production (a walker's methods, dispatched on the production the grammar
    chose); each returns (derivation, output shape, used room as a ``Cost``) or None."""

    def __init__(self, grammar: Grammar | None = None, budget: Budget | None = None):
        self.grammar = grammar or load_grammar()
        self.budget = budget or Budget()
        g = self.grammar
        # Tables built once so the recursion only filters and draws.
        self._choices = {s: [(t, w, g.min_depth[t], g.min_nodes[t]) for t, w in opts]
                         for s, opts in g.choices.items()}
        self._categories = {c: _by_mode([(get(g.category_kind[c], n), n, w) for n, w in members])
                            for c, members in g.categories.items() if c in g.category_kind}
        self._options = {label: [self._option_entry(o) for o in opts]
                         for label, opts in g.options.items()}
        self._terminal_options = {
            label: (_by_mode([(t, o.terminal, o.weight) for o, t, _ in opts]),
                    {o.terminal: o for o, _, _ in opts})
            for label, opts in self._options.items() if label in ("computation", "routing")}
        self._steps = 0

    def _option_entry(self, option):
        """(option, first terminal, fewest built nodes): a k-way branch builds its inner module
        k times, so it needs k times the inner module's nodes."""
        g = self.grammar
        terminal = get(g.category_kind[option.rhs[0]], option.terminal) if option.terminal else None
        nodes = g.min_nodes_of(option)
        if terminal is not None and terminal.kind == Kind.BRANCHING:
            inner = option.rhs[1:-1]
            copies = terminal.branches // len(inner)
            nodes = 3 + copies * sum(g.min_nodes[s] for s in inner)
        return option, terminal, nodes

    # -- public entry points -------------------------------------------------------------

    def sample(self, input_shape, rng: random.Random) -> Sampled:
        """One derivation for ``input_shape`` (C,H,W or N,D; no batch dim), with its
        annotation."""
        shape = check_input_shape(input_shape)
        for _ in range(20):
            result = self.sample_module(self.grammar.start, shape, 0, self.budget.room(), rng)
            if result is not _FAILED:
                return Sampled(result[0], shape)
        raise SamplingError(f"no architecture fits input {shape} within {self.budget}")

    def sample_module(self, symbol: str, x: Shape, depth: int, room: Cost, rng: random.Random,
                      exclude: str | None = None):
        """(derivation, output shape, used room) for slot ``symbol`` or None, within ``room``.
        ``exclude`` bans one production at the top."""
        self._steps = 0
        try:
            return self._choice(symbol, x, depth, room, rng, exclude)
        except _OutOfSteps:
            return _FAILED

    def pick_terminal(self, members: list[tuple], x, ctx: Context, room: Cost,
                      rng: random.Random, cumulative: list[float] | None = None):
        """Draw among (terminal, name, weight) members that accept ``x`` and fit ``room``;
        returns (name, output shape, used room) or None.

        Draws bisect the cumulative weights (``cumulative`` when the caller has them) and redraw
        on a refusal, so a long category costs little when most of it fits; once half of it has
        been refused, the rest is drawn from directly."""
        n = len(members)
        if not n:
            return None
        if cumulative is None:
            cumulative = list(accumulate(m[2] for m in members))
        total = cumulative[-1]
        refused: set[int] = set()
        while len(refused) < n:
            if 2 * len(refused) > n:
                rest = [i for i in range(n) if i not in refused]
                i = rest[_draw(rng, [members[j][2] for j in rest])]
            else:
                i = min(bisect_right(cumulative, rng.random() * total), n - 1)
                if i in refused:
                    continue
            refused.add(i)
            terminal, name, _ = members[i]
            y = terminal.infer(x, ctx)
            if y is None:
                continue
            used = _tally(terminal, x, ctx, y)
            if room.covers(used):
                return name, y, used
        return None

    # -- recursion -----------------------------------------------------------------------

    def _choice(self, symbol, x, depth, room, rng, exclude=None):
        self._steps += 1
        if self._steps > MAX_STEPS:
            raise _OutOfSteps
        limit = self.budget.max_depth - depth
        nodes = room.nodes
        options = [(t, w) for t, w, d, n in self._choices[symbol]
                   if d <= limit and n <= nodes and t != exclude]
        while options:
            i = _draw(rng, [w for _, w in options]) if len(options) > 1 else 0
            target, _ = options.pop(i)
            if target in self._choices:
                result = self._choice(target, x, depth, room, rng)
            else:
                result = self.dispatch(target, x, depth, room, rng)
            if result is not _FAILED:
                return result
        return _FAILED

    def _pick_option(self, label, room, rng):
        """Yield (option, first terminal) in random order among those that fit the nodes left."""
        options = [(o, t) for o, t, n in self._options[label] if n <= room.nodes]
        while options:
            i = _draw(rng, [o.weight for o, _ in options]) if len(options) > 1 else 0
            yield options.pop(i)

    def computation(self, x, depth, room, rng):
        if room.nodes < 2:
            return _FAILED
        members, cumulative = self._terminal_options["computation"][0][len(x)]
        picked = self.pick_terminal(members, x, NO_CONTEXT, room, rng, cumulative)
        if picked is None:
            return _FAILED
        name, y, used = picked
        return self._node("computation", (name,), x, y, [used])

    def sequential(self, x, depth, room, rng):
        for option, _ in self._pick_option("sequential", room, rng):
            s1, s2 = option.rhs
            reserve = self.grammar.min_nodes[s2] + 1
            first = self._choice(s1, x, depth + 1, room - Cost(nodes=reserve), rng)
            if first is _FAILED:
                continue
            d1, y1, u1 = first
            second = self._choice(s2, y1, depth + 1, room - u1 - Cost(nodes=1), rng)
            if second is _FAILED:
                continue
            d2, y2, u2 = second
            return self._node("sequential", (d1, d2), x, y2, [u1, u2])
        return _FAILED

    def routing(self, x, depth, room, rng):
        members, by_name = self._terminal_options["routing"]
        pre = self.pick_terminal(members[len(x)][0], x, NO_CONTEXT, room, rng, members[len(x)][1])
        if pre is None:
            return _FAILED
        pre_name, inner_in, pre_used = pre
        pre_terminal = get(Kind.PREROUTING, pre_name)
        _, inner_symbol, post_category = by_name[pre_name].rhs
        factor = pre_terminal.batch_factor(x)  # >1 when an axis is folded into the batch
        left = room - pre_used
        inner_room = Cost(left.params, left.flops // factor, left.activations // factor,
                          room.nodes - 3)
        inner = self._choice(inner_symbol, inner_in, depth + 1, inner_room, rng)
        if inner is _FAILED:
            return _FAILED
        d_inner, inner_out, inner_used = inner
        closers, cumulative = self._categories[post_category][len(inner_out)]
        if factor > 1:
            closers, cumulative = [m for m in closers if m[0].restores_batch], None
        post = self.pick_terminal(closers, inner_out, pre_terminal.post_context(x),
                                  left - inner_used.folded(factor), rng, cumulative)
        if post is None:
            return _FAILED
        post_name, y, post_used = post
        return self._node("routing", (pre_name, d_inner, post_name), x, y,
                          [pre_used, inner_used, post_used])

    def branching(self, x, depth, room, rng):
        for option, splitter in self._pick_option("branching", room, rng):
            part = splitter.infer(x, NO_CONTEXT)
            if part is None or splitter.branches * numel(part) > room.activations:
                continue  # cheap refusals (shape, or no room to merge): try another splitter
            return self._branches(option, splitter, x, part, depth, room, rng)
        return _FAILED

    def _branches(self, option, splitter, x, part, depth, room, rng):
        inner_symbols = option.rhs[1:-1]
        copies = splitter.branches // len(inner_symbols)
        nodes_left = room.nodes - 3  # this node, the branching and the aggregation terminal
        reserve = copies * sum(self.grammar.min_nodes[s] for s in inner_symbols)
        # Keep room for the merge: a concatenation of untouched parts needs k times the part,
        # and halving what the inner modules may allocate leaves room to merge what they made.
        merge = splitter.branches * numel(part)
        share = (room.activations - merge) // (2 * splitter.branches)
        inners, outs, inner_used = [], [], []
        used = Cost()  # by the inner modules, all copies
        for symbol in inner_symbols:
            reserve -= copies * self.grammar.min_nodes[symbol]
            inner_room = Cost((room.params - used.params) // copies,
                              (room.flops - used.flops) // copies, share,
                              (nodes_left - used.nodes - reserve) // copies)
            result = self._choice(symbol, part, depth + 1, inner_room, rng)
            if result is _FAILED:
                return _FAILED
            d, y, u = result
            inners.append(d)
            inner_used.append(u)
            outs += [y] * copies
            used = used + u * copies
        merges, cumulative = self._categories[option.rhs[-1]][len(outs[0])]
        agg = self.pick_terminal(merges, tuple(outs), NO_CONTEXT, room - used, rng, cumulative)
        if agg is None:
            return _FAILED
        agg_name, y, agg_used = agg
        split_used = _tally(splitter, x, NO_CONTEXT, part)
        return self._node("branching", (option.terminal, *inners, agg_name), x, y,
                          [split_used, *inner_used, agg_used])

    def _node(self, label: str, children: tuple, x: Shape, y, used: list[Cost]):
        """(node, output, used room) of a drawn node: its children's use added up by its
        production's cost rule."""
        node = Derivation(label, children)
        return node, y, production(label).cost(node, x, used)
