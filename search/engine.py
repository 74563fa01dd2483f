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

No trial can take the driver down.  A candidate's own failures (exceptions, NaN, out-of-memory
inside the process) come back as failed results; a worker that dies (SIGKILL, a lost node) is
retried by Tune and every lost attempt is recorded with its node, seconds and reason; a
memory-monitor kill, which Tune cannot deliver as a trial error and raises out of
``Tuner.fit``, is caught here: the killed trial's attempt is recorded (failed for good after
``retries`` re-runs), the others are re-queued, and the search continues in a new Tune session.
Before any of that, candidates whose estimated training memory exceeds the per-trial budget are
rejected without being launched (:mod:`einspace.search.resources`).

Nothing here trains or samples by itself: strategies propose, ``search.trial`` trains on the
worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import math
import shutil
import sqlite3
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

from einspace import count
from einspace.errors import ConfigError
from einspace.tasks.data import TaskData
from einspace.tasks.handle import resolve_task
from einspace.tasks.recipe import Recipe
from einspace.tasks.status import Status

from .cluster import check_address, start_ray
from .config import SearchConfig, resolve
from .faults import describe, is_memory_kill, killed_actor
from .final import final_candidates, final_evaluation, previous_final
from .loop import DONE, WAIT, LoopTrial, SearchLoop
from .outputs import write_outputs
from .progress import Progress
from .resources import MemoryScreen, derived_max_activations, resolve_memory_budget, trial_resources
from .store import WRITE_FAILED, StoreError, TrialStore, default_url, open_run_store
from .strategies import Outcome, Strategy, StrategyContext, create_strategy
from .trial import ModelWrapper, run_trial
from .weights import KeeperSpec

CONFIG_FILE = "config.yaml"
COLLATERAL_LIMIT = 5
"""How often a trial may be cut short by Tune stopping for *another* worker's death (a
memory-monitor kill of a process that is not a trial) before it is failed: keeps a node that
kills its workers over and over from looping the search."""
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
    rejected: int = 0


def search_recipe(config: SearchConfig) -> Recipe:
    """The recipe trials train with: the task's (defaults, its metric and own overrides), then
    the config's ``training`` section."""
    return resolve_task(config.task["name"]).recipe(config.raw["training"])


def load_search_task(config: SearchConfig) -> TaskData:
    task = config.task
    return resolve_task(task["name"]).load(task["seed"], task["size"], task["root"])


def make_strategy(config: SearchConfig, input_shape: tuple[int, ...]) -> Strategy:
    return create_strategy(config.strategy, config.settings,
                           StrategyContext(config.space.sampler(), tuple(input_shape)))


def prepare_run_dir(config: SearchConfig, run_dir: Path) -> None:
    """A fresh run directory with the resolved config.  A directory whose search never got to
    its first trial (killed or refused during start-up) is reused; one holding trials is
    refused."""
    if (run_dir / CONFIG_FILE).exists():
        if recorded_trials(run_dir):
            raise ConfigError(f"{run_dir} already holds a search; continue it with "
                              f"`einspace search --resume {run_dir}` or choose another --out")
        (run_dir / "trials.db").unlink(missing_ok=True)
        shutil.rmtree(run_dir / "tune", ignore_errors=True)
    make_run_dir(run_dir)
    _write_atomic(run_dir / CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))


def make_run_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot make the run directory {run_dir}: {e.strerror} (--out "
                          f"chooses another)") from None


def check_run_store(run_dir: Path, config: SearchConfig) -> None:
    """Before a resume loads anything: the run's database must be readable.  A run killed
    before its first trial has none yet and resumes from nothing; one whose outputs show
    trials but whose database is gone is refused (it would silently start over)."""
    if config.search["storage"] is None and not (run_dir / "trials.db").exists():
        if not any((run_dir / name).exists() for name in ("leaderboard.csv", "summary.json",
                                                           "weights", "best.arch")):
            return
    open_run_store(run_dir, config.search["storage"]).latest()


