"""In-memory form of a task's data: the splits as NumPy arrays plus normalised metadata.

The real Unseen-NAS directories and the built-in tasks (written in the same format) both load into
a :class:`TaskData`, so the training recipe and the search see one type whatever the source.
Arrays may be memory-mapped (large image sets stay off the heap); batches are cast when used.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from einspace.errors import ConfigError

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

    def summary(self) -> dict:
        """What ``einspace tasks show`` prints for a data directory: shapes, classes, split sizes
        (a withheld test target is named) and the normalised metadata, all JSON-serialisable."""
        return {"name": self.name, "input_shape": list(self.input_shape),
                "task_type": self.task_type, "num_classes": self.num_classes,
                "target_shape": list(self.target_shape) if self.target_shape else None,
                "splits": {name: len(split) for name, split in self.splits.items()},
                "withheld_targets": [name for name, split in self.splits.items()
                                     if split.y is None],
                "metadata": {k: list(v) if isinstance(v, tuple) else v
                             for k, v in self.metadata.items()}}

    def for_final(self) -> TaskData:
        """The view of the final evaluation (the einspace protocol): ``train`` is train + valid
        concatenated, ``valid`` is the test split, so ``train(..., data.for_final())`` retrains
        on everything but the test set and reports the test score.  There is no ``test`` split
        in the view, so nothing can score on it twice.

        Concatenation reads memory-mapped arrays into memory; the built-in tasks are a few tens
        of MB, but a large real dataset needs train + valid to fit in RAM.  Raises
        :class:`~einspace.errors.ConfigError` when a split is missing or has no targets (a
        competition's withheld test labels)."""
        for name in SPLITS:
            if name not in self.splits:
                raise ConfigError(f"task {self.name!r} has no {name!r} split, so it has no final "
                                  f"evaluation; its splits: {', '.join(sorted(self.splits))}")
            if self.splits[name].y is None:
                raise ConfigError(f"task {self.name!r} has no {name} labels (withheld?), so it "
                                  f"cannot be scored on test after retraining on train + valid")
        train, valid = self.splits["train"], self.splits["valid"]
        joined = Split(np.concatenate([train.x, valid.x]), np.concatenate([train.y, valid.y]))
        return replace(self, splits={"train": joined, "valid": self.splits["test"]})
