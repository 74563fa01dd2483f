"""Keeping the trained weights of the best trials, wherever in a cluster they trained.

A trial's worker may sit on another machine without shared storage, so the weights travel
through a small Ray actor pinned to the driver's node: a finishing trial asks whether its score
would enter the top ``keep`` (:meth:`WeightKeeper.wants`) and only then ships its ``state_dict``
(:meth:`WeightKeeper.put`).  Files: ``RUN/weights/trial-<index>.pt`` (a plain ``state_dict``,
loadable with ``torch.load(..., weights_only=True)``) and ``RUN/weights/index.json`` (index ->
score), rewritten atomically so a killed driver never leaves a half-written index.

For weight inheritance the keeper also holds a **pool**: the weights of every trial that can
still be a parent (:meth:`WeightKeeper.pool`, :meth:`WeightKeeper.get`), in
``RUN/weights/pool/trial-<index>.pt`` so a resumed run still finds its parents; the driver
:meth:`releases <WeightKeeper.release>` a trial once no living population member or running
child needs it.  Pool files are the trials' own, separate from the top ``keep`` ones, which a
pruned pool must not lose.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .run_dir import POOL, WEIGHTS_INDEX, trial_weights_file, trial_weights_files


class WeightKeeper:
    """Holds the ``keep`` best trials' weights in ``directory`` (plain class; run as an actor)."""

    def __init__(self, directory: str, keep: int):
        self.directory = Path(directory)
        self.keep = keep
        self.directory.mkdir(parents=True, exist_ok=True)
        self.index_file = self.directory / WEIGHTS_INDEX
        self.pool_dir = self.directory / POOL
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

    def pool(self, index: int, state: bytes) -> None:
        """Hold a trained trial's serialized ``state_dict`` for its future children."""
        self.pool_dir.mkdir(exist_ok=True)
        _write_atomic(trial_weights_file(self.pool_dir, index), state)

    def get(self, index: int) -> bytes | None:
        """A pooled trial's serialized ``state_dict``; None when it was never pooled (it failed,
        or its worker could not reach the keeper) or was released."""
        file = trial_weights_file(self.pool_dir, index)
        return file.read_bytes() if file.is_file() else None

    def pooled(self) -> list[int]:
        """The trial indices whose weights the pool holds."""
        return sorted(trial_weights_files(self.pool_dir)) if self.pool_dir.is_dir() else []

    def release(self, indices: list[int]) -> None:
        """Drop these trials' pooled weights: they can no longer be anyone's parent."""
        for index in indices:
            trial_weights_file(self.pool_dir, index).unlink(missing_ok=True)


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
