"""What to export: an architecture, its input and output shapes, and its weights.

A :class:`Candidate` comes from a search run directory (its best successful trial, the K-th best
with ``rank``, or one trial by ``trial`` index; its task gives the shapes; the retrained weights of
``final/`` win over the search-trained ones of ``weights/``), from an architecture and weights
trained on a task (:func:`from_task`: the task gives the shapes), or from an architecture given
as text, a file or a seed name (the shapes given by the user, weights optional).  Every problem
-- a trial that failed or does not exist, a missing or unreadable weights file, a corrupted trial
database -- is an :class:`ExportError` or another :class:`EinspaceError` that says what to do.

Run directories are read with :mod:`einspace.search` (and their tasks with :mod:`einspace.tasks`),
imported only when a run is exported.  A run's or task's candidate also carries the trainer's input
transformation (:class:`~.preprocess.Preprocessing`) and raw task rows to verify on, unless
``bare`` asks for the network alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from einspace.analysis import annotate
from einspace.compiler import build_traced
from einspace.derivation import Derivation
from einspace.errors import EinspaceError
from einspace.heads import check_target

from .errors import ExportError, first_line
from .locate import Place, locate
from .preprocess import Preprocessing, input_dtype, value_range

INIT_SEED = 0
UNTRAINED = {"kind": "untrained", "note": f"random initial weights (torch seed {INIT_SEED}); "
             "the exported network is not trained"}


@dataclass
class Candidate:
    """One architecture to export with everything the card says about it."""

    derivation: Derivation
    input_shape: tuple[int, ...]
    num_classes: int | None = None
    output_shape: tuple[int, ...] | None = None
    state_dict: dict | None = None  # None: random initial weights
    weights: dict = field(default_factory=lambda: dict(UNTRAINED))
    source: dict = field(default_factory=dict)
    task: dict | None = None
    scores: dict = field(default_factory=dict)
    preprocessing: Preprocessing | None = None  # None: the bare network on float32 tensors

    def network(self) -> tuple[nn.Module, dict[str, Place]]:
        """The compiled network in evaluation mode, holding the candidate's weights (or the
        initial weights of a fixed seed), and the derivation node of each of its modules."""
        with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
            torch.manual_seed(INIT_SEED)
            network, origins = build_traced(self.derivation, self.input_shape,
                                            num_classes=self.num_classes,
                                            output_shape=self.output_shape)
        if self.state_dict is not None:
            _load_into(network, self.state_dict, self.weights.get("file", "the weights"))
        places = locate(network, origins, annotate(self.derivation, self.input_shape))
        return network.eval(), places


def read_state_dict(path: str | Path) -> dict:
    """A ``state_dict`` file, read without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ExportError(f"weights file {path} is not a readable state_dict "
                          f"({first_line(e)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ExportError(f"weights file {path} holds a {type(state).__name__}, not a "
                          f"state_dict (a mapping of names to tensors)")
    return state


def _load_into(network: nn.Module, state: dict, where: str) -> None:
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    problems = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected),
                                    ("wrong shape", wrong)) if keys]
    if problems:
        raise ExportError(f"{where} does not fit this architecture ({'; '.join(problems)})")
    network.load_state_dict(state)


def from_spec(spec: str, input_shape, num_classes: int | None = None, output_shape=None,
              weights: str | Path | None = None) -> Candidate:
    """An architecture given as derivation text, a file holding it, or a seed name; without
    ``weights`` it is exported with random initial weights (and the card says so)."""
    from einspace.cli import load_arch
    from einspace.seeds import seed_names

    derivation = load_arch(spec)
    if input_shape is None:
        raise ExportError("--input-shape is required to export an architecture (only a run "
                          "directory knows its task's shapes)")
    check_target(num_classes, output_shape)
    kind = "text" if spec.lstrip().startswith("(") else "seed" if spec in seed_names() \
        else "file"
    candidate = Candidate(derivation, tuple(input_shape), num_classes,
                          tuple(output_shape) if output_shape else None,
                          source={"kind": kind, "spec": spec if kind != "text" else None})
    if weights is not None:
        candidate.state_dict = read_state_dict(weights)
        candidate.weights = {"kind": "file", "file": str(Path(weights).resolve())}
    return candidate


def from_task(spec: str, task: str, weights: str | Path | None = None, *, size: str = "default",
              seed: int = 0, bare: bool = False) -> Candidate:
    """An architecture with (optional) weights trained on ``task`` (a built-in name or
    ``unseen:/path``) by einspace's trainer: the task gives the shapes and, unless ``bare``, the
    trainer's input transformation with the task's train-split statistics."""
    from einspace.tasks.handle import resolve_task

    handle = resolve_task(task)
    data = handle.load(seed, size)
    candidate = from_spec(spec, data.input_shape, data.num_classes, data.target_shape, weights)
    candidate.task = {"name": task, "size": size, "seed": seed}
    if not bare:
        candidate.preprocessing = task_preprocessing(data, handle.directory(seed, size),
                                                     handle.recipe().normalize, final=False)
    return candidate