def recorded_trials(run_dir: Path) -> int:
    """How many attempts the run's SQLite database records (0 when there is none yet)."""
    db = run_dir / "trials.db"
    if not db.is_file():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as connection:
            return connection.execute("select count(*) from trials").fetchone()[0]
    except sqlite3.Error:
        return 1  # unreadable: never overwrite it


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read_run_config(run_dir: Path) -> SearchConfig:
    file = run_dir / CONFIG_FILE
    if not run_dir.exists():
        raise ConfigError(f"{run_dir} is not a search run directory: it does not exist (no "
                          f"search was started there; start one with `einspace search --config "
                          f"... --out {run_dir}`)")
    if not file.is_file():
        if run_dir.is_dir() and not any(p.name not in (".lock",) for p in run_dir.iterdir()):
            raise ConfigError(f"{run_dir} is not a search run directory yet (no {CONFIG_FILE}): "
                              f"if its search was stopped before it started, nothing was lost; "
                              f"run the original `einspace search` command again with --out "
                              f"{run_dir}")
        raise ConfigError(f"{run_dir} is not a search run directory (no {CONFIG_FILE})")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{file}: not valid YAML: {str(e).splitlines()[0]}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{file}: not valid UTF-8 text ({e.reason} at byte {e.start})") \
            from None
    if not data:  # resolving nothing would silently give the defaults' task and budget
        raise ConfigError(f"{file} is empty; it should hold the run's resolved config")
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the resolved config must be a mapping of sections")
    return resolve(data)


def store_url(config: SearchConfig, run_dir: Path) -> str:
    return config.search["storage"] or default_url(run_dir)


