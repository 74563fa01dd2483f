"""Training progress for terminals whose behaviour follows the training schedule.

A terminal module that changes over training (PRepBN's LayerNorm-to-BatchNorm schedule, a
key-initialisation phase) registers a 0-d float buffer named ``training_progress`` and reads it in
``forward``; the trainer calls :func:`set_training_progress` once per step with the fraction of
training done.  A buffer (not a Python attribute) keeps the module scriptable and the state saved.
"""

from __future__ import annotations

import torch
from torch import nn

PROGRESS_BUFFER = "training_progress"


def progress_buffer() -> torch.Tensor:
    """The buffer a step-aware module registers under ``PROGRESS_BUFFER`` (starts at 0)."""
    return torch.zeros(())


def set_training_progress(model: nn.Module, fraction: float) -> int:
    """Set every step-aware module's progress to ``fraction`` in [0, 1]; returns how many."""
    value = min(max(float(fraction), 0.0), 1.0)
    count = 0
    for module in model.modules():
        buffer = module._buffers.get(PROGRESS_BUFFER)
        if buffer is not None:
            buffer.fill_(value)
            count += 1
    return count
