"""Overhead and scaling of the Ray search (``einspace.search``), measured on local Ray.

Run as ``python -m benchmarks.bench_search [--part overhead|scaling|all]`` (flags below).

(a) **Overhead**: a real regularised-evolution search with two workers on ``language_lite``
    (default size, small candidates; inheritance on, evolution's default, unless ``--no-inherit``),
    or with ``--config NAME`` a shipped config such as ``cpu`` (the CPU protocol with its own seeds,
    epochs and candidate sizing) given a ``--time`` budget (3 minutes) and no final retraining. The
    share of the workers' wall time not spent training is ``1 - sum(trial training seconds) /
    (workers x search wall seconds)`` (goal <= 5 %), where a trial's training seconds are the
    trainer's own ``seconds`` (model build, every epoch and its evaluation). It is given for the
    whole ``run_search`` call and for the steady state (first trial proposed to last trial
    finished), and the missing worker time is split into start-up, per-trial overhead (dispatch
    before the model is built, reporting and bookkeeping after), idle slots while trials remain
    (Tune's loop, deterministic-ordering waits), the tail (no trial left for a free worker) and
    shut-down. The driver-side callbacks (proposal, cost annotation, database writes) are timed by
    wrapping ``SearchDriver``, ``SearchLoop`` and ``TrialStore`` methods in this process only; the
    package is not changed.
(b) **Scaling**: trials per minute with 1 and 2 workers when every trial is dominated by a fixed
    sleep (``wrap_model`` wraps each candidate in a module whose training forward pass sleeps;
    one batch per epoch, one epoch), and their ratio (goal >= 1.8).

``--ordering asynchronous`` runs both parts with ``search.ordering: asynchronous`` (default: the
config default, deterministic).  All figures come from this one process and the run's trial
database.  Timings on a shared machine vary with its load; the load average is printed before
and after.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from torch import nn

from einspace.search import engine, tune_session
from einspace.search.config import SearchConfig, load_config, resolve
from einspace.search.driver import SearchDriver
from einspace.search.engine import run_search
from einspace.search.loop import SearchLoop
from einspace.search.store import TrialStore, open_run_store

OVERHEAD_GOAL = 0.05
SCALING_GOAL = 1.8

TIMES: dict[str, float] = defaultdict(float)
COUNTS: dict[str, int] = defaultdict(int)


# -- worker-side hooks (module level, so cloudpickle ships them by value from __main__) ---------
class StampBuild:
    """``wrap_model`` that appends ``index wall-time`` to a file when the worker builds a
    candidate (the model itself is unchanged); the file lives on this machine's disk, which the
    local Ray workers share."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self, index: int, model: nn.Module) -> nn.Module:
        with open(self.path, "a") as f:
            f.write(f"{index} {time.time()}\n")
        return model


class Sleeper(nn.Module):
    """A candidate whose training forward pass first sleeps (evaluation does not sleep)."""

    def __init__(self, model: nn.Module, seconds: float):
        super().__init__()
        self.model = model
        self.seconds = seconds

    def forward(self, x):
        if self.training:
            time.sleep(self.seconds)
        return self.model(x)


class SleepWrap:
    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, index: int, model: nn.Module) -> nn.Module:
        return Sleeper(model, self.seconds)


if __name__ != "__main__":  # imported (not run with -m): ship the hooks by value all the same
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


