"""What one epoch of a candidate costs in seconds, and a screen that keeps candidates which
cannot finish within their share of the search's time budget from being trained.

One epoch of a candidate is modelled as

    seconds per epoch = intercept + per_flop * FLOPs + per_activation * activations,

both counts per sample (:func:`einspace.count`) times the samples one epoch touches: ``3 *``
training samples (forward and a backward about twice as dear) plus the evaluation samples.
``intercept`` holds what does not grow with the network (data feeding, per-step overhead).  On
CPUs the activation term matters as much as the FLOPs: elementwise layers and reshapes move
memory without arithmetic.  The coefficients are fitted by least squares on relative errors,
none negative:

* at the start, on a **probe** (:func:`probe`): a few timed training and evaluation steps of two
  reference MLPs on the task's shapes, scaled to a full epoch (well under two seconds; the first
  call in a process also pays torch's start-up).  Two points fix only the intercept and the
  FLOPs term.  The probe's points are stored in the run's store (``time_calibration``), so a
  resumed search uses the same calibration instead of measuring again;
* **online**, on finished trials' measured epoch seconds: once three trials of different work
  have been seen, the fit uses them alone, with all three terms (the workers' own timing beats
  the driver's probe).

Only trials the strategy has already been told of count (``told``), so with ``ordering:
deterministic`` the model that screens trial ``n`` depends on the outcomes of trials
``0 .. n-lag`` and the stored calibration, exactly as the proposal itself does; a resumed run
reads the same seconds back from the store and decides the same.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from einspace import count
from einspace.tasks.data import TaskData
from einspace.tasks.recipe import Recipe
from einspace.tasks.status import Status

from .loop import SearchLoop
from .store import TrialStore
from .strategies import Proposal

BACKWARD_FACTOR = 3
"""Training FLOPs per sample as a multiple of the forward's (forward + backward)."""
MIN_SECONDS = 1e-6
"""Measured seconds are floored here before weighting (a timer can read zero)."""
PROBE_WIDTHS = (64, 1024)
"""Hidden widths of the two reference MLPs: far apart, so the probe's two points fix a line."""
ONLINE_POINTS = 3
"""Trials of different work the online fit needs before it replaces the probe."""
PROBE_STEPS = 3
"""Timed steps per reference network (after one warm-up step)."""
MIN_TRIALS_FOR_SHARE = 8
"""``time_per_trial: auto`` divides the budget among at least this many trials."""

CALIBRATION_KEY = "time_calibration"
"""The run-level store entry holding the probe's points."""

Point = tuple[float, float, float]
"""``(FLOPs per epoch, activations per epoch, seconds per epoch)``."""
TERMS = ("intercept", "per_flop", "per_activation")


@dataclass(frozen=True)
class TimeModel:
    """``seconds per epoch = intercept + per_flop * flops + per_activation * activations``
    (counts per epoch)."""

    intercept: float
    per_flop: float
    per_activation: float = 0.0

    def predict(self, flops: float, activations: float) -> float:
        return self.intercept + self.per_flop * flops + self.per_activation * activations

    @classmethod
    def fit(cls, points: Sequence[Point], terms: Sequence[str] = TERMS) -> TimeModel:
        """Least squares on *relative* errors (each residual divided by its measured seconds:
        candidates' work spans orders of magnitude, an ordinary fit would be ruled by the
        largest, and the screen compares ratios to the share) over ``terms``, none negative:
        the best fit among the subsets of ``terms`` whose coefficients all come out
        non-negative (the smaller subset on a tie)."""
        if not points:
            raise ValueError("a time model needs at least one (flops, activations, seconds) point")
        data = np.array(points, dtype=float).reshape(-1, 3)
        seconds = np.maximum(data[:, 2], MIN_SECONDS)
        columns = {"intercept": np.ones(len(data)), "per_flop": data[:, 0],
                   "per_activation": data[:, 1]}
        best: tuple[float, dict[str, float]] | None = None
        for size in range(1, len(terms) + 1):
            for subset in itertools.combinations(terms, size):
                design = np.column_stack([columns[t] for t in subset]) / seconds[:, None]
                coefficients = np.linalg.lstsq(design, np.ones(len(data)), rcond=None)[0]
                if (coefficients < 0).any():
                    continue
                residual = float(np.sum((design @ coefficients - 1) ** 2))
                if best is None or residual < best[0] * (1 - 1e-9):
                    best = residual, dict(zip(subset, map(float, coefficients), strict=True))
        return cls(**{t: best[1].get(t, 0.0) for t in TERMS})


