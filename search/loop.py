"""Numbering, de-duplication and result ordering between a strategy and whatever runs trials.

The loop hands out trials (index, proposal) and takes back outcomes.  Two orderings:

* ``lag=k`` (**deterministic**; ``k`` is 1 by default, and the engine's searches use twice the
  number of concurrent trials, ``LAG_PER_WORKER`` in :mod:`einspace.search.engine`): before
  proposing trial ``n`` the strategy is told the outcomes of trials ``0 .. n-k``, in index order,
  and of no others.  Proposal ``n`` then depends only on the seed and those outcomes, so a search
  gives the same trials however the workers' timing falls, and a resumed search continues exactly
  as the uninterrupted one would.  A slot may wait for trial ``n-k`` to finish.
* ``lag=None`` (**asynchronous**): outcomes are told as they arrive, so a free worker never
  waits; the order of the tells is recorded (``tell_seq``) and replayed on resume.

Each proposal draws from ``random.Random(f"{seed}/{index}")``, so no RNG state needs saving.  A
proposal whose network was already proposed (the same ``canonical_hash``: trees that differ only
in re-associated sequences, identities or 1x1 reshapes count as one) is not trained again: the
strategy is asked again (its stream continues); after ``max_duplicate_draws`` duplicates in a row
the space is considered exhausted and the loop stops proposing.

An optional ``screen`` looks at every new proposal before it is handed out and may reject it
(returning the reason): a rejected proposal keeps its index and is told to the strategy as a
``rejected`` outcome like any other, but is never run and does not count against
``max_trials``.  A screen looks only at the proposal and at outcomes the strategy has already
been told (and whatever the run directory stores), so a resumed search rejects exactly what the
uninterrupted one did.

An optional ``picker`` (screening before training, the config's ``screening:`` section) makes a
slot draw K distinct new candidates instead of one and trains the one it picks; it is told every
outcome right after the strategy, in the same order.  Without it no extra draw is made.

An optional ``ladder`` (:class:`~einspace.search.fidelity.SuccessiveHalving`) adds a data
fidelity: every trial has a rung (0 for a strategy's proposal), the ladder sees every tell and
queues promotions, and a queued promotion is handed out, as a new trial of the same network at
the next rung, before the strategy is asked for anything new.  The strategy is told only the
rung-0 results of its own proposals, so every score it compares was measured at one fidelity;
higher rungs decide the search's best.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from einspace.canonical_form import canonical_hash
from einspace.tasks.status import Status

from .fidelity import Rung, SuccessiveHalving
from .strategies import Outcome, Proposal, Strategy

Screen = Callable[[Proposal], "str | None"]
"""``screen(proposal) -> reason`` to reject it before it runs, or None to let it run."""


def first_rejection(*screens: Screen | None) -> Screen:
    """One screen asking each of ``screens`` in turn (None ones skipped): the first reason
    wins."""
    chosen = [screen for screen in screens if screen is not None]

    def screen(proposal: Proposal) -> str | None:
        for each in chosen:
            reason = each(proposal)
            if reason:
                return reason
        return None

    return screen


class Picker(Protocol):
    """Screening before training (:class:`einspace.search.screening.CandidatePicker`): how many
    distinct candidates to draw for a slot, which one to train, and what finished trials say."""

    def wanted(self, strategy: Strategy, index: int) -> int: ...

    def pick(self, proposals: list[Proposal], reject: Screen | None) -> Proposal: ...

    def observe(self, outcome: Outcome) -> None: ...


class _Signal:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


WAIT = _Signal("WAIT")
"""No proposal now: an earlier outcome must arrive first (deterministic ordering)."""
DONE = _Signal("DONE")
"""No more proposals: the budget is spent or the space is exhausted."""


@dataclass
class LoopTrial:
    """One proposed trial as the loop tracks it."""

    index: int
    proposal: Proposal
    outcome: Outcome | None = None
    tell_seq: int | None = None
    reason: str = ""
    rung: int = 0
    """The fidelity rung it trains at (always 0 without a ladder)."""

    @property
    def rejected(self) -> bool:
        return self.outcome is not None and self.outcome.status == Status.REJECTED

    @property
    def hash(self) -> str:
        return self.proposal.derivation.hash


class SearchLoop:
    """Hands out numbered, de-duplicated proposals and feeds outcomes back in a fixed order."""

    def __init__(self, strategy: Strategy, *, seed: int, max_trials: int | None,
                 lag: int | None = 1, max_duplicate_draws: int = 100,
                 max_rejections_in_a_row: int = 200, screen: Screen | None = None,
                 picker: Picker | None = None, ladder: SuccessiveHalving | None = None):
        if lag is not None and lag < 1:
            raise ValueError("lag must be a positive integer or None")
        self.strategy = strategy
        self.seed = seed
        self.max_trials = max_trials
        self.lag = lag
        self.max_duplicate_draws = max_duplicate_draws
        self.max_rejections_in_a_row = max_rejections_in_a_row
        self.screen = screen
        self.picker = picker
        self.ladder = ladder
        self.rejections: list[LoopTrial] = []
        """Rejected trials not yet collected by the caller (see :meth:`take_rejections`)."""
        self.trials: list[LoopTrial] = []
        self.duplicates = 0
        self.exhausted = ""
        """Why the loop stopped proposing before its budget was spent ("" while it has not)."""
        self._rejected_in_a_row = 0
        self._networks: set[str] = set()  # canonical hashes of every proposal
        self._told = 0
        self._told_in_order = 0
        self._rerun: deque[int] = deque()
        self.stopped = False

    # -- handing out work ------------------------------------------------------------------
    def next(self) -> LoopTrial | _Signal:
        """The next trial to run (a re-run of an interrupted one first), WAIT or DONE; proposals
        the screen rejects on the way are collected in :attr:`rejections`."""
        while True:
            item = self._next_proposal()
            if not isinstance(item, LoopTrial) or item.outcome is None:
                self._rejected_in_a_row = 0
                return item
            self.rejections.append(item)
            self._rejected_in_a_row += 1
            if self._rejected_in_a_row >= self.max_rejections_in_a_row:
                # A budget no candidate fits would otherwise keep the loop drawing forever.
                self.exhausted = (f"the last {self._rejected_in_a_row} candidates were all "
                                  f"rejected before training (over the memory or time budget)")
                return DONE

    def take_rejections(self) -> list[LoopTrial]:
        """The trials rejected since the last call (for the caller to record)."""
        taken, self.rejections = self.rejections, []
        return taken

    @property
    def trained(self) -> int:
        """Trials that count against ``max_trials`` (all but the rejected)."""
        return sum(not t.rejected for t in self.trials)

    def _next_proposal(self) -> LoopTrial | _Signal:
        if self._rerun:
            return self.trials[self._rerun.popleft()]
        n = len(self.trials)
        if self.stopped or self.exhausted or (self.max_trials is not None
                                              and self.trained >= self.max_trials):
            return DONE
        if self.lag is not None:
            while self._told_in_order <= n - self.lag:
                trial = self.trials[self._told_in_order]
                if trial.outcome is None:
                    return WAIT
                self._tell(trial)
                self._told_in_order += 1
        promotion = self.ladder.next_promotion() if self.ladder is not None else None
        if promotion is not None:
            return self._promote(*promotion)
        rng = random.Random(f"{self.seed}/{n}")
        wanted = self.picker.wanted(self.strategy, n) if self.picker is not None else 1
        fresh: dict[str, Proposal] = {}
        for _ in range(self.max_duplicate_draws):
            proposal = self.strategy.ask(n, rng)
            network = canonical_hash(proposal.derivation)
            if network in self._networks or network in fresh:
                self.duplicates += 1
                continue
            fresh[network] = proposal
            if len(fresh) == wanted:
                break
        if not fresh:
            self.exhausted = "the space ran out of new architectures"
            return DONE
        candidates = list(fresh.values())
        chosen = candidates[0] if wanted == 1 else self.picker.pick(candidates, self.screen)
        return self._screened(self._add(chosen))

    def finish(self, index: int, outcome: Outcome) -> int | None:
        """Record a trial's outcome; returns its tell sequence number when the strategy was told
        now (asynchronous ordering), else None."""
        trial = self.trials[index]
        if trial.outcome is not None:
            return trial.tell_seq
        trial.outcome = outcome
        if self.lag is None:
            self._tell(trial)
        return trial.tell_seq

    def requeue(self, index: int) -> None:
        """Run a handed-out trial again (its attempt was lost or cut short) before anything new."""
        if self.trials[index].outcome is None and index not in self._rerun:
            self._rerun.append(index)

    def stop(self) -> None:
        """Propose nothing new (a time budget ran out); re-runs of interrupted trials still go."""
        self.stopped = True

    @property
    def running(self) -> list[LoopTrial]:
        return [t for t in self.trials if t.outcome is None]

    @property
    def finished(self) -> list[LoopTrial]:
        return [t for t in self.trials if t.outcome is not None]

    # -- resume --------------------------------------------------------------------------
    def restore(self, trials: list[LoopTrial]) -> list[int]:
        """Rebuild from stored trials (indices 0..n-1, each once) and return the indices to
        run again because they never finished.  Asynchronous tells are replayed in their
        recorded order, then any finished-but-untold ones in index order; deterministic tells
        happen lazily in :meth:`next` exactly as in an uninterrupted run."""
        if self.trials:
            raise RuntimeError("restore() needs a fresh loop")
        ordered = sorted(trials, key=lambda t: t.index)
        if [t.index for t in ordered] != list(range(len(ordered))):
            raise ValueError("stored trials must be numbered 0..n-1 without gaps")
        for stored in ordered:
            self._add(stored.proposal, stored.rung)
        if self.lag is None:
            told = sorted((t for t in ordered if t.outcome is not None and t.tell_seq is not None),
                          key=lambda t: t.tell_seq)
            untold = [t for t in ordered if t.outcome is not None and t.tell_seq is None]
            for stored in told + untold:
                self.trials[stored.index].outcome = stored.outcome
                self._tell(self.trials[stored.index])
        else:
            for stored in ordered:
                self.trials[stored.index].outcome = stored.outcome
        self._rerun.extend(t.index for t in ordered if t.outcome is None)
        return list(self._rerun)

    # -- internals -------------------------------------------------------------------------
    def _screened(self, trial: LoopTrial) -> LoopTrial:
        reason = self.screen(trial.proposal) if self.screen is not None else None
        if reason:
            trial.reason = reason
            self.finish(trial.index, Outcome(trial.index, trial.proposal.derivation, -math.inf,
                                             Status.REJECTED, trial.proposal.choices))
        return trial

    def _add(self, proposal: Proposal, rung: int = 0) -> LoopTrial:
        trial = LoopTrial(len(self.trials), proposal, rung=rung)
        self.trials.append(trial)
        self._networks.add(canonical_hash(trial.proposal.derivation))
        if rung > 0:
            self.ladder.promoted(proposal.parents[0])
        return trial

    def _promote(self, source: int, rung: Rung) -> LoopTrial:
        """A new trial of trial ``source``'s network at ``rung`` (never screened again: the
        memory a network needs does not depend on the data fraction or the epochs)."""
        proposal = self.trials[source].proposal
        return self._add(Proposal(proposal.derivation, "promotion", (source,), proposal.choices),
                         rung.level)

    def _tell(self, trial: LoopTrial) -> None:
        trial.tell_seq = self._told
        self._told += 1
        if self.ladder is not None:
            self.ladder.told(trial.outcome, trial.rung)
        if trial.rung == 0:
            self.strategy.tell(trial.outcome)
            if self.picker is not None:
                self.picker.observe(trial.outcome)
