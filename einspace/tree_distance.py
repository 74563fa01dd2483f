"""A weighted tree edit distance between derivations (top-down, after canonicalisation).

Why this distance: the search needs a cheap, symmetric measure of how far two architectures are
(novelty in the tournament, near-duplicate rejection), and trees built from a grammar are best
compared where their structure agrees.  It is Selkow's top-down edit distance: the two roots are
always matched, and the children of matched nodes are aligned in order like the letters of two
strings, each pair either matched (recursively), or one side deleted / inserted as a whole
subtree.  The edits and their weights (:class:`EditWeights`):

* ``relabel_terminal``: one terminal name for another (``linear64`` -> ``linear128``);
* ``relabel_production``: a production for another (``sequential`` -> ``routing``), its children
  then aligned as above;
* ``indel_node`` per node: deleting or inserting a subtree costs this times its nodes
  (:attr:`Derivation.size`, terminal leaves included; a terminal leaf against a module is a
  deletion plus an insertion).

Both trees are canonicalised first (``einspace.canonical``), so the distance is 0 exactly when
they build the same network; with positive weights it is symmetric and obeys the triangle
inequality (top-down mappings compose).  The work is one string alignment per matched pair of
nodes, at most (nodes of a) x (nodes of b) and usually far less; identical subtrees are
recognised by their text and cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from .canonical_form import canonical
from .derivation import Child, Derivation
from .errors import ConfigError


@dataclass(frozen=True)
class EditWeights:
    """Cost of each kind of edit; all must be positive."""

    relabel_terminal: float = 1.0
    relabel_production: float = 1.0
    indel_node: float = 1.0

    def __post_init__(self):
        for name in ("relabel_terminal", "relabel_production", "indel_node"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"edit weight {name} must be a positive number, got {value!r}")


UNIT = EditWeights()


def tree_distance(a: Derivation, b: Derivation, weights: EditWeights = UNIT) -> float:
    """The weighted top-down edit distance between the canonical forms of ``a`` and ``b``."""
    return _Aligner(weights).distance(canonical(a), canonical(b))


def normalised_distance(a: Derivation, b: Derivation) -> float:
    """Unit-weight distance divided by the nodes of both canonical trees: 0 (same network) to 1
    (nothing in common but the root's position)."""
    ca, cb = canonical(a), canonical(b)
    return _Aligner(UNIT).distance(ca, cb) / (ca.size + cb.size)


class _Aligner:
    def __init__(self, weights: EditWeights):
        self.w = weights
        self.memo: dict[tuple[int, int], float] = {}

    def indel(self, node: Child) -> float:
        return self.w.indel_node * (1 if isinstance(node, str) else node.size)

    def distance(self, x: Child, y: Child) -> float:
        if isinstance(x, str) or isinstance(y, str):
            if isinstance(x, str) and isinstance(y, str):
                return 0.0 if x == y else self.w.relabel_terminal
            return self.indel(x) + self.indel(y)
        if x is y or x.text == y.text:
            return 0.0
        key = (id(x), id(y))
        found = self.memo.get(key)
        if found is None:
            found = self.align(x.children, y.children)
            if x.label != y.label:
                found += self.w.relabel_production
            self.memo[key] = found
        return found

    def align(self, xs: tuple, ys: tuple) -> float:
        """Edit distance of two child sequences: match, delete or insert subtrees."""
        dels = [self.indel(c) for c in xs]
        ins = [self.indel(c) for c in ys]
        row = [0.0]
        for cost in ins:
            row.append(row[-1] + cost)
        for i, x in enumerate(xs):
            new = [row[0] + dels[i]]
            for j, y in enumerate(ys):
                new.append(min(row[j] + self.distance(x, y), row[j + 1] + dels[i],
                               new[j] + ins[j]))
            row = new
        return row[-1]