def from_run(run_dir: str | Path, *, rank: int | None = None, trial: int | None = None,
             allow_untrained: bool = False, bare: bool = False) -> Candidate:
    """The ``rank``-th best successful trial of a run (default the best), or trial ``trial``;
    it takes the task's raw arrays unless ``bare``."""
    from einspace.search.engine import load_search_task, read_run_config, search_recipe

    run = Path(run_dir)
    if not run.is_dir():
        raise ExportError(f"{run} is not a directory")
    config = read_run_config(run)
    trials = _trials(run, config)
    chosen, place = _choose(run, trials, rank, trial, allow_untrained)
    data = load_search_task(config)  # an Unseen-NAS task is memory-mapped
    candidate = Candidate(chosen.derivation, data.input_shape, data.num_classes,
                          data.target_shape,
                          source={"kind": "run", "run_dir": str(run.resolve()),
                                  "trial": chosen.index, "rank": place,
                                  "origin": chosen.origin, "status": chosen.status},
                          task={k: config.task[k] for k in ("name", "size", "seed")},
                          scores=_scores(run, chosen))
    weights = _weights_file(run, chosen.index)
    if weights is not None:
        candidate.state_dict = read_state_dict(weights)
        kind = "final" if weights.parent.name == "final" else "search"
        candidate.weights = {"kind": kind, "file": str(weights.resolve()),
                             "note": "retrained on train + valid (final evaluation)"
                             if kind == "final" else "trained during the search"}
    elif not allow_untrained:
        raise ExportError(
            f"no weights for trial {chosen.index} of {run}: weights/trial-{chosen.index}.pt is "
            f"missing (a search keeps the weights of its best search.keep_weights = "
            f"{config.search['keep_weights']} trials); --allow-untrained exports the "
            f"architecture with random initial weights")
    if not bare:
        final = candidate.weights["kind"] == "final"
        candidate.preprocessing = task_preprocessing(
            data, _task_dir(config.task), search_recipe(config).normalize, final)
    return candidate


def task_preprocessing(data, task_dir: Path, normalize: bool, final: bool) -> Preprocessing:
    """What the trainer did to ``data``'s inputs: float32 and, with ``normalize``, the
    statistics of the train split (of train + valid for weights of the final evaluation),
    computed by the trainer's own function; ``task_dir`` holds the task's stored arrays."""
    from einspace.tasks.trainer import fit_normalizer

    fitted = data.for_final() if final else data
    normalizer = fit_normalizer(fitted) if normalize else None
    split = "test" if "test" in data.splits else "valid"
    rows = data.splits[split].x[:3]
    raw_x = fitted.splits["train"].x
    missing_axis = _stored_without_channels(task_dir)
    if missing_axis:  # the loader added the axis as a view: give the rows as they are stored
        rows, raw_x = rows[:, 0], raw_x[:, 0]
    return Preprocessing(normalizer, "train + valid splits (the final evaluation's training "
                         "data)" if final else "train split", input_dtype(rows.dtype),
                         tuple(rows.shape[1:]), value_range(raw_x), np.asarray(rows), split,
                         missing_axis)


def _task_dir(task: dict) -> Path:
    """The directory of a run's task arrays (a built-in task's cached copy)."""
    from einspace.tasks.handle import resolve_task

    return resolve_task(task["name"]).directory(task["seed"], task["size"], task["root"])


def _stored_without_channels(task_dir: Path) -> bool:
    """Whether a task stores its inputs as (N, H, W) (the loader adds C = 1)."""
    try:
        return np.load(task_dir / "train_x.npy", mmap_mode="r").ndim == 3
    except (OSError, ValueError):
        return False


def _trials(run: Path, config) -> list:
    from einspace.search.store import TrialStore, open_run_store

    url = config.search["storage"]
    store = TrialStore(url, create=False) if url else open_run_store(run)
    try:
        return store.latest()
    except EinspaceError:
        raise
    except Exception as e:  # the database layer raises many kinds for a damaged file
        raise ExportError(f"cannot read the trials of {run} ({first_line(e)})") from None


def _choose(run: Path, trials: list, rank: int | None, trial: int | None,
            allow_untrained: bool):
    """(the trial, its rank among the successful trials or None)."""
    from einspace.search.outputs import ranked
    from einspace.tasks.status import Status

    if trial is not None:
        chosen = next((t for t in trials if t.index == trial), None)
        if chosen is None:
            known = f"0 to {max(t.index for t in trials)}" if trials else "none yet"
            raise ExportError(f"{run} has no trial {trial} (its trial indices: {known})")
        if chosen.status != Status.OK and not allow_untrained:
            state = {Status.FAILED: f"failed ({chosen.reason})",
                     Status.STOPPED: "was stopped early",
                     None: "has not finished"}.get(chosen.status, f"is {chosen.status}")
            raise ExportError(f"trial {trial} of {run} {state}, so it has no trained weights; "
                              f"--allow-untrained exports its architecture with random "
                              f"initial weights")
        order = [t.index for t in ranked(trials) if t.status == Status.OK]
        return chosen, order.index(trial) + 1 if trial in order else None
    successful = [t for t in ranked(trials) if t.status == Status.OK]
    k = rank or 1
    if not successful:
        failed = sum(t.status == Status.FAILED for t in trials)
        raise ExportError(f"{run} has no successful trial to export ({len(trials)} trial(s), "
                          f"{failed} failed)")
    if k > len(successful):
        raise ExportError(f"--rank {k} is out of range: {run} has {len(successful)} "
                          f"successful trial(s)")
    return successful[k - 1], k


def _weights_file(run: Path, index: int) -> Path | None:
    for folder in ("final", "weights"):
        path = run / folder / f"trial-{index}.pt"
        if path.is_file():
            return path
    return None


def _scores(run: Path, trial) -> dict:
    """The trial's search score and, when the run's final evaluation retrained it, its test
    score (an unreadable ``final/results.json`` only loses the test score)."""
    scores = {"search": trial.score}
    try:
        results = json.loads((run / "final" / "results.json").read_text())
        entry = next(r for r in results if r.get("index") == trial.index)
        scores["test"] = entry.get("test_score")
    except (OSError, ValueError, StopIteration, AttributeError, TypeError):
        pass
    return scores
