"""The trial database: every trial of a run, stored as it happens, in an Optuna study.

Optuna's RDB storage is the store (SQLite file ``trials.db`` in the run directory by default, any
SQLAlchemy URL such as PostgreSQL on a cluster), so ``optuna-dashboard sqlite:///RUN/trials.db``
browses a run.  One Optuna trial per *attempt*: a trial interrupted by a crash of the driver is
marked failed with ``status=interrupted`` and re-run as a new attempt with the same ``index``;
readers take the latest finished attempt per index.  Only the driver writes.

User attributes of a trial: ``trial`` (index, hash, canonical derivation text, origin,
parents, strategy choices, params, FLOPs, activations, and with a fidelity ladder the
``rung`` (level, data fraction, epochs) it trains at; written in one transaction before the
trial starts) and, when it ends, ``outcome`` (status ok / failed / stopped / interrupted, score,
reason, per-epoch history, seconds, node, ``tell_seq``; one transaction, then the Optuna state).
A candidate screened out before launch (status ``rejected``, e.g. over the memory budget) is
recorded the same way, with its estimate, and never ran.
A driver killed between any two writes leaves a readable database.  The per-epoch eval score is
also an Optuna intermediate value, so the dashboard draws learning curves.  Run-level facts (the
resolved config, the strategy ordering) are study user attributes.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

from einspace.derivation import Derivation
from einspace.errors import ConfigError, EinspaceError
from einspace.tasks.status import Status
from einspace.text import parse

from .run_dir import RunDir
from .strategies import Outcome, Proposal

STUDY = "einspace"
WRITE_FAILED = "cannot write the trial database"
RECORD, OUTCOME = "trial", "outcome"
_STATES = {Status.OK: TrialState.COMPLETE, Status.FAILED: TrialState.FAIL,
           Status.STOPPED: TrialState.PRUNED, Status.INTERRUPTED: TrialState.FAIL,
           Status.LOST: TrialState.FAIL, Status.REJECTED: TrialState.FAIL}

optuna.logging.set_verbosity(optuna.logging.WARNING)


class StoreError(EinspaceError):
    """A trial database that cannot be opened, read or written."""


def _writing(method):
    """A store write whose database cannot be written (disk full, read-only, locked past the
    timeout) ends the search with one line: every finished trial is already stored, so the run
    resumes once the cause is fixed."""
    @functools.wraps(method)
    def write(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except StoreError:
            raise
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError,
                OSError) as e:
            root = e.__cause__ if isinstance(e, optuna.exceptions.StorageInternalError) else e
            cause = str(getattr(root, "orig", None) or root or e).strip().splitlines()[0]
            raise StoreError(f"{WRITE_FAILED} {self.url}: {cause}; finished trials are kept, "
                             f"resume with `einspace search --resume RUN` once it is "
                             f"writable") from None
    return write


@dataclass
class StoredTrial:
    """One attempt as read back from the database."""

    number: int
    index: int
    derivation: Derivation
    origin: str
    proposal: dict
    status: Status | None = None
    score: float | None = None
    reason: str = ""
    result: dict = field(default_factory=dict)
    tell_seq: int | None = None
    started: float | None = None
    finished: float | None = None

    @property
    def done(self) -> bool:
        return self.status in (Status.OK, Status.FAILED, Status.STOPPED, Status.REJECTED)

    @property
    def hash(self) -> str:
        return self.derivation.hash

    @property
    def rung(self) -> int:
        """The fidelity rung its result was measured at (0 for a search without a ladder)."""
        return self.proposal.get("rung", {}).get("level", 0)

    def as_proposal(self) -> Proposal:
        return Proposal(self.derivation, self.origin, tuple(self.proposal.get("parents", ())),
                        self.proposal.get("choices", {}))

    def as_outcome(self) -> Outcome | None:
        if not self.done:
            return None
        score = self.score if self.score is not None else -math.inf
        return Outcome(self.index, self.derivation, score, self.status,
                       self.proposal.get("choices", {}))


class TrialStore:
    """Write and read the trials of one run."""

    def __init__(self, url: str, *, create: bool = True):
        self.url = url
        try:
            self.storage = optuna.storages.RDBStorage(
                url, engine_kwargs={"connect_args": {"timeout": 60}}
                if url.startswith("sqlite") else {})
            if create:
                self.study = optuna.create_study(storage=self.storage, study_name=STUDY,
                                                 direction="maximize", load_if_exists=True)
            else:
                self.study = optuna.load_study(study_name=STUDY, storage=self.storage)
        except KeyError:
            raise StoreError(f"{url}: no einspace run in this database") from None
        except Exception as e:  # SQLAlchemy and Optuna raise many kinds for a bad file or URL
            raise StoreError(f"cannot open the trial database {url}: "
                             f"{str(e).splitlines()[0]}") from None
        self._ids: dict[int, int] = {}

    # -- run level -------------------------------------------------------------------------
    @_writing
    def set_run(self, key: str, value) -> None:
        self.study.set_user_attr(key, value)

    def run(self, key: str, default=None):
        return self.study.user_attrs.get(key, default)

    # -- trial level -----------------------------------------------------------------------
    @_writing
    def start(self, index: int, proposal: Proposal, info: dict) -> int:
        """Record a trial that is about to run; returns its attempt number (Optuna's).

        The whole record is one attribute, written in one transaction, so a driver killed at
        any moment leaves either a complete record or none."""
        trial = self.study.ask()
        self._ids[trial.number] = trial._trial_id
        record = {"index": index, "hash": proposal.derivation.hash,
                  "derivation": proposal.derivation.text, "origin": proposal.origin,
                  "parents": list(proposal.parents), "choices": proposal.choices,
                  "created": time.time(), **info}
        self.storage.set_trial_user_attr(trial._trial_id, RECORD, record)
        self.storage.set_trial_user_attr(trial._trial_id, "index", index)  # dashboard column
        return trial.number

    @_writing
    def epoch(self, number: int, epoch: int, score: float) -> None:
        if math.isfinite(score):
            self.storage.set_trial_intermediate_value(self._trial_id(number), epoch, score)

    @_writing
    def finish(self, number: int, status: Status, score: float, reason: str, result: dict,
               tell_seq: int | None) -> None:
        """Record how an attempt ended (``status`` ok, failed, stopped or interrupted): first the
        outcome attribute (one transaction), then the Optuna state."""
        finite = score if math.isfinite(score) else None
        outcome = {"status": status, "score": finite, "reason": reason, "result": result,
                   "tell_seq": tell_seq}
        self.storage.set_trial_user_attr(self._trial_id(number), OUTCOME, outcome)
        self._tell(number, outcome)

    def _tell(self, number: int, outcome: dict) -> None:
        state = _STATES[outcome["status"]]
        value = outcome["score"] if state == TrialState.COMPLETE else None
        if state == TrialState.COMPLETE and value is None:
            state = TrialState.FAIL
        self.study.tell(number, value, state=state)

    def interrupt_unfinished(self) -> list[int]:
        """Settle the attempts a killed driver left running: one whose outcome was already
        written gets its Optuna state; the others are marked interrupted (they run again).
        Returns the numbers of the interrupted ones."""
        numbers = []
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            outcome = trial.user_attrs.get(OUTCOME)
            if outcome is not None and outcome["status"] != Status.INTERRUPTED:
                self._tell(trial.number, outcome)
                continue
            self.finish(trial.number, Status.INTERRUPTED, -math.inf,
                        "the driver stopped before this trial finished; it was run again",
                        {}, None)
            numbers.append(trial.number)
        return numbers

    def trials(self) -> list[StoredTrial]:
        """Every recorded attempt, in attempt order."""
        try:
            stored = self.study.get_trials(deepcopy=False)
        except Exception as e:  # SQLAlchemy's errors for a damaged file, JSON's for its values
            raise StoreError(f"cannot read the trial database {self.url}: "
                             f"{str(e).splitlines()[0]}") from None
        out = []
        for t in stored:
            record = t.user_attrs.get(RECORD)
            if record is None:
                continue
            outcome = t.user_attrs.get(OUTCOME) or {}
            if t.state == TrialState.RUNNING:
                outcome = {}
            try:
                derivation = parse(record["derivation"])
                index = record["index"]
                status = None if outcome.get("status") is None else Status(outcome["status"])
            except (EinspaceError, KeyError, TypeError, ValueError) as e:
                raise StoreError(f"{self.url}: trial {t.number} holds an unreadable "
                                 f"record: {e}") from None
            proposal = {k: v for k, v in record.items()
                        if k not in ("index", "hash", "derivation", "origin")}
            out.append(StoredTrial(
                number=t.number, index=index, derivation=derivation,
                origin=record.get("origin", ""), proposal=proposal,
                status=status, score=outcome.get("score"),
                reason=outcome.get("reason", ""), result=outcome.get("result") or {},
                tell_seq=outcome.get("tell_seq"),
                started=t.datetime_start.timestamp() if t.datetime_start else None,
                finished=t.datetime_complete.timestamp() if t.datetime_complete else None))
        return out

    def latest(self) -> list[StoredTrial]:
        """One attempt per index: the finished one if any, else the last; in index order."""
        best: dict[int, StoredTrial] = {}
        for trial in self.trials():
            current = best.get(trial.index)
            if current is None or not current.done:
                best[trial.index] = trial
        return [best[i] for i in sorted(best)]

    def _trial_id(self, number: int) -> int:
        if number not in self._ids:
            self._ids[number] = self.storage.get_trial_id_from_study_id_trial_number(
                self.study._study_id, number)
        return self._ids[number]


def open_run_store(run_dir: str | Path, url: str | None = None) -> TrialStore:
    """The store of an existing run (``url`` overrides the run directory's SQLite file)."""
    run = RunDir(run_dir)
    if url is None:
        db = run.database
        if not db.is_file():
            raise ConfigError(f"{run}: no trial database ({db.name}) in this directory")
        if db.stat().st_size == 0:  # SQLite would take it for a new, empty database
            raise StoreError(f"the trial database {db} is empty (0 bytes): no einspace run in it")
    return TrialStore(run.store_url(url), create=False)