class SearchDriver:
    """Connects the loop, the store and the progress display to Tune's callbacks."""

    def __init__(self, config: SearchConfig, run_dir: Path, loop: SearchLoop, store: TrialStore,
                 data: TaskData, progress: Progress, elapsed_before: float,
                 screen: MemoryScreen | None = None):
        self.config = config
        self.run_dir = run_dir
        self.loop = loop
        self.store = store
        self.data = data
        self.progress = progress
        self.screen = screen
        self.time_budget = config.search["time"]
        self.elapsed_before = elapsed_before
        self.started = time.time()
        self.attempts: dict[str, tuple[int, int]] = {}  # Tune trial id -> (index, attempt)
        self.launched: dict[str, float] = {}  # Tune trial id -> when its attempt was recorded
        self.where: dict[str, dict] = {}  # Tune trial id -> node and pid of its worker
        self.epochs: dict[str, list[dict]] = {}  # per-epoch reports of running trials
        self.tune_trials: dict[str, object] = {}
        self.actors: dict[str, str] = {}  # Tune trial id -> its Ray actor's hex id
        self.keeper_handle = None  # keeps the weight keeper alive (Ray collects unowned actors)
        self.lost = Counter(t.index for t in store.trials() if t.status == Status.LOST)
        self.collateral: Counter[int] = Counter()
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
        self._record_rejections()
        if item is WAIT:
            return None
        if item is DONE:
            return DONE
        self._launch(trial_id, item)
        return {"index": item.index, "derivation": item.proposal.derivation.text,
                "seed": self.config.seed,
                "threads": max(1, math.floor(self.config.search["cpus_per_trial"])),
                "memory": self.screen.request(item.proposal) if self.screen else None}

    def _launch(self, trial_id: str, item: LoopTrial) -> None:
        number = self.store.start(item.index, item.proposal, self._cost(item))
        self.attempts[trial_id] = (item.index, number)
        self.launched[trial_id] = time.time()
        self.progress.started(item.index)

    def _record_rejections(self) -> None:
        for trial in self.loop.take_rejections():
            number = self.store.start(trial.index, trial.proposal, self._cost(trial))
            self.store.finish(number, trial.outcome.status, -math.inf, trial.reason, {},
                              trial.tell_seq)
            self.progress.log(f"trial {trial.index}: {trial.reason}")

    def on_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self.attempts:
            return
        if result.get("kind") == "start":
            self.where[trial_id] = {k: result[k] for k in ("node", "host", "pid") if k in result}
            return
        if result.get("kind") != "epoch":
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
        if error:
            status, score = Status.FAILED, -math.inf
            reason = self._error_reason(trial_id)
            info = self._attempt_info(trial_id)
        elif not result or result.get("kind") != "final":
            history = self.epochs.get(trial_id, [])
            status = Status.STOPPED
            score = history[-1]["score"] if history else -math.inf
            reason = f"stopped early by the scheduler after epoch {len(history)}"
            info = {"history": history, "epochs_run": len(history)}
        else:
            status, score, reason = result["status"], result["score"], result["reason"]
            info = {k: result[k] for k in ("history", "seconds", "epochs_run", "device",
                                           "gpu_ids", "began", "node", "host", "pid",
                                           "weights_kept", "compile", "gpu")
                    if k in result}
        self._forget(trial_id)
        self._finish(index, number, status, score, reason, info)

    def _finish(self, index: int, number: int, status: Status, score: float, reason: str,
                info: dict) -> None:
        trial = self.loop.trials[index]
        if status == Status.FAILED:
            score = -math.inf
        outcome = Outcome(index, trial.proposal.derivation, score, status,
                          trial.proposal.choices)
        tell_seq = self.loop.finish(index, outcome)
        self.store.finish(number, status, score, reason, info, tell_seq)
        self.store.set_run("elapsed", self.elapsed)
        if self._note_best(trial):
            (self.run_dir / "best.arch").write_text(trial.proposal.derivation.text + "\n")
        self.progress.finished(index, status, score, self.best)

    def on_recover(self, trial_id: str) -> None:
        """Tune is retrying a trial whose worker died (SIGKILL, a lost node or raylet): the lost
        attempt keeps its own record and the retry gets a new one."""
        if trial_id not in self.attempts:
            return
        index, number = self.attempts[trial_id]
        reason = f"attempt lost, retried: {describe(self._tune_error(trial_id))}"
        self.store.finish(number, Status.LOST, -math.inf, reason, self._attempt_info(trial_id),
                          None)
        self.lost[index] += 1
        self._forget(trial_id)
        self._launch(trial_id, self.loop.trials[index])

    def crashed(self, error: BaseException) -> None:
        """Tune aborted its run on a failure it cannot deliver as a trial error (a memory-monitor
        kill): the killed trial's attempt is recorded as lost (failed for good once it has used
        up ``retries``), every other running attempt as interrupted, and both are queued to run
        again in the next Tune session."""
        reason = describe(error)
        actor = killed_actor(str(error))
        culprits = [tid for tid in self.attempts if actor is None
                    or actor[0] == self.actors.get(tid)
                    or actor[1] == self.where.get(tid, {}).get("pid")]
        for trial_id, (index, number) in list(self.attempts.items()):
            info = self._attempt_info(trial_id)
            self.attempts.pop(trial_id)
            self._forget(trial_id)
            if trial_id not in culprits:
                self.collateral[index] += 1
                if self.collateral[index] > COLLATERAL_LIMIT:
                    self._finish(index, number, Status.FAILED, -math.inf,
                                 f"cut short {self.collateral[index]} times when Tune stopped "
                                 f"for other workers; last: {reason}", info)
                    continue
                self.store.finish(number, Status.INTERRUPTED, -math.inf,
                                  f"stopped when another worker was {reason}; run again",
                                  info, None)
                self.loop.requeue(index)
                continue
            self.lost[index] += 1
            attempts = self.lost[index]
            if attempts > self.config.search["retries"]:
                self._finish(index, number, Status.FAILED, -math.inf,
                             f"{reason} ({attempts} attempt(s))", info)
            else:
                self.store.finish(number, Status.LOST, -math.inf,
                                  f"attempt lost, retried: {reason}", info, None)
                self.loop.requeue(index)

    def _attempt_info(self, trial_id: str) -> dict:
        began = self.launched.get(trial_id)
        # node None: the attempt died before its worker's first report (still starting up)
        return {"node": None, **self.where.get(trial_id, {}),
                "seconds": time.time() - began if began is not None else None}

    def _forget(self, trial_id: str) -> None:
        for table in (self.epochs, self.launched, self.where):
            table.pop(trial_id, None)

    def _note_best(self, trial: LoopTrial) -> bool:
        """Whether a finished trial is the new best (ties go to the lower index)."""
        outcome = trial.outcome
        if outcome.status != Status.OK or (self.best is not None
                                    and (outcome.score, -trial.index)
                                    <= (self.best[0], -self.best[1])):
            return False
        self.best = (outcome.score, trial.index)
        return True

    def _tune_error(self, trial_id: str) -> str | None:
        """The latest failure Tune recorded for a trial (its error file on the driver holds one
        block per failure; the storage copy, which ``Trial.get_error`` reads, may lag)."""
        trial = self.tune_trials.get(trial_id)
        if trial is None:
            return None
        name = trial.run_metadata.error_filename
        local = Path(trial.local_path, name) if trial.local_path and name else None
        text = local.read_text() if local is not None and local.is_file() else trial.get_error()
        return text.rsplit("Failure # ", 1)[-1].split("\n", 1)[-1] if text else None

    def _error_reason(self, trial_id: str) -> str:
        retries = self.config.search["retries"]
        return (f"the trial's worker failed after {retries + 1} attempt(s): "
                f"{describe(self._tune_error(trial_id))}")

    def _cost(self, item: LoopTrial) -> dict:
        cost = count(item.proposal.derivation, self.data.input_shape, self.data.num_classes,
                     self.data.target_shape)
        info = {"params": cost.params, "flops": cost.flops, "activations": cost.activations}
        if self.screen is not None:
            info["memory_estimate"] = self.screen.estimate(item.proposal).total
        return info


