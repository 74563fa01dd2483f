"""Final evaluation (the einspace protocol): retrain the best candidates on train + valid with the
evaluation budget and report their test scores.

Runs as Ray tasks with the search's per-trial resources, so on a cluster the retraining is spread
over the nodes too.  Results: ``RUN/final/results.json`` (one entry per retrained trial: index,
test score, status, reason, epochs, seconds) and ``RUN/final/trial-<index>.pt`` (the retrained
``state_dict``); they are also stored in the trial database as the run attribute ``final``.

Each worker puts its epochs (trial, epoch, score) on a small Ray queue that the driver drains
while it waits, so a :class:`~einspace.search.progress.Progress` shows every candidate's epoch
during the long retraining (64 epochs under the paper's protocol).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from einspace.errors import ConfigError
from einspace.tasks.data import TaskData
from einspace.tasks.recipe import Recipe
from einspace.tasks.status import Status

from .faults import describe
from .outputs import ranked
from .progress import Progress
from .store import StoredTrial, TrialStore
from .trial import trial_seed

FINAL_DIR = "final"
#: How often the driver collects the retraining workers' epochs, in seconds.
POLL_SECONDS = 2.0


def _retrain(derivation_text: str, data: TaskData, recipe: Recipe, threads: int,
             index: int = -1, epochs=None) -> dict:
    """Worker side: build, train on train+valid, score on test; returns the weights too.  With
    ``epochs`` (a Ray queue), puts (index, epoch, score) on it after every epoch."""
    import torch

    from einspace.compiler import build
    from einspace.tasks.trainer import train
    from einspace.text import parse

    from .weights import serialize_state

    torch.set_num_threads(max(1, threads))
    derivation = parse(derivation_text)

    def report(epoch: int, metrics: dict) -> None:
        epochs.put_nowait((index, epoch, metrics["score"]))

    result = train(lambda: build(derivation, data.input_shape, num_classes=data.num_classes,
                                 output_shape=data.target_shape), data, recipe,
                   callback=report if epochs is not None else None, keep_model=True)
    summary = result.to_dict()
    summary["weights"] = serialize_state(result.model) if result.model is not None else None
    return summary


def previous_final(store: TrialStore, top_k: int) -> list[dict] | None:
    """The stored final evaluation when it already covers the current ``top_k`` best trials (a
    finished run that is resumed again does not retrain them); None otherwise."""
    stored = store.run("final")
    best = [t.index for t in ranked(store.latest()) if t.status == Status.OK][:top_k]
    if stored and [entry["index"] for entry in stored] == best:
        return stored
    return None


def final_candidates(run_dir: Path, store: TrialStore, top_k: int) -> list[StoredTrial]:
    """The ``top_k`` best successful trials; a ConfigError when there is none (raised before
    any retraining is set up)."""
    candidates = [t for t in ranked(store.latest()) if t.status == Status.OK][:top_k]
    if not candidates:
        raise ConfigError(f"{run_dir}: no successful trial to evaluate")
    return candidates


def final_evaluation(run_dir: Path, store: TrialStore, data: TaskData, recipe: Recipe, *,
                     top_k: int, epochs: int | None, seed: int, cpus: float, gpus: float,
                     log=print, progress: Progress | None = None) -> list[dict]:
    """Retrain the ``top_k`` best finished trials; needs Ray to be initialised.  ``progress``
    shows each candidate's epochs as they finish."""
    import ray

    candidates = final_candidates(run_dir, store, top_k)
    final_data = data.for_final()
    final_recipe = recipe.for_final()
    if epochs is not None:
        final_recipe = final_recipe.with_overrides(epochs=epochs)
    data_ref = ray.put(final_data)
    task = ray.remote(num_cpus=cpus, num_gpus=gpus)(_retrain)
    log(f"final evaluation: retraining {len(candidates)} candidate(s) on train+valid for "
        f"{final_recipe.epochs} epochs, scoring test")
    queue = None
    if progress is not None and not progress.quiet:  # no queue actor when nothing is shown
        from ray.util.queue import Queue

        queue = Queue(actor_options={"num_cpus": 0})
        progress.final_started([t.index for t in candidates], final_recipe.epochs)
    pending = {t.index: task.remote(t.derivation.text, data_ref,
                                    final_recipe.with_overrides(seed=trial_seed(seed, t.index)),
                                    max(1, math.floor(cpus)), t.index, queue)
               for t in candidates}
    if queue is not None:
        _follow(list(pending.values()), queue, progress)
    out_dir = run_dir / FINAL_DIR
    out_dir.mkdir(exist_ok=True)
    results = []
    for trial in candidates:
        summary = _collect(pending[trial.index])
        weights = summary.pop("weights")
        if weights is not None:
            (out_dir / f"trial-{trial.index}.pt").write_bytes(weights)
        entry = {"index": trial.index, "hash": trial.hash, "search_score": trial.score,
                 "test_score": summary["score"] if summary["status"] != Status.FAILED else None,
                 "status": summary["status"], "reason": summary["reason"],
                 "epochs": summary["epochs_run"], "seconds": summary["seconds"],
                 "derivation": trial.derivation.text}
        results.append(entry)
        shown = (f"{entry['test_score']:.4f}" if entry["test_score"] is not None
                 else f"failed ({entry['reason']})")
        log(f"  trial {trial.index}: search score {trial.score:.4f}, test score {shown}")
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    store.set_run("final", results)
    return results


def _collect(ref) -> dict:
    """A retraining's summary, or a failed one when its worker died (memory monitor, node)."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:
        return {"weights": None, "score": None, "status": Status.FAILED, "reason": describe(e),
                "epochs_run": 0, "seconds": 0.0}


def _follow(refs: list, queue, progress: Progress) -> None:
    """Until every retraining has returned, pass the epochs its worker reports to
    ``progress``; then end the status line."""
    import ray

    waiting = refs
    try:
        while True:
            _, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=POLL_SECONDS)
            while not queue.empty():
                index, epoch, score = queue.get_nowait()
                progress.epoch(index, epoch, score)
            if not waiting:
                break
    finally:
        progress.close()
        queue.shutdown()
