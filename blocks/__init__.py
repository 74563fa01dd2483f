"""einspace.blocks: every grammar terminal (shape rule, costs, builder) and the shipped seeds.

Importing this package registers the terminal families; ``registry.get(kind, name)`` finds one.
"""

from . import (  # noqa: F401  (importing a family registers its terminals)
    aggregation,
    attention,
    branching,
    codebooks,
    computation,
    convolutional,
    gating,
    routing,
    token_mixers,
)
from .registry import Context, Kind, Shape, Terminal, get, register, terminals

__all__ = ["Context", "Kind", "Shape", "Terminal", "get", "register", "terminals"]
