"""Where each module of a compiled network comes from in its derivation.

Export errors and the comments of the generated ``model.py`` name derivation nodes (``/1/0
(computation norm)``), but a built network only knows its module names (``backbone.3.body``).
:func:`einspace.compiler.build_traced` maps module names to derivation paths; this module turns
those paths into :class:`Place` s that also say which terminal or production the node is.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from einspace.analysis import Annotation
from einspace.blocks.registry import Kind
from einspace.errors import format_path

HEAD = "head"
PLAIN = (nn.Sequential, nn.Identity)  # containers that are the production itself


@dataclass(frozen=True)
class Place:
    """A derivation node (``path`` None: the task head, which is not part of the derivation)."""

    path: tuple[int, ...] | None
    label: str

    def __str__(self) -> str:
        return self.label if self.path is None else f"{format_path(self.path)} ({self.label})"


HEAD_PLACE = Place(None, "the task head")


def locate(network: nn.Module, origins: dict[str, tuple[int, ...]],
           annotation: Annotation) -> dict[str, Place]:
    """Qualified module name -> its node, from ``build_traced``'s ``origins`` of ``network``."""
    modules = dict(network.named_modules())
    places = {HEAD: HEAD_PLACE}
    for name, path in origins.items():
        info = annotation[path]
        if isinstance(info.slot, Kind):
            label = f"{info.slot.value} {info.node}"
        else:
            label = info.node.label
            module = modules.get(name)
            if label != "computation" and module is not None and not isinstance(module, PLAIN) \
                    and type(module).__name__ != "Branching":
                label = f"{label}, compiled to {type(module).__name__}"
        places[name] = Place(path, label)
    return places


def place_of(places: dict[str, Place], module_name: str) -> Place | None:
    """The node of ``module_name`` or of its nearest located ancestor module."""
    name = module_name
    while name:
        if name in places:
            return places[name]
        name = name.rpartition(".")[0]
    return None
