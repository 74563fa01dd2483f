"""Canonical form: one derivation per network, for trees that differ only in how they are written.

The compiler already builds these alike (nested sequences flatten, identities vanish, a 1x1 im2col
is a reshape), so a search that hashed the text alone would train one network under several
names.  ``canonical(d)`` rewrites ``d`` bottom-up with rules that keep the computed function, the
parameter count and the FLOPs:

* **sequences re-associated**: every chain of nested ``sequential`` nodes becomes one right-nested
  chain ``(sequential m1 (sequential m2 ...))``;
* **identity computations** inside a chain are dropped (an all-identity chain is one
  ``(computation identity)``);
* **identity routing**: ``(routing identity M identity)`` is ``M``;
* **round-trip routing**: ``(routing p (computation identity) q)`` is the identity when ``q``
  undoes ``p`` (``permute21``/``permute21``, ``permute231``/``permute312``, ...,
  ``im2col1k1s0p``/``col2im``);
* **adjacent routings fused**: ``(sequential (routing p A q) (routing p2 B q2))`` is
  ``(routing p (sequential A B) q2)`` when ``p2`` undoes ``q`` (a permutation and its inverse,
  identity and identity, ``col2im`` then ``im2col1k1s0p``: a 1x1 im2col of a col2im output is
  the same tokens).

Not covered (different networks, or equal only for some weights): reordered branches of a
commutative merge, permutations that cancel across other modules, folds.  ``Derivation.hash``
stays the exact text's hash (the trial identity in run databases); ``canonical_hash`` is the
network's.
"""

from __future__ import annotations

from functools import lru_cache

from einspace.blocks.registry import Kind, UnknownTerminalError, get
from einspace.blocks.routing import Col2Im, Identity, Im2Col, Permute

from .derivation import Child, Derivation
from .walker import Walker

IDENTITY = Derivation("computation", ("identity",))


def canonical(derivation: Derivation) -> Derivation:
    """The canonical derivation of the network ``derivation`` builds (see the module doc)."""
    return _canonical(derivation)


def canonical_hash(derivation: Derivation) -> str:
    """The hash of the canonical form: equal for trees that build the same network."""
    return _canonical(derivation).hash


def clear_cache() -> None:
    """Forget the cached canonical forms (so a benchmark times the rewriting itself)."""
    _canonical.cache_clear()


@lru_cache(maxsize=4096)
def _canonical(node: Derivation) -> Derivation:
    return _REWRITER.walk(node)


class _Rewriter(Walker):
    """The rules per production; one without rules of its own keeps its terminals and gets
    canonical inner modules."""

    def sequential(self, node: Derivation) -> Derivation:
        return _sequence([_canonical(c) for c in node.children])

    def routing(self, node: Derivation) -> Derivation:
        pre, inner, post = node.children
        return _routing(pre, _canonical(inner), post)

    def computation(self, node: Derivation) -> Derivation:
        return node

    def default(self, label: str, node: Derivation) -> Derivation:
        return Derivation(label, tuple(c if isinstance(c, str) else _canonical(c)
                                       for c in node.children))


_REWRITER = _Rewriter()


def _routing(pre: str, inner: Derivation, post: str) -> Derivation:
    """A routing node over a canonical inner module, without the routing when it is a no-op."""
    if pre == "identity" and post == "identity":
        return inner
    if inner == IDENTITY and _undoes(post, pre, Kind.POSTROUTING, Kind.PREROUTING):
        return IDENTITY
    return Derivation("routing", (pre, inner, post))


def _sequence(items: list[Derivation]) -> Derivation:
    """The canonical chain of canonical modules: flattened, identities dropped, fusable
    neighbouring routings fused, right-nested."""
    out: list[Derivation] = []
    stack = list(reversed(items))
    while stack:
        item = stack.pop()
        if item == IDENTITY:
            continue
        if item.label == "sequential":
            stack.extend(reversed(_elements(item)))
            continue
        if out and _fusable(out[-1], item):
            first = out.pop()
            inner = _sequence([first.children[1], item.children[1]])
            stack.append(_routing(first.children[0], inner, item.children[2]))
            continue
        out.append(item)
    if not out:
        return IDENTITY
    chain = out[-1]
    for item in reversed(out[:-1]):
        chain = Derivation("sequential", (item, chain))
    return chain


def _elements(chain: Derivation) -> list[Derivation]:
    """The modules of a canonical (right-nested) chain."""
    found = []
    while chain.label == "sequential":
        found.append(chain.children[0])
        chain = chain.children[1]
    return found + [chain]


def _fusable(first: Child, second: Child) -> bool:
    return (first.label == "routing" and second.label == "routing"
            and _undoes(second.children[0], first.children[2], Kind.PREROUTING,
                        Kind.POSTROUTING))


@lru_cache(maxsize=1024)
def _undoes(name: str, applied: str, kind: Kind, applied_kind: Kind) -> bool:
    """Whether terminal ``name`` (of ``kind``) applied after ``applied`` gives back its input."""
    try:
        undo, done = get(kind, name), get(applied_kind, applied)
    except UnknownTerminalError:
        return False
    if isinstance(undo, Identity) and isinstance(done, Identity):
        return True
    if isinstance(undo, Permute) and isinstance(done, Permute) and \
            len(undo.order) == len(done.order):
        return all(done.order[undo.order[i] - 1] == i + 1 for i in range(len(undo.order)))
    return (_pointwise(undo) and isinstance(done, Col2Im)) or \
        (isinstance(undo, Col2Im) and _pointwise(done))


def _pointwise(terminal) -> bool:
    """A 1x1, stride-1, unpadded im2col: a reshape of the image into its pixels as tokens."""
    return isinstance(terminal, Im2Col) and \
        (terminal.kernel, terminal.stride, terminal.padding) == (1, 1, 0)
