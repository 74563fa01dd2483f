"""The live terminal display of a search: trials done / running / failed, best so far, ETA.

On a terminal one status line is redrawn in place; otherwise (a log file, CI) one line is
printed per finished trial.  Everything goes to stderr so stdout stays the search's result.
"""

from __future__ import annotations

import math
import sys
import time

from .strategy import FAILED


class Progress:
    """Counts trials and redraws the status line."""

    def __init__(self, max_trials: int | None, max_seconds: float | None, quiet: bool = False,
                 stream=None):
        self.max_trials = max_trials
        self.max_seconds = max_seconds
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started_at = time.time()
        self.done = self.failed = self.running = self.resumed = 0
        self.best: tuple[float, int] | None = None

    def restored(self, loop) -> None:
        finished = loop.finished
        self.resumed = self.done = len(finished)
        self.failed = sum(t.outcome.status == FAILED for t in finished)
        if finished:
            self._emit(f"resumed: {self.done} finished trials kept, "
                       f"{len(loop.running)} to run again", newline=True)

    def started(self, index: int) -> None:
        self.running += 1
        self._draw()

    def finished(self, index: int, status: str, score: float,
                 best: tuple[float, int] | None) -> None:
        self.running = max(0, self.running - 1)
        self.done += 1
        self.failed += status == FAILED
        self.best = best
        if self.live:
            self._draw()
        else:
            shown = f"{score:.4f}" if math.isfinite(score) else status
            self._emit(f"trial {index}: {shown} ({status}) | {self.status_line()}", newline=True)

    def status_line(self) -> str:
        total = f"/{self.max_trials}" if self.max_trials else ""
        best = (f"best {self.best[0]:.4f} (trial {self.best[1]})" if self.best
                else "best -")
        return (f"{self.done}{total} done, {self.running} running, {self.failed} failed | "
                f"{best} | {self._clock()}")

    def log(self, text: str) -> None:
        """A message on its own line (below the live status line)."""
        if self.live and not self.quiet:
            self.stream.write("\r\033[K")
        self._emit(text, newline=True)

    def close(self) -> None:
        if self.live and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()

    def _clock(self) -> str:
        elapsed = time.time() - self.started_at
        text = f"{_duration(elapsed)} elapsed"
        new = self.done - self.resumed
        remaining = []
        if self.max_trials and new > 0:
            remaining.append(elapsed / new * (self.max_trials - self.done))
        if self.max_seconds:
            remaining.append(max(0.0, self.max_seconds - elapsed))
        if remaining:
            text += f", ETA {_duration(min(remaining))}"
        return text

    def _draw(self) -> None:
        if self.live:
            self._emit("\r\033[K" + self.status_line())

    def _emit(self, text: str, newline: bool = False) -> None:
        if self.quiet:
            return
        self.stream.write(text + ("\n" if newline else ""))
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
