"""Fixed-width feature vectors of candidate derivations, for the online surrogate.

Following Qin et al. (AutoML 2025), who found simple counts plus zero-cost proxies predict
einspace accuracies well: how often each production and each terminal (per grammar slot) occurs,
the tree's depth and size, the network's parameters, FLOPs and activations for the task's input
(log-scaled, since they span orders of magnitude), and every proxy with a flag for a failed one.

The columns are fixed when a :class:`FeatureSpace` is made (from the terminals registered then),
so every vector of one search lines up; a terminal or production registered later is not
counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from einspace.analysis import annotate
from einspace.blocks.registry import Kind, terminals
from einspace.derivation import Derivation
from einspace.productions import child_slots, names
from einspace.proxies import ProxyScores

SIZE_COLUMNS = ("depth", "tree_nodes", "built_nodes", "log_params", "log_flops",
                "log_activations")


class FeatureSpace:
    """The columns of one search's feature vectors and how to fill them."""

    def __init__(self, input_shape: Sequence[int], proxies: Sequence[str]):
        self.input_shape = tuple(input_shape)
        self.proxies = tuple(proxies)
        counted = [f"production:{p}" for p in names()]
        counted += [f"{kind.value}:{t.name}" for kind in Kind for t in terminals(kind)]
        self.names: tuple[str, ...] = (
            tuple(counted) + SIZE_COLUMNS + tuple(f"proxy:{p}" for p in self.proxies)
            + tuple(f"proxy_failed:{p}" for p in self.proxies))
        self._column = {name: i for i, name in enumerate(self.names)}

    @property
    def width(self) -> int:
        return len(self.names)

    def vector(self, derivation: Derivation, proxies: ProxyScores) -> np.ndarray:
        """The features of ``derivation`` with its proxy scores; ShapeError if it does not fit
        the input shape (a candidate that cannot be built has no features)."""
        row = np.zeros(self.width)
        for name, count in _occurrences(derivation).items():
            column = self._column.get(name)
            if column is not None:
                row[column] = count
        cost = annotate(derivation, self.input_shape).cost
        sizes = (derivation.depth, derivation.size, cost.nodes, math.log1p(cost.params),
                 math.log1p(cost.flops), math.log1p(cost.activations))
        for name, value in zip(SIZE_COLUMNS, sizes, strict=True):
            row[self._column[name]] = value
        for name in self.proxies:
            value = proxies.values.get(name)
            if value is not None and value.ok:
                row[self._column[f"proxy:{name}"]] = value.value
            else:
                row[self._column[f"proxy_failed:{name}"]] = 1.0
        return row


def _occurrences(derivation: Derivation) -> dict[str, int]:
    """How often each production and each (slot, terminal) pair is written in the tree."""
    counts: dict[str, int] = {}
    for path, node in derivation.walk():
        if isinstance(node, str):
            continue
        counts[f"production:{node.label}"] = counts.get(f"production:{node.label}", 0) + 1
        for slot, child in zip(child_slots(node, path), node.children, strict=True):
            if isinstance(child, str):
                key = f"{slot.value}:{child}"
                counts[key] = counts.get(key, 0) + 1
    return counts
