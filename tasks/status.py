"""The one set of names for how a training run or a search trial ended.

It lives in ``tasks`` because that is the lowest layer that needs it: the trainer ends a run
``ok``, ``failed`` or ``stopped``; the search layer above adds the endings that only a trial
has (screened out before launch, its worker lost, its driver killed).  The values are plain
strings (a ``str`` enum), so what the trial database, leaderboards and summaries store stays the
same text and a status read back from them compares equal to its member.
"""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """How a training run or a search attempt ended (``str(Status.OK)`` is ``"ok"``)."""

    OK = "ok"
    """Trained for its full budget (or until its time limit); its score may be compared."""
    FAILED = "failed"
    """The candidate broke (an exception, a non-finite loss, out of memory): score -inf."""
    STOPPED = "stopped"
    """Ended early on purpose (a callback, a scheduler such as ASHA): a partial score."""
    REJECTED = "rejected"
    """Never launched: screened out before training (it would not fit the memory a trial has)."""
    LOST = "lost"
    """An attempt whose worker died (killed, its node lost) and that was run again."""
    INTERRUPTED = "interrupted"
    """An attempt cut off by the driver's crash or by Tune stopping for another worker; run
    again as a new attempt."""

    def __str__(self) -> str:
        return self.value
