"""How trials end in a search on local Ray: injected failures (an exception, NaN outputs, a
worker that exits) are recorded and the search completes, ASHA stops weak candidates, fractional
GPUs are packed, and bad command lines fail with one line.
"""

import os
import subprocess
import sys

import pytest
from ray import cloudpickle as ray_cloudpickle
from search_setups import EINSPACE
from search_setups import SEARCH_CONFIG as CONFIG
from torch import nn

from einspace.search.config import resolve
from einspace.search.engine import run_search
from einspace.search.store import open_run_store


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
def test_failures_are_recorded_and_the_search_completes(tmp_path, local_ray):
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
def test_asha_stops_weak_candidates_early(tmp_path, local_ray):
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
def test_trials_get_the_gpus_they_ask_for(tmp_path, no_ray):
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
