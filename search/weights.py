"""Keeping the trained weights of the best trials, wherever in a cluster they trained.

A trial's worker may sit on another machine without shared storage, so the weights travel
through a small Ray actor pinned to the driver's node: a finishing trial asks whether its score
would enter the top ``keep`` (:meth:`WeightKeeper.wants`) and only then ships its ``state_dict``
(:meth:`WeightKeeper.put`).  Files: ``RUN/weights/trial-<index>.pt`` (a plain ``state_dict``,
loadable with ``torch.load(..., weights_only=True)``) and ``RUN/weights/index.json`` (index ->
score), rewritten atomically so a killed driver never leaves a half-written index.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .run_dir import WEIGHTS_INDEX, trial_weights_file


class WeightKeeper:
    """Holds the ``keep`` best trials' weights in ``directory`` (plain class; run as an actor)."""

    def __init__(self, directory: str, keep: int):
        self.directory = Path(directory)
        self.keep = keep
        self.directory.mkdir(parents=True, exist_ok=True)
        self.index_file = self.directory / WEIGHTS_INDEX
        self.scores: dict[int, float] = {}
        if self.index_file.is_file():
            stored = json.loads(self.index_file.read_text())
            self.scores = {int(k): float(v) for k, v in stored.items()
                           if trial_weights_file(self.directory, int(k)).is_file()}

    def wants(self, index: int, score: float) -> bool:
        """Whether a trial with this score would be kept (ties go to the lower index)."""
        if self.keep <= 0 or not math.isfinite(score):
            return False
        ranked = sorted([*self.scores.items(), (index, score)], key=lambda kv: (-kv[1], kv[0]))
        return index in dict(ranked[:self.keep])

    def put(self, index: int, score: float, state: bytes) -> bool:
        """Store a trial's serialized ``state_dict`` if it still ranks; drop who falls out."""
        if not self.wants(index, score):
            return False
        _write_atomic(trial_weights_file(self.directory, index), state)
        self.scores[index] = score
        ranked = sorted(self.scores.items(), key=lambda kv: (-kv[1], kv[0]))
        for dropped, _ in ranked[self.keep:]:
            trial_weights_file(self.directory, dropped).unlink(missing_ok=True)
            del self.scores[dropped]
        _write_atomic(self.index_file, json.dumps(self.scores, indent=1).encode())
        return True


NAMESPACE = "einspace"
"""Ray namespace of the keepers (a trial's worker does not share the driver's anonymous one)."""


@dataclass(frozen=True)
class KeeperSpec:
    """Where a run's weight keeper lives: trials fetch it by name, and whoever finds it dead
    (killed, e.g. by Ray's memory monitor) starts it again on the driver's node, where it
    re-reads its index from disk."""

    name: str
    node: str
    directory: str
    keep: int

    def handle(self):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return ray.remote(num_cpus=0)(WeightKeeper).options(
            name=self.name, namespace=NAMESPACE, get_if_exists=True,
            scheduling_strategy=NodeAffinitySchedulingStrategy(self.node, soft=False)).remote(
            self.directory, self.keep)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
