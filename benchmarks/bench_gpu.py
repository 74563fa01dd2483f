"""GPU throughput of candidate training: epoch times, grammar vs hand-written, packed trials.

Run as ``python -m benchmarks.bench_gpu [--budget 480] [--window 40] [--packing 1,2,4,8]
[--json figures.json]`` on one GPU, or ``--dry-run`` on the CPU (tiny sizes, every figure's name
with CPU numbers, well under a minute).

Why it is built this way: a GPU machine is lent for minutes, once.  So the script never needs a
second run: it prints each figure as soon as it is measured (and rewrites ``--json`` after each),
keeps the most important figures first, skips what the total ``--budget`` (seconds, default
8 minutes) cannot fit, survives a missing optional library (``nvidia-ml-py`` for utilisation) and
kills a worker whose job overruns the budget instead of waiting for it.

Everything trains through :func:`einspace.tasks.trainer.train` (device-resident data, bf16
autocast unless fp32 is asked for, no per-step host synchronisation), on AddNIST-sized synthetic
data (45,000 train and 15,000 valid samples of 3x28x28, 20 classes; random values, since only
time is measured).  Each job runs in a worker process (spawned on a GPU machine, forked from a
server that imported einspace once on the CPU); every worker holds the task on the device, as a
warm Ray worker with the task cached would.  Without CUDA MPS the packed processes time-slice the
GPU: packing fills the gaps one process leaves (Python, launches, scoring), it does not run two
processes' kernels at once.  In order:

1. **epoch seconds** of the ResNet-18 seed (``einspace.build``) and of the hand-written
   ResNet-18 (``benchmarks/handwritten.py``), bf16 then fp32, eager, in interleaved rounds
   (grammar, hand-written, hand-written, grammar); the first epoch of each run is warm-up and
   not counted; an epoch is 45,000 samples trained plus 15,000 scored.  Their ratio is the
   CPU benchmark's grammar / hand-written figure (goal <= 1.05 in bf16);
2. **packing**: 1, 2, 4 and 8 worker processes share the GPU for ``--window`` seconds each,
   training sampled and ResNet-18-mutated candidates (alternating; capped at 2x ResNet-18's
   FLOPs and activations, as ``bench_search_quality`` does) with the paper's protocol of 8
   epochs.  Candidates per hour are ``sum over workers of 3600 / (setup + 8 x epoch)`` with each
   worker's mean measured setup and epoch seconds (a window is shorter than a candidate when 8
   share the GPU; candidates still running at its end stop after their epoch).  Per level it
   prints the device's mean utilisation (NVML, sampled every 0.5 s), each trial's peak memory
   and the share of trial wall time outside the trainer's epochs (build, optimiser, compile,
   the trainer's setup) -- Ray's dispatch is not in it (``bench_search`` measures that);
3. **torch.compile** of the ResNet-18 seed: bf16 and fp32 with mode "default", bf16 with
   "reduce-overhead" (CUDA graphs), each with its compile seconds and epoch seconds, as far as
   the budget allows.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import statistics
import sys
import threading
import time
from dataclasses import dataclass

import torch

from einspace.tasks.status import Status

EPOCHS = 8
GiB = 1 << 30


@dataclass(frozen=True)
class Sizes:
    train: int
    valid: int
    shape: tuple[int, int, int]
    classes: int
    batch: int
    compile_arch: str  # the network compiled in part 3

    @classmethod
    def real(cls) -> Sizes:
        return cls(45_000, 15_000, (3, 28, 28), 20, 256, "resnet18")

    @classmethod
    def dry(cls) -> Sizes:
        # On the CPU inductor needs minutes for ResNet-18; the MLP seed keeps the dry run short.
        return cls(128, 64, (3, 8, 8), 20, 32, "mlp")


# ---------------------------------------------------------------------------------------------
# worker side


def _task(sizes: Sizes):
    import numpy as np

    from einspace.tasks.data import CLASSIFICATION, Split, TaskData

    rng = np.random.default_rng(0)

    def split(n: int) -> Split:
        return Split(rng.standard_normal((n, *sizes.shape), dtype=np.float32),
                     rng.integers(0, sizes.classes, n))

    return TaskData("addnist_sized", sizes.shape, CLASSIFICATION,
                    {"train": split(sizes.train), "valid": split(sizes.valid)},
                    num_classes=sizes.classes)


def _builder(arch: str, handwritten: bool, sizes: Sizes):
    import einspace
    from benchmarks.handwritten import HANDWRITTEN

    if handwritten:
        return lambda: HANDWRITTEN[arch](sizes.shape, sizes.classes)
    derivation = einspace.load_seed(arch) if arch in einspace.seed_names() else \
        einspace.parse(arch)
    return lambda: einspace.build(derivation, sizes.shape, num_classes=sizes.classes)


def _recipe(sizes: Sizes, device: str, **keys):
    from einspace.tasks.recipe import Recipe

    return Recipe(batch_size=sizes.batch, device=device, **keys)


def _summary(result, wall: float) -> dict:
    return {"status": result.status, "reason": result.reason, "wall": wall,
            "epochs": [r.seconds for r in result.history], "compile": result.compile.to_dict(),
            "gpu": result.gpu.to_dict()}


def _epoch_job(data, sizes: Sizes, device: str, job: dict, send) -> dict:
    from einspace.tasks.trainer import train

    began = time.perf_counter()
    result = train(_builder(job["arch"], job["handwritten"], sizes), data,
                   _recipe(sizes, device, epochs=job["epochs"], precision=job["precision"],
                           compile=job["compile"]))
    return _summary(result, time.perf_counter() - began)


def _pack_job(data, sizes: Sizes, device: str, job: dict, send) -> dict:
    from einspace.tasks.trainer import STOP, train

    deadline = job["deadline"]
    stop = lambda epoch, metrics: STOP if time.time() >= deadline else None  # noqa: E731
    done = 0
    for text in job["candidates"]:
        if time.time() >= deadline:
            break
        began = time.perf_counter()
        result = train(_builder(text, False, sizes), data,
                       _recipe(sizes, device, epochs=EPOCHS, precision=job["precision"]),
                       callback=stop)
        send(("candidate", _summary(result, time.perf_counter() - began)))
        done += 1
    return {"candidates": done}


JOBS = {"epoch": _epoch_job, "pack": _pack_job}


def _worker(wid: int, sizes: Sizes, device: str, threads: int, jobs, results) -> None:
    torch.set_num_threads(threads)
    began = time.perf_counter()

    def send(message):
        results.put((wid, *message))

    try:
        from einspace.tasks.trainer import train

        data = _task(sizes)
        warm = train(_builder("mlp", False, sizes), data, _recipe(sizes, device, epochs=1))
        send(("ready", {"seconds": time.perf_counter() - began, "device": warm.device,
                        "name": torch.cuda.get_device_name() if warm.device != "cpu" else "cpu"}))
    except Exception as error:  # reported, the parent carries on without this worker
        send(("failed", f"{type(error).__name__}: {error}"))
        return
    while True:
        job = jobs.get()
        if job is None:
            return
        try:
            send(("done", JOBS[job["kind"]](data, sizes, device, job, send)))
        except Exception as error:
            send(("failed", f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"))


# ---------------------------------------------------------------------------------------------
# parent side


class Budget:
    def __init__(self, seconds: float):
        self.end = time.time() + seconds

    def left(self) -> float:
        return self.end - time.time()


class Pool:
    """Worker processes, each with its own job queue and one shared result queue."""

    def __init__(self, count: int, sizes: Sizes, device: str, threads: int):
        self.sizes, self.device, self.threads = sizes, device, threads
        # On the CPU a forkserver that imported einspace once starts 8 workers in seconds.  With
        # a GPU every worker is spawned fresh, so none can inherit a touched CUDA driver.
        forkserver = device == "cpu" and "forkserver" in mp.get_all_start_methods()
        self.ctx = mp.get_context("forkserver" if forkserver else "spawn")
        if forkserver:
            # torch._dynamo: torch.optim imports it on first use, seconds per worker otherwise
            self.ctx.set_forkserver_preload(["torch._dynamo", "einspace.tasks.trainer",
                                             "benchmarks.handwritten"])
        self.results = self.ctx.Queue()
        self.workers: dict[int, tuple] = {}
        for wid in range(count):
            self._start(wid)

    def _start(self, wid: int) -> None:
        jobs = self.ctx.Queue()
        process = self.ctx.Process(target=_worker, daemon=True, args=(
            wid, self.sizes, self.device, self.threads, jobs, self.results))
        process.start()
        self.workers[wid] = (process, jobs)

    def wait_ready(self, wids, budget: Budget, timeout: float) -> dict[int, dict]:
        ready = {}
        for wid, kind, payload in self.collect(set(wids), ("ready", "failed"), budget, timeout):
            if kind == "ready":
                ready[wid] = payload
            else:
                print(f"  worker {wid} could not start: {payload}", flush=True)
        return ready

    def send(self, wid: int, job: dict) -> None:
        self.workers[wid][1].put(job)

    def collect(self, wids: set[int], final: tuple[str, ...], budget: Budget, timeout: float):
        """Messages from ``wids`` until each sent one of ``final``; workers still busy after
        ``timeout`` (or the budget) are killed and restarted."""
        pending = set(wids)
        end = time.time() + min(timeout, max(0.0, budget.left()))
        while pending:
            try:
                wid, kind, payload = self.results.get(timeout=max(0.05, end - time.time()))
            except queue.Empty:
                break
            yield wid, kind, payload
            if kind in final:
                pending.discard(wid)
        for wid in sorted(pending):
            print(f"  worker {wid} overran the time it had; killed and restarted", flush=True)
            self.restart(wid)

    def restart(self, wid: int) -> None:
        process, _ = self.workers.pop(wid)
        process.kill()
        process.join(5)
        self._start(wid)

    def close(self) -> None:
        for _, jobs in self.workers.values():
            jobs.put(None)
        end = time.time() + 5  # then kill what still runs (e.g. a worker restarted at the end)
        for process, _ in self.workers.values():
            process.join(max(0.0, end - time.time()))
            if process.is_alive():
                process.kill()


class Report:
    """Prints figures as they come and keeps them for ``--json``."""

    def __init__(self, path: str | None):
        self.path, self.figures = path, {}

    def figure(self, name: str, value, note: str = "") -> None:
        self.figures[name] = value
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{name}: {shown}{'  ' + note if note else ''}", flush=True)
        if self.path:
            with open(self.path, "w") as f:
                json.dump(self.figures, f, indent=1)


def _steady(summary: dict) -> float | None:
    """The median epoch seconds after the first (warm-up) epoch."""
    epochs = summary.get("epochs") or []
    return statistics.median(epochs[1:]) if len(epochs) > 1 else None


def _gib(value) -> str:
    return "n/a" if value is None else f"{value / GiB:.2f} GiB"


def _epoch_times(pool: Pool, budget: Budget, report: Report, precision: str, rounds: int,
                 epochs: int, need: float) -> None:
    """Part 1 for one precision: interleaved grammar / hand-written runs on worker 0."""
    times: dict[bool, list[float]] = {False: [], True: []}
    peaks: list = []
    order = [False, True, True, False] * rounds
    for handwritten in order[:2 * rounds]:
        if budget.left() < need:
            print(f"  skipped a {precision} epoch run: {budget.left():.0f} s left", flush=True)
            break
        pool.send(0, {"kind": "epoch", "arch": "resnet18", "handwritten": handwritten,
                      "epochs": epochs, "precision": precision, "compile": "off"})
        for _, kind, payload in pool.collect({0}, ("done", "failed"), budget, budget.left()):
            if kind == "failed":
                print(f"  epoch run failed: {payload}", flush=True)
            elif kind == "done" and payload["status"] != Status.OK:
                print(f"  epoch run {payload['status']}: {payload['reason']}", flush=True)
            elif kind == "done" and _steady(payload) is not None:
                times[handwritten].extend(payload["epochs"][1:])
                peaks.append(payload["gpu"]["peak_memory_bytes"])
    name = "grammar"
    for handwritten in (False, True):
        value = statistics.median(times[handwritten]) if times[handwritten] else None
        report.figure(f"epoch seconds, ResNet-18 {name}, {precision}, eager",
                      value if value is not None else "not measured",
                      f"({len(times[handwritten])} epochs)")
        name = "hand-written"
    if times[False] and times[True]:
        ratio = statistics.median(times[False]) / statistics.median(times[True])
        goal = "  (goal <= 1.05: %s)" % ("met" if ratio <= 1.05 else "NOT met") \
            if precision == "bf16" else ""
        report.figure(f"grammar / hand-written ResNet-18 epoch ratio, {precision}", ratio, goal)
    else:
        report.figure(f"grammar / hand-written ResNet-18 epoch ratio, {precision}",
                      "not measured")
    if peaks:
        report.figure(f"peak memory, ResNet-18 trial, {precision}",
                      _gib(max(peaks)) if peaks[0] is not None else "n/a (CPU)")


def _candidates(sizes: Sizes, count: int) -> list[str]:
    """Alternately a sampled candidate and a mutant of the ResNet-18 seed, within 2x its cost."""
    import einspace

    seed = einspace.load_seed("resnet18")
    cost = einspace.count(seed, sizes.shape, num_classes=sizes.classes)
    sampler = einspace.Sampler(budget=einspace.Budget(max_flops=2 * cost.flops,
                                                      max_activations=2 * cost.activations))
    out = []
    for i in range(count):
        d = einspace.sample(sizes.shape, seed=i, sampler=sampler) if i % 2 == 0 else \
            einspace.mutate(seed, sizes.shape, seed=i, sampler=sampler)
        out.append(d.text)
    return out


class UtilisationSampler:
    """The device's utilisation every 0.5 s from the parent (NVML; nothing where it is absent)."""

    def __init__(self, device: str):
        from einspace.tasks.gpu_monitor import read_utilization

        self.read = read_utilization
        self.device = torch.device("cpu") if device == "cpu" else \
            torch.device("cuda", 0) if device == "auto" else torch.device(device)
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            value = self.read(self.device)
            if value is not None:
                self.samples.append(value)

    def __enter__(self) -> UtilisationSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _packing(pool: Pool, budget: Budget, report: Report, level: int, window: float,
             candidates: list[str], device: str) -> None:
    label = f"{level} packed"
    need = window + 10
    if budget.left() < need or level > len(pool.workers):
        report.figure(f"candidates per hour, {label}", "not measured",
                      f"(skipped: {budget.left():.0f} s left, {len(pool.workers)} workers)")
        return
    deadline = time.time() + window
    for wid in range(level):
        pool.send(wid, {"kind": "pack", "deadline": deadline, "precision": "auto",
                        "candidates": candidates[wid::level]})
    records: dict[int, list[dict]] = {wid: [] for wid in range(level)}
    with UtilisationSampler(device) as util:
        for wid, kind, payload in pool.collect(set(range(level)), ("done", "failed"), budget,
                                               window + max(30.0, window)):
            if kind == "candidate":
                records[wid].append(payload)
            elif kind == "failed":
                print(f"  worker {wid} failed: {payload}", flush=True)
    rate, walls, outside, peaks, finished, reasons = 0.0, 0.0, 0.0, [], 0, []
    for runs in records.values():
        measured = [r for r in runs if r["epochs"]]
        for r in runs:
            walls += r["wall"]
            outside += r["wall"] - sum(r["epochs"])
            peaks.append(r["gpu"]["peak_memory_bytes"])
            finished += len(r["epochs"]) == EPOCHS
            if r["status"] == "failed":
                reasons.append(r["reason"])
        if measured:
            setup = statistics.mean(r["wall"] - sum(r["epochs"]) for r in measured)
            epoch = statistics.mean(s for r in measured for s in r["epochs"])
            rate += 3600 / (setup + EPOCHS * epoch)
    trials = sum(len(r) for r in records.values())
    goal = "  (goal >= 200 on one H200)" if level == max(1, len(pool.workers)) else ""
    report.figure(f"candidates per hour, {label}", rate,
                  f"({trials} candidates seen, {finished} finished 8 epochs, {len(reasons)} failed "
                  f"in the {window:.0f} s window){goal}")
    for reason in sorted(set(reasons))[:3]:
        print(f"  a candidate failed: {reason}", flush=True)
    mean_util = statistics.mean(util.samples) if util.samples else None
    report.figure(f"GPU utilisation, {label}",
                  f"{mean_util:.0f} %" if mean_util is not None else "n/a",
                  f"({len(util.samples)} samples; device-wide)" if util.samples
                  else "(no NVML: install nvidia-ml-py)" if device != "cpu" else "(CPU)")
    known = [p for p in peaks if p is not None]
    report.figure(f"peak memory per trial, {label}",
                  f"max {_gib(max(known))}, median {_gib(statistics.median(known))}"
                  if known else "n/a (CPU)" if device == "cpu" else "n/a")
    report.figure(f"share of wall time outside training, {label}",
                  outside / walls if walls else "not measured", "(goal <= 0.05)")


