"""Running one cell of the benchmark: a search (new or resumed) or the seeds trained alone.

A search cell is an ordinary ``einspace search`` run directory: killed midway, it continues
with ``einspace search --resume <dir>`` or by rerunning the benchmark, which resumes it.  The
seeds-alone cell retrains each seed of the CPU protocol with the protocol's final retraining
(the same epochs on train+valid, scored on test) and records the best of them, the score a
search from those seeds has to beat.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

import einspace
from einspace.analysis import annotate
from einspace.errors import EinspaceError
from einspace.search.config import SearchConfig, load_config, merge_user
from einspace.search.engine import run_search
from einspace.search.run_dir import RunDir
from einspace.search.trial import trial_seed
from einspace.tasks.baseline import run_baseline
from einspace.tasks.handle import resolve_task

from .plan import PROTOCOL, Cell

SEED_COST_FACTOR = 3
"""Candidates may cost this many times the protocol's costliest seed on the task (FLOPs and
activations).  The shipped config's absolute limits must admit every seed on every task (the
largest input, era_pianoroll, needs 155 MFLOPs for small_cnn), so they admit children 60 times
the seed on mnist1d that train for many minutes; until candidates sized to the time budget land
(issue 12 item 4), the benchmark bounds them relative to the seeds, the same for every
strategy of a cell."""


class CellBudgetError(EinspaceError):
    """A cell's run directory was started with another budget than the one asked for."""


class CellInterrupted(EinspaceError):
    """A search stopped before its budget was spent (Ctrl-C, a lost Ray); it is not a result."""


def seed_caps(config: SearchConfig) -> dict:
    """``budget`` limits of :data:`SEED_COST_FACTOR` times the costliest seed's FLOPs and
    activations on the config's task (never looser than the config's own)."""
    task = resolve_task(config.task["name"])
    head = ({"num_classes": task.num_classes} if task.num_classes is not None
            else {"output_shape": task.target_shape})
    costs = [einspace.count(einspace.load_seed(name), task.input_shape, **head)
             for name in config.settings.seeds]
    caps = {"max_flops": SEED_COST_FACTOR * max(c.flops for c in costs),
            "max_activations": SEED_COST_FACTOR * max(c.activations for c in costs)}
    return {key: min(value, config.raw["budget"].get(key, value)) for key, value in caps.items()}


def cell_config(cell: Cell, minutes: float) -> SearchConfig:
    """The CPU protocol on the cell's task, seed and strategy, for ``minutes`` of search, with
    candidates bounded relative to the seeds (:data:`SEED_COST_FACTOR`)."""
    overrides = {"task": {"name": cell.task}, "seed": cell.seed,
                 "search": {"time": minutes * 60, "trials": None}}
    protocol = load_config(PROTOCOL, {"task": {"name": cell.task}})
    overrides["budget"] = seed_caps(protocol)
    return load_config(PROTOCOL, merge_user(cell.strategy.overrides, overrides))


def run_search_cell(cell: Cell, minutes: float, root: Path) -> dict:
    """Search (or resume the search) in the cell's directory; its figures."""
    run = RunDir(cell.run_dir(root))
    began = time.perf_counter()
    if run.is_run():
        stored = run.config().search["time"]
        if stored != minutes * 60:
            raise CellBudgetError(f"{run.path} was started with {stored / 60:g} minute(s), not "
                                  f"{minutes:g}; pass --minutes {stored / 60:g} or remove it")
        summary = run_search(None, run.path, resume=True, quiet=True)
    else:
        summary = run_search(cell_config(cell, minutes), run.path, quiet=True)
    if summary.best_index is not None and not summary.final:
        raise CellInterrupted(f"{run.path} stopped before its budget was spent; rerun the "
                              f"benchmark (or `einspace search --resume {run.path}`) to continue")
    seed = json.loads((run.path / "summary.json").read_text()).get("seed")
    final = summary.final[0] if summary.final else {}
    return {"trials": summary.trials, "failed": summary.failed,
            "valid": summary.best_score, "best_index": summary.best_index,
            "seed_valid": seed["score"] if seed else None,
            "test": final.get("test_score"), "seconds": round(time.perf_counter() - began, 1),
            "run": str(run.path)}


def run_seed_cell(cell: Cell) -> dict:
    """Each seed of the protocol that fits the task, retrained alone with the final protocol;
    a seed that does not fit the task's input shape is skipped with a note."""
    config = load_config(PROTOCOL, {"task": {"name": cell.task}, "seed": cell.seed})
    task = resolve_task(cell.task)
    final_epochs = config.raw["final"]["epochs"]
    overrides = {**config.raw["training"], "seed": trial_seed(cell.seed, 0)}
    if final_epochs is not None:
        overrides["eval_epochs"] = final_epochs
    torch.set_num_threads(max(1, math.floor(config.search["cpus_per_trial"])))
    scores: dict[str, float | None] = {}
    skipped: dict[str, str] = {}
    began = time.perf_counter()
    for name in config.settings.seeds:
        derivation = einspace.load_seed(name)
        try:
            annotate(derivation, task.input_shape)
        except Exception as e:  # the shape checks raise several kinds; all mean "does not fit"
            skipped[name] = f"does not fit input shape {task.input_shape}: {e}"
            continue
        record = run_baseline(task, derivation, name, overrides, final=True,
                              size=config.task["size"], root=config.task["root"])
        scores[name] = record["score"]
    finite = [s for s in scores.values() if s is not None]
    return {"test": max(finite) if finite else None, "seeds": scores, "skipped": skipped,
            "seconds": round(time.perf_counter() - began, 1)}
