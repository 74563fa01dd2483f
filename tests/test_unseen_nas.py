"""Loader and writer for the Unseen-NAS directory format, on tiny generated directories."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from einspace.errors import EinspaceError
from einspace.tasks.data import CLASSIFICATION, REGRESSION, SPLITS, Split, TaskData
from einspace.tasks.unseen_nas import (
    DataFormatError,
    load_unseen_nas,
    task_from_spec,
    write_unseen_nas,
)

SIZES = {"train": 12, "valid": 6, "test": 6}


def make_dir(
    root: Path,
    shape: tuple[int, ...] = (3, 8, 8),
    classes: int = 4,
    metadata: dict | str | None = None,
    test_y: bool = True,
    seed: int = 0,
) -> Path:
    """A dataset in the real format: float32 x, int64 y, optional JSON ``metadata``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for s, n in SIZES.items():
        np.save(root / f"{s}_x.npy", rng.standard_normal((n, *shape)).astype(np.float32))
        if s != "test" or test_y:
            np.save(root / f"{s}_y.npy", np.arange(n, dtype=np.int64) % classes)
    if metadata is not None:
        text = metadata if isinstance(metadata, str) else json.dumps(metadata)
        (root / "metadata").write_text(text)
    return root


def raises(match: str, root: Path, **kw) -> str:
    with pytest.raises(DataFormatError, match=match) as info:
        load_unseen_nas(root, **kw)
    return str(info.value)


# ----------------------------------------------------------------------------- metadata variants


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (  # 2021 generator (data_packager.py)
            {"batch_size": 64, "n_classes": 4, "lr": 0.01, "benchmark": 91.5, "name": "Mateo"},
            {"batch_size": 64, "num_classes": 4, "lr": 0.01, "benchmark": 91.5,
             "codename": "Mateo"},
        ),
        (  # competition labels file
            {"batch_size": 64, "n_classes": 4, "lr": 0.01, "benchmark": 91.55,
             "codename": "eval_dataset_0"},
            {"num_classes": 4, "codename": "eval_dataset_0", "benchmark": 91.55},
        ),
        (  # kit README / DataProcessor docstring
            {"num_classes": 4, "codename": "Adaline", "input_shape": [3, 8, 8], "benchmark": 80},
            {"num_classes": 4, "codename": "Adaline", "input_shape": (3, 8, 8)},
        ),
        (  # 2025/26 harness
            {"num_classes": 4, "codename": "x", "time_limit": 0.5},
            {"time_limit": 0.5},
        ),
        (  # our own generators
            {"n_classes": 4, "task_type": "classification", "metric": "accuracy",
             "generator_version": "1", "seed": 7, "source": "built-in", "extra": [1]},
            {"num_classes": 4, "task_type": CLASSIFICATION, "metric": "accuracy",
             "generator_version": "1", "seed": 7, "source": "built-in", "extra": [1]},
        ),
    ],
    ids=["generator-2021", "competition", "kit-readme", "time-limit", "own-keys"],
)
def test_metadata_variants_normalised(tmp_path, metadata, expected):
    data = load_unseen_nas(make_dir(tmp_path / "ds", metadata=metadata))
    for key, value in expected.items():
        assert data.metadata[key] == value, key
    assert "n_classes" not in data.metadata
    assert data.num_classes == 4 and data.input_shape == (3, 8, 8)
    assert data.task_type == CLASSIFICATION


def test_no_metadata_infers_everything(tmp_path):
    data = load_unseen_nas(make_dir(tmp_path / "mine", classes=3))
    assert data.num_classes == 3 and data.name == "mine"
    assert data.metadata["codename"] == "mine"
    assert data.metadata["input_shape"] == (3, 8, 8)
    assert data.split("train").y.dtype == np.int64


def test_codename_beats_name_which_stays(tmp_path):
    meta = {"codename": "Caitie", "name": "cifartile-variant"}
    data = load_unseen_nas(make_dir(tmp_path / "d", metadata=meta))
    assert data.metadata["codename"] == "Caitie"
    assert data.metadata["name"] == "cifartile-variant"


def test_conflicting_aliases(tmp_path):
    root = make_dir(tmp_path / "d", metadata={"n_classes": 4, "num_classes": 5})
    msg = raises("keys disagree", root)
    assert "n_classes=4" in msg and "num_classes=5" in msg and "metadata" in msg


