"""einspace.blocks: every grammar terminal (shape rule, costs, builder) and the shipped seeds.

Importing this package registers the terminal families; ``registry.get(kind, name)`` finds one.

The imports below run in a fixed order, not an alphabetical one: it is the registration order,
which is the order a terminal set (``terminal_set: seed-papers``) appends terminals to a grammar
category, so reordering them would change which architecture a seed samples.  A new file goes
last.  The reference's terminals live in one file per kind (``aggregation``, ``branching``,
``computation``, ``routing``); the seed papers' primitives in one file per family or paper.
"""

# isort: off
from . import aggregation  # noqa: F401  (importing a family registers its terminals)
from . import attention  # noqa: F401
from . import branching  # noqa: F401
from . import codebooks  # noqa: F401
from . import token_summarize  # noqa: F401
from . import computation  # noqa: F401
from . import low_rank  # noqa: F401
from . import inception_resnet  # noqa: F401
from . import propagation  # noqa: F401
from . import masking  # noqa: F401
from . import hyper_kernel  # noqa: F401
from . import gating  # noqa: F401
from . import parallel_sum  # noqa: F401
from . import routing  # noqa: F401
from . import token_mixers  # noqa: F401
# isort: on
from .registry import Context, Kind, Shape, Terminal, get, register, terminals

__all__ = ["Context", "Kind", "Shape", "Terminal", "get", "register", "terminals"]
