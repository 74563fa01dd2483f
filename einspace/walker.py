"""The base of every pass that does something different per production (lark's Visitor).

``walk(node, ...)`` calls the walker's method named after the node's production, so a pass is one
class with one method per production it handles, and a production added later only needs a method
in the passes that treat it specially.  A walker may define ``default`` for the productions it
treats alike; without one, a production it has no method for is a clear :class:`NoRuleError`.
"""

from __future__ import annotations

from typing import Any

from .derivation import Derivation
from .errors import NoRuleError
from .productions import production


class Walker:
    """Dispatches on a node's label to the method of that name."""

    def walk(self, node: Derivation, *args: Any, **kwargs: Any) -> Any:
        """Apply this walker's rule for ``node``'s production to ``node``."""
        return self.dispatch(node.label, node, *args, **kwargs)

    def dispatch(self, label: str, *args: Any, **kwargs: Any) -> Any:
        """Call the rule for production ``label`` with ``args``: for passes such as sampling
        that choose a production before any node exists."""
        name = production(label).name
        rule = getattr(self, name, None)
        if rule is None:
            return self.default(name, *args, **kwargs)
        return rule(*args, **kwargs)

    def default(self, label: str, *args: Any, **kwargs: Any) -> Any:
        raise NoRuleError(f"{type(self).__name__} has no rule for the {label!r} production")