def _compiled(pool: Pool, budget: Budget, report: Report, sizes: Sizes, precision: str,
              mode: str, epochs: int, need: float) -> None:
    name = f"{sizes.compile_arch} seed, {precision}, torch.compile {mode}"
    if budget.left() < need:
        report.figure(f"epoch seconds, {name}", "not measured",
                      f"(skipped: {budget.left():.0f} s left)")
        return
    pool.send(0, {"kind": "epoch", "arch": sizes.compile_arch, "handwritten": False,
                  "epochs": epochs, "precision": precision, "compile": mode})
    summary = None
    for _, kind, payload in pool.collect({0}, ("done", "failed"), budget, budget.left()):
        if kind == "done":
            summary = payload
        elif kind == "failed":
            print(f"  compiled run failed: {payload}", flush=True)
    if summary is None:
        report.figure(f"epoch seconds, {name}", "not measured", "(ran out of time or failed)")
        return
    record = summary["compile"]
    reason = f", {summary['reason']}" if summary["reason"] else ""
    report.figure(f"epoch seconds, {name}", _steady(summary) or "not measured",
                  f"(status {summary['status']}{reason})")
    report.figure(f"compile seconds, {name}", record["seconds"] if record["seconds"] is not None
                  else "n/a", f"(fallback: {record['fallback'] or 'none'}; CUDA graphs: "
                  f"{record['cuda_graphs']})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU, tiny sizes, every figure's name; well under a minute")
    parser.add_argument("--budget", type=float, default=None,
                        help="total seconds (default 480; 120 for --dry-run)")
    parser.add_argument("--window", type=float, default=None,
                        help="seconds per packing level (default 40; 3 for --dry-run)")
    parser.add_argument("--packing", default="1,2,4,8", help="trials per GPU (default 1,2,4,8)")
    parser.add_argument("--device", default="auto", help="auto (default), cuda, cuda:N or cpu")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    started = time.time()
    sizes = Sizes.dry() if args.dry_run else Sizes.real()
    device = "cpu" if args.dry_run else args.device
    budget = Budget(args.budget or (120.0 if args.dry_run else 480.0))
    window = args.window or (3.0 if args.dry_run else 40.0)
    levels = sorted({int(k) for k in args.packing.split(",")})
    epochs = 2 if args.dry_run else 3
    report = Report(args.json)
    cores = os.cpu_count() or 1
    if args.dry_run:  # no pool of compile subprocesses for one tiny compile on a shared CPU
        os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    threads = 1 if args.dry_run else max(1, cores // max(levels))
    print(f"bench_gpu: {'DRY RUN (CPU, tiny sizes)' if args.dry_run else 'GPU'}; torch "
          f"{torch.__version__}; data {sizes.train:,} train + {sizes.valid:,} valid x "
          f"{'x'.join(map(str, sizes.shape))}, {sizes.classes} classes, batch {sizes.batch}; "
          f"budget {budget.left():.0f} s; {threads} CPU thread(s) per worker", flush=True)

    candidates = _candidates(sizes, 8 * max(levels))
    pool = Pool(max(levels), sizes, device, threads)
    try:
        ready = pool.wait_ready(range(max(levels)), budget, min(180.0, budget.left()))
        if 0 not in ready:
            print("no worker started; nothing measured", flush=True)
            return
        info = ready[0]
        report.figure("device", info["name"], f"({info['device']}; {len(ready)} workers ready "
                      f"after {time.time() - started:.0f} s)")
        print("-- 1. epoch seconds, eager (first epoch of each run is warm-up)", flush=True)
        _epoch_times(pool, budget, report, "bf16", rounds=1 if args.dry_run else 2,
                     epochs=epochs, need=30)
        _epoch_times(pool, budget, report, "fp32", rounds=1, epochs=epochs, need=30)
        print(f"-- 2. packing: {EPOCHS}-epoch candidates, {window:.0f} s per level", flush=True)
        for level in levels:
            _packing(pool, budget, report, level, window, candidates, device)
        print("-- 3. torch.compile (compile seconds = the first compiled step)", flush=True)
        runs = (("bf16", "default"), ("fp32", "default"), ("bf16", "reduce-overhead"))
        for precision, mode in runs:
            if args.dry_run and precision != "fp32":  # one run exercises the path (CPU: 10 s+)
                report.figure(f"epoch seconds, {sizes.compile_arch} seed, {precision}, "
                              f"torch.compile {mode}", "not measured", "(dry run compiles once)")
                continue
            _compiled(pool, budget, report, sizes, precision, mode, epochs,
                      need=20 if args.dry_run else 100)
    finally:
        pool.close()
    print(f"bench_gpu finished in {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
