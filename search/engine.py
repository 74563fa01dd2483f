"""The search driver: Ray Tune runs the trials, the loop proposes them, the store keeps them.

``run_search(config, run_dir)`` starts (or, with ``resume=True``, continues) a search:

1. the run directory gets the resolved ``config.yaml`` and the trial database;
2. the task is loaded once on the driver and shipped to the workers through Ray's object store
   (``tune.with_parameters``), so workers need no shared file system;
3. a Tune ``Searcher`` adapter asks the :class:`~einspace.search.loop.SearchLoop` for the next
   proposal, writes it to the store *before* Tune starts it, and writes every epoch's score and
   the outcome as they arrive; Tune runs each candidate as a trial with the declared CPUs/GPUs,
   at most ``workers`` at a time, optionally under ASHA;
4. on resume, attempts the killed driver left running are marked ``interrupted`` and run again
   first, finished trials are replayed into the strategy (see the loop's docstring for the exact
   ordering guarantees), and the search continues to the same budget.

Nothing here trains or samples by itself: strategies propose, ``search.trial`` trains on the
worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from einspace import count
from einspace.analysis import annotate
from einspace.errors import ConfigError
from einspace.seeds import load_seed, seed_names
from einspace.tasks import builtin  # noqa: F401  (registers the built-in tasks)
from einspace.tasks.data import TaskData
from einspace.tasks.recipe import Recipe
from einspace.tasks.registry import load_task, task_recipe
from einspace.text import parse

from .config import SearchConfig, resolve
from .evolution import RegularisedEvolution
from .final import final_evaluation, previous_final
from .loop import DONE, WAIT, LoopTrial, SearchLoop
from .optuna_strategy import OptunaStrategy
from .outputs import write_outputs
from .progress import Progress
from .random_search import RandomSearch
from .store import TrialStore, default_url
from .strategy import FAILED, OK, STOPPED, Outcome, Strategy
from .trial import ModelWrapper, run_trial
from .weights import WeightKeeper

CONFIG_FILE = "config.yaml"
LAG_PER_WORKER = 2
"""Deterministic ordering tells the strategy the results of trials up to n - 2*workers before it
proposes trial n.  A lag of just ``workers`` would be the freshest information, but then a free
slot often waits for one particular older trial, and Ray Tune retires the idle worker process
meanwhile, so the next trial pays a process start-up (measured: 1 -> 2 workers gave 0.9x the
trials per minute); with twice the lag a wait needs a trial to run longer than two others."""


@dataclass
class SearchSummary:
    """What a finished (or budget-stopped) search produced."""

    run_dir: Path
    trials: int
    failed: int
    best_index: int | None
    best_score: float | None
    best_derivation: str | None
    seconds: float
    exhausted: bool
    final: list[dict]


def search_recipe(config: SearchConfig) -> Recipe:
    """The recipe trials train with: the task's (defaults, its metric and own overrides), then
    the config's ``training`` section."""
    return task_recipe(config.task["name"], config.raw["training"])


def load_search_task(config: SearchConfig) -> TaskData:
    task = config.task
    return load_task(task["name"], task["root"], seed=task["seed"], size=task["size"])


def resolve_seeds(names: list[str], input_shape: tuple[int, ...]) -> list[tuple[str, object]]:
    """Shipped seed names or derivation texts, each checked against the task's input shape."""
    seeds = []
    for k, spec in enumerate(names):
        if spec in seed_names():
            label, derivation = spec, load_seed(spec)
        elif spec.lstrip().startswith("("):
            label, derivation = f"text{k}", parse(spec)
        else:
            raise ConfigError(f"evolution.seeds[{k}] = {spec!r} is neither a shipped seed "
                              f"({', '.join(seed_names())}) nor derivation text")
        try:
            annotate(derivation, input_shape)
        except Exception as e:
            raise ConfigError(f"evolution.seeds[{k}] ({label}) does not fit the task's input "
                              f"shape {input_shape}: {e}") from None
        seeds.append((label, derivation))
    return seeds


def make_strategy(config: SearchConfig, input_shape: tuple[int, ...]) -> Strategy:
    sampler = config.space.sampler()
    if config.strategy == "random":
        return RandomSearch(sampler, input_shape)
    if config.strategy == "optuna":
        return OptunaStrategy(sampler, input_shape, kind=config.raw["optuna"]["sampler"])
    evo = config.raw["evolution"]
    return RegularisedEvolution(sampler, input_shape, population_size=evo["population_size"],
                                tournament_size=evo["tournament_size"],
                                seeds=resolve_seeds(evo["seeds"], input_shape),
                                crossover_rate=evo["crossover_rate"])


