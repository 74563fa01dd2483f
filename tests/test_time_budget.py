"""The time model (fit, epoch work), the per-trial share, the time screen's decisions and that a
resumed search screens exactly as the uninterrupted one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from einspace import Budget, Sampler
from einspace.errors import ConfigError
from einspace.search import time_budget
from einspace.search.config import resolve
from einspace.search.loop import DONE, LoopTrial, SearchLoop
from einspace.search.run_dir import RunDir
from einspace.search.store import TrialStore
from einspace.search.strategies import Outcome, Proposal
from einspace.search.strategies.random_search import RandomSearch
from einspace.search.time_budget import (
    BACKWARD_FACTOR,
    EpochShape,
    TimeModel,
    TimeScreen,
    resolve_time_share,
    time_screen,
)
from einspace.seeds import load_seed
from einspace.tasks.data import Split, TaskData
from einspace.tasks.recipe import Recipe
from einspace.tasks.status import Status

SHAPE = (3, 8, 8)
SAMPLER = Sampler(budget=Budget(max_params=200_000, max_nodes=40, max_depth=10))


def task(train: int = 250, valid: int = 60, shape=SHAPE) -> TaskData:
    rng = np.random.default_rng(0)
    return TaskData("toy", shape, "classification",
                    {"train": Split(rng.normal(size=(train, *shape)).astype(np.float32),
                                    rng.integers(0, 10, train)),
                     "valid": Split(rng.normal(size=(valid, *shape)).astype(np.float32),
                                    rng.integers(0, 10, valid))},
                    num_classes=10)


def test_fit_recovers_an_exact_plane():
    points = [(f, a, 0.25 + 3e-9 * f + 2e-7 * a)
              for f, a in ((1e8, 1e5), (4e8, 9e6), (9e8, 2e6), (2e9, 5e7))]
    model = TimeModel.fit(points)
    assert (model.intercept, model.per_flop, model.per_activation) == pytest.approx(
        (0.25, 3e-9, 2e-7))
    assert model.predict(5e8, 1e6) == pytest.approx(0.25 + 3e-9 * 5e8 + 2e-7 * 1e6)


def test_fit_is_least_squares_on_relative_errors():
    xs = np.array([1.0, 2.0, 30.0, 400.0])
    ys = np.array([2.1, 2.9, 34.2, 380.8])
    slope, intercept = np.polyfit(xs, ys, 1, w=1 / ys)
    points = [(x, 0.0, y) for x, y in zip(xs, ys, strict=True)]
    model = TimeModel.fit(points, ("intercept", "per_flop"))
    assert (model.intercept, model.per_flop, model.per_activation) == pytest.approx(
        (intercept, slope, 0.0))


def test_fit_never_predicts_negative_time():
    points = [(1.0, 0.0, 1.0), (2.0, 0.0, 3.0)]  # exact line: y = 2x - 1
    model = TimeModel.fit(points, ("intercept", "per_flop"))
    # the negative intercept is refused; the better of the one-term fits remains
    slope = (1 + 2 / 3) / (1 + 4 / 9)  # minimises (b - 1)^2 + ((2b - 3) / 3)^2
    level = (1 + 1 / 3) / (1 + 1 / 9)  # minimises (a - 1)^2 + ((a - 3) / 3)^2
    by_slope = (slope - 1) ** 2 + (2 * slope / 3 - 1) ** 2
    by_level = (level - 1) ** 2 + (level / 3 - 1) ** 2
    expected = TimeModel(0.0, slope) if by_slope < by_level else TimeModel(level, 0.0)
    assert (model.intercept, model.per_flop) == pytest.approx(
        (expected.intercept, expected.per_flop))
    assert TimeModel.fit([(5.0, 0.0, 2.0)], ("per_flop",)) == TimeModel(0.0, 0.4, 0.0)
    with pytest.raises(ValueError):
        TimeModel.fit([])


def test_epoch_counts_whole_batches_backward_and_evaluation():
    shape = EpochShape.of(task(train=250, valid=60), Recipe(batch_size=64))
    assert (shape.batch_size, shape.steps, shape.eval_samples) == (64, 3, 60)
    assert shape.samples == BACKWARD_FACTOR * 3 * 64 + 60


@pytest.mark.parametrize("search, share", [
    ({"time_per_trial": "auto", "time": 600.0, "workers": 2, "trials": 20}, 60.0),
    ({"time_per_trial": "auto", "time": 600.0, "workers": 2, "trials": 4}, 150.0),
    ({"time_per_trial": "auto", "time": 600.0, "workers": 1, "trials": None}, 75.0),
    ({"time_per_trial": "auto", "time": None, "workers": 2, "trials": 20}, None),
    ({"time_per_trial": 90.0, "time": None, "workers": 2, "trials": 20}, 90.0),
    ({"time_per_trial": "off", "time": 600.0, "workers": 2, "trials": 20}, None),
])
def test_share_per_trial(search, share):
    assert resolve_time_share(search) == share


def test_config_reads_time_per_trial():
    assert resolve({}).search["time_per_trial"] == "auto"
    assert resolve({"search": {"time_per_trial": "90s"}}).search["time_per_trial"] == 90.0
    assert resolve({"search": {"time_per_trial": "2m"}}).search["time_per_trial"] == 120.0
    assert resolve({"search": {"time_per_trial": False}}).search["time_per_trial"] == "off"


@pytest.mark.parametrize("value", ["soon", -5, 0, True, [1]])
def test_config_errors_name_the_key(value):
    with pytest.raises(ConfigError, match=r"search\.time_per_trial"):
        resolve({"search": {"time_per_trial": value}})


def test_screen_rejects_an_over_share_candidate_and_keeps_a_small_one():
    data = task(shape=(1, 28, 28))
    recipe = Recipe(epochs=8, batch_size=64)
    small, large = (Proposal(load_seed(name), f"seed:{name}") for name in ("mlp", "resnet18"))
    calibration = [(0.0, 0.0, 0.5), (1e9, 0.0, 1.5)]  # 0.5 s + 1 s per GFLOP of epoch work
    probe_screen = TimeScreen(data, recipe, None, calibration)
    small_s, large_s = (8 * probe_screen.epoch_estimate(p) for p in (small, large))
    assert small_s == pytest.approx(8 * (0.5 + probe_screen.work(small)[0] / 1e9))
    assert small_s < large_s
    share = (small_s + large_s) / 2
    screen = TimeScreen(data, recipe, share, calibration)
    assert screen(small) is None
    assert screen(large) == (f"rejected before training: predicted {large_s:.0f} s for 8 "
                             f"epoch(s), over the per-trial time share of {share:.0f} s "
                             f"(search.time_per_trial)")
    assert probe_screen(large) is None  # no share: the screen is off


def test_online_fit_uses_told_trials_only():
    calibration = [(0.0, 0.0, 1.0), (1e9, 0.0, 2.0)]
    screen = TimeScreen(task(shape=(1, 28, 28)), Recipe(epochs=1), 10.0, calibration)
    proposals = [Proposal(load_seed(name), f"seed:{name}")
                 for name in ("mlp", "small_cnn", "small_fcn")]
    for index, proposal in enumerate(proposals):
        screen.observe(index, proposal, {"history": [{"seconds": 0.1 + index},
                                                     {"seconds": 0.3 + index}]})
    screen.observe(3, proposals[0], {"history": []})  # failed before an epoch: no evidence
    points = [(*screen.work(p), 0.2 + i) for i, p in enumerate(proposals)]
    screen.told = lambda index: index == 0
    assert screen.model() == TimeModel.fit(calibration + points[:1], ("intercept", "per_flop"))
    screen.told = lambda index: True
    expected, model = TimeModel.fit(points), screen.model()
    assert (model.intercept, model.per_flop, model.per_activation) == pytest.approx(
        (expected.intercept, expected.per_flop, expected.per_activation))


def seconds_for(work: tuple[float, float], index: int) -> float:
    """A worker's measured epoch seconds: linear in work with an index-dependent wobble."""
    return 0.02 + (4e-9 * work[0] + 1e-7 * work[1]) * (1 + 0.3 * math.sin(index))


