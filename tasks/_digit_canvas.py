"""The digit canvas T1 ``addnist_lite`` and ``multnist_lite`` share: arithmetic on real digits.

Each task module (``addnist_lite.py``, ``multnist_lite.py``) declares its label rule as a
:class:`DigitTask`; this module draws the examples, so the two differ only in the rule.

Source: the 1,797 real handwritten 8x8 digits that ship inside scikit-learn
(``sklearn.datasets.load_digits``), so the task builds offline.  Each example stacks three digits,
one per channel (r, g, b); the label is arithmetic on the three digit values:

* ``addnist_lite``: ``r + g + b - 1`` for triples whose sum is 1..20 (20 classes, as AddNIST);
* ``multnist_lite``: ``(r * g * b) mod 10`` (10 classes, as MultNIST).

Why this is a useful NAS task: the label needs three separate recognitions followed by arithmetic,
so networks that mix channels early lose to ones that process each channel separately (grouped or
shared weights) and fuse late.  The digits are *placed* -- each drawn at its native 8x8 size at an
independent uniform random offset inside a 16x16 zero canvas -- because with centred digits an MLP
wins by template matching the small pool (measured in the research digest, §4.2: MLP 7.5 % vs a
shared per-channel CNN 45.2 % on the placed variant).

Generalisation, not memorisation: the digit *instances* are split 70/30 per digit class with the
task seed; training examples use only the 70 % pool, valid and test only the 30 % pool (as AddNIST
takes its test digits from MNIST-test).  Classes are exactly balanced (example ``i`` gets class
``i mod K``, then a triple is drawn uniformly among those with that label), and the examples of
each split are shuffled.  Pixels are scaled to [0, 1]; the trainer normalises per channel.

Everything is drawn from one ``np.random.RandomState(seed)`` (the frozen legacy stream), so a
seed gives byte-identical arrays across NumPy versions; no global RNG state is touched.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .data import CLASSIFICATION, Split, TaskData
from .provenance import package_file_sha256
from .registry import TaskError, TaskSpec, split_sizes

INSTALL = "pip install scikit-learn"
SOURCE = "scikit-learn (sklearn.datasets.load_digits)"
DIGIT_SIZE = 8
CANVAS = 16
INPUT_SHAPE = (3, CANVAS, CANVAS)
TRAIN_FRACTION = 0.7
SIZES: dict[str, tuple[int, int, int]] = {
    "default": (8000, 2000, 2000),
    "small": (400, 200, 200),
}


@dataclass(frozen=True)
class DigitTask:
    """One arithmetic task on the canvas: its label ``rule`` on the three digit values (None for
    a triple the task does not use), its classes and what it mirrors."""

    name: str
    rule: Callable[[int, int, int], int | None]
    n_classes: int
    mirrors: str
    label_rule: str
    description: str


def triples_by_class(rule: Callable[[int, int, int], int | None],
                     n_classes: int) -> list[np.ndarray]:
    """For each class, the (M, 3) digit triples the rule maps to it (lexicographic order)."""
    groups: list[list[tuple[int, int, int]]] = [[] for _ in range(n_classes)]
    for triple in itertools.product(range(10), repeat=3):
        label = rule(*triple)
        if label is not None:
            groups[label].append(triple)
    return [np.asarray(g, dtype=np.int64) for g in groups]


def load_source() -> tuple[np.ndarray, np.ndarray, dict]:
    """The scikit-learn digits as (1797, 8, 8) uint8 in 0..16, their labels, and provenance.

    Raises :class:`TaskError` naming the install command when scikit-learn is missing."""
    try:
        import sklearn
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise TaskError(f"the digits tasks need scikit-learn, which is not installed ({e}); "
                        f"install it with: {INSTALL}") from None
    digits = load_digits()
    images = np.asarray(digits.images).astype(np.uint8)
    labels = np.asarray(digits.target).astype(np.int64)
    # sha256 of the file load_digits reads
    source_sha = package_file_sha256("sklearn.datasets.data", "digits.csv.gz")
    provenance = {"source_sha256": source_sha, "sklearn_version": sklearn.__version__}
    return images, labels, provenance


def split_instances(labels: np.ndarray,
                    rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the train and eval digit pools: 70/30 within each digit class (so every digit
    appears in both pools), disjoint, sorted."""
    train, held_out = [], []
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        members = members[rng.permutation(len(members))]
        cut = int(round(TRAIN_FRACTION * len(members)))
        train.append(members[:cut])
        held_out.append(members[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held_out))


