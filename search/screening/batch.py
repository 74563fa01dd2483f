"""The one batch of training inputs the zero-cost proxies see.

Drawn once per search from the train split's inputs only: the labels are never read (the split's
``y`` is not touched), so screening cannot leak targets.  Inputs are normalised with the train
statistics, as the trainer normalises them, so the proxies see what training would feed in.
"""

from __future__ import annotations

import numpy as np
import torch

from einspace.errors import ConfigError
from einspace.tasks.data import TaskData
from einspace.tasks.trainer import fit_normalizer


def screening_batch(data: TaskData, size: int, seed: int = 0,
                    normalize: bool = True) -> np.ndarray:
    """``size`` train inputs (fewer if the split is smaller) as float32, drawn by ``seed``."""
    if "train" not in data.splits:
        raise ConfigError(f"task {data.name!r} has no train split to screen candidates with")
    x = data.splits["train"].x
    if len(x) < 2:
        raise ConfigError(f"task {data.name!r} has {len(x)} training inputs; screening needs "
                          f"at least 2")
    rows = np.sort(np.random.default_rng(seed).choice(len(x), min(size, len(x)), replace=False))
    batch = np.asarray(x[rows], dtype=np.float32)
    if not normalize:
        return batch
    mean, std = fit_normalizer(data, "train").tensors(batch.ndim - 1, torch.device("cpu"))
    return ((torch.from_numpy(batch) - mean) / std).numpy()