def drive(loop: SearchLoop, screen: TimeScreen, store: TrialStore, stop_at: int | None = None):
    """Two slots, oldest finishes first; trials are recorded in ``store`` as the driver does."""
    running: list[tuple[LoopTrial, int]] = []
    while True:
        item = loop.next() if stop_at is None or len(loop.trials) < stop_at else DONE
        for trial in loop.take_rejections():
            number = store.start(trial.index, trial.proposal, {})
            store.finish(number, Status.REJECTED, -math.inf, trial.reason, {}, trial.tell_seq)
        if isinstance(item, LoopTrial):
            running.append((item, store.start(item.index, item.proposal, {})))
            if len(running) < 2:
                continue
        if not running:
            if item is DONE:
                return
            continue
        trial, number = running.pop(0)
        info = {"history": [{"epoch": 1, "seconds": seconds_for(screen.work(trial.proposal),
                                                                trial.index)}]}
        outcome = Outcome(trial.index, trial.proposal.derivation, 0.5, Status.OK)
        tell_seq = loop.finish(trial.index, outcome)
        screen.observe(trial.index, trial.proposal, info)
        store.finish(number, Status.OK, 0.5, "", info, tell_seq)
        if stop_at is not None and item is DONE and not running:
            return


def search(run, *, resume: bool = False, stop_at: int | None = None):
    run_dir = RunDir(run)
    run_dir.make()
    store = TrialStore(run_dir.store_url())
    data = task()
    screen = time_screen({"time_per_trial": 0.1, "time": None, "workers": 2, "trials": 12,
                          "cpus_per_trial": 1}, store, data, Recipe(epochs=1, batch_size=50))
    loop = SearchLoop(RandomSearch(SAMPLER, SHAPE), seed=4, max_trials=12, lag=2,
                      screen=screen)
    if resume:
        store.interrupt_unfinished()
        loop.restore([LoopTrial(t.index, t.as_proposal(), t.as_outcome(), t.tell_seq)
                      for t in store.latest()])
    screen.follow(loop, store if resume else None)
    drive(loop, screen, store, stop_at)
    return [(t.index, t.hash, t.status) for t in store.latest()]


def test_a_resumed_search_screens_as_the_uninterrupted_one(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(time_budget, "probe",
                        lambda data, recipe, threads: calls.append(1) or [(0.0, 0.0, 0.01),
                                                                          (1e7, 0.0, 0.05)])
    whole = search(tmp_path / "whole")
    assert Status.REJECTED in {status for _, _, status in whole}
    assert sum(status == Status.OK for _, _, status in whole) == 12
    search(tmp_path / "cut", stop_at=12)
    assert search(tmp_path / "cut", resume=True) == whole
    assert len(calls) == 2  # the resumed run read its calibration back from the store
