"""How much memory training a candidate needs, estimated from its symbolic counts alone.

A search must never launch a candidate that cannot fit the memory its worker has: Ray's memory
monitor would kill the worker (and, before the search handled that, the whole search), and a
resumed search would launch it again.  Nothing here runs a tensor, so the estimate is cheap
enough to screen every proposal:

* weights, their gradients and the optimiser's per-parameter state (SGD with momentum keeps one
  buffer, Adam two), ``dtype_bytes`` each, plus :data:`WORKSPACE_COPIES` more for the
  temporaries of initialisation and the optimiser step (measured: a 13 M-parameter network with
  few activations peaked 20 % above weights + gradients + momentum + process);
* the activations autograd keeps for the backward pass: the derivation's activation elements per
  sample (every node's new output, see :mod:`einspace.analysis`) x batch x ``dtype_bytes`` x
  :data:`ACTIVATION_FACTOR` (kernels keep inputs *and* outputs of some ops, and the backward pass
  holds gradients of the same size while it runs);
* a fixed worker overhead (the Python process with torch loaded) and the task's arrays, which the
  caller passes because only it knows them.

``benchmarks/bench_memory.py`` checks the estimate against measured peak memory on a spread of
samples and prints the ratio.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .cost import Cost

ACTIVATION_FACTOR = 1.5
"""Bytes kept for backward per activation byte the forward pass produces (measured, see the
module docstring; the benchmark prints the ratio of estimate to measurement)."""

WORKER_OVERHEAD = 700 * 2**20
"""Resident memory of a trial's worker process before the candidate exists: Python, torch and Ray
loaded (measured on CPU: 0.55-0.65 GB)."""

WORKSPACE_COPIES = 2
"""Transient copies of the weights during initialisation and the optimiser step."""

OPTIMIZER_STATES = {"sgd": 1, "adam": 2, "adamw": 2}
"""Buffers the optimiser keeps per parameter (SGD: the momentum buffer)."""

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20,
          "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40,
          "tib": 2**40}


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes of one training run, by part."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    fixed: int
    workspace: int = 0

    @property
    def total(self) -> int:
        return (self.weights + self.gradients + self.optimizer + self.workspace
                + self.activations + self.fixed)

    def describe(self) -> str:
        return (f"{format_bytes(self.total)} (weights, gradients and optimiser state "
                f"{format_bytes(self.weights + self.gradients + self.optimizer + self.workspace)}"
                f", activations "
                f"{format_bytes(self.activations)}, process and data {format_bytes(self.fixed)})")

    def to_dict(self) -> dict:
        return {"weights": self.weights, "gradients": self.gradients,
                "optimizer": self.optimizer, "activations": self.activations,
                "workspace": self.workspace, "fixed": self.fixed, "total": self.total}


def training_memory(cost: Cost, *, batch_size: int, optimizer: str = "sgd",
                    momentum: float = 0.9, dtype_bytes: int = 4, data_bytes: int = 0,
                    overhead: int = WORKER_OVERHEAD) -> MemoryEstimate:
    """The estimate for a network of ``cost`` (its whole cost, head included: see
    :func:`einspace.count`) trained at ``batch_size``."""
    states = OPTIMIZER_STATES.get(optimizer, 2)
    if optimizer == "sgd" and momentum == 0:
        states = 0
    weights = cost.params * dtype_bytes
    activations = int(cost.activations * batch_size * dtype_bytes * ACTIVATION_FACTOR)
    return MemoryEstimate(weights, weights, weights * states, activations,
                          overhead + data_bytes, weights * WORKSPACE_COPIES)


def parse_bytes(value, name: str) -> int:
    """Bytes from ``6442450944``, ``"6GB"``, ``"512 MiB"`` (binary units either way)."""
    from .errors import ConfigError

    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _UNITS or float(match.group(1)) <= 0:
        raise ConfigError(f"{name} must be a positive size such as 6GB, 512MB or a number of "
                          f"bytes; got {value!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_bytes(n: int) -> str:
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
