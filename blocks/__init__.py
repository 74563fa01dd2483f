"""einspace.blocks: every grammar terminal (shape rule, costs, builder) and the shipped seeds.

Importing this package registers the terminal families; ``registry.get(kind, name)`` finds one.
"""

from . import aggregation, branching, computation, routing  # noqa: F401  (registration)
from . import attention, codebooks, convolutional, gating, token_mixers  # noqa: F401
from .registry import Context, Kind, Shape, Terminal, get, register, terminals

__all__ = ["Context", "Kind", "Shape", "Terminal", "get", "register", "terminals"]
