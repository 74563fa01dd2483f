"""The training recipe and trainer: learning on tiny synthetic tasks, determinism, train-only
normalisation, early stops and budgets, and failed candidates that never outrank working ones."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import einspace
from einspace.blocks.progress import PROGRESS_BUFFER, progress_buffer
from einspace.errors import ConfigError
from einspace.tasks.data import CLASSIFICATION, REGRESSION, Split, TaskData
from einspace.tasks.recipe import Recipe
from einspace.tasks.status import Status
from einspace.tasks.trainer import (
    OUT_OF_MEMORY,
    STOP,
    Normalizer,
    TrainResult,
    _Feeder,
    _to_device,
    evaluate,
    fit_normalizer,
    resolve_device,
    train,
)

MLP = "(sequential (routing im2col8k8s0p (computation linear32) identity) (computation leakyrelu))"
FAST = Recipe(batch_size=64, epochs=4, lr=0.05, device="cpu")


def quadrant_images(n: int, seed: int, offset: float = 3.0):
    """1x8x8 noise with one bright quadrant; the class is the quadrant.  The constant offset
    makes un-normalised inputs far from zero-mean."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = offset + 0.5 * rng.standard_normal((n, 1, 8, 8))
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 2.0
    return x.astype(np.float32), y.astype(np.int64)


def classification_task() -> TaskData:
    (xt, yt), (xv, yv) = quadrant_images(512, 0), quadrant_images(256, 1)
    return TaskData("quadrants", (1, 8, 8), CLASSIFICATION,
                    {"train": Split(xt, yt), "valid": Split(xv, yv)}, num_classes=4)


def regression_task() -> TaskData:
    rng = np.random.default_rng(2)
    xt, xv = (rng.standard_normal((n, 1, 8, 8)).astype(np.float32) * 2 + 1 for n in (256, 128))
    return TaskData("affine", (1, 8, 8), REGRESSION,
                    {"train": Split(xt, 0.5 * xt - 1), "valid": Split(xv, 0.5 * xv - 1)},
                    target_shape=(1, 8, 8))


def mlp():
    return einspace.build(einspace.parse(MLP), (1, 8, 8), num_classes=4)


def trace(result: TrainResult):
    return [(r.epoch, r.train_loss, r.score, r.lr) for r in result.history]


class Scaled(nn.Module):
    """A working classifier whose logits are multiplied by ``factor`` (nan makes it diverge)."""

    def __init__(self, factor: float = 1.0):
        super().__init__()
        self.net = mlp()
        self.factor = factor

    def forward(self, x):
        return self.net(x) * self.factor


class Raises(nn.Module):
    def __init__(self, error: BaseException):
        super().__init__()
        self.fc = nn.Linear(64, 4)
        self.error = error

    def forward(self, x):
        raise self.error


class Probe(nn.Module):
    """Records the progress buffer and the mean of its inputs at every training forward."""

    def __init__(self):
        super().__init__()
        self.register_buffer(PROGRESS_BUFFER, progress_buffer())
        self.fc = nn.Linear(64, 4)
        self.progress, self.means = [], []

    def forward(self, x):
        if self.training:
            self.progress.append(float(self.training_progress))
            self.means.append(float(x.mean()))
        return self.fc(x.flatten(1))


def test_classification_learns_well_above_chance():
    result = train(mlp, classification_task(), FAST)
    assert result.status == "ok" and result.reason == "" and result.device == "cpu"
    assert result.epochs_run == 4 and len(result.history) == 4
    assert result.score == result.history[-1].score > 0.8          # chance is 0.25
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert all(r.seconds >= 0 for r in result.history) and result.seconds > 0


