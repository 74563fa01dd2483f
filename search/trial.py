"""What one trial does on its Ray worker: build the candidate, train it with the task's recipe,
report every epoch to Tune, hand its weights to the keeper, and report the outcome.  A child
that inherits (``config["inherit"]``, see :mod:`einspace.search.inheriting`) first fetches its
parents' weights through the keeper and starts from them; with ``config["pool"]`` a trained
trial's weights join the keeper's pool of possible parents.

Everything a candidate can do wrong (raise, produce NaN, run out of memory) is caught by
:func:`einspace.tasks.trainer.train` and comes back as a final report with ``status=failed`` and
the reason; only infrastructure failures (the worker process dies, a node is lost) reach Tune as
errors, which Tune retries ``search.retries`` times before the driver records them as failed.
"""

from __future__ import annotations

import functools
import math
import os
import socket
import time
from collections.abc import Callable

import torch
from torch import nn

from einspace.compiler import build
from einspace.state_dict import serialize_state
from einspace.tasks.data import TaskData
from einspace.tasks.recipe import Recipe
from einspace.tasks.status import Status
from einspace.tasks.subset import training_subset
from einspace.tasks.trainer import train
from einspace.text import parse

from .inheriting import InheritancePlan, InheritedBuilder, fetch_states
from .weights import KeeperSpec

ModelWrapper = Callable[[int, nn.Module], nn.Module]
"""Test hook: ``wrap(index, model) -> model`` applied to every built candidate (fault injection)."""


def trial_seed(search_seed: int, index: int) -> int:
    """The training seed of trial ``index``: fixed by the search seed, different per trial."""
    return (search_seed * 1_000_003 + index) % 2**31


def run_trial(config: dict, *, data: TaskData, recipe: Recipe, keeper: KeeperSpec | None = None,
              wrap_model: ModelWrapper | None = None) -> None:
    """The Ray Tune function trainable of a search (``config``: index, derivation, seed,
    threads, with a fidelity ladder the rung's training data ``fraction`` and ``epochs``, and
    for weight inheritance ``inherit`` and ``pool``)."""
    import ray
    from ray import tune

    began = time.time()
    index = config["index"]
    # Where this attempt runs, before any work: a worker killed mid-trial is then recorded
    # with its node.
    tune.report({"kind": "start", "index": index, "score": -math.inf,
                 "node": ray.get_runtime_context().get_node_id(),
                 "host": socket.gethostname(), "pid": os.getpid()})
    derivation = parse(config["derivation"])
    torch.set_num_threads(max(1, int(config.get("threads", 1))))

    inherited = None
    if config.get("inherit"):
        plan = InheritancePlan.from_config(config["inherit"])
        inherited = InheritedBuilder(derivation, data, plan, *fetch_states(keeper, plan))

    def builder() -> nn.Module:
        model = inherited() if inherited is not None else build(
            derivation, data.input_shape, num_classes=data.num_classes,
            output_shape=data.target_shape)
        return wrap_model(index, model) if wrap_model is not None else model

    def report(epoch: int, metrics: dict) -> None:
        tune.report({"kind": "epoch", "index": index, "epoch": epoch, "score": metrics["score"],
                     "train_loss": metrics["train_loss"], "seconds": metrics["seconds"]})

    fidelity = {"epochs": config["epochs"]} if "epochs" in config else {}
    if "fraction" in config:
        data = training_subset(data, config["fraction"], config["seed"])
    result = train(builder, data,
                   recipe.with_overrides(seed=trial_seed(config["seed"], index), **fidelity),
                   callback=report, keep_model=True)
    trained = keeper is not None and result.status == Status.OK and result.model is not None
    # Serialized at most once, and only when the keeper takes it.
    state = functools.cache(lambda: serialize_state(result.model))
    kept = _keep_weights(keeper, index, result, state) if trained else False
    pooled = _pool_weights(keeper, index, state) if trained and config.get("pool") else None
    tune.report({"kind": "final", "index": index, **result.to_dict(),
                 **(inherited.record if inherited is not None else {}),
                 **({"pooled": pooled} if pooled is not None else {}),
                 "epoch": result.epochs_run, "weights_kept": kept,
                 "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "began": began,
                 "node": ray.get_runtime_context().get_node_id(),
                 "host": socket.gethostname(), "pid": os.getpid()})


def _keep_weights(keeper: KeeperSpec, index: int, result, state: Callable[[], bytes]
                  ) -> bool | str:
    """Hand a successful trial's weights to the keeper, starting it again first if it died;
    a keeper that cannot be reached costs this trial its weights file, never its result."""
    import ray

    for _ in range(2):
        try:
            handle = keeper.handle()
            if not ray.get(handle.wants.remote(index, result.score)):
                return False
            return ray.get(handle.put.remote(index, result.score, state()))
        except ray.exceptions.RayError as e:
            error = e
    return f"not kept: the weight keeper failed ({str(error).strip().splitlines()[0]})"


def _pool_weights(keeper: KeeperSpec, index: int, state: Callable[[], bytes]) -> bool | str:
    """Add a trained trial's weights to the keeper's pool of possible parents (before the
    final report, so a child proposed once this trial is told finds them); an unreachable
    keeper makes its children train fresh, never fails this trial."""
    import ray

    for _ in range(2):
        try:
            ray.get(keeper.handle().pool.remote(index, state()))
            return True
        except ray.exceptions.RayError as e:
            error = e
    return f"not pooled: the weight keeper failed ({str(error).strip().splitlines()[0]})"
