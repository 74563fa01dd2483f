"""In-memory form of a task's data: the splits as NumPy arrays plus normalised metadata.

The real Unseen-NAS directories and the built-in tasks (written in the same format) both load into
a :class:`TaskData`, so the training recipe and the search see one type whatever the source.
Arrays may be memory-mapped (large image sets stay off the heap); batches are cast when used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "valid", "test")
CLASSIFICATION = "classification"
REGRESSION = "regression"


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` of shape (N, *input_shape) and targets ``y`` (N,) class ids for
    classification, (N, *target_shape) floats for dense regression; ``y`` is None when withheld
    (a competition's test labels)."""

    x: np.ndarray
    y: np.ndarray | None

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class TaskData:
    """A task's splits and what a network needs to know about them."""

    name: str
    input_shape: tuple[int, ...]
    task_type: str
    splits: dict[str, Split]
    num_classes: int | None = None
    target_shape: tuple[int, ...] | None = None
    metadata: dict = field(default_factory=dict)

    def split(self, name: str) -> Split:
        return self.splits[name]