def _make_split(n: int, triples: list[np.ndarray], images: np.ndarray, labels: np.ndarray,
                pool: np.ndarray, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray,
                                                                        np.ndarray, np.ndarray]:
    """``n`` placed examples from the digit instances in ``pool``.

    Returns x (n, 3, 16, 16) float32, y (n,) int64, the instance id of each channel (n, 3) and its
    (row, col) offset (n, 3, 2)."""
    k = len(triples)
    y = np.arange(n, dtype=np.int64) % k
    choice = np.array([rng.randint(len(triples[c])) for c in y], dtype=np.int64)
    digits = np.zeros((n, 3), dtype=np.int64)
    for row, (c, i) in enumerate(zip(y, choice, strict=True)):
        digits[row] = triples[c][i]
    by_digit = [pool[labels[pool] == d] for d in range(10)]
    instances = np.empty((n, 3), dtype=np.int64)
    for d in range(10):
        where = digits == d
        instances[where] = by_digit[d][rng.randint(len(by_digit[d]), size=int(where.sum()))]
    offsets = rng.randint(CANVAS - DIGIT_SIZE + 1, size=(n, 3, 2))
    x = np.zeros((n, 3, CANVAS, CANVAS), dtype=np.float32)
    scaled = images.astype(np.float32) / 16.0
    for i in range(n):
        for c in range(3):
            r0, c0 = offsets[i, c]
            x[i, c, r0:r0 + DIGIT_SIZE, c0:c0 + DIGIT_SIZE] = scaled[instances[i, c]]
    order = rng.permutation(n)
    return x[order], y[order], instances[order], offsets[order]


def generate(task: DigitTask, seed: int, size: str) -> tuple[TaskData, dict[str, np.ndarray]]:
    """The task's data plus its provenance: ``pools`` (train / eval instance ids) and, per split,
    the sklearn instance id of every channel (``<split>_instances``, (N, 3)) -- what the tests use
    to check that no training digit reaches valid or test."""
    counts = split_sizes(SIZES, size)
    images, labels, provenance = load_source()
    rng = np.random.RandomState(seed)
    train_pool, eval_pool = split_instances(labels, rng)
    triples = triples_by_class(task.rule, task.n_classes)
    splits, sources = {}, {"train_pool": train_pool, "eval_pool": eval_pool}
    for name, n in zip(("train", "valid", "test"), counts, strict=True):
        pool = train_pool if name == "train" else eval_pool
        x, y, instances, _ = _make_split(n, triples, images, labels, pool, rng)
        splits[name] = Split(x, y)
        sources[f"{name}_instances"] = instances
    metadata = {
        "codename": task.name, "task_type": CLASSIFICATION, "n_classes": task.n_classes,
        "input_shape": list(INPUT_SHAPE), "mirrors": task.mirrors, "rendering": "placed",
        "label_rule": task.label_rule,
        "pixel_range": [0.0, 1.0], "train_pool_size": int(len(train_pool)),
        "eval_pool_size": int(len(eval_pool)), **provenance,
    }
    data = TaskData(task.name, INPUT_SHAPE, CLASSIFICATION, splits, num_classes=task.n_classes,
                    metadata=metadata)
    return data, sources


def task_spec(task: DigitTask, generator: Callable[[int, str], TaskData]) -> TaskSpec:
    """The registry entry of a digit task: everything but its rule is the canvas's."""
    return TaskSpec(
        name=task.name,
        description=task.description,
        mirrors=f"{task.mirrors} (Unseen NAS)",
        input_shape=INPUT_SHAPE,
        task_type=CLASSIFICATION,
        metric="accuracy",
        source=SOURCE,
        install=INSTALL,
        version="1",
        generator=generator,
        num_classes=task.n_classes,
    )
