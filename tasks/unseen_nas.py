"""The Unseen-NAS directory format: read it safely, validate it, and write it.

A dataset is one directory holding ``{train,valid,test}_{x,y}.npy`` and a JSON file ``metadata``
(no extension). Real releases drift: the 2021 generator, the competition kit and its README name
the metadata keys differently, ``test_y.npy`` is withheld in a competition, and some tools save
images without a channel axis. This module accepts all of that and rejects everything else with a
:class:`DataFormatError` naming the file and the problem, because a data mistake found an hour into
a search is far more expensive than one found at load time.

Safety: arrays are read with ``allow_pickle=False`` after the ``.npy`` header has been checked, so
a pickled object array is refused without being unpickled (unpickling runs arbitrary code).
Large ``x`` arrays are memory-mapped so multi-gigabyte sets (CIFARTile, GeoClassing, Isabella)
stay off the heap; batches are cast to float32 when used.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np

from einspace.errors import EinspaceError
from einspace.tasks.data import CLASSIFICATION, REGRESSION, SPLITS, Split, TaskData

METADATA_FILE = "metadata"
SPEC_PREFIX = "unseen:"

# Known datasets (Geada et al., CVPR 2024): per-sample (C, H, W) as stored, and class count.
# Only shapes and classes are checked; split sizes differ between sources, so N is never fixed.
KNOWN_DATASETS: dict[str, tuple[tuple[int, ...], int]] = {
    "addnist": ((3, 28, 28), 20),
    "language": ((1, 24, 24), 10),
    "multnist": ((3, 28, 28), 10),
    "cifartile": ((3, 64, 64), 4),
    "gutenberg": ((1, 27, 18), 6),
    "isabella": ((1, 64, 128), 4),
    "geoclassing": ((3, 64, 64), 10),
    "chesseract": ((12, 8, 8), 3),  # einspace pads it to 12x18x18 later; the files hold 8x8
}

# Canonical metadata key -> the spellings seen across releases (canonical first).
METADATA_ALIASES: dict[str, tuple[str, ...]] = {
    "num_classes": ("num_classes", "n_classes"),
    "codename": ("codename", "name"),
    "input_shape": ("input_shape",),
    "benchmark": ("benchmark",),
    "batch_size": ("batch_size",),
    "lr": ("lr",),
    "time_limit": ("time_limit",),
    "task_type": ("task_type",),
    "metric": ("metric",),
    "generator_version": ("generator_version",),
    "seed": ("seed",),
    "source": ("source",),
    "target_shape": ("target_shape",),
}
_POSITIVE_INT_KEYS = ("num_classes", "batch_size")
_NUMBER_KEYS = ("benchmark", "lr", "time_limit")
_STRING_KEYS = ("codename", "metric", "source")
_SHAPE_KEYS = ("input_shape", "target_shape")


class DataFormatError(EinspaceError):
    """A dataset directory or file that does not follow the Unseen-NAS format."""


# ----------------------------------------------------------------------------- reading arrays


def _npy_name(split: str, part: str) -> str:
    return f"{split}_{part}.npy"


def _check_npy_header(path: Path) -> None:
    """Refuse object dtypes and non-.npy files from the header alone, before np.load runs."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                _, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:  # version 3.0 (utf-8 field names): np.load itself refuses objects
                return
    except (ValueError, OSError, SyntaxError, EOFError) as e:
        raise DataFormatError(f"{path}: not a valid .npy file ({e})") from None
    if dtype.hasobject:
        raise DataFormatError(
            f"{path}: holds Python objects (dtype {dtype}), which would have to be unpickled; "
            "refusing to load it (re-save it as a numeric array with allow_pickle=False)"
        )


