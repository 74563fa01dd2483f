"""T7 ``mnist1d``: the MNIST-1D procedural signals, a stand-in for NAS-Bench-360's 1-D tasks.

Source: the ``mnist1d`` package's generator (``mnist1d.data.make_dataset``), which warps ten
hand-made 1-D digit templates with random padding, translation (up to 48 of 40+ samples), scale,
shear and correlated + iid noise, then resamples to length 40.  It needs no network (only its
``get_dataset`` downloads).  Why it is a useful NAS task: the signals are translation-heavy, so
translation-equivariant (convolutional) processing along the signal wins clearly (research
digest §4.2: MLP 79.3 % vs a 1-D CNN 97.7 %; the package README: MLP 68 %, CNN 94 %).

Layout: the Unseen-NAS format stores images, so each signal is stored as ``(N, 1, 1, 40)`` and
einspace sees a 1x1x40 image.  Its 3x3 (padding 1) and 1x1 im2col windows then act as 1x3 / 1x1
convolutions along the signal; the 4x4/8x8/16x16 patch windows do not fit a height of 1 and are
refused, which is the honest outcome for a 1-D signal.  ``(N, 1, 40, 1)`` would be equivalent up to
a transpose, and folding 40 into a 2-D grid (5x8) would invent a spatial neighbourhood that does
not exist.

Determinism: ``make_dataset`` seeds and draws from the *global* ``random``/``np.random`` state
(legacy stream, stable across NumPy versions); the wrapper saves both states and restores them
afterwards, so a caller's RNG is untouched.  The package standardises all 12,000 signals with one
global mean/std (a scalar affine map; the trainer re-normalises with train statistics anyway).

Splits: the package draws exactly ``num_samples / 10`` signals per class, each an independent
random warp of the templates (there are no source instances to share).  They are split per class
into 800 / 160 / 240 (train / valid / test, default) keeping the package's shuffled order, so each
split is exactly class balanced.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from .data import CLASSIFICATION, Split, TaskData
from .provenance import SourceDigest
from .registry import TaskError, TaskSpec, register_task, split_sizes

INSTALL = "pip install mnist1d"
SOURCE = "mnist1d (procedural generator mnist1d.data.make_dataset)"
LENGTH = 40
INPUT_SHAPE = (1, 1, LENGTH)
N_CLASSES = 10
# Per-class counts (train, valid, test): default 8,000 / 1,600 / 2,400 in all.
SIZES: dict[str, tuple[int, int, int]] = {
    "default": (800, 160, 240),
    "small": (40, 8, 12),
}


def _import_mnist1d():
    """The ``mnist1d.data`` module, or a :class:`TaskError` naming the install command.

    (``import mnist1d`` also imports ``requests`` and ``matplotlib``, its declared dependencies;
    a missing one is reported the same way, since ``pip install mnist1d`` brings it back.)"""
    try:
        import mnist1d
        import mnist1d.data
    except ImportError as e:
        raise TaskError(f"the mnist1d task needs the mnist1d package, which is not installed or "
                        f"is missing a dependency ({e}); install it with: {INSTALL}") from None
    return mnist1d, mnist1d.data


def _source_sha256(package) -> str:
    """sha256 over the generator's source files (templates in data.py, warps in transform.py)."""
    digest = SourceDigest()
    root = Path(package.__file__).parent
    for name in ("data.py", "transform.py"):
        digest.add_file(name, root / name)
    return digest.hexdigest()


def _package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("mnist1d")
    except metadata.PackageNotFoundError:
        return "unknown"


def generate_signals(seed: int, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """All ``num_samples`` signals (N, 40) float32 and labels (N,) int64 from the package's
    generator with its default transforms and ``seed``; the global RNG states are restored."""
    package, data_module = _import_mnist1d()
    args = data_module.get_dataset_args()
    args.num_samples = num_samples
    args.train_split = 1.0
    args.seed = seed
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        dataset = data_module.make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return (np.asarray(dataset["x"], dtype=np.float32),
            np.asarray(dataset["y"], dtype=np.int64))


def make_mnist1d(seed: int, size: str = "default") -> TaskData:
    """The MNIST-1D task: x (N, 1, 1, 40) float32, 10 exactly balanced classes."""
    counts = split_sizes(SIZES, size)
    if not 0 <= seed < 2 ** 32:
        raise TaskError(f"the mnist1d seed must be in [0, 2**32), got {seed}")
    package, _ = _import_mnist1d()
    x, y = generate_signals(seed, N_CLASSES * sum(counts))
    chosen: dict[str, list[np.ndarray]] = {"train": [], "valid": [], "test": []}
    for label in range(N_CLASSES):
        members = np.flatnonzero(y == label)  # in the package's shuffled order
        start = 0
        for name, n in zip(chosen, counts, strict=True):
            chosen[name].append(members[start:start + n])
            start += n
    splits = {}
    for name, parts in chosen.items():
        index = np.sort(np.concatenate(parts))
        splits[name] = Split(np.ascontiguousarray(x[index].reshape(-1, *INPUT_SHAPE)), y[index])
    metadata = {
        "codename": "mnist1d", "task_type": CLASSIFICATION, "n_classes": N_CLASSES,
        "input_shape": list(INPUT_SHAPE), "mirrors": "NAS-Bench-360 1-D tasks",
        "layout": "signal of length 40 stored as a 1x1x40 image",
        "source_sha256": _source_sha256(package), "mnist1d_version": _package_version(),
    }
    return TaskData("mnist1d", INPUT_SHAPE, CLASSIFICATION, splits, num_classes=N_CLASSES,
                    metadata=metadata)


register_task(TaskSpec(
    name="mnist1d",
    description=("MNIST-1D: length-40 signals procedurally warped from ten 1-D digit templates "
                 "(padding, translation, scale, shear, noise), stored as 1x1x40 images; 10 "
                 "balanced classes."),
    mirrors="NAS-Bench-360 1-D tasks (ECG / Satellite style)",
    input_shape=INPUT_SHAPE,
    task_type=CLASSIFICATION,
    metric="accuracy",
    source=SOURCE,
    install=INSTALL,
    version="1",
    generator=make_mnist1d,
    num_classes=N_CLASSES,
))
