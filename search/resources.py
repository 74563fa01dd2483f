"""What one trial may use, decided before it is launched: CPUs, GPUs and memory.

Memory is the resource that kills searches: a candidate that needs more than its worker has
gets the worker killed by Ray's memory monitor (or the kernel's).  So every proposal's training
memory is estimated from its symbolic counts (:mod:`einspace.memory`) and compared with a
per-trial budget:

* ``search.memory_per_trial: auto`` (the default) takes the smallest Ray node's memory resource
  (what Ray itself considers schedulable there), divides it among the trials that node can run
  at once (``workers``, at most its CPUs / ``cpus_per_trial``) and keeps :data:`HEADROOM` of it
  for the rest of the machine;
* a size (``6GB``) fixes it; ``off`` disables the screen.

A candidate over the budget is *rejected*: recorded with its estimate, never launched, not
counted against the trial budget.  The rest all ask Ray for the budget as the ``memory``
resource (one slot size, so Tune can reuse their worker processes), so the scheduler never packs
more onto a node than it holds.  Unless the config sets
``budget.max_activations``, the sampler's activation budget is derived from the same figure, so
most proposals fit in the first place.
"""

from __future__ import annotations

import math

from einspace import count
from einspace.memory import (
    ACTIVATION_FACTOR,
    WORKER_OVERHEAD,
    MemoryEstimate,
    format_bytes,
    parse_bytes,
    training_memory,
)
from einspace.tasks.data import TaskData
from einspace.tasks.recipe import Recipe

from .strategies import Proposal

HEADROOM = 0.8
"""Share of a node's schedulable memory the trials may plan to use."""


def resolve_memory_budget(setting, *, workers: int, cpus_per_trial: float) -> int | None:
    """Bytes per trial from ``search.memory_per_trial`` (needs Ray started for ``auto``)."""
    if setting in (None, "off", False):
        return None
    if setting != "auto":
        return parse_bytes(setting, "search.memory_per_trial")
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("memory")]
    if not nodes:
        return None
    per_node = []
    for node in nodes:
        slots = max(1, min(workers, math.floor(node["Resources"].get("CPU", 1) / cpus_per_trial)))
        per_node.append(int(node["Resources"]["memory"] * HEADROOM / slots))
    return min(per_node)


def data_bytes(data: TaskData) -> int:
    """What a worker holds of the task: every split's arrays (float32 once normalised)."""
    return sum(int(array.size) * 4 for split in data.splits.values()
               for array in (split.x, split.y) if array is not None)


def derived_max_activations(budget: int, recipe: Recipe, data: TaskData) -> int:
    """The largest activation count per sample whose training fits ``budget`` (no weights)."""
    room = budget - WORKER_OVERHEAD - data_bytes(data)
    return max(1, int(room / (recipe.batch_size * 4 * ACTIVATION_FACTOR)))


class MemoryScreen:
    """Estimates each proposal's training memory and rejects those over the budget."""

    def __init__(self, data: TaskData, recipe: Recipe, budget: int | None):
        self.data = data
        self.recipe = recipe
        self.budget = budget
        self._data_bytes = data_bytes(data)

    def estimate(self, proposal: Proposal) -> MemoryEstimate:
        cost = count(proposal.derivation, self.data.input_shape, self.data.num_classes,
                     self.data.target_shape)
        return training_memory(cost, batch_size=self.recipe.batch_size,
                               optimizer=self.recipe.optimizer, momentum=self.recipe.momentum,
                               data_bytes=self._data_bytes)

    def __call__(self, proposal: Proposal) -> str | None:
        if self.budget is None:
            return None
        estimate = self.estimate(proposal)
        if estimate.total <= self.budget:
            return None
        return (f"rejected before training: estimated {estimate.describe()} to train at batch "
                f"{self.recipe.batch_size}, over the per-trial memory budget of "
                f"{format_bytes(self.budget)} (search.memory_per_trial)")

    def request(self) -> int | None:
        """The ``memory`` resource every launched trial asks Ray for (bytes): the budget, the
        same for all, because Tune reuses a finished trial's worker process only for a trial
        with the same resource request; per-trial estimates made every trial start a fresh
        process (importing torch, fetching the task: seconds each).  None with the screen off."""
        return self.budget


def trial_resources(config: dict, *, cpus: float, gpus: float):
    """Tune's per-trial resource request: the declared CPUs/GPUs and the trial's memory."""
    from ray.tune import PlacementGroupFactory

    bundle = {"CPU": cpus, "GPU": gpus}
    if config.get("memory"):
        bundle["memory"] = config["memory"]
    return PlacementGroupFactory([{k: v for k, v in bundle.items() if v}])
