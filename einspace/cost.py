"""The one cost type: what a subtree costs per sample, and what is left of a budget.

Shape annotation, the sampler's running tallies, the room a sampler or mutation may still use,
and head costs are all ``Cost`` values, so their arithmetic is written once here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cost:
    """Per-sample cost: trainable parameters, FLOPs (2 x multiply-adds), activation elements,
    and nodes as built (a module repeated k times by a 4- or 8-way branch counts k times)."""

    params: int = 0
    flops: int = 0
    activations: int = 0
    nodes: int = 0
    #: The part of ``flops`` done once per forward whatever the batch (hyper-kernel generation).
    shared_flops: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.flops + other.flops,
                    self.activations + other.activations, self.nodes + other.nodes,
                    self.shared_flops + other.shared_flops)

    def __sub__(self, other: Cost) -> Cost:
        """What is left of a room (a budget) once ``other`` is spent from it."""
        return Cost(self.params - other.params, self.flops - other.flops,
                    self.activations - other.activations, self.nodes - other.nodes,
                    self.shared_flops - other.shared_flops)

    def __mul__(self, k: int) -> Cost:
        return Cost(self.params * k, self.flops * k, self.activations * k, self.nodes * k,
                    self.shared_flops * k)

    def folded(self, k: int) -> Cost:
        """The cost of running one module k times per sample with shared weights (an axis
        folded into the batch): work and memory k times, parameters, nodes and once-per-forward
        work once."""
        per_slice = self.flops - self.shared_flops
        return Cost(self.params, per_slice * k + self.shared_flops, self.activations * k,
                    self.nodes, self.shared_flops)

    def covers(self, other: Cost) -> bool:
        """Whether this room holds ``other``'s parameters, FLOPs and activations (nodes are
        counted separately, as they are known before a terminal is drawn)."""
        return (other.params <= self.params and other.flops <= self.flops
                and other.activations <= self.activations)
