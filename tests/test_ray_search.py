"""End-to-end searches on local Ray: outputs, kill -9 and resume at every kill point, and
``einspace evaluate``; how single trials end (failures, ASHA, GPUs) is in
``test_ray_trial_outcomes.py``.

These start real Ray instances (a few seconds each) and train tiny candidates on the small
``language_lite`` task, so the module takes a few minutes; every other search test is Ray-free.
The search inherits weights (evolution's default), screens three candidates per child and grows
some children, so kill -9 and ``--resume`` are checked with every piece of the CPU protocol on.
"""

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from search_setups import EINSPACE, SEARCH_CONFIG

import einspace
from einspace.search.store import open_run_store

CONFIG = {**SEARCH_CONFIG,
          "evolution": {**SEARCH_CONFIG["evolution"], "growth_rate": 0.5},
          "screening": {"candidates": 3, "min_trials": 3, "batch_size": 8}}
TRIALS = CONFIG["search"]["trials"]
POPULATION = CONFIG["evolution"]["population_size"]


def search_command(*args: str) -> list[str]:
    return [*EINSPACE, "search", *args, "--quiet"]


def db_count(run: Path, states: tuple[str, ...]) -> int:
    """Attempts in the given Optuna states, read straight from SQLite (the driver is another
    process, possibly being killed)."""
    db = run / "trials.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=60) as connection:
            marks = ",".join("?" * len(states))
            return connection.execute(f"select count(*) from trials where state in ({marks})",
                                      states).fetchone()[0]
    except sqlite3.Error:
        return 0


def start_then_kill(command: list[str], run: Path, states: tuple[str, ...] = (),
                    count: int = 0, when=None) -> None:
    """Run ``command`` in its own process group and SIGKILL the whole group (driver and the
    local Ray it started) once ``count`` attempts are in ``states`` (or ``when()`` holds)."""
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    reached = when or (lambda: db_count(run, states) >= count)
    while not reached():
        assert process.poll() is None, "the search ended before the kill point"
        assert time.time() < deadline, "the kill point was never reached"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def leaderboard(run: Path) -> list[list[str]]:
    """The leaderboard's rank, index, score and status columns (timings differ run to run)."""
    return [row.split(",")[:4] for row in (run / "leaderboard.csv").read_text().splitlines()]


def trial_set(run: Path) -> dict[int, tuple]:
    return {t.index: (t.hash, t.score, t.status) for t in open_run_store(run).latest()}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "search.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


