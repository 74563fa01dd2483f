"""T1 addnist_lite / multnist_lite: determinism, digit-instance disjointness of the splits, shapes,
class balance, labels that follow the arithmetic rule, the on-disk round trip, the missing-source
error, generation speed and that a tiny CNN learns something."""

import sys
import time

import numpy as np
import pytest
from task_checks import checksum

import einspace
from einspace.tasks import _digit_canvas as canvas
from einspace.tasks import addnist_lite, multnist_lite
from einspace.tasks.recipe import Recipe
from einspace.tasks.registry import TaskError, get_task
from einspace.tasks.trainer import train

pytest.importorskip("sklearn")

TASKS = ("addnist_lite", "multnist_lite")
MAKERS = {"addnist_lite": addnist_lite.make_addnist_lite,
          "multnist_lite": multnist_lite.make_multnist_lite}
DIGIT_TASKS = {"addnist_lite": addnist_lite.TASK, "multnist_lite": multnist_lite.TASK}


@pytest.mark.parametrize("task", TASKS)
def test_deterministic_per_seed(task):
    a, b, c = MAKERS[task](0, "small"), MAKERS[task](0, "small"), MAKERS[task](1, "small")
    assert checksum(a) == checksum(b)
    assert checksum(a) != checksum(c)


def test_global_rng_untouched():
    np.random.seed(5)
    before = np.random.get_state()[1].copy()
    addnist_lite.make_addnist_lite(0, "small")
    assert np.array_equal(np.random.get_state()[1], before)


@pytest.mark.parametrize("task", TASKS)
def test_shapes_balance_and_range(task):
    spec = get_task(task)
    data = MAKERS[task](3, "small")
    k = spec.num_classes
    assert data.num_classes == k and data.input_shape == (3, 16, 16) == spec.input_shape
    assert data.metadata["n_classes"] == k and data.metadata["codename"] == task
    assert len(data.metadata["source_sha256"]) == 64
    for name, n in zip(("train", "valid", "test"), canvas.SIZES["small"], strict=True):
        split = data.splits[name]
        assert split.x.shape == (n, 3, 16, 16) and split.x.dtype == np.float32
        assert split.y.dtype == np.int64
        assert 0.0 <= split.x.min() and split.x.max() <= 1.0
        counts = np.bincount(split.y, minlength=k)
        assert counts.max() - counts.min() <= 1 and len(counts) == k
        assert not np.array_equal(split.y[:k], np.arange(k))  # shuffled, not in cyclic order


@pytest.mark.parametrize("task", TASKS)
def test_labels_follow_the_rule_and_digits_are_placed(task):
    data, sources = canvas.generate(DIGIT_TASKS[task], 2, "small")
    images, labels, _ = canvas.load_source()
    scaled = images.astype(np.float32) / 16
    rule = DIGIT_TASKS[task].rule
    offsets_seen = set()
    for name in ("train", "valid", "test"):
        split, ids = data.splits[name], sources[f"{name}_instances"]
        for x, y, triple in zip(split.x, split.y, ids, strict=True):
            assert rule(*(int(labels[i]) for i in triple)) == y
            for channel, instance in zip(x, triple, strict=True):
                # the channel is the instance's 8x8 image somewhere on a zero canvas
                hits = [(r, c) for r in range(9) for c in range(9)
                        if np.array_equal(channel[r:r + 8, c:c + 8], scaled[instance])
                        and channel.sum() == pytest.approx(scaled[instance].sum())]
                assert hits
                offsets_seen.update(hits)
    assert len(offsets_seen) > 40  # offsets vary over the 9x9 positions


@pytest.mark.parametrize("task", TASKS)
def test_digit_instances_disjoint_between_train_and_eval(task):
    data, sources = canvas.generate(DIGIT_TASKS[task], 4, "small")
    train_pool, eval_pool = set(sources["train_pool"]), set(sources["eval_pool"])
    assert not train_pool & eval_pool and len(train_pool | eval_pool) == 1797
    assert 0.65 < len(train_pool) / 1797 < 0.75
    assert set(sources["train_instances"].ravel()) <= train_pool
    for name in ("valid", "test"):
        assert set(sources[f"{name}_instances"].ravel()) <= eval_pool
    # the same at the pixel level: no valid/test channel holds a training digit image
    images, _, _ = canvas.load_source()
    train_images = {(images[i].astype(np.float32) / 16).tobytes() for i in train_pool}
    for name in ("valid", "test"):
        for channel in data.splits[name].x.reshape(-1, 16, 16):
            assert not any(channel[r:r + 8, c:c + 8].tobytes() in train_images
                           for r in range(9) for c in range(9))


def test_triples_cover_the_classes():
    add = canvas.triples_by_class(addnist_lite.addition_label, 20)
    assert sum(len(t) for t in add) == 1000 - 1 - 84  # no (0,0,0); 84 triples sum to 21..27
    assert all((t.sum(1) - 1 == k).all() for k, t in enumerate(add))
    mult = canvas.triples_by_class(multnist_lite.multiplication_label, 10)
    assert sum(len(t) for t in mult) == 1000 and all(len(t) for t in mult)


def test_missing_sklearn_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(TaskError, match="pip install scikit-learn"):
        addnist_lite.make_addnist_lite(0, "small")
    assert get_task("addnist_lite").install == "pip install scikit-learn"


def test_default_size_is_fast():
    start = time.perf_counter()
    data = addnist_lite.make_addnist_lite(0, "default")
    assert time.perf_counter() - start < 10
    assert [len(data.splits[s]) for s in ("train", "valid", "test")] == [8000, 2000, 2000]


@pytest.mark.slow
def test_tiny_cnn_beats_chance():
    """Two 3x3 conv layers + the global-pool head, 4 epochs (about 5 s on one CPU thread)."""
    data = addnist_lite.make_addnist_lite(0, "default")
    layer = "(sequential (routing im2col{} (computation linear{}) col2im) (computation leakyrelu))"
    text = f"(sequential {layer.format('3k1s1p', 16)} {layer.format('3k2s1p', 32)})"
    result = train(lambda: einspace.build(einspace.parse(text), data.input_shape,
                                          num_classes=data.num_classes), data,
                   Recipe(epochs=4, batch_size=64, lr=3e-3, optimizer="adamw", weight_decay=0.0,
                          device="cpu"))
    print(f"addnist_lite tiny CNN accuracy {result.score:.3f} (chance 0.050)")
    assert result.status == "ok" and result.score > 0.07

