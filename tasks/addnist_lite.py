"""T1 ``addnist_lite``: AddNIST-style addition of three real digits placed on a 16x16 canvas.

The canvas, the digit source and the train/eval instance split are shared with ``multnist_lite``
(see ``_digit_canvas``); this task's label is ``r + g + b - 1`` for triples whose sum is 1..20
(20 classes, as AddNIST).
"""

from __future__ import annotations

from ._digit_canvas import DigitTask, generate, task_spec
from .data import TaskData
from .registry import register_task


def addition_label(r: int, g: int, b: int) -> int | None:
    """AddNIST's rule: ``r + g + b - 1``, defined for digit sums 1..20 (classes 0..19)."""
    total = r + g + b
    return total - 1 if 1 <= total <= 20 else None


TASK = DigitTask(
    name="addnist_lite",
    rule=addition_label,
    n_classes=20,
    mirrors="AddNIST",
    label_rule="r + g + b - 1",
    description=("AddNIST-style: three real scikit-learn 8x8 digits, one per channel, each at a "
                 "random offset in a 16x16 canvas; label = r + g + b - 1 (20 classes). Train and "
                 "valid/test use disjoint digit instances."),
)


def make_addnist_lite(seed: int, size: str = "default") -> TaskData:
    """AddNIST-style task on placed scikit-learn digits: 3x16x16, 20 classes."""
    return generate(TASK, seed, size)[0]


register_task(task_spec(TASK, make_addnist_lite))
