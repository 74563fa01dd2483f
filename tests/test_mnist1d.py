"""T7 mnist1d: determinism with the global RNG restored, shapes and exact class balance, no
signal shared between splits, the on-disk round trip, the missing-package error, generation speed
and that a tiny 1x3-conv net beats chance."""

import random
import sys
import time

import numpy as np
import pytest
from task_checks import checksum

import einspace
from einspace.tasks import mnist1d as mnist1d_module
from einspace.tasks.data import TaskData
from einspace.tasks.recipe import Recipe
from einspace.tasks.registry import TaskError, get_task
from einspace.tasks.trainer import train

pytest.importorskip("mnist1d")


def test_deterministic_and_global_rng_restored():
    np.random.seed(11)
    random.seed(11)
    np_before, py_before = np.random.get_state()[1].copy(), random.getstate()
    a = mnist1d_module.make_mnist1d(0, "small")
    assert np.array_equal(np.random.get_state()[1], np_before)
    assert random.getstate() == py_before
    assert checksum(a) == checksum(mnist1d_module.make_mnist1d(0, "small"))
    assert checksum(a) != checksum(mnist1d_module.make_mnist1d(1, "small"))


def test_shapes_balance_and_metadata():
    data = mnist1d_module.make_mnist1d(2, "small")
    spec = get_task("mnist1d")
    assert data.input_shape == (1, 1, 40) == spec.input_shape and data.num_classes == 10
    assert data.metadata["codename"] == "mnist1d" and data.metadata["n_classes"] == 10
    assert len(data.metadata["source_sha256"]) == 64
    sizes = mnist1d_module.SIZES["small"]
    for name, per_class in zip(("train", "valid", "test"), sizes, strict=True):
        split = data.splits[name]
        assert split.x.shape == (10 * per_class, 1, 1, 40) and split.x.dtype == np.float32
        assert split.y.dtype == np.int64
        assert np.array_equal(np.bincount(split.y, minlength=10), np.full(10, per_class))
        assert np.isfinite(split.x).all()
        assert not np.array_equal(split.y[:10], np.sort(split.y[:10]))  # shuffled order


def test_no_signal_shared_between_splits():
    """Every signal is an independent warp of the templates, so the splits share no sample."""
    data = mnist1d_module.make_mnist1d(3, "small")
    rows = {name: {r.tobytes() for r in data.splits[name].x.reshape(len(data.splits[name]), -1)}
            for name in ("train", "valid", "test")}
    assert len(rows["train"]) == len(data.splits["train"])
    assert not rows["train"] & rows["valid"] and not rows["train"] & rows["test"]
    assert not rows["valid"] & rows["test"]


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(TaskError, match="pip install mnist1d"):
        mnist1d_module.make_mnist1d(0, "small")
    assert get_task("mnist1d").install == "pip install mnist1d"


@pytest.mark.slow
def test_default_size_is_fast():
    mnist1d_module.make_mnist1d(0, "small")  # the package import (matplotlib) is not generation
    start = time.perf_counter()
    data = mnist1d_module.make_mnist1d(0, "default")
    assert time.perf_counter() - start < 30
    assert [len(data.splits[s]) for s in ("train", "valid", "test")] == [8000, 1600, 2400]


@pytest.mark.slow
def test_tiny_conv_beats_chance():
    """Two 3x3 (= 1x3 on a 1x40 image) conv layers + global-pool head, 3 epochs on 4,000."""
    data = mnist1d_module.make_mnist1d(0, "default")
    train_split = data.splits["train"]
    small = TaskData(data.name, data.input_shape, data.task_type,
                     {"train": type(train_split)(train_split.x[:4000], train_split.y[:4000]),
                      "valid": data.splits["valid"]}, num_classes=10)
    layer = "(sequential (routing im2col{} (computation linear{}) col2im) (computation leakyrelu))"
    text = f"(sequential {layer.format('3k1s1p', 16)} {layer.format('3k2s1p', 32)})"
    result = train(lambda: einspace.build(einspace.parse(text), small.input_shape,
                                          num_classes=10), small,
                   Recipe(epochs=3, batch_size=64, lr=0.05, device="cpu"))
    print(f"mnist1d tiny conv accuracy {result.score:.3f} (chance 0.100)")
    assert result.status == "ok" and result.score > 0.2