@pytest.fixture(scope="module")
def reference_run(config_file, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "reference"
    began = time.perf_counter()
    done = subprocess.run(search_command("--config", str(config_file), "--out", str(run)),
                          capture_output=True, text=True, timeout=900)
    print(f"uninterrupted {TRIALS}-trial search: {time.perf_counter() - began:.0f} s")
    assert done.returncode == 0, done.stderr
    return run, done.stdout


@pytest.mark.slow
def test_search_writes_consistent_outputs(reference_run):
    run, stdout = reference_run
    trials = open_run_store(run).latest()
    assert [t.index for t in trials] == list(range(TRIALS))
    assert all(t.status == "ok" for t in trials)
    assert len({t.hash for t in trials}) == TRIALS  # never the same architecture twice
    origins = [t.origin for t in trials]
    assert origins[:POPULATION] == ["sample"] * POPULATION
    assert set(origins[POPULATION:]) <= {"mutation", "growth", "sample"}
    assert {"mutation", "growth"} <= set(origins)
    for t in trials:
        assert t.result["epochs_run"] == 1 and len(t.result["history"]) == 1
        if t.origin in ("mutation", "growth"):
            assert len(t.proposal["parents"]) == 1 and t.proposal["parents"][0] < t.index
            assert t.proposal["choices"]["screening"]["ranking"][0][0] == t.hash
    assert any(t.result.get("inherited_params", 0) > 0 for t in trials)

    best = max(trials, key=lambda t: (t.score, -t.index))
    lines = (run / "leaderboard.csv").read_text().splitlines()
    assert len(lines) == TRIALS + 1
    assert lines[1].split(",")[1] == str(best.index)
    scores = [float(line.split(",")[2]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True)
    assert (run / "best.arch").read_text().strip() == best.derivation.text
    summary = json.loads((run / "summary.json").read_text())
    assert summary["ok"] == TRIALS and summary["best"]["index"] == best.index
    assert (run / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert best.derivation.text in stdout and f"trial {best.index}" in stdout

    data_shape, classes = (1, 24, 24), 9
    state = torch.load(run / "weights" / f"trial-{best.index}.pt", weights_only=True)
    einspace.build(best.derivation, data_shape, num_classes=classes).load_state_dict(state)
    final = json.loads((run / "final" / "results.json").read_text())
    assert [f["index"] for f in final] == [best.index] and 0 <= final[0]["test_score"] <= 1
    assert (run / "final" / f"trial-{best.index}.pt").is_file()


@pytest.mark.slow
def test_killed_search_resumes_to_the_same_trials(reference_run, config_file, tmp_path):
    """SIGKILL of the driver at every kill point, each followed by ``--resume``."""
    run = tmp_path / "killed"
    start = search_command("--config", str(config_file), "--out", str(run))
    # Before the run directory exists, and before config.yaml: the same command starts over.
    start_then_kill(start, run, when=lambda: True)
    start_then_kill(start, run, when=run.exists)
    # Before the first trial: config.yaml written, nothing recorded yet.
    start_then_kill(start, run, when=(run / "config.yaml").exists)
    resume = search_command("--resume", str(run))
    # Mid-trial: as soon as the first trial is recorded as running, before any finished.
    start_then_kill(resume, run, ("RUNNING",), 1)
    # Between trials: after 8 trials finished.
    start_then_kill(resume, run, ("COMPLETE",), 8)
    assert db_count(run, ("COMPLETE",)) < TRIALS
    # During the final evaluation: once its directory exists.
    start_then_kill(resume, run, when=(run / "final").exists)
    assert not (run / "final" / "results.json").exists()
    # During output writing: what a kill there leaves (a cut-off leaderboard, no summary).
    (run / "leaderboard.csv").write_text("rank,index,sco")
    (run / "summary.json").unlink(missing_ok=True)
    done = subprocess.run(resume, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr

    assert trial_set(run) == trial_set(reference_run[0])
    assert leaderboard(run) == leaderboard(reference_run[0])
    assert json.loads((run / "summary.json").read_text())["ok"] == TRIALS
    # Resuming the finished run again changes nothing and does not retrain the final candidate.
    final_file = run / "final" / "results.json"
    before = (final_file.read_text(), final_file.stat().st_mtime_ns)
    again = subprocess.run(search_command("--resume", str(run)), capture_output=True, text=True,
                           timeout=900)
    assert again.returncode == 0, again.stderr
    assert (final_file.read_text(), final_file.stat().st_mtime_ns) == before
    assert trial_set(run) == trial_set(reference_run[0])
    attempts = open_run_store(run).trials()
    interrupted = [t for t in attempts if t.status == "interrupted"]
    assert interrupted, "the kills should have interrupted running trials"
    finished = [t.index for t in attempts if t.done]
    assert sorted(finished) == list(range(TRIALS))  # each index finished exactly once




@pytest.mark.slow
def test_evaluate_retrains_the_best_of_a_finished_run(reference_run):
    run, _ = reference_run
    done = subprocess.run([*EINSPACE, "evaluate", str(run), "--top-k", "2", "--epochs", "1",
                           "--quiet"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    ranked = sorted(open_run_store(run).latest(), key=lambda t: (-t.score, t.index))[:2]
    final = json.loads((run / "final" / "results.json").read_text())
    assert [f["index"] for f in final] == [t.index for t in ranked]
    assert all(f["status"] == "ok" and f["epochs"] == 1 for f in final)
    for f in final:
        assert f"trial {f['index']}: test score {f['test_score']:.4f}" in done.stdout
