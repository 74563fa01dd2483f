"""Choosing the one candidate a screened trial slot trains, out of the K a strategy proposed.

The search loop asks the strategy for K distinct new candidates (same stream continued, as for
duplicates) whenever the strategy :meth:`~einspace.search.strategies.Strategy.screens` that
slot.  The picker first drops those the loop's own pre-launch screen would reject (the memory
budget, and whatever else is composed into it): a candidate too large to train must never be
built on the driver to be ranked.  The :class:`Screener` ranks the rest and the best one is
returned, with how it was chosen in its ``choices`` (stored with the trial):

``screening: {method, seconds, ranking: [[hash, value], ...] best first, failures: {hash:
reason}}`` where ``failures`` holds the discarded candidates' reasons.

Every finished trial is passed to :meth:`CandidatePicker.observe` in the loop's tell order, so
the surrogate learns the same things in the same order in an uninterrupted and a resumed run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from einspace.tasks.data import TaskData

from ..strategies import Outcome, Proposal, Strategy
from .batch import screening_batch
from .options import ScreeningOptions
from .screen import Screener

Reject = Callable[[Proposal], "str | None"]
"""The loop's pre-launch screen: a reason to reject a proposal, or None."""


class CandidatePicker:
    """Asks for K candidates per screened slot and trains the best-ranked one."""

    def __init__(self, screener: Screener):
        self.screener = screener

    @property
    def seconds(self) -> float:
        """Wall-clock seconds spent ranking candidates and learning from trials."""
        return self.screener.seconds

    def wanted(self, strategy: Strategy, index: int) -> int:
        """How many distinct candidates to draw for trial ``index`` (1: train it unscreened)."""
        return self.screener.options.candidates if strategy.screens(index) else 1

    def pick(self, proposals: Sequence[Proposal], reject: Reject | None) -> Proposal:
        """The proposal to train out of ``proposals`` (distinct new networks, at least one)."""
        if len(proposals) == 1:
            return proposals[0]
        failures: dict[str, str] = {}
        kept = []
        for proposal in proposals:
            reason = reject(proposal) if reject is not None else None
            if reason:
                failures[proposal.derivation.hash] = reason
            else:
                kept.append(proposal)
        if not kept:
            return proposals[0]  # the loop's screen rejects and records it, as unscreened
        by_hash = {p.derivation.hash: p for p in kept}
        screening = self.screener.screen([p.derivation for p in kept])
        failures.update({r.derivation.hash: r.failure for r in screening.ranking if r.failure})
        record = {"method": screening.method, "seconds": round(screening.seconds, 6),
                  "ranking": [[r.derivation.hash, r.value] for r in screening.ranking],
                  "failures": failures}
        best = by_hash[screening.best.hash]
        return dataclasses.replace(best, choices={**best.choices, "screening": record})

    def observe(self, outcome: Outcome) -> None:
        """Learn from a finished trial: only a full-budget score teaches the surrogate."""
        self.screener.observe(outcome.derivation, outcome.score if outcome.usable else None)


def search_picker(options: ScreeningOptions, data: TaskData, seed: int) -> CandidatePicker | None:
    """The picker of a search with these options on ``data`` (None with screening off: then
    no Screener is built and no extra candidate is drawn).  Its proxies see one batch of the
    train split's inputs, never a label."""
    if not options.enabled:
        return None
    batch = screening_batch(data, options.batch_size, seed)
    return CandidatePicker(Screener(options, batch, num_classes=data.num_classes,
                                    output_shape=data.target_shape, seed=seed))