# -- driver-side timing ------------------------------------------------------------------------
@contextlib.contextmanager
def instrumented():
    """Time the driver's callbacks and the parts of run_search, restoring them afterwards."""
    patched = []

    def wrap(owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                TIMES[label] += time.perf_counter() - began
                COUNTS[label] += 1

        patched.append((owner, name, original))
        setattr(owner, name, timed)

    for owner, name, label in [
        (engine, "load_search_task", "load task"), (engine, "start_ray", "ray.init"),
        (tune_session, "fit_session", "Tune (Tuner.fit)"),
        (engine, "write_outputs", "write outputs"),
        (SearchDriver, "suggest", "suggest"), (SearchDriver, "on_result", "on_result"),
        (SearchDriver, "on_complete", "on_complete"), (SearchDriver, "_cost", "cost annotation"),
        (SearchLoop, "next", "proposal (loop.next)"), (SearchLoop, "finish", "loop.finish"),
        (TrialStore, "start", "db: start"), (TrialStore, "epoch", "db: epoch"),
        (TrialStore, "finish", "db: finish"), (TrialStore, "set_run", "db: set_run"),
    ]:
        wrap(owner, name, label)
    TIMES.clear()
    COUNTS.clear()
    try:
        yield
    finally:
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def timed_search(config: SearchConfig, run: Path, wrap_model=None, workers: int | None = None):
    began = time.time()
    with instrumented():
        summary = run_search(config, run, wrap_model=wrap_model, workers=workers, quiet=True)
    ended = time.time()
    return summary, began, ended, open_run_store(run).latest()


def cold_indices(trials) -> set[int]:
    """The trials that were the first on their worker process (it started for them)."""
    first: dict[int, object] = {}
    for t in sorted(trials, key=lambda t: t.started):
        first.setdefault(t.result.get("pid"), t)
    return {t.index for t in first.values()}


def churn_note(processes: int, workers: int) -> None:
    if processes > workers:
        print(f"    note: {processes} worker processes served {workers} worker slot(s): Tune "
              f"keeps at most one idle trial actor when no trial is waiting to start, so a "
              f"deterministic-ordering wait retires the other and a fresh process pays the "
              f"start-up again")


def idle_slot_seconds(trials, workers: int, start: float, end: float) -> float:
    """Integral of (workers - running trials) over [start, end], trials taken as running from
    the driver's start record to its finish record."""
    events = sorted([(t.started, 1) for t in trials] + [(t.finished, -1) for t in trials])
    idle, running, last = 0.0, 0, start
    for moment, step in events:
        moment = min(max(moment, start), end)
        idle += max(0, workers - running) * (moment - last)
        running += step
        last = moment
    return idle + max(0, workers - running) * (end - last)


# -- (a) overhead ------------------------------------------------------------------------------
def overhead_config(args, workers: int) -> tuple[SearchConfig, str]:
    """The search part (a) times, and a line saying what it is."""
    task = {"name": args.task, "size": args.size}
    common = {"workers": workers, "ordering": args.ordering}
    if args.config is not None:
        # Its own time budget, shortened: the config sizes its candidates to that budget.
        search = {"trials": None, "time": args.time, **common}
        config = load_config(args.config, {"task": task, "seed": args.seed, "search": search,
                                           "final": {"top_k": 0}})
        epochs = config.raw["training"]["epochs"]
        return config, (f"the shipped `{args.config}` config with a {args.time} budget, "
                        f"{workers} workers, {args.ordering} ordering, {args.task} "
                        f"({args.size}), {epochs} epoch(s) per trial")
    config = resolve({
        "task": task, "seed": args.seed,
        "search": {"strategy": "evolution", "trials": args.trials, "time": None, **common},
        "evolution": {"population_size": 8, "tournament_size": 3, "seeds": [],
                      "inherit_weights": not args.no_inherit},
        "training": {"epochs": args.epochs},
        "budget": {"max_params": 300_000, "max_flops": args.max_flops,
                   "max_activations": args.max_activations},
        "final": {"top_k": 0},
    })
    inherit = "without" if args.no_inherit else "with"
    return config, (f"{args.trials}-trial evolution search {inherit} weight inheritance, "
                    f"{workers} workers, {args.ordering} ordering, {args.task} ({args.size}), "
                    f"{args.epochs} epoch(s), <= {args.max_flops:,} FLOPs and "
                    f"{args.max_activations:,} activations per candidate")


def overhead(args, scratch: Path) -> float:
    workers = 2
    config, what = overhead_config(args, workers)
    stamps = scratch / f"builds-{args.ordering}.txt"
    print(f"(a) overhead: {what}; load average {load()}", flush=True)
    summary, began, ended, trials = timed_search(config, scratch / f"overhead-{args.ordering}",
                                                 wrap_model=StampBuild(str(stamps)))
    built = {}
    for line in stamps.read_text().splitlines():
        index, moment = line.split()
        built[int(index)] = float(moment)
    wall = ended - began
    training = sum(t.result.get("seconds", 0.0) for t in trials)
    first = min(t.started for t in trials)
    last_start = max(t.started for t in trials)
    last = max(t.finished for t in trials)
    span = last - first
    occupied = sum(t.finished - t.started for t in trials)
    cold = cold_indices(trials)
    dispatch = {True: 0.0, False: 0.0}
    for t in trials:
        if t.index in built:
            dispatch[t.index in cold] += built[t.index] - t.started
    after = sum(t.finished - built[t.index] - t.result.get("seconds", 0.0)
                for t in trials if t.index in built)
    gaps = idle_slot_seconds(trials, workers, first, last_start)
    tail = idle_slot_seconds(trials, workers, last_start, last)
    share = 1 - training / (workers * wall)
    steady = 1 - training / (workers * span)
    seconds = sorted(t.result.get("seconds", 0.0) for t in trials)

    print(f"    trials: {summary.trials} ({summary.failed} failed); training seconds per trial: "
          f"min {seconds[0]:.2f}, median {statistics.median(seconds):.2f}, "
          f"max {seconds[-1]:.2f}, sum {training:.1f}")
    print(f"    run_search wall {wall:.1f} s; steady state (first proposal to last result) "
          f"{span:.1f} s")
    verdict = "met" if share <= OVERHEAD_GOAL else "NOT met"
    print(f"    share of worker time outside training: whole run {share:.1%} "
          f"(goal <= {OVERHEAD_GOAL:.0%}: {verdict}); steady state {steady:.1%}")
    total = workers * wall
    rows = [
        ("start-up (before the first proposal)", workers * (first - began)),
        (f"first trial of each of the {len(cold)} worker process(es): proposal -> model "
         "built", dispatch[True]),
        ("other trials: proposal -> model built", dispatch[False]),
        ("per trial: training done -> result recorded", after),
        ("idle slots while trials remained", gaps),
        ("tail: a worker with no trial left", tail),
        ("shut-down (after the last result)", workers * (ended - last)),
    ]
    print(f"    worker-seconds not training, of {total:.1f} (= {workers} x wall):")
    for label, value in rows:
        print(f"      {label:58s} {value:7.1f} s  {value / total:6.1%}")
    other = total - training - sum(v for _, v in rows)
    print(f"      {'(rest: rounding, trials without a build stamp)':58s} {other:7.1f} s")
    churn_note(len(cold), workers)
    variable = dispatch[False] + after + gaps
    print(f"    without the fixed costs (start-up, cold workers, tail, shut-down): "
          f"{variable / (variable + training):.1%} of the worker time outside training")
    n = max(1, len(trials))
    warm_n = max(1, len(trials) - len(cold))
    print(f"    per trial on average: dispatch {dispatch[False] / warm_n:.2f} s (warm worker), "
          f"after training "
          f"{after / n:.2f} s, driver-recorded occupancy {occupied / n:.2f} s vs training "
          f"{training / n:.2f} s")
    print("    driver (this process), total s / calls:")
    for label in ("ray.init", "load task", "Tune (Tuner.fit)", "suggest", "proposal (loop.next)",
                  "cost annotation", "db: start", "on_result", "db: epoch", "on_complete",
                  "loop.finish", "db: finish", "db: set_run", "write outputs"):
        print(f"      {label:28s} {TIMES[label]:7.3f} s / {COUNTS[label]:3d}")
    callbacks = TIMES["suggest"] + TIMES["on_result"] + TIMES["on_complete"]
    print(f"      all searcher callbacks: {callbacks:.2f} s = {callbacks / wall:.1%} of the wall "
          f"time (they run inside Tune's control loop)", flush=True)
    return share


# -- (b) scaling -------------------------------------------------------------------------------
def scaling(args, scratch: Path) -> float:
    config = {
        "task": {"name": "language_lite", "size": "small"},
        "seed": args.seed,
        "search": {"strategy": "random", "trials": args.sleep_trials,
                   "ordering": args.ordering},
        "training": {"epochs": 1, "batch_size": 512},  # 360 training examples: one batch
        "budget": {"max_params": 50_000, "max_flops": 2_000_000},
        "final": {"top_k": 0},
    }
    print(f"\n(b) scaling: {args.sleep_trials} trials whose one training batch sleeps "
          f"{args.sleep:g} s, {args.ordering} ordering; load average {load()}", flush=True)
    rates = {}
    for workers in (1, 2):
        summary, began, ended, trials = timed_search(resolve(config),
                                                     scratch / f"sleep-{workers}-"
                                                     f"{args.ordering}",
                                                     wrap_model=SleepWrap(args.sleep),
                                                     workers=workers)
        assert summary.trials == args.sleep_trials and summary.failed == 0, summary
        first = min(t.started for t in trials)
        done = sorted(t.finished for t in trials)
        warm = done[workers - 1]  # each worker has finished its first (cold) trial
        cold = cold_indices(trials)
        per_process = ", ".join(str(n) for n in sorted(
            Counter(t.result.get("pid") for t in trials).values(), reverse=True))
        warm_trials = [t.finished - t.started for t in trials if t.index not in cold] or [0.0]
        steady = 60 * (len(done) - workers) / (done[-1] - warm)
        whole = 60 * len(trials) / (ended - began)
        ideal = 60 * workers / args.sleep
        rates[workers] = (steady, whole)
        print(f"    {workers} worker(s): {steady:5.1f} trials/min once the workers are warm "
              f"({len(done) - workers} trials in {done[-1] - warm:.1f} s; ideal {ideal:.1f}), "
              f"{whole:5.1f} trials/min over the whole run ({ended - began:.1f} s)")
        print(f"      start-up: {first - began:.1f} s to the first proposal (task, ray.init, "
              f"Tune), {warm - first:.1f} s to the first result of every worker (worker "
              f"processes start, import torch, fetch the task); trials per worker "
              f"process: {per_process}; warm trials take "
              f"{statistics.median(warm_trials):.2f} s proposal-to-result (median)", flush=True)
        churn_note(len(cold), workers)
    ratio = rates[2][0] / rates[1][0]
    verdict = "met" if ratio >= SCALING_GOAL else "NOT met"
    print(f"    2 workers / 1 worker: {ratio:.2f}x once warm (goal >= {SCALING_GOAL}: "
          f"{verdict}), {rates[2][1] / rates[1][1]:.2f}x over the whole run")
    return ratio


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["overhead", "scaling", "all"], default="all")
    parser.add_argument("--config", default=None,
                        help="part (a): time this shipped config (e.g. cpu) instead of the "
                             "small-candidate evolution search")
    parser.add_argument("--time", default="3m",
                        help="part (a) with --config: the search's time budget")
    parser.add_argument("--no-inherit", action="store_true",
                        help="part (a): the evolution search without weight inheritance")
    parser.add_argument("--task", default="language_lite", help="task of part (a)")
    parser.add_argument("--size", default="default", choices=["small", "default"])
    parser.add_argument("--trials", type=int, default=16, help="trials of part (a)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial in part (a)")
    parser.add_argument("--max-flops", type=int, default=5_000_000,
                        help="FLOPs budget per candidate in part (a)")
    parser.add_argument("--max-activations", type=int, default=100_000,
                        help="activation elements per sample per candidate in part (a)")
    parser.add_argument("--ordering", default="deterministic",
                        choices=["deterministic", "asynchronous"], help="search.ordering")
    parser.add_argument("--sleep", type=float, default=2.0, help="seconds per trial in (b)")
    parser.add_argument("--sleep-trials", type=int, default=16, help="trials per run in (b)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    args = parser.parse_args(argv)
    if args.config is not None and args.no_inherit:
        parser.error("--no-inherit sets up the built-in evolution search; with --config the "
                     "shipped config decides (cpu.yaml trains children from scratch)")

    scratch = Path(tempfile.mkdtemp(prefix="bench-search-"))
    try:
        if args.part in ("overhead", "all"):
            overhead(args, scratch)
        if args.part in ("scaling", "all"):
            scaling(args, scratch)
    finally:
        print(f"\nload average at the end: {load()} ({os.cpu_count()} CPUs)")
        if args.keep:
            print(f"run directories kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
