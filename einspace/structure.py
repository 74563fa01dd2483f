"""The fixed structure of the four productions: which slot each child fills.

Every walker (parser, shape annotation, sampler, mutation, compiler) asks this module what a child
position holds, so the arity rules live in one place: sequential(module, module),
routing(prerouting, module, postrouting), computation(computation terminal) and
branching(branching terminal, module x m, aggregation) where m is the branching terminal's number of
distinct inner modules (2 for two-way branches, 1 for a module repeated 4 or 8 times).
"""

from __future__ import annotations

from einspace.blocks.registry import Kind, UnknownTerminalError, get

from .derivation import PRODUCTIONS, Derivation
from .errors import ParseError, format_path

MODULE = "module"


def child_slots(node: Derivation, path: tuple[int, ...] = ()) -> list:
    """The slot (a ``Kind`` or ``MODULE``) of each child position of ``node``."""
    label = node.label
    if label == "sequential":
        return [MODULE, MODULE]
    if label == "routing":
        return [Kind.PREROUTING, MODULE, Kind.POSTROUTING]
    if label == "computation":
        return [Kind.COMPUTATION]
    if label == "branching":
        first = node.children[0] if node.children else None
        if not isinstance(first, str):
            raise ParseError(f"at {format_path(path)}: branching must start with a branching "
                             f"terminal, got {_describe(first)}")
        inner = branching_terminal(first, path + (0,)).inner_modules
        return [Kind.BRANCHING] + [MODULE] * inner + [Kind.AGGREGATION]
    raise ParseError(f"at {format_path(path)}: unknown production {label!r}; expected one of "
                     f"{', '.join(PRODUCTIONS)}")


def branching_terminal(name: str, path: tuple[int, ...]):
    try:
        return get(Kind.BRANCHING, name)
    except UnknownTerminalError as e:
        raise ParseError(f"at {format_path(path)}: {e}") from None


def check(node: Derivation, path: tuple[int, ...] = ()) -> None:
    """Raise ParseError naming the node if the tree breaks an arity rule or names an unknown
    terminal."""
    check_node(node, path)
    for i, child in enumerate(node.children):
        if isinstance(child, Derivation):
            check(child, path + (i,))


def check_node(node: Derivation, path: tuple[int, ...] = ()) -> list:
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


def _describe(child) -> str:
    if child is None:
        return "nothing"
    return f"({child.label} ...)" if isinstance(child, Derivation) else repr(child)
