"""Derivation trees: immutable, with one canonical bracketed text form and a content hash.

A node is a production (``sequential``, ``branching``, ``routing``, ``computation``: see
:mod:`einspace.productions`) whose children are nodes or terminal names (plain strings).  The
text form is what ``nltk.Tree`` reads and writes,
e.g. ``(sequential (routing im2col3k1s1p (computation linear64) col2im) (computation norm))``.
Shapes are not part of a derivation; they are annotations computed for a given input shape.
"""

from __future__ import annotations

import hashlib
from typing import Iterator, Union

Child = Union["Derivation", str]


class Derivation:
    """One node of a derivation tree (and, at the root, the whole architecture)."""

    __slots__ = ("label", "children", "_text", "_size")

    def __init__(self, label: str, children: tuple[Child, ...]):
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "children", tuple(children))
        object.__setattr__(self, "_text", None)
        object.__setattr__(self, "_size", 0)

    def __setattr__(self, name, value):
        raise AttributeError("Derivation is immutable; use replace() to make a changed copy")

    def __reduce__(self):
        return (Derivation, (self.label, self.children))

    @property
    def text(self) -> str:
        """The canonical one-line text form."""
        if self._text is None:
            parts = [c if isinstance(c, str) else c.text for c in self.children]
            object.__setattr__(self, "_text", f"({self.label} {' '.join(parts)})")
        return self._text

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        text = self.text
        return f"Derivation({text if len(text) < 120 else text[:117] + '...'})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Derivation) and (self is other or self.text == other.text)

    def __hash__(self) -> int:
        return hash(self.text)

    @property
    def hash(self) -> str:
        """Stable content hash (first 16 hex digits of SHA-256 of the text): the identity used for
        deduplication, trial ids and file names."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    @property
    def size(self) -> int:
        """Nodes in the tree, terminal leaves included (a repeated inner module counts once)."""
        if not self._size:
            n = 1 + sum(1 if isinstance(c, str) else c.size for c in self.children)
            object.__setattr__(self, "_size", n)
        return self._size

    @property
    def depth(self) -> int:
        """Production nodes on the longest root-to-leaf path."""
        return 1 + max((c.depth for c in self.children if not isinstance(c, str)), default=0)

    def walk(self, path: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], Child]]:
        """Pre-order (path, node-or-terminal) pairs; a path is the child indices from the root."""
        yield path, self
        for i, child in enumerate(self.children):
            if isinstance(child, str):
                yield path + (i,), child
            else:
                yield from child.walk(path + (i,))

    def get(self, path: tuple[int, ...]) -> Child:
        node: Child = self
        for i in path:
            node = node.children[i]
        return node

    def replace(self, path: tuple[int, ...], new: Child) -> Child:
        """A copy with the node at ``path`` replaced by ``new`` (shared subtrees are reused)."""
        if not path:
            return new
        i, rest = path[0], path[1:]
        child = self.children[i]
        replaced = new if not rest else child.replace(rest, new)
        return Derivation(self.label, self.children[:i] + (replaced,) + self.children[i + 1:])

    def pretty(self, indent: int = 2) -> str:
        """Multi-line text (what seed files use); parses back to the same derivation."""
        return _pretty(self, 0, indent)


def _pretty(node: Child, level: int, indent: int) -> str:
    pad = " " * (level * indent)
    if isinstance(node, str):
        return pad + node
    if len(pad) + len(node.text) <= 72:
        return pad + node.text
    inner = "\n".join(_pretty(c, level + 1, indent) for c in node.children)
    return f"{pad}({node.label}\n{inner})"
