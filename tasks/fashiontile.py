"""``fashiontile``: how many clothing categories are in this 2x2 grid?  (Unseen NAS "CIFARTile".)

CIFARTile tiles four CIFAR-10 images and asks for the number of distinct classes minus one.  No
CIFAR-10 ships offline, so the tiles here are Fashion-MNIST images from the Debian package
``dataset-fashion-mnist`` (the IDX files in ``/usr/share/datasets/fashion-mnist``, or in the
directory ``$EINSPACE_FASHION_MNIST``), read at generation time with a small IDX reader.

Recipe (CIFARTile's): k, the number of distinct classes, is balanced over 1..4 (example ``i`` gets
label ``i mod 4``, then the examples are shuffled); k classes are drawn without replacement; the
class multiset is {4}, {2,2}, {2,1,1} or {1,1,1,1} for k = 1..4 (the first class drawn gets the
2 when k = 3); the four tiles go to the grid cells in random order and each shows a random image
of its class; the label is k - 1.  Every tile is shifted by up to +-4 pixels (zero fill, as
RandomCrop with padding 4) and flipped left-right with p = 0.5 on all splits, so an MLP cannot
compare aligned pixels.  Output 1x56x56 float32 in [0, 1].

Source-level separation: train and valid tiles come from the 60,000 training images, split per
clothing class 5/6 to 1/6 with the task seed (50,000 train-only and 10,000 valid-only images);
test tiles come from the 10,000 test images.  Images are drawn with replacement inside a split.

Why it is a useful NAS task: recognition followed by set-level reasoning ("how many different
categories?"); on CIFARTile DARTS-space NAS (92 %) beats ResNet-18 (47 %) by the widest margin of
the Unseen NAS tasks, and a shared per-tile encoder beats an MLP here (research digest §4.2:
58.8 % vs 42.5 %).
"""

from __future__ import annotations

import gzip
import os
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

from .data import CLASSIFICATION, Split, TaskData
from .provenance import SourceDigest
from .registry import TaskError, TaskSpec, register_task, split_sizes

NAME = "fashiontile"
INSTALL = "apt-get install -y dataset-fashion-mnist"
SOURCE_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV = "EINSPACE_FASHION_MNIST"
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
TILE = 28
SHIFT = 4
INPUT_SHAPE = (1, 2 * TILE, 2 * TILE)
N_CLASSES = 4
SOURCE_CLASSES = 10
MULTISETS = {1: (4,), 2: (2, 2), 3: (2, 1, 1), 4: (1, 1, 1, 1)}
VALID_FRACTION = 1 / 6
SIZES: dict[str, tuple[int, int, int]] = {"default": (8000, 2000, 2000), "small": (400, 200, 200)}