def prepare_run_dir(config: SearchConfig, run_dir: Path) -> None:
    """A fresh run directory with the resolved config (refuses to reuse a used one)."""
    if (run_dir / CONFIG_FILE).exists():
        raise ConfigError(f"{run_dir} already holds a search; continue it with "
                          f"`einspace search --resume {run_dir}` or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def read_run_config(run_dir: Path) -> SearchConfig:
    file = run_dir / CONFIG_FILE
    if not file.is_file():
        raise ConfigError(f"{run_dir} is not a search run directory (no {CONFIG_FILE})")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{file}: not valid YAML: {str(e).splitlines()[0]}") from None
    return resolve(data)


def store_url(config: SearchConfig, run_dir: Path) -> str:
    return config.search["storage"] or default_url(run_dir)


class SearchDriver:
    """Connects the loop, the store and the progress display to Tune's callbacks."""

    def __init__(self, config: SearchConfig, run_dir: Path, loop: SearchLoop, store: TrialStore,
                 data: TaskData, progress: Progress, elapsed_before: float):
        self.config = config
        self.run_dir = run_dir
        self.loop = loop
        self.store = store
        self.data = data
        self.progress = progress
        self.time_budget = config.search["time"]
        self.elapsed_before = elapsed_before
        self.started = time.time()
        self.attempts: dict[str, tuple[int, int]] = {}  # Tune trial id -> (index, attempt)
        self.epochs: dict[str, list[dict]] = {}  # per-epoch reports of running trials
        self.tune_trials: dict[str, object] = {}
        self.best: tuple[float, int] | None = None
        for trial in loop.finished:
            self._note_best(trial)

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def suggest(self, trial_id: str):
        if self.time_budget is not None and self.elapsed >= self.time_budget:
            self.loop.stop()
        item = self.loop.next()
        if item is WAIT:
            return None
        if item is DONE:
            return DONE
        number = self.store.start(item.index, item.proposal, self._cost(item))
        self.attempts[trial_id] = (item.index, number)
        self.progress.started(item.index)
        return {"index": item.index, "derivation": item.proposal.derivation.text,
                "seed": self.config.seed,
                "threads": max(1, math.floor(self.config.search["cpus_per_trial"]))}

    def on_result(self, trial_id: str, result: dict) -> None:
        if result.get("kind") != "epoch" or trial_id not in self.attempts:
            return
        seen = self.epochs.setdefault(trial_id, [])
        if seen and seen[-1]["epoch"] >= result["epoch"]:
            if seen[-1]["epoch"] == result["epoch"]:
                return  # the same result again (see on_complete)
            seen.clear()  # a retried attempt starts over
        seen.append({k: result[k] for k in ("epoch", "train_loss", "score", "seconds")})
        self.store.epoch(self.attempts[trial_id][1], result["epoch"], result["score"])
        self.progress.epoch(self.attempts[trial_id][0], result["epoch"], result["score"])

    def on_complete(self, trial_id: str, result: dict | None, error: bool) -> None:
        if trial_id not in self.attempts:
            return
        if result and result.get("kind") == "epoch":
            # Stopped by the scheduler: Tune completes the trial with the result it stopped on
            # before (or instead of) forwarding that result to on_result.
            self.on_result(trial_id, result)
        index, number = self.attempts.pop(trial_id)
        trial = self.loop.trials[index]
        if error:
            status, score = FAILED, -math.inf
            reason = self._error_reason(trial_id)
            info = {}
        elif not result or result.get("kind") != "final":
            history = self.epochs.get(trial_id, [])
            status = STOPPED
            score = history[-1]["score"] if history else -math.inf
            reason = f"stopped early by the scheduler after epoch {len(history)}"
            info = {"history": history, "epochs_run": len(history)}
        else:
            status, score, reason = result["status"], result["score"], result["reason"]
            info = {k: result[k] for k in ("history", "seconds", "epochs_run", "device",
                                           "gpu_ids", "began", "node", "host", "pid",
                                           "weights_kept")
                    if k in result}
        self.epochs.pop(trial_id, None)
        if status == FAILED:
            score = -math.inf
        outcome = Outcome(index, trial.proposal.derivation, score, status,
                          trial.proposal.choices)
        tell_seq = self.loop.finish(index, outcome)
        self.store.finish(number, status, score, reason, info, tell_seq)
        self.store.set_run("elapsed", self.elapsed)
        if self._note_best(trial):
            (self.run_dir / "best.arch").write_text(trial.proposal.derivation.text + "\n")
        self.progress.finished(index, status, score, self.best)

    def _note_best(self, trial: LoopTrial) -> bool:
        """Whether a finished trial is the new best (ties go to the lower index)."""
        outcome = trial.outcome
        if outcome.status != OK or (self.best is not None
                                    and (outcome.score, -trial.index)
                                    <= (self.best[0], -self.best[1])):
            return False
        self.best = (outcome.score, trial.index)
        return True

    def _error_reason(self, trial_id: str) -> str:
        trial = self.tune_trials.get(trial_id)
        error = trial.get_error() if trial is not None else None
        text = str(error).strip().splitlines() if error else []
        detail = next((line for line in text if "died" in line or "Error" in line),
                      text[0] if text else "")
        retries = self.config.search["retries"]
        return (f"the trial's worker failed after {retries + 1} attempt(s): "
                f"{detail or 'see the Ray logs'}")

    def _cost(self, item: LoopTrial) -> dict:
        cost = count(item.proposal.derivation, self.data.input_shape, self.data.num_classes,
                     self.data.target_shape)
        return {"params": cost.params, "flops": cost.flops, "activations": cost.activations}


def _not_restorable() -> None:
    """What Tune gets back when it unpickles our adapters: nothing (a run resumes from the
    trial database, never from Tune's own experiment state)."""


def _tune_adapters(driver: SearchDriver):
    """The Tune Searcher and Callback that forward to the driver (built lazily: importing Ray
    Tune takes seconds).  Tune pickles its searcher and callbacks into its experiment state;
    ``__reduce__`` keeps the driver (data, database handle, terminal) out of those pickles."""
    from ray import tune
    from ray.tune.search import Searcher

    class LoopSearcher(Searcher):
        def __init__(self, target: SearchDriver):
            super().__init__(metric="score", mode="max")
            self.driver = target

        def suggest(self, trial_id: str):
            config = self.driver.suggest(trial_id)
            return Searcher.FINISHED if config is DONE else config

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            self.driver.on_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None,
                              error: bool = False) -> None:
            self.driver.on_complete(trial_id, result, error)

        def __reduce__(self):
            return _not_restorable, ()

    class TrialRegistry(tune.Callback):
        def __init__(self, target: SearchDriver):
            self.driver = target

        def on_trial_start(self, iteration, trials, trial, **info):
            self.driver.tune_trials[trial.trial_id] = trial

        def __reduce__(self):
            return _not_restorable, ()

    return LoopSearcher(driver), TrialRegistry(driver)


