"""T1 ``multnist_lite``: MultNIST-style product of three real digits placed on a 16x16 canvas.

The canvas, the digit source and the train/eval instance split are shared with ``addnist_lite``
(see ``_digit_canvas``); this task's label is ``(r * g * b) mod 10`` (10 classes, as MultNIST).
"""

from __future__ import annotations

from ._digit_canvas import DigitTask, generate, task_spec
from .data import TaskData
from .registry import register_task


def multiplication_label(r: int, g: int, b: int) -> int:
    """MultNIST's rule: ``(r * g * b) mod 10`` (classes 0..9)."""
    return (r * g * b) % 10


TASK = DigitTask(
    name="multnist_lite",
    rule=multiplication_label,
    n_classes=10,
    mirrors="MultNIST",
    label_rule="(r * g * b) mod 10",
    description=("MultNIST-style: three real scikit-learn 8x8 digits, one per channel, each at a "
                 "random offset in a 16x16 canvas; label = (r * g * b) mod 10 (10 classes). Train "
                 "and valid/test use disjoint digit instances."),
)


def make_multnist_lite(seed: int, size: str = "default") -> TaskData:
    """MultNIST-style task on placed scikit-learn digits: 3x16x16, 10 classes."""
    return generate(TASK, seed, size)[0]


register_task(task_spec(TASK, make_multnist_lite))