def test_regression_scores_minus_mse_and_learns():
    data = regression_task()
    build = lambda: einspace.build(einspace.parse("(computation identity)"), (1, 8, 8),  # noqa: E731
                                   output_shape=(1, 8, 8))
    result = train(build, data, Recipe(batch_size=32, epochs=6, lr=0.05, device="cpu"),
                   keep_model=True)
    assert result.status == "ok"
    baseline = -float(np.var(data.split("valid").y))             # predicting the mean
    assert baseline < -0.5
    assert 0.05 * baseline < result.score <= 0
    assert evaluate(result.model, data, recipe=FAST) == pytest.approx(result.score, rel=1e-5)
    rel = evaluate(result.model, data, recipe=FAST.with_overrides(metric="neg_relative_l2"))
    assert -0.5 < rel < 0


def test_two_cpu_runs_are_bit_identical():
    data = classification_task()
    first, second = train(mlp, data, FAST), train(mlp, data, FAST)
    assert trace(first) == trace(second)
    other = train(mlp, data, FAST.with_overrides(seed=1))
    assert trace(other) != trace(first)


def test_normalisation_uses_train_statistics_only():
    data = classification_task()
    train_x = data.split("train").x
    data = TaskData(data.name, data.input_shape, data.task_type,
                    {"train": data.split("train"),
                     "valid": Split(data.split("valid").x * 10 + 50, data.split("valid").y)},
                    num_classes=4)
    norm = fit_normalizer(data)
    assert norm.channel_axis == 0
    np.testing.assert_allclose(norm.mean, [train_x.astype(np.float64).mean()], rtol=1e-9)
    np.testing.assert_allclose(norm.std, [train_x.astype(np.float64).std()], rtol=1e-9)
    probe = Probe()
    train(probe, data, FAST.with_overrides(epochs=1))
    assert abs(float(np.mean(probe.means))) < 0.05              # raw mean is about 3.5


