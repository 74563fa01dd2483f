"""Score a fixed architecture (a seed) on a task with the task's recipe, and record it.

A baseline answers "what does a known network get here with this budget?", the yardstick a
search result is read against.  It goes through exactly the path a search candidate takes
(``Task.recipe`` -> ``einspace.build`` -> ``train``), so the two are comparable, and each run
appends one JSON line to a results file so a table can be rebuilt from the records::

    record = run_baseline(resolve_task("mnist1d"), einspace.load_seed("mlp"), "mlp",
                          {"epochs": 2})
    append_record(record, DEFAULT_RESULTS)

With ``final=True`` the network is retrained on train + valid for the recipe's ``eval_epochs``
and scored on test (:meth:`TaskData.for_final`); otherwise it trains on train for ``epochs`` and
is scored on valid, as during a search.
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

import torch

import einspace
from einspace.derivation import Derivation

from .handle import Task
from .trainer import Callback, resolve_metric, train

DEFAULT_RESULTS = Path("results") / "baselines.jsonl"


def run_baseline(task: Task, derivation: Derivation, arch: str, overrides: dict | None = None,
                 *, final: bool = False, root: str | Path | None = None, size: str = "default",
                 callback: Callback | None = None) -> dict:
    """Train ``derivation`` on ``task`` and return the JSON-friendly record of the run.

    ``arch`` is the name the record carries (a seed name, or the derivation text).  A shape the
    architecture cannot take raises before any data is touched; a run that diverges or fails
    comes back with ``status`` ``"failed"``, its ``reason`` and a ``score`` of None (the
    trainer's -inf, which JSON cannot hold)."""
    recipe = task.recipe(overrides)
    if final:
        recipe = recipe.for_final()
    data = task.load(size=size, root=root)
    head = ({"num_classes": data.num_classes} if data.num_classes is not None
            else {"output_shape": data.target_shape})
    params = einspace.count(derivation, data.input_shape, **head).params
    if final:
        data = data.for_final()
    result = train(lambda: einspace.build(derivation, data.input_shape, **head), data, recipe,
                   callback=callback)
    return {
        "task": task.name, "task_version": data.metadata.get("generator_version"), "arch": arch,
        "hash": derivation.hash, "final": final, "eval_split": "test" if final else "valid",
        "size": size,
        "status": result.status, "reason": result.reason,
        "score": result.score if math.isfinite(result.score) else None,
        "metric": resolve_metric(recipe.metric, data.task_type),
        "epochs": result.epochs_run, "planned_epochs": recipe.epochs,
        "seconds": round(result.seconds, 2), "params": params, "device": result.device,
        "threads": torch.get_num_threads(), "host": platform.node(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "recipe": recipe.to_dict(),
        "history": [round(epoch.score, 6) for epoch in result.history],
    }


def append_record(record: dict, path: str | Path = DEFAULT_RESULTS) -> Path:
    """Append ``record`` as one JSON line to ``path`` (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
    return path
