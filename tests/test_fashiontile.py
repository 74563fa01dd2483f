"""fashiontile: determinism, image-disjoint splits, the CIFARTile label rule and tile rendering,
shapes, class balance, the IDX reader, a clear missing-source error and generation speed."""

from __future__ import annotations

import re
import struct
import time

import numpy as np
import pytest
from task_checks import checksum

from einspace.tasks import fashiontile
from einspace.tasks.data import CLASSIFICATION
from einspace.tasks.fashiontile import INSTALL, MULTISETS, NAME, SIZES, generate, make_fashiontile
from einspace.tasks.registry import TaskError, get_task


def _source_present() -> bool:
    try:
        fashiontile.source_dir()
    except TaskError:
        return False
    return True


needs_source = pytest.mark.skipif(not _source_present(),
                                  reason=f"Fashion-MNIST is not installed ({INSTALL})")

# sha256 of make_fashiontile(0, "small") for the dataset-fashion-mnist
# 0.0~git20200523.55506a9-1 files (whose sha256 is KNOWN_SOURCE); compared only for those files.
KNOWN_SOURCE = "4a71d4777581c890b38127a8a192322e4690c2ee33465085284c01ed3bb0f6e0"
KNOWN_SMALL = "67c72e4b31f97ef534d3219611d6ec8be2f77fb6930baac2a7354d0fb34aa607"


@pytest.fixture(scope="module")
def small():
    return generate(0, "small")


@needs_source
def test_same_seed_same_arrays_other_seed_different(small):
    assert checksum(make_fashiontile(0, "small")) == checksum(small[0])
    assert checksum(make_fashiontile(1, "small")) != checksum(small[0])


@needs_source
def test_checksum(small):
    if small[0].metadata["source_sha256"] != KNOWN_SOURCE:
        pytest.skip("a different release of the Fashion-MNIST files")
    assert checksum(small[0]) == KNOWN_SMALL


@needs_source
def test_global_rng_untouched():
    np.random.seed(5)
    before = np.random.get_state()[1].copy()
    make_fashiontile(0, "small")
    assert np.array_equal(np.random.get_state()[1], before)


@needs_source
def test_shapes_types_range_and_balance(small):
    data = small[0]
    assert data.input_shape == (1, 56, 56) and data.num_classes == 4
    assert data.task_type == CLASSIFICATION
    for name, n in zip(("train", "valid", "test"), SIZES["small"], strict=True):
        split = data.split(name)
        assert split.x.shape == (n, 1, 56, 56) and split.x.dtype == np.float32
        assert split.y.shape == (n,) and split.y.dtype == np.int64
        assert split.x.min() == 0.0 and split.x.max() <= 1.0
        assert (np.bincount(split.y, minlength=4) == n // 4).all()
        assert not np.array_equal(split.y[:4], np.arange(4))  # shuffled
    meta = data.metadata
    assert meta["codename"] == NAME and meta["n_classes"] == 4 and len(meta["source_sha256"]) == 64


@needs_source
def test_labels_follow_the_rule_and_tiles_are_jittered_images(small):
    data, sources = small
    source = fashiontile.load_source()
    for name in ("train", "valid", "test"):
        file = "test" if name == "test" else "train"
        images, labels = source[f"{file}_images"], source[f"{file}_labels"]
        split = data.split(name)
        ids, shifts, flips = (sources[f"{name}_{key}"] for key in ("instances", "shifts", "flips"))
        for x, y, tile_ids, tile_shifts, tile_flips in zip(split.x, split.y, ids, shifts, flips,
                                                           strict=True):
            counts = np.unique(labels[tile_ids], return_counts=True)[1]
            assert len(counts) == y + 1
            assert tuple(sorted(counts, reverse=True)) == MULTISETS[int(y) + 1]
            for t, (image, (dy, dx), flip) in enumerate(zip(images[tile_ids], tile_shifts,
                                                            tile_flips, strict=True)):
                canvas = np.zeros((36, 36), dtype=np.float32)
                canvas[4 + dy:32 + dy, 4 + dx:32 + dx] = (image[:, ::-1] if flip else image) / 255
                r, c = divmod(t, 2)
                np.testing.assert_array_equal(x[0, 28 * r:28 * r + 28, 28 * c:28 * c + 28],
                                              canvas[4:32, 4:32])
        assert {int(v) for v in shifts.ravel()} == set(range(-4, 5))
        assert 0.4 < flips.mean() < 0.6


@needs_source
def test_train_valid_and_test_images_are_disjoint(small):
    _, sources = small
    train_pool, valid_pool = set(sources["train_pool"]), set(sources["valid_pool"])
    assert not train_pool & valid_pool and len(train_pool | valid_pool) == 60_000
    assert len(valid_pool) == 10_000
    assert set(sources["train_instances"].ravel()) <= train_pool
    assert set(sources["valid_instances"].ravel()) <= valid_pool
    assert sources["test_instances"].max() < 10_000  # ids into the separate test file
    # The same at the pixel level: no valid or test tile shows an image that train can use.
    source = fashiontile.load_source()
    train_images = {source["train_images"][i].tobytes() for i in train_pool}
    shown = [source["train_images"][i] for i in sources["valid_instances"].ravel()]
    shown += [source["test_images"][i] for i in sources["test_instances"].ravel()]
    assert not any(image.tobytes() in train_images for image in shown)


def test_read_idx():
    values = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = struct.pack(">HBB3I", 0, 0x08, 3, 2, 3, 4) + values.tobytes()
    np.testing.assert_array_equal(fashiontile.read_idx(raw), values)
    with pytest.raises(TaskError, match="not an IDX file"):
        fashiontile.read_idx(b"\x00\x00\x0d\x03" + raw[4:])
    with pytest.raises(TaskError, match="header says"):
        fashiontile.read_idx(raw[:-1])


def test_spec_is_registered():
    spec = get_task(NAME)
    assert spec.install == INSTALL and spec.metric == "accuracy" and spec.num_classes == 4
    assert spec.input_shape == (1, 56, 56) and spec.generator is make_fashiontile


def test_missing_source_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(fashiontile, "SOURCE_DIR", tmp_path)
    monkeypatch.delenv(fashiontile.ENV, raising=False)
    with pytest.raises(TaskError, match=re.escape(INSTALL)):
        make_fashiontile(0, "small")


@pytest.mark.slow
@needs_source
def test_default_size_is_fast():
    fashiontile._load_source.cache_clear()
    began = time.perf_counter()
    data = make_fashiontile(0, "default")
    seconds = time.perf_counter() - began
    print(f"fashiontile default generation {seconds:.2f} s")
    assert seconds < 60
    assert [len(data.split(s)) for s in ("train", "valid", "test")] == [8000, 2000, 2000]