def _load_array(path: Path, mmap: bool) -> np.ndarray:
    """Load one array without pickles; memory-map it if asked (and if it has any elements)."""
    _check_npy_header(path)
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as e:
        if "pickle" in str(e) or "Python objects" in str(e):
            raise DataFormatError(
                f"{path}: holds pickled Python objects; refusing to unpickle it"
            ) from None
        if mmap and "empty" in str(e):  # a zero-length array cannot be memory-mapped
            return np.load(path, allow_pickle=False)
        raise DataFormatError(f"{path}: cannot be read as a .npy array ({e})") from None
    except OSError as e:
        raise DataFormatError(f"{path}: cannot be read ({e})") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive saved under a .npy name
        raise DataFormatError(f"{path}: is an .npz archive, expected a single .npy array")
    return arr


def _check_files(root: Path) -> None:
    """Every file but test_y.npy is required; name all the missing ones and what is there."""
    if not root.is_dir():
        raise DataFormatError(f"{root}: not a directory (expected an Unseen-NAS dataset directory)")
    required = [_npy_name(s, p) for s in SPLITS for p in ("x", "y") if (s, p) != ("test", "y")]
    missing = [n for n in required if not (root / n).is_file()]
    if missing:
        found = sorted(p.name for p in root.iterdir()) or ["nothing"]
        raise DataFormatError(f"{root}: missing {', '.join(missing)} (found: {', '.join(found)})")


def _read_x(path: Path, mmap: bool) -> np.ndarray:
    """Inputs as (N, C, H, W); (N, H, W) gets a channel axis; numeric dtypes only."""
    x = _load_array(path, mmap)
    if x.dtype.kind not in "fiub":
        raise DataFormatError(f"{path}: inputs have dtype {x.dtype}, expected a numeric dtype")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataFormatError(
            f"{path}: inputs have shape {x.shape}, expected (N, C, H, W) or (N, H, W)"
        )
    return x


