"""Running the search's trials on Ray Tune: the trainable, the Tune searcher and callback that
forward to the :class:`~einspace.search.driver.SearchDriver`, the weight keeper, and the
sessions.

A memory-monitor kill, which Tune cannot deliver as a trial error, raises out of ``Tuner.fit``
and ends a session: :func:`fit_to_the_end` records it through the driver and starts a new
session, until the loop is done.  Ray is imported only when a session starts (it takes
seconds).
"""

from __future__ import annotations

import functools
import logging
import zlib

from einspace.tasks.data import TaskData
from einspace.tasks.recipe import Recipe

from .config import SearchConfig
from .driver import SearchDriver
from .faults import describe, is_memory_kill
from .idle_actors import keep_idle_actors
from .loop import DONE
from .resources import trial_resources
from .run_dir import RunDir
from .store import WRITE_FAILED, StoreError
from .trial import ModelWrapper, run_trial
from .weights import KeeperSpec


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


def fit_to_the_end(driver: SearchDriver, config: SearchConfig, recipe: Recipe, data: TaskData,
                   run: RunDir, workers: int, wrap_model: ModelWrapper | None) -> None:
    """Run Tune sessions until the loop is done: a session that Tune aborts (a memory-monitor
    kill raises out of ``Tuner.fit``) is recorded by :meth:`SearchDriver.crashed` and followed
    by a new one.  Each abort settles at least one attempt for good or uses one of its
    ``retries``, so this ends."""
    import ray

    keeper, driver.keeper_handle = _weight_keeper(
        config, run, pool=driver.loop.strategy.weight_parents() is not None)
    while True:
        try:
            fit_session(driver, config, recipe, data, run, workers, wrap_model, keeper)
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


def _weight_keeper(config: SearchConfig, run: RunDir, pool: bool):
    """The run's weight keeper, started on the driver's node, and the driver's handle, which
    keeps it alive (trials reach it by name and start it again if it dies); needed to keep the
    best trials' weights, or (``pool``) the parents' for weight inheritance.  Not restartable by
    Ray on purpose: Ray's memory monitor kills retriable workers first, and the keeper must not
    be the one it picks."""
    import ray

    if not config.search["keep_weights"] and not pool:
        return None, None
    directory = run.weights_dir.resolve()
    spec = KeeperSpec(f"einspace-weights-{zlib.crc32(str(directory).encode()):08x}",
                      ray.get_runtime_context().get_node_id(), str(directory),
                      config.search["keep_weights"])
    return spec, spec.handle()


def fit_session(driver: SearchDriver, config: SearchConfig, recipe: Recipe, data: TaskData,
                run: RunDir, workers: int, wrap_model: ModelWrapper | None,
                keeper: KeeperSpec | None) -> None:
    """One Tune session: ``Tuner.fit`` over the loop's proposals until the loop is done or Tune
    aborts; each session stores its state in a folder of its own under ``RUN/tune``."""
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
    for name in ("ray.tune", "ray.air", "ray.train"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=-1,
                                    max_concurrent_trials=workers, reuse_actors=True,
                                    trial_dirname_creator=lambda t: run.tune_trial_folder(
                                        t.config["index"])),
        run_config=tune.RunConfig(name=run.next_tune_session(),
                                  storage_path=str(run.tune_dir.resolve()), verbose=0,
                                  failure_config=tune.FailureConfig(
                                      max_failures=search["retries"]),
                                  callbacks=[registry]))
    with keep_idle_actors(workers):
        tuner.fit()