def read_idx(raw: bytes) -> np.ndarray:
    """An uncompressed IDX file of unsigned bytes (magic 0x0000 0x08 ndim, big-endian sizes)."""
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise TaskError(f"not an IDX file of unsigned bytes (header {raw[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise TaskError(f"IDX file holds {data.size} bytes, its header says {shape}")
    return data.reshape(shape)


def source_dir() -> Path:
    """``$EINSPACE_FASHION_MNIST`` or the Debian directory; TaskError when a file is missing."""
    directory = Path(os.environ.get(ENV) or SOURCE_DIR)
    missing = [f for pair in FILES.values() for f in pair if not (directory / f).is_file()]
    if missing:
        raise TaskError(f"task {NAME!r} needs Fashion-MNIST ({', '.join(missing)} missing in "
                        f"{directory}); install it with `{INSTALL}` (or set {ENV} to a "
                        f"directory holding the four IDX files)")
    return directory


def load_source() -> dict[str, np.ndarray | str]:
    """``train_images`` (60000, 28, 28) uint8, ``train_labels``, ``test_images``, ``test_labels``
    and ``source_sha256`` (of the four .gz files); cached per directory."""
    return _load_source(source_dir())


@lru_cache(maxsize=2)
def _load_source(directory: Path) -> dict[str, np.ndarray | str]:
    digest = SourceDigest()
    out: dict[str, np.ndarray | str] = {}
    for split, names in FILES.items():
        for kind, filename in zip(("images", "labels"), names, strict=True):
            raw = digest.add_file(filename, directory / filename)
            out[f"{split}_{kind}"] = read_idx(gzip.decompress(raw))
    out["source_sha256"] = digest.hexdigest()
    return out


def split_instances(labels: np.ndarray, rng: np.random.RandomState
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, disjoint train and valid pools of training-image ids, 5/6 to 1/6 per class."""
    train, valid = [], []
    for c in range(SOURCE_CLASSES):
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(len(members))]
        cut = len(members) - int(round(VALID_FRACTION * len(members)))
        train.append(members[:cut])
        valid.append(members[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(valid))


def make_split(n: int, images: np.ndarray, labels: np.ndarray, pool: np.ndarray,
               rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``n`` tiled examples from the image ids in ``pool``: x (n, 1, 56, 56), y (n,), and per
    tile (row-major cells) its image id, shift (dy, dx) and flip, for the tests."""
    y = np.arange(n, dtype=np.int64) % N_CLASSES
    tile_classes = np.empty((n, 4), dtype=np.int64)
    for i, label in enumerate(y):
        k = int(label) + 1
        drawn = rng.choice(SOURCE_CLASSES, size=k, replace=False)
        tile_classes[i] = np.repeat(drawn, MULTISETS[k])[rng.permutation(4)]
    instances = np.empty((n, 4), dtype=np.int64)
    for c in range(SOURCE_CLASSES):
        where = tile_classes == c
        members = pool[labels[pool] == c]
        instances[where] = members[rng.randint(len(members), size=int(where.sum()))]
    shifts = rng.randint(-SHIFT, SHIFT + 1, size=(n, 4, 2))
    flips = rng.randint(2, size=(n, 4)).astype(bool)
    tiles = images[instances]
    tiles = np.where(flips[..., None, None], tiles[..., ::-1], tiles)
    padded = np.pad(tiles, ((0, 0), (0, 0), (SHIFT, SHIFT), (SHIFT, SHIFT)))
    rows = (SHIFT - shifts[..., 0])[..., None] + np.arange(TILE)
    cols = (SHIFT - shifts[..., 1])[..., None] + np.arange(TILE)
    shifted = padded[np.arange(n)[:, None, None, None], np.arange(4)[None, :, None, None],
                     rows[..., :, None], cols[..., None, :]]
    grid = shifted.reshape(n, 2, 2, TILE, TILE).transpose(0, 1, 3, 2, 4)
    x = (grid.reshape(n, *INPUT_SHAPE) / np.float32(255)).astype(np.float32)
    order = rng.permutation(n)
    tiles_info = {"instances": instances[order], "shifts": shifts[order], "flips": flips[order]}
    return x[order], y[order], tiles_info


def generate(seed: int, size: str = "default") -> tuple[TaskData, dict[str, np.ndarray]]:
    """The task's data plus its provenance: ``train_pool`` / ``valid_pool`` (training-image ids)
    and, per split, ``<split>_instances`` (ids into the train or test file), ``_shifts``,
    ``_flips`` -- what the tests use to check the source-level separation."""
    counts = split_sizes(SIZES, size)
    source = load_source()
    rng = np.random.RandomState(seed)
    train_pool, valid_pool = split_instances(source["train_labels"], rng)
    test_pool = np.arange(len(source["test_labels"]))
    sources: dict[str, np.ndarray] = {"train_pool": train_pool, "valid_pool": valid_pool}
    splits = {}
    for name, n, pool, file in (("train", counts[0], train_pool, "train"),
                                ("valid", counts[1], valid_pool, "train"),
                                ("test", counts[2], test_pool, "test")):
        x, y, info = make_split(n, source[f"{file}_images"], source[f"{file}_labels"], pool, rng)
        splits[name] = Split(x, y)
        sources.update({f"{name}_{key}": value for key, value in info.items()})
    metadata = {
        "codename": NAME, "task_type": CLASSIFICATION, "n_classes": N_CLASSES,
        "input_shape": list(INPUT_SHAPE), "mirrors": "CIFARTile",
        "label_rule": "number of distinct Fashion-MNIST classes among the four tiles - 1",
        "jitter_px": SHIFT, "flip_p": 0.5, "pixel_range": [0.0, 1.0],
        "train_pool_size": int(len(train_pool)), "valid_pool_size": int(len(valid_pool)),
        "source_sha256": source["source_sha256"],
        "source_files": [f for pair in FILES.values() for f in pair],
    }
    data = TaskData(NAME, INPUT_SHAPE, CLASSIFICATION, splits, num_classes=N_CLASSES,
                    metadata=metadata)
    return data, sources


def make_fashiontile(seed: int, size: str = "default") -> TaskData:
    """The ``fashiontile`` splits for ``seed`` (deterministic; a private RandomState)."""
    return generate(seed, size)[0]


register_task(TaskSpec(
    name=NAME,
    description=("CIFARTile-style: a 2x2 grid of jittered, randomly flipped Fashion-MNIST images "
                 "(1x56x56); label = number of distinct clothing classes - 1 (4 classes). Train, "
                 "valid and test use disjoint images."),
    mirrors="CIFARTile (Unseen NAS)",
    input_shape=INPUT_SHAPE,
    task_type=CLASSIFICATION,
    metric="accuracy",
    source="Debian dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)",
    install=INSTALL,
    version="1",
    generator=make_fashiontile,
    num_classes=N_CLASSES,
))