def _actor_id(tune_trial) -> str | None:
    actor = getattr(getattr(tune_trial, "temporary_state", None), "ray_actor", None)
    return actor._actor_id.hex() if actor is not None else None


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
            self.driver.actors[trial.trial_id] = _actor_id(trial)

        def on_trial_recover(self, iteration, trials, trial, **info):
            self.driver.on_recover(trial.trial_id)

        def __reduce__(self):
            return _not_restorable, ()

    return LoopSearcher(driver), TrialRegistry(driver)


def run_search(config: SearchConfig | None, run_dir: str | Path, *, resume: bool = False,
               address: str | None = None, workers: int | None = None,
               final_top_k: int | None = None, wrap_model: ModelWrapper | None = None,
               quiet: bool = False) -> SearchSummary:
    """Run a search into ``run_dir`` (a new directory; with ``resume``, an existing one whose
    stored config is used and ``config`` is ignored).

    ``address`` (``local`` for a local Ray), ``workers`` and ``final_top_k`` (0: no final
    evaluation) override the config for this session only (a resumed search may move to another
    cluster); ``wrap_model`` is a fault-injection hook for tests (see
    :mod:`einspace.search.trial`)."""
    run_dir = Path(run_dir)
    if resume:  # a missing or damaged database stops here, not after a new one was made
        config = read_run_config(run_dir)
        check_run_store(run_dir, config)
    address = address or config.search["address"]
    check_address(address)
    data = load_search_task(config)
    recipe = search_recipe(config)
    created = not run_dir.exists()
    make_run_dir(run_dir)
    try:
        started_ray = start_ray(address)
    except BaseException:
        if created and not any(run_dir.iterdir()):
            run_dir.rmdir()  # a failed start leaves nothing behind
        raise
    try:
        with run_lock(run_dir):
            if not resume:
                config = settle_resources(config, recipe, data)
                prepare_run_dir(config, run_dir)
            return _search(config, run_dir, data, recipe, resume=resume,
                           workers=workers or config.search["workers"],
                           final_top_k=config.raw["final"]["top_k"] if final_top_k is None
                           else final_top_k, wrap_model=wrap_model, quiet=quiet)
    finally:
        if started_ray:
            import ray
            ray.shutdown()


def settle_resources(config: SearchConfig, recipe: Recipe, data: TaskData) -> SearchConfig:
    """The config with its per-trial memory budget resolved to bytes (``auto`` looks at the Ray
    nodes) and, unless the config sets one, the sampler's activation budget derived from it; the
    run directory stores the result, so a resumed search screens exactly as this one."""
    raw = config.to_dict()
    search = raw["search"]
    budget = resolve_memory_budget(search["memory_per_trial"], workers=search["workers"],
                                   cpus_per_trial=search["cpus_per_trial"])
    search["memory_per_trial"] = budget if budget is not None else "off"
    if budget is not None and "max_activations" not in raw["budget"]:
        derived = derived_max_activations(budget, recipe, data)
        raw["budget"] = {**raw["budget"], "max_activations": min(
            derived, config.space.budget.max_activations)}
    return resolve(raw)


def _search(config: SearchConfig, run_dir: Path, data: TaskData, recipe: Recipe, *,
            resume: bool, workers: int, final_top_k: int, wrap_model: ModelWrapper | None,
            quiet: bool) -> SearchSummary:
    search = config.search
    budget = search["memory_per_trial"]
    screen = MemoryScreen(data, recipe, budget if isinstance(budget, int) else None)
    store = TrialStore(store_url(config, run_dir))
    loop = _restore_loop(config, store, make_strategy(config, data.input_shape), resume, screen)
    progress = Progress(search["trials"], search["time"], quiet=quiet, epochs=recipe.epochs)
    progress.restored(loop)
    driver = SearchDriver(config, run_dir, loop, store, data, progress,
                          elapsed_before=store.run("elapsed", 0.0) if resume else 0.0,
                          screen=screen)
    final: list[dict] = []
    _fit_to_the_end(driver, config, recipe, data, run_dir, workers, wrap_model)
    store.set_run("elapsed", driver.elapsed)
    progress.close()
    write_outputs(run_dir, store)
    if loop.running:
        progress.log(f"search interrupted with {len(loop.running)} trial(s) unfinished; "
                     f"continue it with `einspace search --resume {run_dir}`")
    elif final_top_k and driver.best is not None:
        final = previous_final(store, final_top_k) or final_evaluation(
            run_dir, store, data, recipe, top_k=final_top_k,
            epochs=config.raw["final"]["epochs"], seed=config.seed,
            cpus=search["cpus_per_trial"], gpus=search["gpus_per_trial"], log=progress.log,
            progress=progress)
    trials = store.latest()
    best = driver.best
    return SearchSummary(run_dir, sum(t.status != Status.REJECTED for t in trials),
                         sum(t.status == Status.FAILED for t in trials),
                         best[1] if best else None, best[0] if best else None,
                         loop.trials[best[1]].proposal.derivation.text if best else None,
                         driver.elapsed, loop.exhausted, final,
                         rejected=sum(t.status == Status.REJECTED for t in trials))


