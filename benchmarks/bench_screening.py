"""How well cheap screening ranks recorded trials, and what it costs beside training them.

Run as ``python -m benchmarks.bench_screening RUN_DIR [--batch-size 32] [--candidates 8]``, on a
finished run directory (``trials.db`` and ``config.yaml``), for example one made with
``einspace search --config random --task addnist_lite --task-size small --budget 40 --epochs 1
--no-final --out /tmp/G-run``.

For the run's successful trials it recomputes, on one torch thread (a worker's share with
``cpus_per_trial: 1``) and with the screening batch the search would draw (train inputs only):

* the Spearman rank correlation with the true score of every zero-cost proxy, and of the log
  parameter count as the naive baseline a proxy has to beat;
* the surrogate's rank correlation on unseen trials: fitted on the first half (in trial order,
  as an online search would have it) and scored on the second, and 5-fold cross-validated;
* the screening time per candidate (build + proxies + features) and the surrogate's fit and
  predict time, against the mean training time of a trial: the issue requires screening K
  candidates to cost under 5 % of training the one that is picked.

A correlation is only as meaningful as the spread of the scores it ranks: the script prints how
many distinct scores there are, and a run whose trials all score at chance says little.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from scipy.stats import spearmanr

from einspace.compiler import build
from einspace.proxies import PROXIES, score_proxies
from einspace.search.screening import ScreeningOptions, screening_batch
from einspace.search.screening.features import FeatureSpace
from einspace.search.screening.surrogate import SURROGATES, Surrogate
from einspace.search.store import open_run_store
from einspace.tasks import resolve_task

SCREENING_SHARE_LIMIT = 0.05
FOLDS = 5
STEP_TRIALS = 10
"""Trials, evenly spaced, whose training step is timed (each is a full-batch pass)."""


def load_run(run_dir: Path):
    """The run's task data, its successful trials (derivation, score, training seconds) and
    the optimiser steps each trial trained (epochs x full batches, as the trainer counts)."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    task = config["task"]
    handle = resolve_task(task["name"])
    data = handle.load(task.get("seed", 0), task.get("size", "default"), task.get("root"))
    trials = [t for t in open_run_store(run_dir, config["search"].get("storage")).latest()
              if t.status == "ok" and t.score is not None and math.isfinite(t.score)]
    recipe = handle.recipe(config.get("training"))
    steps = recipe.epochs * max(1, len(data.split("train")) // recipe.batch_size)
    return data, trials, steps, recipe.batch_size


def step_seconds(derivation, data, batch_size: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one forward + backward pass at the training batch size:
    what one optimiser step of a trial costs, without the build and evaluation around it."""
    inputs = screening_batch(data, batch_size, seed=1)
    network = build(derivation, data.input_shape, data.num_classes, data.target_shape)
    start, cpu_start = time.perf_counter(), time.process_time()
    network(torch.from_numpy(inputs)).sum().backward()
    return time.perf_counter() - start, time.process_time() - cpu_start


def rank_correlation(predicted, truth) -> float:
    if len(set(predicted)) < 2 or len(set(truth)) < 2:
        return float("nan")
    return float(spearmanr(predicted, truth).statistic)


def surrogate_correlations(kind: str, features: np.ndarray, scores: np.ndarray):
    """(first-half -> second-half Spearman, k-fold mean Spearman, fit seconds, predict seconds
    per candidate) of one surrogate kind."""
    half = len(scores) // 2
    surrogate = Surrogate(kind, seed=0)
    for row, score in zip(features[:half], scores[:half], strict=True):
        surrogate.observe(row, score)
    start = time.perf_counter()
    surrogate.predict(features[:1])  # the first predict fits
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    second_half = surrogate.predict(features[half:])
    predict_seconds = (time.perf_counter() - start) / (len(scores) - half)
    folds = np.array_split(np.random.default_rng(0).permutation(len(scores)), FOLDS)
    fold_rhos = []
    for held in folds:
        fold = Surrogate(kind, seed=0)
        for i in sorted(set(range(len(scores))) - set(held.tolist())):
            fold.observe(features[i], scores[i])
        fold_rhos.append(rank_correlation(fold.predict(features[held]), scores[held]))
    finite = [r for r in fold_rhos if math.isfinite(r)]
    return (rank_correlation(second_half, scores[half:]),
            statistics.mean(finite) if finite else float("nan"), fit_seconds, predict_seconds)


@dataclass
class Measured:
    """Proxies, features and screening times of every trial, in trial order."""

    proxies: tuple[str, ...]
    values: dict[str, list[float]] = field(default_factory=dict)
    proxy_seconds: dict[str, list[float]] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    rows: list[np.ndarray] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    log_params: list[float] = field(default_factory=list)

    @property
    def features(self) -> np.ndarray:
        return np.stack(self.rows)


def measure(trials, data, batch: np.ndarray, proxies: tuple[str, ...]) -> Measured:
    """Screen every trial's derivation as a candidate: proxies, then features, timed."""
    space = FeatureSpace(data.input_shape, proxies)
    params_column = space.names.index("log_params")
    out = Measured(proxies, {p: [] for p in proxies}, {p: [] for p in proxies},
                   dict.fromkeys(proxies, 0))
    for trial in trials:
        start, cpu_start = time.perf_counter(), time.process_time()
        scores = score_proxies(trial.derivation, batch, proxies, seed=0,
                               num_classes=data.num_classes, output_shape=data.target_shape)
        row = space.vector(trial.derivation, scores)
        out.seconds.append(time.perf_counter() - start)
        out.cpu_seconds.append(time.process_time() - cpu_start)
        out.rows.append(row)
        out.log_params.append(row[params_column])
        for name, value in scores.values.items():
            out.values[name].append(value.value if value.ok else -math.inf)
            out.proxy_seconds[name].append(value.seconds)
            out.failed[name] += not value.ok
    return out


def print_correlations(measured: Measured, truth: np.ndarray) -> dict[str, float]:
    """Print each proxy's and surrogate's rank correlation; return each surrogate's fit time."""
    for name in measured.proxies:
        print(f"  {name:<12} {rank_correlation(measured.values[name], truth):+.3f}"
              f"   ({measured.failed[name]} failed, ranked last; mean "
              f"{1000 * statistics.mean(measured.proxy_seconds[name]):.0f} ms)")
    print(f"  {'log params':<12} {rank_correlation(measured.log_params, truth):+.3f}"
          f"   (baseline)")
    fits = {}
    for kind in SURROGATES:
        halves, folds, fit_s, predict_s = surrogate_correlations(kind, measured.features, truth)
        fits[kind] = fit_s
        print(f"  surrogate {kind:<18} first half -> second half {halves:+.3f}; "
              f"{FOLDS}-fold mean {folds:+.3f}  (fit on {len(truth) // 2} trials "
              f"{1000 * fit_s:.0f} ms, predict {1000 * predict_s:.2f} ms per candidate)")
    return fits


def print_costs(measured: Measured, trials, data, steps: int, batch_size: int,
                candidates: int, fit_seconds: float) -> None:
    seconds = measured.seconds
    training = [t.result.get("seconds", math.nan) for t in trials]
    print(f"\nscreening time per candidate: mean {1000 * statistics.mean(seconds):.0f} ms, "
          f"median {1000 * statistics.median(seconds):.0f} ms, max {1000 * max(seconds):.0f} "
          f"ms (CPU time: mean {1000 * statistics.mean(measured.cpu_seconds):.0f} ms; the "
          f"machine's other load makes wall-clock the larger)")
    print(f"mean trial training time: {statistics.mean(training):.2f} s (median "
          f"{statistics.median(training):.2f} s); each trained {steps} optimiser step(s) plus "
          f"build and evaluation")
    per_trial = candidates * statistics.mean(seconds) + fit_seconds
    share = per_trial / statistics.mean(training)
    verdict = "within" if share < SCREENING_SHARE_LIMIT else "OVER"
    print(f"screening K={candidates} candidates + one surrogate refit per trial: "
          f"{per_trial:.2f} s = {100 * share:.1f} % of the mean training time ({verdict} the "
          f"{100 * SCREENING_SHARE_LIMIT:.0f} % limit)")
    timed = range(0, len(trials), max(1, len(trials) // STEP_TRIALS))
    steps_timed = [step_seconds(trials[i].derivation, data, batch_size) for i in timed]
    for clock, column, screen_times in (("wall-clock", 0, seconds),
                                        ("CPU", 1, measured.cpu_seconds)):
        step = statistics.mean(s[column] for s in steps_timed)
        cost = candidates * statistics.mean(screen_times[i] for i in timed) + fit_seconds
        print(f"{clock}: one training step (forward + backward, batch {batch_size}) of "
              f"{len(timed)} of these networks takes {step:.2f} s; screening K={candidates} "
              f"costs {cost / step:.2f} steps, so it stays under "
              f"{100 * SCREENING_SHARE_LIMIT:.0f} % of training for trials of at least "
              f"{math.ceil(cost / (SCREENING_SHARE_LIMIT * step))} steps")

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--batch-size", type=int, default=ScreeningOptions.batch_size)
    parser.add_argument("--candidates", type=int, default=8,
                        help="K, for the share of training time that screening K costs")
    parser.add_argument("--proxies", nargs="+", default=list(ScreeningOptions.proxies),
                        choices=PROXIES,
                        help="the proxies screening computes (and the surrogate's features)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    data, trials, steps, batch_size = load_run(args.run_dir)
    if len(trials) < 2 * FOLDS:
        raise SystemExit(f"{args.run_dir}: {len(trials)} successful trials; need at least "
                         f"{2 * FOLDS} to rank")
    batch = screening_batch(data, args.batch_size, seed=0)
    measured = measure(trials, data, batch, tuple(args.proxies))
    truth = np.array([t.score for t in trials])
    print(f"run {args.run_dir}: task {data.name}, {len(trials)} successful trials, "
          f"{len(set(truth.tolist()))} distinct scores "
          f"(min {truth.min():.4f}, median {np.median(truth):.4f}, max {truth.max():.4f})")
    print(f"\nSpearman rank correlation with the true score (batch of {len(batch)}, no labels):")
    fits = print_correlations(measured, truth)
    print_costs(measured, trials, data, steps, batch_size, args.candidates, max(fits.values()))


if __name__ == "__main__":
    main()