def test_chunked_statistics_per_channel_match_numpy():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((37, 3, 5, 4)) * np.array([1, 2, 3])[:, None, None] + \
        np.array([-1, 0, 7])[:, None, None]
    x[:, 1] = 4.0                                               # a constant channel
    norm = Normalizer.fit(x, chunk_elements=100)                # many uneven chunks
    np.testing.assert_allclose(norm.mean, x.mean((0, 2, 3)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(norm.std, [x[:, 0].std(), 1.0, x[:, 2].std()], rtol=1e-10)
    tokens = rng.standard_normal((20, 6, 5)) + np.arange(5)     # (N, D): per feature
    norm = Normalizer.fit(tokens, chunk_elements=7)
    assert norm.channel_axis == -1
    np.testing.assert_allclose(norm.mean, tokens.mean((0, 1)), rtol=1e-10)


def test_memory_mapped_splits_train_like_in_memory_ones(tmp_path):
    data = classification_task()
    splits = {}
    for name, split in data.splits.items():
        np.save(tmp_path / f"{name}_x.npy", split.x)
        splits[name] = Split(np.load(tmp_path / f"{name}_x.npy", mmap_mode="r"), split.y)
    mapped = TaskData(data.name, data.input_shape, data.task_type, splits, num_classes=4)
    recipe = FAST.with_overrides(epochs=1)
    assert trace(train(mlp, mapped, recipe)) == trace(train(mlp, data, recipe))


def test_non_finite_eval_output_fails():
    class NanWhenEvaluated(Scaled):
        def forward(self, x):
            out = super().forward(x)
            return out if self.training else out * math.nan

    result = train(NanWhenEvaluated, classification_task(), FAST)
    assert result.status == "failed" and result.epochs_run == 0
    assert result.reason == "non-finite output on split 'valid' after epoch 1"


def test_callback_can_stop_and_sees_metrics():
    seen = []

    def stop_after_two(epoch, metrics):
        seen.append((epoch, metrics))
        return STOP if epoch == 2 else None

    result = train(mlp, classification_task(), FAST, callback=stop_after_two)
    assert result.status == "stopped" and result.epochs_run == 2
    assert "callback" in result.reason and result.score == result.history[-1].score
    assert [e for e, _ in seen] == [1, 2]
    assert {"epoch", "train_loss", "score", "seconds", "lr", "elapsed"} <= set(seen[0][1])
    result = train(mlp, classification_task(), FAST, callback=lambda e, m: False)
    assert result.status == "stopped" and result.epochs_run == 1


def test_ok_means_trained_to_the_end_and_a_stopped_run_still_ranks_by_score():
    """``ok`` is a full-budget result; a run stopped early is not ok, but it has a score and
    ranks among the scored results, above every failed one."""
    done = TrainResult(Status.OK, 0.4)
    stopped = TrainResult(Status.STOPPED, 0.6)
    failed = TrainResult(Status.FAILED, -math.inf)
    assert done.ok and not stopped.ok and not failed.ok
    assert done.scored and stopped.scored and not failed.scored
    assert sorted([stopped, failed, done]) == [failed, done, stopped]
    assert TrainResult("ok", 0.1).ok, "a status read back as plain text is the same status"
    result = train(mlp, classification_task(), FAST, callback=lambda e, m: False)
    assert result.status == Status.STOPPED and result.scored and not result.ok
    assert train(mlp, classification_task(), FAST.with_overrides(epochs=1)).ok


def test_time_budget_stops_after_the_epoch_that_exceeds_it():
    result = train(mlp, classification_task(), FAST.with_overrides(max_seconds=1e-6))
    assert result.status == "ok" and result.epochs_run == 1
    assert "time budget" in result.reason and math.isfinite(result.score)


def test_nan_model_fails_and_ranks_below_every_working_one():
    data = classification_task()
    bad = train(lambda: Scaled(math.nan), data, FAST)
    assert bad.status == "failed" and bad.score == -math.inf and not bad.ok
    assert "non-finite" in bad.reason and bad.epochs_run == 0
    good = train(mlp, data, FAST.with_overrides(epochs=1))
    awful = TrainResult("ok", -1e30)                           # e.g. a huge regression error
    assert sorted([good, bad, awful]) == [bad, awful, good]
    assert max([bad, awful]) is awful and bad < awful


def test_nan_on_regression_never_beats_a_bad_working_model():
    data = regression_task()

    class NanDense(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, x):
            return x * self.w * math.nan

    bad = train(NanDense, data, FAST)
    assert bad.status == "failed" and bad.score == -math.inf
    assert sorted([TrainResult("ok", -1e9), bad])[0] is bad


def test_exception_in_forward_fails_with_its_type_and_message():
    result = train(Raises(ValueError("bad shapes here")), classification_task(), FAST)
    assert result.status == "failed" and result.score == -math.inf
    assert result.reason == "ValueError: bad shapes here"
    broken = train(lambda: einspace.build(einspace.parse(MLP), (1, 8, 8), num_classes=3),
                   classification_task(), FAST)
    assert broken.status == "failed" and "output shape" in broken.reason


def test_builder_errors_fail_the_candidate():
    def builder():
        raise einspace.ShapeError("does not fit")

    result = train(builder, classification_task(), FAST)
    assert result.status == "failed" and result.reason == "ShapeError: does not fit"


@pytest.mark.parametrize("error", [MemoryError(), torch.cuda.OutOfMemoryError("CUDA oom"),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory")])
def test_out_of_memory_fails_as_out_of_memory(error):
    result = train(Raises(error), classification_task(), FAST)
    assert result.status == "failed" and result.reason == OUT_OF_MEMORY
    assert result.score == -math.inf


def test_callback_errors_propagate():
    def broken(epoch, metrics):
        raise KeyError("callback bug")

    with pytest.raises(KeyError):
        train(mlp, classification_task(), FAST, callback=broken)


def test_progress_buffer_runs_from_zero_to_one():
    probe = Probe()
    train(probe, classification_task(), FAST.with_overrides(epochs=2))
    steps = 2 * (512 // 64)
    assert len(probe.progress) == steps
    assert probe.progress[0] == 0 and probe.progress == sorted(probe.progress)
    assert probe.progress[-1] == pytest.approx((steps - 1) / steps)
    assert float(probe.training_progress) == 1.0


def test_cosine_schedule_is_per_step():
    result = train(mlp, classification_task(), FAST)
    steps = 4 * 8
    lrs = [r.lr for r in result.history]
    expected = [0.05 * 0.5 * (1 + math.cos(math.pi * (8 * e - 1) / steps)) for e in (1, 2, 3, 4)]
    assert lrs == pytest.approx(expected)
    flat = train(mlp, classification_task(), FAST.with_overrides(schedule="constant", epochs=1))
    assert flat.history[0].lr == 0.05


def test_recipe_defaults_and_overrides():
    r = Recipe()
    assert (r.optimizer, r.lr, r.momentum, r.weight_decay, r.batch_size, r.schedule) == \
        ("sgd", 0.04, 0.9, 3e-4, 256, "cosine")
    assert (r.epochs, r.eval_epochs, r.max_seconds, r.normalize, r.seed, r.device) == \
        (8, 64, None, True, 0, "auto")
    assert r.for_final().epochs == 64
    assert Recipe.from_dict({"weight_decay": "5e-4", "epochs": 25}) == \
        Recipe(weight_decay=5e-4, epochs=25)
    assert Recipe.from_dict(None) == r
    assert Recipe.from_dict({"lr": 0.1}, base=FAST).batch_size == 64
    with pytest.raises(ConfigError, match=r"unknown training recipe key 'learning_rate'.*"
                                          r"valid keys: .*batch_size.*lr"):
        Recipe.from_dict({"learning_rate": 0.1})
    for bad in ({"lr": 0}, {"lr": -1}, {"lr": "fast"}, {"batch_size": 0}, {"epochs": 2.5},
                {"momentum": 1.0}, {"optimizer": "adam"}, {"schedule": "step"},
                {"device": "tpu"}, {"max_seconds": 0}, {"normalize": "yes"}, {"seed": True}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Recipe.from_dict(bad)
    with pytest.raises(ConfigError):
        r.with_overrides(nope=1)


def test_data_errors_raise_instead_of_failing():
    data = classification_task()
    with pytest.raises(ConfigError, match="no split 'test'"):
        train(mlp, data, FAST, eval_split="test")
    withheld = TaskData(data.name, data.input_shape, data.task_type,
                        {**data.splits, "test": Split(data.split("valid").x, None)},
                        num_classes=4)
    with pytest.raises(ConfigError, match="no targets"):
        train(mlp, withheld, FAST, eval_split="test")
    with pytest.raises(ConfigError, match="does not fit"):
        train(mlp, data, FAST.with_overrides(metric="neg_mse"))


def test_device_choice(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_adamw_and_no_normalisation_run():
    result = train(mlp, classification_task(),
                   FAST.with_overrides(optimizer="adamw", lr=0.01, normalize=False, epochs=2))
    assert result.status == "ok" and result.score > 0.5


def test_device_resident_batches_match_numpy_batches():
    """The GPU data path (split copied to the device once, indexed there), run on the CPU."""
    data = regression_task()
    split = Split(data.split("train").x.astype(np.float64), data.split("train").y)
    norm = fit_normalizer(data)
    cpu = torch.device("cpu")
    host = _Feeder(split, REGRESSION, norm, cpu)
    resident = _Feeder(split, REGRESSION, norm, cpu, resident=True)
    assert resident.x.dtype == torch.float32                    # float64 is halved on the device
    index = torch.tensor([3, 5, 200])
    for a, b in zip(host.batch(index), resident.batch(index), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    labels = _to_device(np.arange(10, dtype=np.int32), cpu, np.dtype("int64"))
    assert labels.dtype == torch.int64 and labels.tolist() == list(range(10))
    again = _Feeder(split, REGRESSION, norm, cpu, resident=True)
    assert again.x is resident.x                                # copied once per array
