"""The search's live status line: running trials' epochs and scores, a clock that moves between
events, and the final evaluation's per-epoch progress (also through Ray, end to end)."""

import io
import math
import time

import pytest

from einspace.search import progress as progress_module
from einspace.search.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def last_line(stream: io.StringIO) -> str:
    return stream.getvalue().split("\r\033[K")[-1]


def test_status_line_shows_each_running_trials_epoch_and_score():
    screen = Terminal()
    shown = Progress(10, None, stream=screen, epochs=8)
    shown.started(3)
    shown.started(4)
    shown.epoch(3, 2, 0.41)
    shown.epoch(4, 1, 0.3)
    assert "2 running (#3 epoch 2/8 score 0.4100, #4 epoch 1/8 score 0.3000)" in last_line(screen)
    shown.finished(3, "ok", 0.5, (0.5, 3))
    line = last_line(screen)
    assert "1/10 done, 1 running (#4 epoch 1/8 score 0.3000)" in line
    assert "best 0.5000 (trial 3)" in line
    shown.close()


def test_many_running_trials_are_counted_not_listed():
    shown = Progress(None, None, stream=io.StringIO(), epochs=2)
    for i in range(6):
        shown.started(i)
        shown.epoch(i, 1, -math.inf if i == 0 else 0.1)
    line = shown.status_line()
    assert "#0 epoch 1/2 score -" in line and ", +2)" in line and "#4" not in line


def test_live_line_is_redrawn_between_events(monkeypatch):
    monkeypatch.setattr(progress_module, "TICK_SECONDS", 0.02)
    screen = Terminal()
    shown = Progress(5, None, stream=screen)
    shown.started(0)
    drawn = screen.getvalue().count("\r\033[K")
    time.sleep(0.3)
    assert screen.getvalue().count("\r\033[K") >= drawn + 3
    shown.close()
    after = screen.getvalue()
    time.sleep(0.1)
    assert screen.getvalue() == after and after.endswith("\n")


def test_final_evaluation_prints_a_line_per_epoch_in_a_log():
    log = io.StringIO()
    shown = Progress(None, None, stream=log)
    shown.final_started([7, 2], 64)
    shown.epoch(7, 1, 0.25)
    shown.epoch(2, 1, 0.5)
    shown.epoch(7, 2, 0.375)
    assert log.getvalue().splitlines() == ["  final: trial 7 epoch 1/64 score 0.2500",
                                           "  final: trial 2 epoch 1/64 score 0.5000",
                                           "  final: trial 7 epoch 2/64 score 0.3750"]
    assert shown.status_line().startswith(
        "final evaluation: trial 7 epoch 2/64 score 0.3750 | trial 2 epoch 1/64")


def test_quiet_progress_writes_nothing():
    log = Terminal()
    shown = Progress(3, None, quiet=True, stream=log, epochs=2)
    shown.started(0)
    shown.epoch(0, 1, 0.5)
    shown.finished(0, "ok", 0.5, (0.5, 0))
    shown.close()
    assert log.getvalue() == ""


@pytest.mark.slow
def test_evaluate_reports_every_epoch_of_the_retrained_candidate(tmp_path, capsys):
    """``einspace evaluate`` on a run (written through the store, as in the report tests):
    the workers' epochs reach the driver's log while the retraining runs."""
    from test_report import OUTCOMES, make_run

    from einspace.cli import main

    run = make_run(tmp_path / "run", OUTCOMES)
    code = main(["evaluate", str(run), "--top-k", "1", "--epochs", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "  final: trial 1 epoch 1/2 score " in err
    assert "  final: trial 1 epoch 2/2 score " in err
    assert out.startswith("trial 1: test score ")
