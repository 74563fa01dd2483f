"""Structural checks of a derivation against its productions' slots.

The slots themselves are declared by each production (:mod:`einspace.productions`); this module
checks a tree against them: the right number of children, modules where modules go, and
registered terminals of the right kind elsewhere.
"""

from __future__ import annotations

from einspace.blocks.registry import UnknownTerminalError, get

from .derivation import Derivation
from .errors import ParseError, format_path
from .productions import MODULE, child_slots


def check(node: Derivation, path: tuple[int, ...] = ()) -> None:
    """Raise ParseError naming the node if the tree breaks an arity rule or names an unknown
    terminal."""
    check_node(node, path)
    for i, child in enumerate(node.children):
        if isinstance(child, Derivation):
            check(child, path + (i,))


def check_node(node: Derivation, path: tuple[int, ...] = ()) -> tuple:
    """Check one node's children against its production; returns their slots."""
    slots = child_slots(node, path)
    if len(node.children) != len(slots):
        raise ParseError(
            f"at {format_path(path)}: {node.label} takes {len(slots)} children "
            f"({', '.join(_slot_name(s) for s in slots)}), got {len(node.children)}")
    for i, (slot, child) in enumerate(zip(slots, node.children, strict=True)):
        where = path + (i,)
        if slot == MODULE:
            if isinstance(child, str):
                raise ParseError(f"at {format_path(where)}: expected a module (a bracketed "
                                 f"production) but got the bare terminal {child!r}; "
                                 f"write (computation {child}) for a computation leaf")
        elif not isinstance(child, str):
            raise ParseError(f"at {format_path(where)}: expected a {slot.value} terminal name, "
                             f"got a ({child.label} ...) module")
        else:
            try:
                get(slot, child)
            except UnknownTerminalError as e:
                raise ParseError(f"at {format_path(where)}: {e}") from None
    return slots


def _slot_name(slot) -> str:
    return "module" if slot == MODULE else f"{slot.value} terminal"
