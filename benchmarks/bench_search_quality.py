"""Search quality: regularised evolution from ResNet-18 and random search, against ResNet-18.

Run as ``python -m benchmarks.bench_search_quality`` (a few-trial CPU budget, see the flags), or
with the einspace protocol on a GPU machine or a Ray cluster::

    python -m benchmarks.bench_search_quality --trials 1000 --epochs 8 --final-epochs 64 \\
        --population 100 --tournament 10 --cap-factor 0 --workers 8 --gpus-per-trial 0.25

For each task, with the same budget for both strategies (``--trials`` trained candidates of
``--epochs`` epochs, the task's training recipe, the same architecture budget) it runs

* **evolution**: regularised evolution seeded with ResNet-18 (trial 0 *is* ResNet-18);
* **random**: random search over the grammar;
* **ResNet-18**: the seed alone, trained with the same recipe;

and reports the best validation score of each search and the test score of its best candidate
retrained on train + valid for ``--final-epochs`` (the search's own final evaluation), beside
ResNet-18's validation score (evolution's trial 0, which trains it with the search's recipe) and
its test score after the same final retraining (``einspace.tasks.baseline.run_baseline`` with
``final=True`` and trial 0's training seed).

``--cap-factor K`` (default 2) limits every candidate to K times ResNet-18's FLOPs and activation
elements on the task, so that a CPU run stays bounded (``0``: the grammar's default budget).  Run
directories and a JSON file of the figures go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

import einspace
from einspace.search.config import resolve
from einspace.search.engine import run_search
from einspace.search.store import open_run_store
from einspace.search.trial import trial_seed
from einspace.tasks.baseline import run_baseline
from einspace.tasks.handle import resolve_task
from einspace.tasks.status import Status


def caps(task: str, size: str, factor: float) -> dict:
    """The architecture budget: ``factor`` x ResNet-18's FLOPs and activations (or none)."""
    if not factor:
        return {}
    data = resolve_task(task).load(size=size)
    head = ({"num_classes": data.num_classes} if data.num_classes is not None
            else {"output_shape": data.target_shape})
    cost = einspace.count(einspace.load_seed("resnet18"), data.input_shape, **head)
    return {"max_flops": int(cost.flops * factor),
            "max_activations": int(cost.activations * factor)}


def search(task: str, strategy: str, args, budget: dict, out: Path) -> dict:
    config = {
        "task": {"name": task, "size": args.size},
        "seed": args.seed,
        "search": {"strategy": strategy, "trials": args.trials, "workers": args.workers,
                   "cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": args.gpus_per_trial,
                   "address": args.address},
        "evolution": {"population_size": args.population, "tournament_size": args.tournament,
                      "seeds": ["resnet18"]},
        "training": {"epochs": args.epochs},
        "budget": budget,
        "final": {"top_k": 1, "epochs": args.final_epochs},
    }
    run = out / f"{task}-{strategy}"
    began = time.perf_counter()
    summary = run_search(resolve(config), run, quiet=True)
    seconds = time.perf_counter() - began
    trials = open_run_store(run).latest()
    final = summary.final[0] if summary.final else {}
    row = {"task": task, "method": strategy, "trials": summary.trials, "failed": summary.failed,
           "best_index": summary.best_index, "valid": summary.best_score,
           "test": final.get("test_score"), "seconds": seconds, "run": str(run)}
    if strategy == "evolution" and trials and trials[0].origin.startswith("seed:"):
        row["seed_valid"] = trials[0].score if trials[0].status == Status.OK else None
        row["best_is_seed"] = summary.best_index == 0
    print(f"  {strategy:9s} {summary.trials} trials ({summary.failed} failed), best valid "
          f"{fmt(row['valid'])} (trial {summary.best_index}), test {fmt(row['test'])}, "
          f"{seconds:.0f} s", flush=True)
    return row


def seed_baseline(task: str, args) -> dict:
    """ResNet-18 alone, retrained on train + valid for the final epochs and scored on test."""
    torch.set_num_threads(max(1, math.floor(args.cpus_per_trial)))
    began = time.perf_counter()
    record = run_baseline(resolve_task(task), einspace.load_seed("resnet18"), "resnet18",
                          {"epochs": args.epochs, "eval_epochs": args.final_epochs,
                           "seed": trial_seed(args.seed, 0)},
                          final=True, size=args.size)
    seconds = time.perf_counter() - began
    print(f"  resnet18  alone: test {fmt(record['score'])} after {record['epochs']} epochs on "
          f"train+valid, {seconds:.0f} s", flush=True)
    return {"task": task, "method": "resnet18", "test": record["score"], "seconds": seconds,
            "status": record["status"], "reason": record["reason"]}


def fmt(value) -> str:
    return "—" if value is None else f"{value:.4f}"


def table(rows: list[dict]) -> str:
    lines = ["| task | method | trials | best valid | test (best retrained) | wall s |",
             "|---|---|---|---|---|---|"]
    for task in dict.fromkeys(r["task"] for r in rows):
        evo = next((r for r in rows if r["task"] == task and r["method"] == "evolution"), {})
        seed = next((r for r in rows if r["task"] == task and r["method"] == "resnet18"), {})
        lines.append(f"| {task} | ResNet-18 seed | 1 | {fmt(evo.get('seed_valid'))} | "
                     f"{fmt(seed.get('test'))} | {seed.get('seconds', 0):.0f} |")
        for r in rows:
            if r["task"] == task and r["method"] != "resnet18":
                label = ("evolution from ResNet-18" if r["method"] == "evolution"
                         else "random search")
                note = " (best = the seed)" if r.get("best_is_seed") else ""
                lines.append(f"| {task} | {label} | {r['trials']} | {fmt(r['valid'])}{note} | "
                             f"{fmt(r['test'])} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="mnist1d,chesseract_wdl",
                        help="comma-separated built-in tasks")
    parser.add_argument("--size", default="default", choices=["small", "default"])
    parser.add_argument("--trials", type=int, default=10, help="trained candidates per search")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per candidate")
    parser.add_argument("--final-epochs", type=int, default=2,
                        help="epochs of the final retraining on train+valid")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--tournament", type=int, default=3)
    parser.add_argument("--cap-factor", type=float, default=2.0,
                        help="candidates <= K x ResNet-18's FLOPs and activations (0: no cap)")
    parser.add_argument("--strategies", default="evolution,random")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus-per-trial", type=float, default=1)
    parser.add_argument("--gpus-per-trial", type=float, default=0)
    parser.add_argument("--address", help="Ray cluster address (default: local Ray)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="directory for the runs (default results/bench-quality-*)")
    args = parser.parse_args(argv)

    out = Path(args.out or f"results/bench-quality-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    print(f"budget: {args.trials} trials x {args.epochs} epoch(s), final retraining "
          f"{args.final_epochs} epoch(s), task size {args.size}, {args.workers} workers, "
          f"population {args.population} / tournament {args.tournament}, cap "
          f"{args.cap_factor:g}x ResNet-18; load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs",
          flush=True)
    rows = []
    began = time.perf_counter()
    for task in args.tasks.split(","):
        budget = caps(task, args.size, args.cap_factor)
        print(f"{task}: architecture budget {budget or 'grammar defaults'}", flush=True)
        for strategy in args.strategies.split(","):
            rows.append(search(task, strategy, args, budget, out))
        rows.append(seed_baseline(task, args))
        (out / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"\ntotal {time.perf_counter() - began:.0f} s; load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
