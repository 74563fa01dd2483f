"""Symbolic tracing of a compiled network into one flat ``torch.fx`` graph of torch operations.

``torch.fx`` inlines every einspace module (standard ``torch.nn`` modules stay calls), which is
what the generated ``model.py`` is written from.  The tracer also remembers which module each
graph node was traced in (``node.meta["module"]``) and which module a failure happened in, so the
generated code and the errors can name the derivation node.
"""

from __future__ import annotations

from torch import fx, nn

from .errors import ExportError, first_line
from .locate import Place, place_of

MODULE_META = "module"


class _Tracer(fx.Tracer):
    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.failed_in: str | None = None

    def call_module(self, m: nn.Module, forward, args, kwargs):
        self.stack.append(self.path_of_module(m))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:  # the innermost module sees the error first
                self.failed_in = self.stack[-1]
            raise
        finally:
            self.stack.pop()

    def create_node(self, *args, **kwargs) -> fx.Node:
        node = super().create_node(*args, **kwargs)
        node.meta[MODULE_META] = self.stack[-1] if self.stack else ""
        return node


def trace(network: nn.Module, places: dict[str, Place], fmt: str = "pytorch") -> fx.Graph:
    """The evaluation-mode graph of ``network`` (which must be in eval mode); an
    :class:`ExportError` naming the node whose Python code cannot be traced otherwise."""
    tracer = _Tracer()
    try:
        graph = tracer.trace(network)
    except Exception as e:
        place = place_of(places, tracer.failed_in or "")
        raise ExportError(f"torch.fx cannot trace its forward ({first_line(e)})", place,
                          fmt) from None
    graph.owning_module = network  # lets the dead-code pass check module calls for purity
    graph.eliminate_dead_code()
    return graph
