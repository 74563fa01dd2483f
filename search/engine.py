"""Running a search: Ray Tune runs the trials, the loop proposes them, the store keeps them.

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
worker.  This module sets a run up (or restores it) and finishes it; the Tune callbacks are
:mod:`einspace.search.driver`'s, the Tune sessions :mod:`einspace.search.tune_session`'s, and
the run directory's files :mod:`einspace.search.run_dir`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from einspace.tasks.data import TaskData
from einspace.tasks.recipe import Recipe
from einspace.tasks.status import Status

from .cluster import check_address, start_ray
from .config import SearchConfig, resolve
from .driver import SearchDriver
from .fidelity import successive_halving
from .final import final_candidates, final_evaluation, previous_final
from .loop import LoopTrial, SearchLoop, first_rejection
from .outputs import write_outputs
from .progress import Progress
from .resources import MemoryScreen, derived_max_activations, resolve_memory_budget
from .run_dir import RunDir
from .screening import CandidatePicker, search_picker
from .search_task import load_search_task, search_recipe
from .store import TrialStore, open_run_store
from .strategies import Strategy, StrategyContext, create_strategy
from .time_budget import time_screen
from .trial import ModelWrapper
from .tune_session import fit_to_the_end

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
    exhausted: str
    """Why the search stopped before its budget was spent ("" when it did not)."""
    final: list[dict]
    rejected: int = 0


def make_strategy(config: SearchConfig, input_shape: tuple[int, ...]) -> Strategy:
    return create_strategy(config.strategy, config.settings,
                           StrategyContext(config.space.sampler(), tuple(input_shape)))


def check_run_store(run: RunDir, config: SearchConfig) -> None:
    """Before a resume loads anything: the run's database must be readable.  A run killed
    before its first trial has none yet and resumes from nothing; one whose outputs show
    trials but whose database is gone is refused (it would silently start over)."""
    if config.search["storage"] is None and not run.database.exists() \
            and not run.has_outputs():
        return
    open_run_store(run.path, config.search["storage"]).latest()


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
    run = RunDir(run_dir)
    if resume:  # a missing or damaged database stops here, not after a new one was made
        config = run.config()
        check_run_store(run, config)
    address = address or config.search["address"]
    check_address(address)
    data = load_search_task(config)
    recipe = search_recipe(config)
    created = not run.path.exists()
    run.make()
    try:
        started_ray = start_ray(address)
    except BaseException:
        if created and not any(run.path.iterdir()):
            run.path.rmdir()  # a failed start leaves nothing behind
        raise
    try:
        with run.lock():
            if not resume:
                config = settle_resources(config, recipe, data)
                run.prepare(config)
            return _search(config, run, data, recipe, resume=resume,
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


def _search(config: SearchConfig, run: RunDir, data: TaskData, recipe: Recipe, *,
            resume: bool, workers: int, final_top_k: int, wrap_model: ModelWrapper | None,
            quiet: bool) -> SearchSummary:
    search = config.search
    budget = search["memory_per_trial"]
    screen = MemoryScreen(data, recipe, budget if isinstance(budget, int) else None)
    store = TrialStore(run.store_url(search["storage"]))
    timing = time_screen(search, store, data, recipe)
    picker = search_picker(config.screening, data, config.seed)
    loop = _restore_loop(config, store, make_strategy(config, data.input_shape), resume,
                         first_rejection(screen, timing), picker)
    if timing is not None:
        timing.follow(loop, store if resume else None)
    progress = Progress(search["trials"], search["time"], quiet=quiet, epochs=recipe.epochs)
    progress.restored(loop)
    driver = SearchDriver(config, run, loop, store, data, progress,
                          elapsed_before=store.run("elapsed", 0.0) if resume else 0.0,
                          screen=screen, time_screen=timing)
    screening_before = store.run("screening_seconds", 0.0) if resume else 0.0
    final: list[dict] = []
    fit_to_the_end(driver, config, recipe, data, run, workers, wrap_model)
    store.set_run("elapsed", driver.elapsed)
    if picker is not None:
        store.set_run("screening_seconds", screening_before + picker.seconds)
    progress.close()
    write_outputs(run, store)
    if loop.running:
        progress.log(f"search interrupted with {len(loop.running)} trial(s) unfinished; "
                     f"continue it with `einspace search --resume {run}`")
    elif final_top_k and driver.best is not None:
        final = previous_final(store, final_top_k) or final_evaluation(
            run, store, data, recipe, top_k=final_top_k,
            epochs=config.raw["final"]["epochs"], seed=config.seed,
            cpus=search["cpus_per_trial"], gpus=search["gpus_per_trial"], log=progress.log,
            progress=progress)
    trials = store.latest()
    best = driver.best
    return SearchSummary(run.path, sum(t.status != Status.REJECTED for t in trials),
                         sum(t.status == Status.FAILED for t in trials),
                         best[1] if best else None, best[0] if best else None,
                         loop.trials[best[1]].proposal.derivation.text if best else None,
                         driver.elapsed, loop.exhausted, final,
                         rejected=sum(t.status == Status.REJECTED for t in trials))


def _restore_loop(config: SearchConfig, store: TrialStore, strategy: Strategy,
                  resume: bool, screen=None, picker: CandidatePicker | None = None) -> SearchLoop:
    """A fresh loop, or on resume the loop rebuilt from the store (interrupted attempts marked
    and queued to run again).  The ordering lag comes from the config's ``workers`` (the
    resolved config is written before any trial), so a resumed run repeats the uninterrupted one
    even when it is given a different number of workers."""
    search = config.search
    lag = LAG_PER_WORKER * search["workers"] if search["ordering"] == "deterministic" else None
    loop = SearchLoop(strategy, seed=config.seed, max_trials=search["trials"], lag=lag,
                      screen=screen, picker=picker,
                      ladder=successive_halving(config.raw["fidelity"]))
    if resume:
        store.interrupt_unfinished()
        loop.restore([LoopTrial(t.index, t.as_proposal(), t.as_outcome(), t.tell_seq,
                                rung=t.rung) for t in store.latest()])
    return loop


def evaluate_run(run_dir: str | Path, *, top_k: int | None = None, epochs: int | None = None,
                 address: str | None = None, quiet: bool = False) -> list[dict]:
    """``einspace evaluate``: the final evaluation of an existing run (its config's ``final``
    section unless ``top_k``/``epochs`` are given)."""
    run = RunDir(run_dir)
    config = run.config()
    store = open_run_store(run.path, config.search["storage"])
    data = load_search_task(config)
    final_cfg = config.raw["final"]
    search = config.search
    final_candidates(run, store, top_k or final_cfg["top_k"] or 1)  # before Ray starts
    progress = Progress(None, None, quiet=quiet)
    address = address or search["address"]
    check_address(address)
    started_ray = start_ray(address)
    try:
        return final_evaluation(run, store, data, search_recipe(config),
                                top_k=top_k or final_cfg["top_k"] or 1,
                                epochs=epochs or final_cfg["epochs"], seed=config.seed,
                                cpus=search["cpus_per_trial"], gpus=search["gpus_per_trial"],
                                log=progress.log, progress=progress)
    finally:
        if started_ray:
            import ray
            ray.shutdown()