@dataclass(frozen=True)
class EpochShape:
    """How many samples one epoch trains on and evaluates (as :mod:`einspace.tasks.trainer`
    feeds them: whole batches of the training split, all of the validation split)."""

    batch_size: int
    steps: int
    eval_samples: int

    @classmethod
    def of(cls, data: TaskData, recipe: Recipe) -> EpochShape:
        train = len(data.split("train"))
        batch = max(1, min(recipe.batch_size, train))
        return cls(batch, max(1, train // batch), len(data.split("valid")))

    @property
    def samples(self) -> int:
        """Samples one epoch touches, a training sample counted ``BACKWARD_FACTOR`` times."""
        return BACKWARD_FACTOR * self.steps * self.batch_size + self.eval_samples


def resolve_time_share(search: dict) -> float | None:
    """Seconds one trial may train for, from ``search.time_per_trial``: ``auto`` is
    ``time * workers / max(trials, 8)`` with a ``search.time`` budget and off without one; a
    number of seconds fixes it; ``off`` disables the screen."""
    setting = search["time_per_trial"]
    if setting == "off":
        return None
    if setting != "auto":
        return float(setting)
    if search["time"] is None:
        return None
    trials = max(search["trials"] or MIN_TRIALS_FOR_SHARE, MIN_TRIALS_FOR_SHARE)
    return search["time"] * search["workers"] / trials


def probe(data: TaskData, recipe: Recipe, threads: int = 1) -> list[Point]:
    """Measured ``(work, seconds per epoch)`` of two reference MLPs on the task's shapes: a few
    training steps (forward, backward, SGD) and evaluation batches, timed and scaled to one
    epoch.  Random inputs do: time depends on shapes, not values."""
    shape = EpochShape.of(data, recipe)
    inputs = math.prod(data.input_shape)
    outputs = data.num_classes or math.prod(data.target_shape or (1,))
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        return [_probe_one(shape, data.input_shape, inputs, width, outputs)
                for width in PROBE_WIDTHS]
    finally:
        torch.set_num_threads(before)


def _probe_one(shape: EpochShape, input_shape, inputs: int, width: int, outputs: int) -> Point:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(inputs, width), nn.ReLU(),
                          nn.Linear(width, outputs))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(shape.batch_size, *input_shape)

    def train_step() -> None:
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()

    def eval_step() -> None:
        with torch.no_grad():
            model(x)

    train_seconds = _timed(train_step)
    eval_seconds = _timed(eval_step) / shape.batch_size
    flops = 2 * (inputs * width + width * outputs)
    activations = inputs + 2 * width + outputs
    seconds = shape.steps * train_seconds + shape.eval_samples * eval_seconds
    return flops * shape.samples, activations * shape.samples, seconds


def _timed(step: Callable[[], None]) -> float:
    step()
    began = time.perf_counter()
    for _ in range(PROBE_STEPS):
        step()
    return (time.perf_counter() - began) / PROBE_STEPS


def epoch_seconds(result: dict) -> float | None:
    """A finished trial's mean measured seconds per epoch (None without any epoch)."""
    history = result.get("history") or []
    seconds = [epoch["seconds"] for epoch in history if epoch.get("seconds") is not None]
    return statistics.fmean(seconds) if seconds else None


class TimeScreen:
    """Predicts each proposal's training time and rejects those over the per-trial share.

    ``told(index)`` says whether the strategy has been told of trial ``index``; only those
    trials' measured seconds refine the model (see the module docstring)."""

    def __init__(self, data: TaskData, recipe: Recipe, share: float | None,
                 calibration: Sequence[Point]):
        self.data = data
        self.epochs = recipe.epochs
        self.share = share
        self.shape = EpochShape.of(data, recipe)
        self.calibration = [tuple(point) for point in calibration]
        self.observed: dict[int, Point] = {}
        self.told: Callable[[int], bool] = lambda index: True

    def work(self, proposal: Proposal) -> tuple[float, float]:
        """FLOPs and activations of one epoch of ``proposal``."""
        cost = count(proposal.derivation, self.data.input_shape, self.data.num_classes,
                     self.data.target_shape)
        return cost.flops * self.shape.samples, cost.activations * self.shape.samples

    def observe(self, index: int, proposal: Proposal, result: dict) -> None:
        """Note a finished trial's measured epoch seconds (trials without an epoch are not
        evidence about time)."""
        seconds = epoch_seconds(result)
        if seconds is not None:
            self.observed[index] = (*self.work(proposal), seconds)

    def model(self) -> TimeModel:
        seen = [self.observed[i] for i in sorted(self.observed) if self.told(i)]
        if len({point[:2] for point in seen}) >= ONLINE_POINTS:
            return TimeModel.fit(seen)
        return TimeModel.fit(self.calibration + seen, ("intercept", "per_flop"))

    def epoch_estimate(self, proposal: Proposal) -> float:
        return self.model().predict(*self.work(proposal))

    def __call__(self, proposal: Proposal) -> str | None:
        if self.share is None:
            return None
        predicted = self.epochs * self.epoch_estimate(proposal)
        if predicted <= self.share:
            return None
        return (f"rejected before training: predicted {predicted:.0f} s for {self.epochs} "
                f"epoch(s), over the per-trial time share of {self.share:.0f} s "
                f"(search.time_per_trial)")

    def follow(self, loop: SearchLoop, store: TrialStore | None = None) -> None:
        """Let the model see only trials ``loop`` has told its strategy of; with ``store`` (a
        resumed run) first take back the measured seconds of every trial already finished."""
        self.told = lambda index: loop.trials[index].tell_seq is not None
        for trial in store.latest() if store is not None else ():
            if trial.status not in (None, Status.INTERRUPTED):
                self.observe(trial.index, trial.as_proposal(), trial.result)


def time_screen(search: dict, store: TrialStore, data: TaskData,
                recipe: Recipe) -> TimeScreen | None:
    """The run's time screen (None when ``search.time_per_trial`` resolves to off), calibrated by
    the probe stored in ``store`` or, the first time, by a new probe stored there."""
    share = resolve_time_share(search)
    if share is None:
        return None
    calibration = store.run(CALIBRATION_KEY)
    if calibration is None:
        calibration = probe(data, recipe, threads=math.floor(search["cpus_per_trial"]))
        store.set_run(CALIBRATION_KEY, [list(point) for point in calibration])
    return TimeScreen(data, recipe, share, calibration)
