"""Symbolic tracing of a compiled network into one flat ``torch.fx`` graph of torch operations.

``torch.fx`` inlines every einspace module (standard ``torch.nn`` modules stay calls), which is
what the generated ``model.py`` is written from.  The tracer also remembers which module each
graph node was traced in (``node.meta["module"]``) and which module a failure happened in, so the
generated code and the errors can name the derivation node.

A repeated branch (``clone_tensor{4,8}``, ``group_dim{4,8}...``: one inner module built k times)
is not inlined k times: its split and merge are traced, and its copies become one
:func:`run_blocks` node, which :mod:`.codegen` writes as a loop over an ``nn.ModuleList`` of one
generated class.
"""

from __future__ import annotations

from torch import fx, nn

from einspace.blocks.aggregation import AddModule
from einspace.modules import Branching

from .errors import ExportError, first_line
from .locate import Place, place_of

MODULE_META = "module"
MIN_REPEATS = 4  # k = 2 branches hold two independent inner modules


def run_blocks(blocks: str, parts: list) -> list:
    """The graph's marker for a repeated branch: the copies in the ``nn.ModuleList`` named
    ``blocks`` applied to ``parts`` one each.  Only :mod:`.codegen` reads it; the graph is never
    run."""
    raise NotImplementedError(f"{blocks} is written by the code generator, never run here")


def is_repeated(module: nn.Module) -> bool:
    """A branching whose inner modules are copies of one subtree (built k >= 4 times)."""
    return isinstance(module, Branching) and len(module.inners) >= MIN_REPEATS


class _Tracer(fx.Tracer):
    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.failed_in: str | None = None

    def call_module(self, m: nn.Module, forward, args, kwargs):
        self.stack.append(self.path_of_module(m))
        try:
            if is_repeated(m) and len(args) == 1 and not kwargs:
                parts = m.split(args[0])
                outs = self.create_proxy("call_function", run_blocks,
                                         (f"{self.stack[-1]}.inners", list(parts)), {},
                                         name="outs")
                if isinstance(m.merge, AddModule):  # 0 + the same additions, in one line
                    return self.create_proxy("call_function", sum, (outs,), {}, name="total")
                return m.merge([outs[i] for i in range(len(m.inners))])
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


class _Holder(nn.Module):
    """One copy of a repeated branch's inner module, traced as a call of a submodule (so a copy
    that is itself a repeated branch becomes a loop too, not its inlined forward)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(x)


def trace_block(network: nn.Module, places: dict[str, Place],
                name: str) -> tuple[nn.Module, fx.Graph, dict[str, Place]]:
    """The graph of the submodule ``name`` of ``network`` on its own, with the module it was
    traced from and the places renamed to that module's names."""
    holder = _Holder(network.get_submodule(name))
    inner = {"block" + key[len(name):]: place for key, place in places.items()
             if key == name or key.startswith(name + ".")}
    return holder, trace(holder, inner), inner
