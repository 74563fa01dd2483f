"""The search driver's side of Ray Tune: what happens when Tune asks for a trial, reports one
and completes, retries or loses one.

:class:`SearchDriver` turns each Tune callback into the loop's and the store's terms: a proposal
is recorded before Tune starts it, every epoch and outcome as it arrives, a lost attempt with its
node, seconds and reason.  It never talks to Tune itself (see :mod:`einspace.search.tune_session`),
so its bookkeeping can be driven by hand.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

from einspace import count
from einspace.tasks.data import TaskData
from einspace.tasks.status import Status

from .config import SearchConfig
from .faults import describe, killed_actor
from .inheriting import plan_for
from .loop import DONE, WAIT, LoopTrial, SearchLoop
from .progress import Progress
from .resources import MemoryScreen
from .run_dir import RunDir
from .store import TrialStore
from .strategies import Outcome
from .time_budget import TimeScreen

INHERITANCE_KEYS = ("inherited_params", "fresh_params", "inherited_from", "inherit_missing",
                    "inherit_error", "pooled")
"""What a trial's final report says about the weights it inherited and pooled."""

COLLATERAL_LIMIT = 5
"""How often a trial may be cut short by Tune stopping for *another* worker's death (a
memory-monitor kill of a process that is not a trial) before it is failed: keeps a node that
kills its workers over and over from looping the search."""


class SearchDriver:
    """Connects the loop, the store and the progress display to Tune's callbacks."""

    def __init__(self, config: SearchConfig, run: RunDir, loop: SearchLoop, store: TrialStore,
                 data: TaskData, progress: Progress, elapsed_before: float,
                 screen: MemoryScreen | None = None, time_screen: TimeScreen | None = None):
        self.config = config
        self.run = run
        self.loop = loop
        self.store = store
        self.data = data
        self.progress = progress
        self.screen = screen
        self.time_screen = time_screen
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
        self.released: set[int] = set()  # trials whose pooled weights were released
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
                "memory": self.screen.request() if self.screen else None,
                **self._fidelity(item), **self._inheritance(item)}

    def _inheritance(self, item: LoopTrial) -> dict:
        """The trial config's weight-inheritance keys: none when the strategy never inherits;
        else ``pool`` (its weights may make a parent) and, for a child, its ``inherit`` plan."""
        if self.loop.strategy.weight_parents() is None:
            return {}
        plan = plan_for(item.proposal.choices, lambda i: self.loop.trials[i].proposal.derivation)
        return {"pool": True, **({"inherit": plan.to_config()} if plan is not None else {})}

    def _fidelity(self, item: LoopTrial) -> dict:
        """What a trial of the ladder trains on: its rung's data fraction and epochs (nothing
        without a ladder, so such a trial trains as it always has)."""
        if self.loop.ladder is None:
            return {}
        rung = self.loop.ladder.rungs[item.rung]
        return {"fraction": rung.fraction, "epochs": rung.epochs}

    def _launch(self, trial_id: str, item: LoopTrial) -> None:
        number = self.store.start(item.index, item.proposal,
                                  {**self._cost(item), **self._rung_record(item)})
        self.attempts[trial_id] = (item.index, number)
        self.launched[trial_id] = time.time()
        self.progress.started(item.index)

    def _rung_record(self, item: LoopTrial) -> dict:
        if self.loop.ladder is None:
            return {}
        return {"rung": self.loop.ladder.rungs[item.rung].record()}

    def _record_rejections(self) -> None:
        for trial in self.loop.take_rejections():
            number = self.store.start(trial.index, trial.proposal,
                                      {**self._cost(trial), **self._rung_record(trial)})
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
        index = self.attempts[trial_id][0]
        self.progress.epoch(index, result["epoch"], result["score"],
                            self._fidelity(self.loop.trials[index]).get("epochs"))

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
                                           "weights_kept", "compile", "gpu",
                                           *INHERITANCE_KEYS)
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
        if self.time_screen is not None:
            self.time_screen.observe(index, trial.proposal, info)
        self.store.finish(number, status, score, reason, info, tell_seq)
        self.store.set_run("elapsed", self.elapsed)
        if self._note_best(trial):
            self.run.write_best_arch(trial.proposal.derivation.text)
        self.progress.finished(index, status, score, self.best)
        self._release_weights()

    def _release_weights(self) -> None:
        """Drop the pooled weights no one can inherit any more: kept are the strategy's
        possible parents, every trial it has not been told about yet (it may still become
        one) and the parents of every unfinished child (it fetches them when it starts, and a
        lost attempt starts again)."""
        living = self.loop.strategy.weight_parents()
        if living is None or self.keeper_handle is None:
            return
        needed = set(living)
        for trial in self.loop.trials:
            if trial.tell_seq is None:
                needed.add(trial.index)
            if trial.outcome is None:
                needed.update(trial.proposal.choices.get("inherit_from", ()))
        done = {t.index for t in self.loop.trials if t.tell_seq is not None}
        released = sorted(done - needed - self.released)
        if released:
            self.keeper_handle.release.remote(released)
            self.released.update(released)

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
        """Whether a finished trial is the new best: the highest fidelity rung first (only
        results at one rung compete), then the score; ties go to the lower index."""
        outcome = trial.outcome
        if outcome.status != Status.OK:
            return False
        if self.best is not None:
            best = self.loop.trials[self.best[1]]
            if (trial.rung, outcome.score, -trial.index) \
                    <= (best.rung, self.best[0], -self.best[1]):
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
        if self.time_screen is not None:
            info["epoch_seconds_estimate"] = self.time_screen.epoch_estimate(item.proposal)
        return info
