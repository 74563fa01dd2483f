"""What one trial does on its Ray worker: build the candidate, train it with the task's recipe,
report every epoch to Tune, hand its weights to the keeper, and report the outcome.

Everything a candidate can do wrong (raise, produce NaN, run out of memory) is caught by
:func:`einspace.tasks.trainer.train` and comes back as a final report with ``status=failed`` and
the reason; only infrastructure failures (the worker process dies, a node is lost) reach Tune as
errors, which Tune retries ``search.retries`` times before the driver records them as failed.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import torch
from torch import nn

from einspace.compiler import build
from einspace.tasks.data import TaskData
from einspace.tasks.recipe import Recipe
from einspace.tasks.trainer import OK, train
from einspace.text import parse

from .weights import serialize_state

ModelWrapper = Callable[[int, nn.Module], nn.Module]
"""Test hook: ``wrap(index, model) -> model`` applied to every built candidate (fault injection)."""


def trial_seed(search_seed: int, index: int) -> int:
    """The training seed of trial ``index``: fixed by the search seed, different per trial."""
    return (search_seed * 1_000_003 + index) % 2**31


def run_trial(config: dict, *, data: TaskData, recipe: Recipe, keeper=None,
              wrap_model: ModelWrapper | None = None) -> None:
    """The Ray Tune function trainable of a search (``config``: index, derivation, seed,
    threads)."""
    import ray
    from ray import tune

    began = time.time()
    index = config["index"]
    derivation = parse(config["derivation"])
    torch.set_num_threads(max(1, int(config.get("threads", 1))))

    def builder() -> nn.Module:
        model = build(derivation, data.input_shape, num_classes=data.num_classes,
                      output_shape=data.target_shape)
        return wrap_model(index, model) if wrap_model is not None else model

    def report(epoch: int, metrics: dict) -> None:
        tune.report({"kind": "epoch", "index": index, "epoch": epoch, "score": metrics["score"],
                     "train_loss": metrics["train_loss"], "seconds": metrics["seconds"]})

    result = train(builder, data, recipe.with_overrides(seed=trial_seed(config["seed"], index)),
                   callback=report, keep_model=True)
    kept = False
    if result.status == OK and keeper is not None and result.model is not None \
            and ray.get(keeper.wants.remote(index, result.score)):
        kept = ray.get(keeper.put.remote(index, result.score, serialize_state(result.model)))
    tune.report({"kind": "final", "index": index, **result.to_dict(),
                 "epoch": result.epochs_run, "weights_kept": kept,
                 "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "began": began,
                 "node": ray.get_runtime_context().get_node_id(),
                 "host": socket.gethostname(), "pid": os.getpid()})