def _fit_to_the_end(driver: SearchDriver, config: SearchConfig, recipe: Recipe, data: TaskData,
                    run_dir: Path, workers: int, wrap_model: ModelWrapper | None) -> None:
    """Run Tune sessions until the loop is done: a session that Tune aborts (a memory-monitor
    kill raises out of ``Tuner.fit``) is recorded by :meth:`SearchDriver.crashed` and followed
    by a new one.  Each abort settles at least one attempt for good or uses one of its
    ``retries``, so this ends."""
    import ray

    keeper, driver.keeper_handle = _weight_keeper(config, run_dir)
    while True:
        try:
            _fit(driver, config, recipe, data, run_dir, workers, wrap_model, keeper)
            return
        except Exception as error:  # Tune re-raises whatever the failed future held
            failure = _store_failure(error)
            if failure is not None:
                raise failure from None
            if not (driver.attempts and ray.is_initialized() and _from_ray(error)):
                raise
            driver.progress.log(f"Tune stopped: {describe(error)}; recording the running "
                                f"trials and continuing")
            driver.crashed(error)
            if keeper is not None:
                driver.keeper_handle = keeper.handle()  # started again if it died


def _store_failure(error: BaseException) -> StoreError | None:
    """The store's write failure inside an exception out of Tune (Tune re-raises a callback's
    error as a TuneError holding its traceback text)."""
    for line in reversed(str(error).splitlines()):
        if WRITE_FAILED in line:
            return StoreError(line[line.index(WRITE_FAILED):])
    return None


def _from_ray(error: BaseException) -> bool:
    """Whether an exception out of ``Tuner.fit`` is Ray reporting a dead worker (rather than a
    bug of ours, which must surface)."""
    import ray

    while error is not None:
        if isinstance(error, ray.exceptions.RayError) or is_memory_kill(str(error)):
            return True
        error = error.__cause__
    return False


def _restore_loop(config: SearchConfig, store: TrialStore, strategy: Strategy,
                  resume: bool, screen=None) -> SearchLoop:
    """A fresh loop, or on resume the loop rebuilt from the store (interrupted attempts marked
    and queued to run again).  The ordering lag comes from the config's ``workers`` (the
    resolved config is written before any trial), so a resumed run repeats the uninterrupted one
    even when it is given a different number of workers."""
    search = config.search
    lag = LAG_PER_WORKER * search["workers"] if search["ordering"] == "deterministic" else None
    loop = SearchLoop(strategy, seed=config.seed, max_trials=search["trials"], lag=lag,
                      screen=screen)
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
    store = open_run_store(run_dir, config.search["storage"])
    data = load_search_task(config)
    final_cfg = config.raw["final"]
    search = config.search
    final_candidates(run_dir, store, top_k or final_cfg["top_k"] or 1)  # before Ray starts
    progress = Progress(None, None, quiet=quiet)
    address = address or search["address"]
    check_address(address)
    started_ray = start_ray(address)
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


def _weight_keeper(config: SearchConfig, run_dir: Path):
    """The run's weight keeper, started on the driver's node, and the driver's handle, which
    keeps it alive (trials reach it by name and start it again if it dies).  Not restartable by
    Ray on purpose: Ray's memory monitor kills retriable workers first, and the keeper must not
    be the one it picks."""
    import ray

    if not config.search["keep_weights"]:
        return None, None
    directory = (run_dir / "weights").resolve()
    spec = KeeperSpec(f"einspace-weights-{zlib.crc32(str(directory).encode()):08x}",
                      ray.get_runtime_context().get_node_id(), str(directory),
                      config.search["keep_weights"])
    return spec, spec.handle()


def _fit(driver: SearchDriver, config: SearchConfig, recipe: Recipe, data: TaskData,
         run_dir: Path, workers: int, wrap_model: ModelWrapper | None,
         keeper: KeeperSpec | None) -> None:
    from ray import tune

    search = config.search
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, data=data, recipe=recipe, keeper=keeper,
                             wrap_model=wrap_model),
        functools.partial(trial_resources, cpus=search["cpus_per_trial"],
                          gpus=search["gpus_per_trial"]))
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
    for name in ("ray.tune", "ray.air", "ray.train"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
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
