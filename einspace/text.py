"""Reading architecture text: the bracketed form that ``nltk.Tree`` reads, checked for structure.

``parse(str(d)) == d`` for every derivation; whitespace and line breaks are free, so seed files can
be indented.  Errors say where the text breaks (character offset) or which node (its path) is wrong.
"""

from __future__ import annotations

import re

from nltk import Tree

from . import structure
from .derivation import Derivation
from .errors import ParseError, format_path

_NLTK_POSITION = re.compile(r"at index (\d+)")


def parse(text: str) -> Derivation:
    """Derivation from its text form; ParseError naming the problem otherwise."""
    if not isinstance(text, str):
        raise ParseError(f"architecture text must be a string, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise ParseError("architecture text is empty")
    if not stripped.startswith("("):
        raise ParseError(f"architecture text must start with '(' (a production), got "
                         f"{stripped[:30]!r}")
    _check_brackets(stripped)
    try:
        tree = Tree.fromstring(stripped)
    except ValueError as e:
        raise ParseError(f"malformed architecture text: {_nltk_message(e)}") from None
    derivation = _from_tree(tree, ())
    structure.check(derivation)
    return derivation


def _check_brackets(text: str) -> None:
    depth, end = 0, None
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ParseError(f"unbalanced ')' at character {i}: {_excerpt(text, i)}")
            if depth == 0 and end is None:
                end = i
    if depth > 0:
        raise ParseError(f"{depth} unclosed '(' at the end of the text")
    if end is not None and text[end + 1:].strip():
        raise ParseError(f"text continues after the architecture ends at character {end}: "
                         f"{_excerpt(text, end + 1)}")


def _excerpt(text: str, i: int) -> str:
    return repr(text[max(0, i - 20): i + 20])


def _nltk_message(error: ValueError) -> str:
    message = str(error).splitlines()[0]
    found = _NLTK_POSITION.search(str(error))
    return f"{message} (character {found.group(1)})" if found else message


def _from_tree(tree: Tree, path: tuple[int, ...]) -> Derivation:
    label = tree.label()
    if not isinstance(label, str) or not label:
        raise ParseError(f"at {format_path(path)}: a bracket must start with a production name")
    children = tuple(c if isinstance(c, str) else _from_tree(c, path + (i,))
                     for i, c in enumerate(tree))
    return Derivation(label, children)