def _check_inputs(path: Path, x: np.ndarray) -> None:
    """A split has samples and finite inputs: one NaN in the data turns every candidate's loss
    into NaN, so the whole search would fail trial by trial instead of once, here.  Checked in
    chunks of rows so that a memory-mapped set is read once and never held whole."""
    if len(x) == 0:
        raise DataFormatError(f"{path}: no samples (an empty split can be neither trained on nor "
                              "scored)")
    if x.dtype.kind != "f":
        return
    rows = max(1, (64 << 20) // max(1, x[0].nbytes))
    for start in range(0, len(x), rows):
        finite = np.isfinite(x[start:start + rows])
        if not finite.all():
            index = np.unravel_index(np.argmin(finite), finite.shape)
            what = "NaN" if np.isnan(x[start:start + rows][index]) else "infinity"
            where = (start + int(index[0]), *map(int, index[1:]))
            raise DataFormatError(f"{path}: inputs contain {what} (first at index {where}); "
                                  "inputs must be finite")


# ----------------------------------------------------------------------------- labels


def _class_ids(path: Path, y: np.ndarray) -> np.ndarray:
    """Labels as int64 (N,): from integers, floats that hold integers, (N, 1) or one-hot (N, K)."""
    if y.dtype.kind not in "fiub":
        raise DataFormatError(f"{path}: labels have dtype {y.dtype}, expected integer class ids")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        return _from_one_hot(path, y)
    if y.ndim != 1:
        raise DataFormatError(
            f"{path}: labels have shape {y.shape}, expected (N,) class ids or (N, K) one-hot"
        )
    if y.dtype.kind == "f":
        _check_integral(path, y)
    return np.asarray(y, dtype=np.int64)


def _check_integral(path: Path, y: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise DataFormatError(
            f"{path}: labels contain {y[bad[0]]} (first at index {bad[0]}); class ids must be "
            "finite integers"
        )
    bad = np.flatnonzero(y != np.round(y))
    if bad.size:
        raise DataFormatError(
            f"{path}: label {y[bad[0]]} at index {bad[0]} is not an integer class id"
        )


def _from_one_hot(path: Path, y: np.ndarray) -> np.ndarray:
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataFormatError(f"{path}: one-hot labels contain NaN or infinity")
    if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
        raise DataFormatError(
            f"{path}: labels of shape {y.shape} are not one-hot (each row must hold a single 1)"
        )
    return y.argmax(axis=1).astype(np.int64)


def _regression_targets(path: Path, y: np.ndarray) -> np.ndarray:
    """Targets as float32 (N, *target_shape), finite."""
    if y.dtype.kind not in "fiu":
        raise DataFormatError(f"{path}: targets have dtype {y.dtype}, expected floats")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataFormatError(f"{path}: regression targets contain NaN or infinity")
    return y if y.dtype == np.float32 else y.astype(np.float32)


# ----------------------------------------------------------------------------- metadata


def _read_metadata(root: Path) -> tuple[dict[str, Any], Path | None]:
    """The metadata JSON object ({} when the file is absent, which is allowed)."""
    path = root / METADATA_FILE
    if not path.is_file():
        path = root / (METADATA_FILE + ".json")
    if not path.is_file():
        return {}, None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}: malformed JSON ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataFormatError(f"{path}: cannot be read ({e})") from None
    if not isinstance(raw, dict):
        raise DataFormatError(f"{path}: expected a JSON object, found {type(raw).__name__}")
    return raw, path


def normalize_metadata(raw: dict[str, Any], where: str = "metadata") -> dict[str, Any]:
    """Map every spelling of a key to its canonical name and check its type.

    Unknown keys are kept as they are (later releases add keys; dropping them would lose
    information). Two spellings with different values are an error, except that ``codename``
    wins over the 2021 ``name`` (which then stays under ``name``).
    """
    out: dict[str, Any] = {}
    used: set[str] = set()
    for canon, spellings in METADATA_ALIASES.items():
        present = [k for k in spellings if k in raw]
        if not present:
            continue
        if canon == "codename":
            present = present[:1]
        elif len({json.dumps(raw[k], sort_keys=True) for k in present}) > 1:
            listing = ", ".join(f"{k}={raw[k]!r}" for k in present)
            raise DataFormatError(f"{where}: keys disagree ({listing})")
        used.update(present)
        out[canon] = _check_value(where, present[0], canon, raw[present[0]])
    for key, value in raw.items():
        if key not in used:
            out.setdefault(key, value)
    return out


def _check_value(where: str, key: str, canon: str, value: Any) -> Any:
    """Type-check one metadata value; shapes become tuples, integral floats become ints."""

    def fail(expected: str) -> DataFormatError:
        return DataFormatError(f"{where}: key {key!r} is {value!r}, expected {expected}")

    if value is None:
        return None
    if canon in _POSITIVE_INT_KEYS or canon == "seed":
        if not _is_integral(value) or (canon != "seed" and value < 1):
            raise fail("a positive integer" if canon != "seed" else "an integer")
        return int(value)
    if canon in _NUMBER_KEYS:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise fail("a number")
        if not math.isfinite(value):
            raise fail("a finite number")
        return int(value) if isinstance(value, numbers.Integral) else float(value)
    if canon in _SHAPE_KEYS:
        if not isinstance(value, (list, tuple)) or not all(
            _is_integral(v) and v >= 1 for v in value
        ):
            raise fail("a list of positive integers")
        return tuple(int(v) for v in value)
    if canon == "task_type":
        if value not in (CLASSIFICATION, REGRESSION):
            raise fail(f"{CLASSIFICATION!r} or {REGRESSION!r}")
        return value
    if canon in _STRING_KEYS and not isinstance(value, str):
        raise fail("a string")
    if canon == "generator_version" and (
        isinstance(value, bool) or not isinstance(value, (str, int, float))
    ):
        raise fail("a string or number")
    return value


def _is_integral(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return isinstance(value, numbers.Real) and float(value).is_integer()


# ----------------------------------------------------------------------------- validation


def _common_shape(root: Path, arrays: dict[str, np.ndarray], part: str) -> tuple[int, ...]:
    """The per-sample shape every split shares, or an error naming the first that differs."""
    shape = tuple(arrays["train"].shape[1:])
    for s in SPLITS[1:]:
        other = tuple(arrays[s].shape[1:])
        if other != shape:
            raise DataFormatError(
                f"{root / _npy_name(s, part)}: per-sample shape {other} differs from "
                f"{_npy_name('train', part)}'s {shape}"
            )
    return shape


def _check_lengths(root: Path, xs: dict[str, np.ndarray], ys: dict[str, Any]) -> None:
    for s in SPLITS:
        if ys[s] is not None and len(ys[s]) != len(xs[s]):
            raise DataFormatError(
                f"{root / _npy_name(s, 'y')}: {len(ys[s])} labels for {len(xs[s])} inputs in "
                f"{_npy_name(s, 'x')}"
            )


def _check_meta_shape(where: str, meta: dict, shape: tuple[int, ...]) -> None:
    """A declared input_shape must match the arrays (with or without the added channel axis)."""
    declared = meta.get("input_shape")
    if declared is None or declared == shape or (shape[0] == 1 and declared == shape[1:]):
        return
    raise DataFormatError(
        f"{where}: input_shape {list(declared)} does not match the arrays' per-sample shape "
        f"{list(shape)}"
    )


def _resolve_num_classes(
    root: Path, ys: dict[str, np.ndarray | None], declared: int | None, known: int | None
) -> int:
    """Declared count, else the known dataset's, else inferred; labels must lie in [0, K)."""
    labelled = {s: y for s, y in ys.items() if y is not None and len(y)}
    top = max((int(y.max()) for y in labelled.values()), default=-1)
    k = declared or known or max(top + 1, 1)
    why = "declared in metadata" if declared else "of the known dataset" if known else "inferred"
    for s, y in labelled.items():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= k:
            raise DataFormatError(
                f"{root / _npy_name(s, 'y')}: label {lo if lo < 0 else hi} is outside "
                f"[0, {k}) ({k} classes {why})"
            )
    return k


def _check_known(
    where: str, name: str, task_type: str, shape: tuple[int, ...], declared: int | None
) -> int | None:
    """Compare against the published dataset of that name; return its class count (or None)."""
    known = KNOWN_DATASETS.get(name.lower())
    if known is None:
        return None
    want_shape, want_classes = known
    if task_type != CLASSIFICATION:
        raise DataFormatError(f"{where}: {name} is a classification dataset, found {task_type}")
    if shape != want_shape:
        raise DataFormatError(
            f"{where}: {name} expects per-sample shape {want_shape}, found {shape}"
        )
    if declared is not None and declared != want_classes:
        raise DataFormatError(f"{where}: {name} expects {want_classes} classes, found {declared}")
    return want_classes


# ----------------------------------------------------------------------------- public API


def load_unseen_nas(
    root: str | os.PathLike, name: str | None = None, mmap: bool = True
) -> TaskData:
    """Load an Unseen-NAS dataset directory into a :class:`TaskData`.

    ``name`` defaults to the directory's name; when it is one of :data:`KNOWN_DATASETS` the
    shapes and class count are checked against the published dataset. With ``mmap`` the inputs
    (and regression targets) are memory-mapped read-only rather than read into memory.
    """
    root = Path(root).expanduser()
    _check_files(root)
    raw_meta, meta_path = _read_metadata(root)
    where = str(meta_path or root)
    meta = normalize_metadata(raw_meta, where)
    name = name or root.resolve().name
    task_type = meta.get("task_type") or CLASSIFICATION

    xs = {s: _read_x(root / _npy_name(s, "x"), mmap) for s in SPLITS}
    shape = _common_shape(root, xs, "x")
    for s in SPLITS:
        _check_inputs(root / _npy_name(s, "x"), xs[s])
    _check_meta_shape(where, meta, shape)
    ys = _read_targets(root, task_type, mmap)
    _check_lengths(root, xs, ys)

    splits = {s: Split(xs[s], ys[s]) for s in SPLITS}
    meta.update(input_shape=shape, task_type=task_type)
    meta.setdefault("codename", name)
    known = _check_known(where, name, task_type, shape, meta.get("num_classes"))
    if task_type == REGRESSION:
        return _regression_task(root, where, name, splits, meta)
    k = _resolve_num_classes(root, ys, meta.get("num_classes"), known)
    meta["num_classes"] = k
    return TaskData(name, shape, task_type, splits, num_classes=k, metadata=meta)


def _read_targets(root: Path, task_type: str, mmap: bool) -> dict[str, np.ndarray | None]:
    ys: dict[str, np.ndarray | None] = {}
    for s in SPLITS:
        path = root / _npy_name(s, "y")
        if not path.is_file():  # only test_y may be absent (checked in _check_files)
            ys[s] = None
        elif task_type == REGRESSION:
            ys[s] = _regression_targets(path, _load_array(path, mmap))
        else:
            ys[s] = _class_ids(path, _load_array(path, mmap=False))
    return ys


def _regression_task(
    root: Path, where: str, name: str, splits: dict[str, Split], meta: dict
) -> TaskData:
    labelled = {s: sp.y for s, sp in splits.items() if sp.y is not None}
    target = tuple(labelled["train"].shape[1:])
    for s, y in labelled.items():
        if tuple(y.shape[1:]) != target:
            raise DataFormatError(
                f"{root / _npy_name(s, 'y')}: per-sample target shape {tuple(y.shape[1:])} "
                f"differs from train_y.npy's {target}"
            )
    declared = meta.get("target_shape")
    if declared is not None and declared != target:
        raise DataFormatError(
            f"{where}: target_shape {list(declared)} does not match the targets' {list(target)}"
        )
    meta["target_shape"] = target
    meta.pop("num_classes", None)
    return TaskData(
        name, meta["input_shape"], REGRESSION, splits, target_shape=target, metadata=meta
    )


def write_unseen_nas(root: str | os.PathLike, data: TaskData) -> Path:
    """Write ``data`` as an Unseen-NAS directory (no pickles, canonical metadata keys).

    The built-in tasks use this so one loader serves them and the real datasets. A withheld
    ``test`` target (``y is None``) means no ``test_y.npy``; a stale one is removed so a later
    load cannot pick it up. Returns the directory.
    """
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        split = data.splits.get(s)
        if split is None:
            raise DataFormatError(f"{root}: task {data.name!r} has no {s!r} split to write")
        if split.y is None and s != "test":
            raise DataFormatError(f"{root}: task {data.name!r} has no targets for {s!r}")
        _save(root / _npy_name(s, "x"), split.x)
        y_path = root / _npy_name(s, "y")
        if split.y is None:
            y_path.unlink(missing_ok=True)
        else:
            _save(y_path, split.y)
    meta = _metadata_to_write(data)
    (root / METADATA_FILE).write_text(
        json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return root


def _save(path: Path, arr: np.ndarray) -> None:
    try:
        np.save(path, np.asarray(arr), allow_pickle=False)
    except ValueError as e:
        raise DataFormatError(f"{path}: cannot be written without pickling ({e})") from None


def _metadata_to_write(data: TaskData) -> dict[str, Any]:
    """Canonical metadata: the task's own fields override whatever its metadata dict says."""
    meta = normalize_metadata(dict(data.metadata), f"metadata of task {data.name!r}")
    meta.update(input_shape=list(data.input_shape), task_type=data.task_type)
    if data.task_type == REGRESSION:
        meta.pop("num_classes", None)
        meta["target_shape"] = list(data.target_shape or ())
    else:
        meta.pop("target_shape", None)
        meta["num_classes"] = data.num_classes
    return {k: list(v) if isinstance(v, tuple) else v for k, v in meta.items()}


def spec_directory(spec: str) -> str:
    """The directory an ``unseen:/path/to/dir`` task value names."""
    if not spec.startswith(SPEC_PREFIX):
        raise DataFormatError(
            f"task {spec!r} is not understood; use {SPEC_PREFIX}/path/to/dataset_dir"
        )
    path = spec[len(SPEC_PREFIX) :]
    if not path:
        raise DataFormatError(f"task {spec!r} names no directory; use {SPEC_PREFIX}/path/to/dir")
    return path


def task_from_spec(spec: str) -> TaskData:
    """Resolve a ``--task`` value; ``unseen:/path/to/dir`` loads that Unseen-NAS directory."""
    return load_unseen_nas(spec_directory(spec))
