"""A deterministic fraction of a task's training data, for training at a lower data fidelity.

Successive halving trains every candidate on a part of the training set first.  Candidates are
only comparable when they saw the *same* part, so the subset is a pure function of the data,
the fraction and a seed: the first ``fraction`` of a seeded order of the examples.  For
classification that order interleaves the classes (each example's key is its rank inside its
own shuffled class divided by the class's size), so every prefix is stratified: a class holds
the same share of the subset as of the whole set, to within one example.  Prefixes nest, so the
quarter is part of the half.  Validation and test splits are never touched, so scores at one
fraction are measured on the same examples as at any other.
"""

from __future__ import annotations

import numpy as np

from einspace.errors import ConfigError

from .data import CLASSIFICATION, Split, TaskData


def subset_indices(targets: np.ndarray | None, size: int, fraction: float,
                   seed: int) -> np.ndarray:
    """The sorted indices of the ``fraction`` of ``size`` examples to train on (at least one);
    stratified by ``targets`` when they are class ids (None: a plain seeded prefix)."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"a training data fraction must be in (0, 1], got {fraction!r}")
    order = np.random.RandomState(seed).permutation(size)
    if targets is not None:
        classes = np.asarray(targets)[order]
        keys = np.empty(size)
        for label in np.unique(classes):
            members = np.flatnonzero(classes == label)
            keys[members] = (np.arange(len(members)) + 0.5) / len(members)
        order = order[np.argsort(keys, kind="stable")]
    keep = max(1, round(fraction * size))
    return np.sort(order[:keep])


def training_subset(data: TaskData, fraction: float, seed: int) -> TaskData:
    """``data`` with its ``train`` split cut to :func:`subset_indices` (the same object at
    fraction 1, so a full-data trial trains exactly as without a ladder)."""
    if fraction == 1:
        return data
    train = data.split("train")
    labels = train.y if data.task_type == CLASSIFICATION else None
    chosen = subset_indices(labels, len(train), fraction, seed)
    part = Split(train.x[chosen], None if train.y is None else train.y[chosen])
    return TaskData(data.name, data.input_shape, data.task_type,
                    {**data.splits, "train": part}, data.num_classes, data.target_shape,
                    data.metadata)
