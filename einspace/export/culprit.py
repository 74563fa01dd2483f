"""Finding the node an exporter fails on.

``torch.jit.script`` and ``torch.onnx.export`` report a failure in their own terms (a source line,
an aten operator), not as a derivation node.  Exporting each located module on its own, deepest
first, finds the innermost node that fails by itself; only run after the whole network failed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .errors import first_line
from .locate import Place

Attempt = Callable[[nn.Module, tuple], object]


def _inputs(network: nn.Module, sample: Tensor, names: list[str]) -> dict[str, tuple]:
    """The positional inputs each named module receives on ``sample`` (first call)."""
    seen: dict[str, tuple] = {}
    handles = []
    for name in names:
        def hook(module, args, name=name):
            seen.setdefault(name, args)
        handles.append(network.get_submodule(name).register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            network(sample)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def find_culprit(network: nn.Module, places: dict[str, Place], sample: Tensor,
                 attempt: Attempt) -> tuple[Place, str] | None:
    """(node, reason) of the deepest located module for which ``attempt(module, inputs)``
    raises, or None when every module passes alone."""
    names = [n for n in places if _exists(network, n)]
    inputs = _inputs(network, sample, names)
    tried = set()
    for name in sorted(names, key=lambda n: n.count("."), reverse=True):
        if name not in inputs:
            continue
        module = network.get_submodule(name)
        signature = (repr(module), _shapes(inputs[name]))
        if signature in tried:  # a copy of a module that passed (repeated blocks)
            continue
        tried.add(signature)
        try:
            attempt(module, inputs[name])
        except Exception as e:
            return places[name], first_line(e)
    return None


def _exists(network: nn.Module, name: str) -> bool:
    try:
        network.get_submodule(name)
    except AttributeError:
        return False
    return True


def _shapes(value):
    if isinstance(value, Tensor):
        return tuple(value.shape)
    if isinstance(value, (list, tuple)):
        return tuple(_shapes(v) for v in value)
    return value