def start_ray(address: str | None) -> bool:
    """Connect to ``address`` or start Ray in-process; returns whether this call started it."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # The trial database is the record; Tune's CSV/JSON/TensorBoard result files would only
    # duplicate it (and TensorBoard warns about the -inf score of every failed candidate).
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    kwargs = {"include_dashboard": False, "log_to_driver": False,
              "logging_level": logging.ERROR}
    try:
        ray.init(address=address, **kwargs) if address else ray.init(**kwargs)
    except ConnectionError as e:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {e}") from None
    except ray.exceptions.AuthenticationError as e:
        raise ConfigError(f"the Ray cluster at {address!r} refused this driver's token ({e}); "
                          f"export the cluster's RAY_AUTH_MODE and RAY_AUTH_TOKEN (see the "
                          f"README's cluster section)") from None
    return True


def run_search(config: SearchConfig | None, run_dir: str | Path, *, resume: bool = False,
               address: str | None = None, workers: int | None = None,
               wrap_model: ModelWrapper | None = None, quiet: bool = False) -> SearchSummary:
    """Run a search into ``run_dir`` (a new directory; with ``resume``, an existing one whose
    stored config is used and ``config`` is ignored).

    ``address`` and ``workers`` override the config (a resumed search may move to a cluster);
    ``wrap_model`` is a fault-injection hook for tests (see :mod:`einspace.search.trial`)."""
    run_dir = Path(run_dir)
    if resume:
        config = read_run_config(run_dir)
    search = config.search
    workers = workers or search["workers"]
    data = load_search_task(config)
    recipe = search_recipe(config)
    strategy = make_strategy(config, data.input_shape)
    if not resume:
        prepare_run_dir(config, run_dir)
    with run_lock(run_dir):
        store = TrialStore(store_url(config, run_dir))
        loop = _restore_loop(config, store, strategy, resume)
        progress = Progress(search["trials"], search["time"], quiet=quiet, epochs=recipe.epochs)
        progress.restored(loop)
        driver = SearchDriver(config, run_dir, loop, store, data, progress,
                              elapsed_before=store.run("elapsed", 0.0) if resume else 0.0)
        started_ray = start_ray(address or search["address"])
        final: list[dict] = []
        try:
            _fit(driver, config, recipe, data, run_dir, workers, wrap_model)
            store.set_run("elapsed", driver.elapsed)
            progress.close()
            write_outputs(run_dir, store)
            interrupted = bool(loop.running)
            if interrupted:
                progress.log(f"search interrupted with {len(loop.running)} trial(s) unfinished; "
                             f"continue it with `einspace search --resume {run_dir}`")
            elif config.raw["final"]["top_k"] and driver.best is not None:
                final = previous_final(store, config.raw["final"]["top_k"]) or final_evaluation(
                    run_dir, store, data, recipe, top_k=config.raw["final"]["top_k"],
                    epochs=config.raw["final"]["epochs"], seed=config.seed,
                    cpus=search["cpus_per_trial"], gpus=search["gpus_per_trial"],
                    log=progress.log, progress=progress)
        finally:
            if started_ray:
                import ray
                ray.shutdown()
    trials = store.latest()
    best = driver.best
    return SearchSummary(run_dir, len(trials), sum(t.status == FAILED for t in trials),
                         best[1] if best else None, best[0] if best else None,
                         loop.trials[best[1]].proposal.derivation.text if best else None,
                         driver.elapsed, loop.exhausted, final)


def _restore_loop(config: SearchConfig, store: TrialStore, strategy: Strategy,
                  resume: bool) -> SearchLoop:
    """A fresh loop, or on resume the loop rebuilt from the store (interrupted attempts marked
    and queued to run again).  The ordering lag comes from the config's ``workers`` (the
    resolved config is written before any trial), so a resumed run repeats the uninterrupted one
    even when it is given a different number of workers."""
    search = config.search
    lag = LAG_PER_WORKER * search["workers"] if search["ordering"] == "deterministic" else None
    loop = SearchLoop(strategy, seed=config.seed, max_trials=search["trials"], lag=lag)
    if resume:
        store.interrupt_unfinished()
        loop.restore([LoopTrial(t.index, t.as_proposal(), t.as_outcome(), t.tell_seq)
                      for t in store.latest()])
    return loop


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold an exclusive lock on the run directory: two drivers on one run would corrupt it.
    The operating system releases the lock when the holder dies, even by SIGKILL."""
    handle = (run_dir / ".lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(f"{run_dir} is in use by another running search") from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def evaluate_run(run_dir: str | Path, *, top_k: int | None = None, epochs: int | None = None,
                 address: str | None = None, quiet: bool = False) -> list[dict]:
    """``einspace evaluate``: the final evaluation of an existing run (its config's ``final``
    section unless ``top_k``/``epochs`` are given)."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    store = TrialStore(store_url(config, run_dir), create=False)
    data = load_search_task(config)
    final_cfg = config.raw["final"]
    search = config.search
    progress = Progress(None, None, quiet=quiet)
    started_ray = start_ray(address or search["address"])
    try:
        return final_evaluation(run_dir, store, data, search_recipe(config),
                                top_k=top_k or final_cfg["top_k"] or 1,
                                epochs=epochs or final_cfg["epochs"], seed=config.seed,
                                cpus=search["cpus_per_trial"], gpus=search["gpus_per_trial"],
                                log=progress.log, progress=progress)
    finally:
        if started_ray:
            import ray
            ray.shutdown()


def _fit(driver: SearchDriver, config: SearchConfig, recipe: Recipe, data: TaskData,
         run_dir: Path, workers: int, wrap_model: ModelWrapper | None) -> None:
    import ray
    from ray import tune
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    search = config.search
    keeper = None
    if search["keep_weights"]:
        here = ray.get_runtime_context().get_node_id()
        keeper = ray.remote(num_cpus=0)(WeightKeeper).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote(
            str((run_dir / "weights").resolve()), search["keep_weights"])
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, data=data, recipe=recipe, keeper=keeper,
                             wrap_model=wrap_model),
        {"cpu": search["cpus_per_trial"], "gpu": search["gpus_per_trial"]})
    scheduler = None
    if search["scheduler"] == "asha":
        from ray.tune.schedulers import ASHAScheduler
        # max_t one past the last epoch: ASHA stops a trial that reaches max_t, which would
        # cut off a full-length trial's final report (its outcome and weights).
        scheduler = ASHAScheduler(time_attr="epoch", metric="score", mode="max",
                                  max_t=recipe.epochs + 1, grace_period=search["grace_epochs"])
    searcher, registry = _tune_adapters(driver)
    session = len([p for p in (run_dir / "tune").glob("session-*")]) \
        if (run_dir / "tune").is_dir() else 0
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=-1,
                                    max_concurrent_trials=workers, reuse_actors=True,
                                    trial_dirname_creator=lambda t: f"trial-{t.config['index']}"),
        run_config=tune.RunConfig(name=f"session-{session}",
                                  storage_path=str((run_dir / "tune").resolve()), verbose=0,
                                  failure_config=tune.FailureConfig(
                                      max_failures=search["retries"]),
                                  callbacks=[registry]))
    tuner.fit()