@pytest.mark.parametrize(
    ("meta", "key"),
    [({"n_classes": "ten"}, "n_classes"), ({"batch_size": 0}, "batch_size"),
     ({"lr": True}, "lr"), ({"input_shape": [3, -8, 8]}, "input_shape"),
     ({"task_type": "segmentation"}, "task_type")],
)
def test_bad_metadata_values(tmp_path, meta, key):
    msg = raises(f"key '{key}'", make_dir(tmp_path / "d", metadata=meta))
    assert "metadata" in msg and "expected" in msg


def test_declared_input_shape_must_match(tmp_path):
    root = make_dir(tmp_path / "d", metadata={"input_shape": [3, 28, 28]})
    msg = raises("input_shape", root)
    assert "[3, 28, 28]" in msg and "[3, 8, 8]" in msg


def test_malformed_json(tmp_path):
    root = make_dir(tmp_path / "d", metadata='{"n_classes": 4,')
    msg = raises("malformed JSON", root)
    assert str(root / "metadata") in msg


def test_metadata_not_an_object(tmp_path):
    raises("expected a JSON object", make_dir(tmp_path / "d", metadata="[1, 2]"))


# ----------------------------------------------------------------------------- arrays


def test_missing_test_y_is_allowed(tmp_path):
    data = load_unseen_nas(make_dir(tmp_path / "d", test_y=False))
    assert data.split("test").y is None
    assert len(data.split("test")) == 6


def test_missing_file_names_it_and_lists_found(tmp_path):
    root = make_dir(tmp_path / "d", metadata={})
    (root / "valid_y.npy").unlink()
    msg = raises("missing valid_y.npy", root)
    assert "found:" in msg and "train_x.npy" in msg and "metadata" in msg


def test_not_a_directory(tmp_path):
    raises("not a directory", tmp_path / "nowhere")


def test_channel_axis_added(tmp_path):
    root = make_dir(tmp_path / "d", shape=(8, 8))
    data = load_unseen_nas(root)
    assert data.input_shape == (1, 8, 8)
    assert data.split("valid").x.shape == (6, 1, 8, 8)


def test_per_sample_shapes_must_agree(tmp_path):
    root = make_dir(tmp_path / "d")
    np.save(root / "valid_x.npy", np.zeros((6, 3, 8, 9), np.float32))
    msg = raises("valid_x.npy", root)
    assert "(3, 8, 9)" in msg and "(3, 8, 8)" in msg


def test_wrong_rank(tmp_path):
    root = make_dir(tmp_path / "d")
    np.save(root / "train_x.npy", np.zeros((12, 64), np.float32))
    raises(r"train_x.npy: inputs have shape \(12, 64\)", root)


def test_len_x_differs_from_len_y(tmp_path):
    root = make_dir(tmp_path / "d")
    np.save(root / "test_y.npy", np.zeros(5, np.int64))
    msg = raises("test_y.npy", root)
    assert "5 labels for 6 inputs" in msg


def test_string_inputs_refused(tmp_path):
    root = make_dir(tmp_path / "d")
    np.save(root / "train_x.npy", np.array(["a"] * 12))
    raises("train_x.npy: inputs have dtype", root)


def test_memory_mapped_when_asked(tmp_path):
    root = make_dir(tmp_path / "d")
    assert isinstance(load_unseen_nas(root).split("train").x, np.memmap)
    assert not isinstance(load_unseen_nas(root, mmap=False).split("train").x, np.memmap)
    chanless = make_dir(tmp_path / "e", shape=(8, 8))
    assert isinstance(load_unseen_nas(chanless).split("train").x, np.memmap)


