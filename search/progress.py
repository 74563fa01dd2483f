"""The live terminal display of a search: trials done / running / failed, the epoch and current
score of each running trial, best so far, ETA; then the final evaluation's epochs.

On a terminal one status line is redrawn in place, whenever a trial starts, reports an epoch or
ends, and every :data:`TICK_SECONDS` by a background thread in between (so the clock and ETA
move while trials train); otherwise (a log file, CI) one line is printed per finished trial and,
in the final evaluation, per epoch of each retrained candidate.  Everything goes to stderr so
stdout stays the search's result.
"""

from __future__ import annotations

import math
import sys
import threading
import time

from einspace.tasks.status import Status

TICK_SECONDS = 2.0
#: Running trials shown by name in the status line; the rest are counted.
SHOWN_RUNNING = 4


class Progress:
    """Counts trials and redraws the status line."""

    def __init__(self, max_trials: int | None, max_seconds: float | None, quiet: bool = False,
                 stream=None, epochs: int | None = None):
        self.max_trials = max_trials
        self.max_seconds = max_seconds
        self.epochs = epochs
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started_at = time.time()
        self.done = self.failed = self.running = self.resumed = 0
        self.best: tuple[float, int] | None = None
        #: Running trial index -> (last epoch, epochs planned, its score).
        self.current: dict[int, tuple[int, int | None, float]] = {}
        self.final_epochs: int | None = None  # set while the final evaluation runs
        self._lock = threading.RLock()
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    def restored(self, loop) -> None:
        finished = loop.finished
        self.resumed = self.done = len(finished)
        self.failed = sum(t.outcome.status == Status.FAILED for t in finished)
        if finished:
            self._emit(f"resumed: {self.done} finished trials kept, "
                       f"{len(loop.running)} to run again", newline=True)

    def started(self, index: int) -> None:
        self.running += 1
        self._start_ticker()
        self._draw()

    def epoch(self, index: int, epoch: int, score: float, epochs: int | None = None) -> None:
        """A running trial (or, in the final evaluation, a retrained candidate) finished an
        epoch with ``score`` on its evaluation split."""
        with self._lock:
            self.current[index] = (epoch, epochs or self.final_epochs or self.epochs, score)
        if self.live:
            self._draw()
        elif self.final_epochs is not None:
            self._emit(f"  final: trial {index} {self._epoch_text(index)}", newline=True)

    def finished(self, index: int, status: Status, score: float,
                 best: tuple[float, int] | None) -> None:
        with self._lock:
            self.current.pop(index, None)
        self.running = max(0, self.running - 1)
        self.done += 1
        self.failed += status == Status.FAILED
        self.best = best
        if self.live:
            self._draw()
        else:
            shown = f"{score:.4f}" if math.isfinite(score) else status
            self._emit(f"trial {index}: {shown} ({status}) | {self.status_line()}", newline=True)

    def final_started(self, indices: list[int], epochs: int) -> None:
        """The final evaluation retrains ``indices`` for ``epochs`` each: the status line now
        follows their epochs."""
        with self._lock:
            self.final_epochs = epochs
            self.current = {}
            self.started_at = time.time()
        self._start_ticker()
        self._draw()

    def status_line(self) -> str:
        with self._lock:
            if self.final_epochs is not None:
                shown = " | ".join(f"trial {i} {self._epoch_text(i)}" for i in self.current)
                return (f"final evaluation: {shown or 'starting'} | "
                        f"{_duration(time.time() - self.started_at)} elapsed")
            total = f"/{self.max_trials}" if self.max_trials else ""
            best = (f"best {self.best[0]:.4f} (trial {self.best[1]})" if self.best
                    else "best -")
            return (f"{self.done}{total} done, {self.running} running{self._running_text()}, "
                    f"{self.failed} failed | {best} | {self._clock()}")

    def log(self, text: str) -> None:
        """A message on its own line (below the live status line)."""
        with self._lock:
            if self.live and not self.quiet:
                self.stream.write("\r\033[K")
            self._emit(text, newline=True)

    def close(self) -> None:
        """End the status line (and its ticker); messages after this go on lines of their own,
        and a later :meth:`final_started` draws the line again."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        self._stop.clear()
        if self.live and not self.quiet:
            with self._lock:
                self.stream.write("\n")
                self.stream.flush()

    def _running_text(self) -> str:
        if not self.current:
            return ""
        indices = sorted(self.current)
        parts = [f"#{i} {self._epoch_text(i)}" for i in indices[:SHOWN_RUNNING]]
        more = len(indices) - SHOWN_RUNNING
        return " (" + ", ".join(parts) + (f", +{more}" if more > 0 else "") + ")"

    def _epoch_text(self, index: int) -> str:
        epoch, epochs, score = self.current[index]
        shown = f"{score:.4f}" if math.isfinite(score) else "-"
        return f"epoch {epoch}{f'/{epochs}' if epochs else ''} score {shown}"

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

    def _start_ticker(self) -> None:
        if not self.live or self.quiet or self._ticker is not None:
            return
        self._ticker = threading.Thread(target=self._tick, name="einspace-progress",
                                        daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            self._draw()

    def _draw(self) -> None:
        if self.live:
            with self._lock:
                self._emit("\r\033[K" + self.status_line())

    def _emit(self, text: str, newline: bool = False) -> None:
        if self.quiet:
            return
        with self._lock:
            self.stream.write(text + ("\n" if newline else ""))
            self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
