"""End-to-end searches on local Ray: outputs, kill -9 and resume, failure injection.

These start real Ray instances (a few seconds each) and train tiny candidates on the small
``language_lite`` task, so the module takes a few minutes; every other search test is Ray-free.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from ray import cloudpickle as ray_cloudpickle
from torch import nn

import einspace
from einspace.search.config import resolve
from einspace.search.engine import run_search
from einspace.search.store import open_run_store

TRIALS = 20
CONFIG = {
    "task": {"name": "language_lite", "size": "small"},
    "seed": 3,
    "search": {"strategy": "evolution", "trials": TRIALS, "workers": 2, "retries": 1},
    "evolution": {"population_size": 6, "tournament_size": 3, "seeds": []},
    "training": {"epochs": 1, "batch_size": 64},
    "budget": {"max_params": 200_000, "max_flops": 20_000_000, "max_activations": 200_000},
    "final": {"top_k": 1, "epochs": 1},
}
EINSPACE = [sys.executable, "-m", "einspace"]


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
    assert origins[:6] == ["sample"] * 6 and set(origins[6:]) <= {"mutation", "sample"}
    for t in trials:
        assert t.result["epochs_run"] == 1 and len(t.result["history"]) == 1
        if t.origin == "mutation":
            assert len(t.proposal["parents"]) == 1 and t.proposal["parents"][0] < t.index

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


class _Raises(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        raise RuntimeError("injected failure")


class _NaN(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x) * float("nan")


class _KillsWorker(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        os._exit(3)


def inject_faults(index: int, model: nn.Module) -> nn.Module:
    return {2: _Raises, 3: _NaN, 4: _KillsWorker}.get(index, lambda m: m)(model)


@pytest.mark.slow
def test_failures_are_recorded_and_the_search_completes(tmp_path):
    # Ray ships its own cloudpickle; by value, so workers need not import this test module.
    ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])
    config = resolve({**CONFIG, "search": {**CONFIG["search"], "trials": 8},
                      "final": {"top_k": 0}})
    summary = run_search(config, tmp_path / "faults", wrap_model=inject_faults, quiet=True)
    assert summary.trials == 8 and summary.failed == 3
    trials = {t.index: t for t in open_run_store(tmp_path / "faults").latest()}
    assert sorted(trials) == list(range(8))
    assert trials[2].status == "failed" and "injected failure" in trials[2].reason
    assert trials[3].status == "failed" and "non-finite" in trials[3].reason
    assert trials[4].status == "failed" and "worker failed after 2 attempt(s)" in trials[4].reason
    assert all(trials[i].status == "ok" for i in (0, 1, 5, 6, 7))
    assert summary.best_index in (0, 1, 5, 6, 7)
    rows = (tmp_path / "faults" / "leaderboard.csv").read_text().splitlines()[1:]
    assert [row.split(",")[3] for row in rows[-3:]] == ["failed"] * 3


@pytest.mark.parametrize("args, message", [
    (["--config", "no-such-config"], "neither a file nor a shipped config"),
    (["--resume", "."], "not a search run directory"),
    (["--resume", "x", "--task", "mnist1d"], "cannot change it"),
    (["--budget", "5x"], "search.time must be"),
    (["--task", "no_such_task", "--trials", "2"], "unknown task"),
])
@pytest.mark.slow
def test_search_command_errors_are_one_line(args, message):
    done = subprocess.run([*EINSPACE, "search", *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_asha_stops_weak_candidates_early(tmp_path):
    config = resolve({**CONFIG, "search": {**CONFIG["search"], "trials": 8, "scheduler": "asha",
                                           "grace_epochs": 1},
                      "training": {**CONFIG["training"], "epochs": 3}, "final": {"top_k": 0}})
    summary = run_search(config, tmp_path / "asha", quiet=True)
    trials = open_run_store(tmp_path / "asha").latest()
    assert summary.trials == 8 and all(t.done for t in trials)
    stopped = [t for t in trials if t.status == "stopped"]
    assert stopped, "ASHA should stop some candidates after the grace epoch"
    for t in stopped:
        assert "stopped early by the scheduler" in t.reason
        assert t.score is not None and 1 <= t.result["epochs_run"] < 3
        assert t.score == t.result["history"][-1]["score"]
    assert any(t.status == "ok" and t.result["epochs_run"] == 3 for t in trials)


@pytest.mark.slow
def test_trials_get_the_gpus_they_ask_for(tmp_path):
    """On a CPU machine Ray can still be told it has a GPU: two trials asking for half a GPU
    each share it (both see GPU 0) and run at the same time; the recipe then trains on CPU
    because torch finds no CUDA device (the CUDA path itself is covered by the trainer tests)."""
    import ray

    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        config = resolve({**CONFIG, "search": {**CONFIG["search"], "trials": 4,
                                               "gpus_per_trial": 0.5}, "final": {"top_k": 0}})
        run_search(config, tmp_path / "gpu", quiet=True)
    finally:
        ray.shutdown()
    trials = open_run_store(tmp_path / "gpu").latest()
    assert all(t.status == "ok" and t.result["gpu_ids"] == ["0"] for t in trials)
    assert all(t.result["device"] == "cpu" for t in trials)
    first, second = sorted(trials, key=lambda t: t.result["began"])[:2]
    assert second.result["began"] < first.finished  # packed onto the one GPU together


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
