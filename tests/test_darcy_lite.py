"""darcy_lite: a correct finite-volume solver, deterministic independent splits, the Unseen-NAS
file round trip, a clear missing-source error, and a tiny network that beats the mean field."""

from __future__ import annotations

import importlib.util
import sys
import time

import numpy as np
import pytest
from task_checks import checksum

import einspace
from einspace.tasks.darcy_lite import (
    HIGH,
    INSTALL,
    LOW,
    NAME,
    make_darcy,
    permeability,
    solve_pressure,
)
from einspace.tasks.data import REGRESSION
from einspace.tasks.recipe import Recipe
from einspace.tasks.registry import TaskError, get_task
from einspace.tasks.trainer import train

needs_source = pytest.mark.skipif(importlib.util.find_spec("scipy") is None,
                                  reason=f"scipy is not installed ({INSTALL})")
SHAPE = (1, 32, 32)
# sha256 of the permeability inputs of make_darcy(0, "small") (binary fields from the legacy
# RandomState stream, so stable across NumPy versions); the solved targets are float results of
# FFT/SuperLU and are compared with a tolerance instead.
KNOWN_X = "60bba99494b945ae380accbdd5ccf837b20a540e81b8bbfd03015a9f9fc9217d"


def relative_l2(prediction: np.ndarray, target: np.ndarray) -> float:
    diff = (prediction - target).reshape(len(target), -1)
    return float(np.mean(np.linalg.norm(diff, axis=1)
                         / np.linalg.norm(target.reshape(len(target), -1), axis=1)))


@pytest.fixture(scope="module")
def small():
    return make_darcy(0, "small")


@needs_source
def test_solver_matches_the_poisson_solution():
    # a = 1: -Laplace(u) = 1 on the unit square has max u = 0.07367 at the centre; a = 3 divides u
    # by 3; and the discrete equation holds at every interior node for a random field.
    assert solve_pressure(np.ones((65, 65))).max() == pytest.approx(0.073671, abs=2e-5)
    u3 = solve_pressure(np.full((33, 33), 3.0))
    np.testing.assert_allclose(u3 * 3, solve_pressure(np.ones((33, 33))), rtol=1e-10)
    a = permeability(np.random.RandomState(3))
    u = solve_pressure(a)
    assert not u[[0, -1]].any() and not u[:, [0, -1]].any()
    h2 = 1 / 31 ** 2
    i, j = 10, 17
    flux = 0.0
    for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        k = 2 * a[i, j] * a[i + di, j + dj] / (a[i, j] + a[i + di, j + dj])
        flux += k * (u[i, j] - u[i + di, j + dj]) / h2
    assert flux == pytest.approx(1.0, rel=1e-8)


@needs_source
def test_same_seed_same_arrays_other_seed_different(small):
    again = make_darcy(0, "small")
    assert checksum(again) == checksum(small)
    assert checksum(make_darcy(1, "small")) != checksum(small)


@needs_source
def test_checksum(small):
    assert checksum(small, parts=("x",), layout=False) == KNOWN_X
    assert float(small.split("train").y.sum()) == pytest.approx(99549.87, rel=1e-4)


@needs_source
def test_shapes_values_and_target_scale(small):
    assert small.input_shape == SHAPE and small.target_shape == SHAPE
    assert small.task_type == REGRESSION and small.num_classes is None
    for name, n in (("train", 120), ("valid", 40), ("test", 40)):
        split = small.split(name)
        assert split.x.shape == (n, *SHAPE) and split.x.dtype == np.float32
        assert split.y.shape == (n, *SHAPE) and split.y.dtype == np.float32
        assert set(np.unique(split.x)) <= {LOW, HIGH}
        assert (split.y > 0)[:, :, 1:-1, 1:-1].all() and (split.y[:, :, 0] == 0).all()
    assert 0.3 < (small.split("train").x == HIGH).mean() < 0.7  # the threshold splits evenly
    assert np.sqrt(np.mean(small.split("train").y ** 2)) == pytest.approx(1.0, rel=1e-5)
    meta = small.metadata
    assert meta["codename"] == NAME and meta["target_shape"] == list(SHAPE)
    assert len(meta["source_sha256"]) == 64 and meta["target_scale"] > 1


@needs_source
def test_no_permeability_field_is_shared_between_splits(small):
    def fields(name):
        return {row.tobytes() for row in small.split(name).x}

    train, valid, test = fields("train"), fields("valid"), fields("test")
    assert len(train) == 120 and len(valid) == 40 and len(test) == 40  # no duplicates either
    assert not train & valid and not train & test and not valid & test


def test_spec_is_registered():
    spec = get_task(NAME)
    assert spec.install == INSTALL and spec.metric == "neg_relative_l2"
    assert spec.target_shape == SHAPE and spec.num_classes is None
    assert Recipe().with_overrides(**spec.recipe).batch_size == 16


def test_missing_source_names_the_install_command(monkeypatch):
    for module in ("scipy", "scipy.sparse", "scipy.sparse.linalg"):
        monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    with pytest.raises(TaskError, match=INSTALL):
        make_darcy(0, "small")


@pytest.mark.slow
@needs_source
def test_default_size_is_fast_and_a_tiny_mlp_beats_the_mean_field():
    began = time.perf_counter()
    data = make_darcy(0, "default")
    seconds = time.perf_counter() - began
    assert seconds < 60
    assert [len(data.split(s)) for s in ("train", "valid", "test")] == [1_000, 100, 100]
    valid = data.split("valid").y
    mean_field = relative_l2(np.broadcast_to(data.split("train").y.mean(0), valid.shape), valid)
    mlp = ("(routing im2col1k1s0p (routing permute21 (sequential (computation linear256) "
           "(sequential (computation leakyrelu) (computation linear1024))) permute21) identity)")
    recipe = Recipe().with_overrides(**get_task(NAME).recipe, epochs=5, device="cpu",
                                     metric="neg_relative_l2")
    result = train(lambda: einspace.build(einspace.parse(mlp), SHAPE, output_shape=SHAPE), data,
                   recipe)
    print(f"darcy_lite default generation {seconds:.2f} s; tiny MLP relative L2 "
          f"{-result.score:.3f} vs mean field {mean_field:.3f}")
    assert result.status == "ok" and -result.score < 0.8 * mean_field