class _Marker:
    """Unpickling this creates a file: proof that the loader executed a pickle."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("mmap", [True, False])
def test_pickled_object_array_refused_without_executing(tmp_path, mmap):
    root = make_dir(tmp_path / "d")
    marker = tmp_path / "executed"
    arr = np.empty(12, dtype=object)
    arr[:] = [_Marker(str(marker)) for _ in range(12)]
    np.save(root / "train_y.npy", arr, allow_pickle=True)
    assert not marker.exists()
    msg = raises("train_y.npy", root, mmap=mmap)
    assert "Python objects" in msg and "refusing" in msg
    assert not marker.exists()


def test_raw_pickle_under_npy_name_refused(tmp_path):
    import pickle

    root = make_dir(tmp_path / "d")
    marker = tmp_path / "executed"
    (root / "valid_x.npy").write_bytes(pickle.dumps(_Marker(str(marker))))
    msg = raises("valid_x.npy", root)
    assert "not a valid .npy file" in msg
    assert not marker.exists()


def test_error_is_an_einspace_error():
    assert issubclass(DataFormatError, EinspaceError)


# ----------------------------------------------------------------------------- labels


def test_float_labels_holding_integers_accepted(tmp_path):
    root = make_dir(tmp_path / "d")
    np.save(root / "train_y.npy", (np.arange(12) % 4).astype(np.float32))
    y = load_unseen_nas(root).split("train").y
    assert y.dtype == np.int64 and list(y[:5]) == [0, 1, 2, 3, 0]


def test_one_hot_and_column_labels_accepted(tmp_path):
    root = make_dir(tmp_path / "d")
    np.save(root / "train_y.npy", np.eye(4, dtype=np.float32)[np.arange(12) % 4])
    np.save(root / "valid_y.npy", (np.arange(6) % 4)[:, None])
    data = load_unseen_nas(root)
    assert list(data.split("train").y[:4]) == [0, 1, 2, 3]
    assert data.split("valid").y.shape == (6,)


def test_not_one_hot(tmp_path):
    root = make_dir(tmp_path / "d")
    np.save(root / "train_y.npy", np.full((12, 4), 0.25, np.float32))
    raises("train_y.npy: labels of shape .* are not one-hot", root)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.r_[np.arange(11) % 4, 2.5], "label 2.5 at index 11 is not an integer"),
        (np.r_[np.nan, np.arange(11) % 4], "labels contain nan .*index 0"),
        (np.r_[np.arange(11) % 4, -1], r"label -1 is outside \[0, 4\)"),
    ],
    ids=["non-integer", "nan", "negative"],
)
def test_bad_labels(tmp_path, labels, match):
    root = make_dir(tmp_path / "d")
    np.save(root / "train_y.npy", labels)
    raises(f"train_y.npy: {match}", root)


def test_labels_beyond_declared_classes(tmp_path):
    root = make_dir(tmp_path / "d", classes=6, metadata={"n_classes": 4})
    msg = raises(r"train_y.npy: label 5 is outside \[0, 4\)", root)
    assert "declared in metadata" in msg


# ----------------------------------------------------------------------------- known datasets


def test_known_dataset_accepted_and_class_count_filled(tmp_path):
    # chesseract is stored 12x8x8; tiny labels cover only 2 of its 3 classes
    data = load_unseen_nas(make_dir(tmp_path / "chesseract", shape=(12, 8, 8), classes=2))
    assert data.num_classes == 3 and data.input_shape == (12, 8, 8)


def test_known_language_without_channel_axis(tmp_path):
    data = load_unseen_nas(make_dir(tmp_path / "Language", shape=(24, 24), classes=10))
    assert data.input_shape == (1, 24, 24) and data.num_classes == 10


def test_known_dataset_wrong_shape(tmp_path):
    root = make_dir(tmp_path / "data", shape=(3, 32, 32))
    msg = raises("addnist expects per-sample shape", root, name="addnist")
    assert "(3, 28, 28)" in msg and "(3, 32, 32)" in msg


def test_known_dataset_wrong_class_count(tmp_path):
    root = make_dir(tmp_path / "cifartile", shape=(3, 64, 64), metadata={"n_classes": 10})
    raises("cifartile expects 4 classes, found 10", root)


def test_known_dataset_labels_beyond_its_classes(tmp_path):
    root = make_dir(tmp_path / "gutenberg", shape=(1, 27, 18), classes=8)
    raises(r"label 7 is outside \[0, 6\) \(6 classes of the known dataset\)", root)


# ----------------------------------------------------------------------------- regression


def make_regression(root: Path, target: tuple[int, ...] = (1, 8, 8)) -> Path:
    make_dir(root, metadata={"task_type": "regression", "metric": "relative_l2"})
    rng = np.random.default_rng(1)
    for s, n in SIZES.items():
        np.save(root / f"{s}_y.npy", rng.standard_normal((n, *target)).astype(np.float32))
    return root


def test_regression_targets(tmp_path):
    data = load_unseen_nas(make_regression(tmp_path / "darcy"))
    assert data.task_type == REGRESSION and data.target_shape == (1, 8, 8)
    assert data.num_classes is None and data.metadata["target_shape"] == (1, 8, 8)
    assert data.split("valid").y.dtype == np.float32
    assert "num_classes" not in data.metadata


def test_regression_target_shapes_must_agree(tmp_path):
    root = make_regression(tmp_path / "d")
    np.save(root / "test_y.npy", np.zeros((6, 1, 4, 4), np.float32))
    raises("test_y.npy: per-sample target shape", root)


def test_regression_nan_targets(tmp_path):
    root = make_regression(tmp_path / "d")
    np.save(root / "valid_y.npy", np.full((6, 1, 8, 8), np.nan, np.float32))
    raises("valid_y.npy: regression targets contain NaN", root)


def test_known_name_with_regression_metadata(tmp_path):
    root = make_regression(tmp_path / "d", target=(1,))
    raises("isabella is a classification dataset, found regression", root, name="isabella")


# ----------------------------------------------------------------------------- writing


def _assert_same(a: TaskData, b: TaskData) -> None:
    assert (a.name, a.input_shape, a.task_type, a.num_classes, a.target_shape) == (
        b.name, b.input_shape, b.task_type, b.num_classes, b.target_shape)
    for s in SPLITS:
        np.testing.assert_array_equal(a.split(s).x, b.split(s).x, strict=True)
        if a.split(s).y is None:
            assert b.split(s).y is None
        else:
            np.testing.assert_array_equal(a.split(s).y, b.split(s).y, strict=True)


def _task(name: str, test_y: bool = True) -> TaskData:
    rng = np.random.default_rng(2)
    splits = {
        s: Split(rng.standard_normal((n, 2, 5, 7)).astype(np.float32),
                 None if s == "test" and not test_y else rng.integers(0, 3, n).astype(np.int64))
        for s, n in SIZES.items()
    }
    meta = {"codename": "Tess", "benchmark": 55.5, "seed": 3, "n_classes": 3, "note": "hi"}
    return TaskData(name, (2, 5, 7), CLASSIFICATION, splits, num_classes=3, metadata=meta)


@pytest.mark.parametrize("test_y", [True, False])
def test_write_load_round_trip(tmp_path, test_y):
    original = _task("tess", test_y)
    root = write_unseen_nas(tmp_path / "tess", original)
    loaded = load_unseen_nas(root)
    _assert_same(original, loaded)
    assert loaded.metadata == {
        "codename": "Tess", "benchmark": 55.5, "seed": 3, "num_classes": 3, "note": "hi",
        "input_shape": (2, 5, 7), "task_type": CLASSIFICATION,
    }
    on_disk = json.loads((root / "metadata").read_text())
    assert "n_classes" not in on_disk and on_disk["num_classes"] == 3
    again = load_unseen_nas(write_unseen_nas(tmp_path / "copy" / "tess", loaded))
    _assert_same(loaded, again)
    assert again.metadata == loaded.metadata


def test_write_removes_stale_test_y(tmp_path):
    root = write_unseen_nas(tmp_path / "tess", _task("tess", test_y=True))
    write_unseen_nas(root, _task("tess", test_y=False))
    assert not (root / "test_y.npy").exists()
    assert load_unseen_nas(root).split("test").y is None


def test_regression_round_trip(tmp_path):
    loaded = load_unseen_nas(make_regression(tmp_path / "darcy"), mmap=False)
    again = load_unseen_nas(write_unseen_nas(tmp_path / "out" / "darcy", loaded))
    _assert_same(loaded, again)
    assert again.metadata == loaded.metadata


def test_write_refuses_missing_train_targets(tmp_path):
    task = _task("t")
    splits = dict(task.splits, train=Split(task.split("train").x, None))
    bad = TaskData("t", task.input_shape, CLASSIFICATION, splits, num_classes=3)
    with pytest.raises(DataFormatError, match="no targets for 'train'"):
        write_unseen_nas(tmp_path / "t", bad)


# ----------------------------------------------------------------------------- --task spec


def test_task_from_spec(tmp_path):
    root = make_dir(tmp_path / "mine", classes=5)
    data = task_from_spec(f"unseen:{root}")
    assert data.name == "mine" and data.num_classes == 5


def test_task_from_spec_relative_path(tmp_path, monkeypatch):
    make_dir(tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    assert task_from_spec("unseen:mine").name == "mine"


@pytest.mark.parametrize(
    ("spec", "match"),
    [("cifar10", "task 'cifar10' is not understood; use unseen:"),
     ("unseen:", "names no directory"),
     ("nb360:/x", "'nb360:/x' is not understood")],
)
def test_task_from_spec_bad(spec, match):
    with pytest.raises(DataFormatError, match=match):
        task_from_spec(spec)


def test_task_from_spec_missing_dir(tmp_path):
    with pytest.raises(DataFormatError, match="not a directory"):
        task_from_spec(f"unseen:{tmp_path / 'absent'}")
    assert not os.path.exists(tmp_path / "absent")
