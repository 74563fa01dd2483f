"""Process faults: every way a trial can end is a recorded outcome, never a crashed search.

Killed workers and weight keepers, a locked database, a second driver, bad cluster addresses and
kills during start-up; memory faults are in ``test_faults_memory.py``.
"""

import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
import torch
import yaml
from ray import cloudpickle as ray_cloudpickle
from search_setups import EINSPACE
from search_setups import FAULTS_CONFIG as CONFIG
from torch import nn

import einspace
from einspace.errors import ConfigError
from einspace.search.config import resolve
from einspace.search.engine import run_search
from einspace.search.run_dir import RunDir
from einspace.search.store import open_run_store


@pytest.mark.slow
@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:10001"])
def test_bad_addresses_fail_fast_with_one_line_and_leave_nothing(tmp_path, address):
    out = tmp_path / "run"
    began = time.perf_counter()
    done = subprocess.run([*EINSPACE, "search", "--config", "quickstart", "--address", address,
                           "--out", str(out), "--quiet"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and time.perf_counter() - began < 30
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert address in done.stderr
    assert not out.exists()


def test_run_directories_left_by_start_up_kills_say_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="it does not exist"):
        RunDir(tmp_path / "never").config()
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / ".lock").touch()
    with pytest.raises(ConfigError, match="stopped before it started, nothing was lost"):
        RunDir(tmp_path / "early").config()
    # config.yaml written, no trial recorded yet: the same --out is reusable.
    config = resolve(CONFIG)
    RunDir(tmp_path / "early").prepare(config)
    RunDir(tmp_path / "early").prepare(config)
    assert RunDir(tmp_path / "early").config().seed == 3


@pytest.mark.slow
def test_resume_honours_no_final_and_workers(tmp_path, local_ray):
    config = resolve({**CONFIG, "search": {**CONFIG["search"], "trials": 2},
                      "final": {"top_k": 1, "epochs": 1}})
    run = tmp_path / "run"
    first = run_search(config, run, quiet=True, final_top_k=0)
    assert first.final == [] and not (run / "final").exists()
    again = run_search(None, run, resume=True, workers=2, final_top_k=0, quiet=True)
    assert again.final == [] and not (run / "final").exists()
    assert math.isfinite(again.best_score)
    final = run_search(None, run, resume=True, address="local", quiet=True)
    assert [f["index"] for f in final.final] == [final.best_index]
    assert os.path.isfile(run / "final" / "results.json")
    assert yaml.safe_load((run / "config.yaml").read_text())["final"]["top_k"] == 1


class _KilledOnce(nn.Module):
    """SIGKILLs its own worker process in the second training step of the first attempt (the
    signal an operator or the kernel's OOM killer sends; the marker file makes the retry pass)."""

    def __init__(self, model, marker: str):
        super().__init__()
        self.model = model
        self.marker = marker
        self.steps = 0

    def forward(self, x):
        self.steps += 1
        if self.training and self.steps == 2 and not os.path.exists(self.marker):
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return self.model(x)


class _KillsTheKeeper(nn.Module):
    """Kills the run's weight-keeping actor once, in its first forward pass."""

    def __init__(self, model, keeper: str, marker: str):
        super().__init__()
        self.model = model
        self.keeper = keeper
        self.marker = marker

    def forward(self, x):
        if not os.path.exists(self.marker):
            import ray

            Path(self.marker).touch()
            ray.kill(ray.get_actor(self.keeper, namespace="einspace"))
        return self.model(x)


def keeper_name(run: Path) -> str:
    return f"einspace-weights-{zlib.crc32(str((run / 'weights').resolve()).encode()):08x}"


@pytest.mark.slow
def test_sigkilled_worker_is_retried_and_the_lost_attempt_recorded(tmp_path, local_ray):
    ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = str(tmp_path / "killed-once")
    summary = run_search(resolve(CONFIG), tmp_path / "run", quiet=True, wrap_model=lambda i, m: (
        _KilledOnce(m, marker) if i == 1 else m))
    assert summary.trials == 3 and summary.failed == 0
    attempts = [t for t in open_run_store(tmp_path / "run").trials() if t.index == 1]
    assert [t.status for t in attempts] == ["lost", "ok"]
    lost = attempts[0]
    assert "attempt lost, retried" in lost.reason and "died" in lost.reason
    assert lost.result["node"] and lost.result["pid"] != attempts[1].result["pid"]
    assert lost.result["seconds"] > 0


@pytest.mark.slow
def test_killed_weight_keeper_is_started_again(tmp_path, local_ray):
    ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])
    run, marker = tmp_path / "run", str(tmp_path / "keeper-killed")
    summary = run_search(resolve(CONFIG), run, quiet=True, wrap_model=lambda i, m: (
        _KillsTheKeeper(m, keeper_name(run), marker) if i == 1 else m))
    reasons = [(t.index, t.status, t.reason) for t in open_run_store(run).trials()]
    assert summary.trials == 3 and summary.failed == 0 and os.path.exists(marker), reasons
    after = {t.index: t for t in open_run_store(run).latest()}[2]  # trained after the kill
    assert after.result["weights_kept"] is True
    state = torch.load(run / "weights" / "trial-2.pt", weights_only=True)
    einspace.build(after.derivation, (1, 24, 24), num_classes=9).load_state_dict(state)


@pytest.mark.slow
def test_a_database_locked_for_a_while_only_delays_the_search(tmp_path, local_ray):
    run = tmp_path / "run"
    holder = threading.Thread(target=_lock_database_when_running, args=(run, 5.0))
    holder.start()
    summary = run_search(resolve(CONFIG), run, quiet=True)
    holder.join()
    assert summary.trials == 3 and summary.failed == 0


def _lock_database_when_running(run: Path, seconds: float) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "trials.db").exists():
        time.sleep(0.05)
    time.sleep(1.0)
    connection = sqlite3.connect(run / "trials.db", timeout=60, isolation_level=None)
    connection.execute("begin exclusive")
    time.sleep(seconds)
    connection.execute("commit")
    connection.close()


@pytest.mark.slow
def test_a_second_driver_on_a_running_search_is_refused(tmp_path):
    # Enough trials that the first search is still running when the second driver starts (with
    # warm workers six tiny trials can finish first); it is killed at the end anyway.
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "search": {**CONFIG["search"], "trials": 500}}))
    run = tmp_path / "run"
    first = subprocess.Popen([*EINSPACE, "search", "--config", str(config), "--out", str(run),
                              "--quiet"], start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (run / "trials.db").exists():
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.1)
        second = subprocess.run([*EINSPACE, "search", "--resume", str(run), "--quiet"],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"einspace: error: {run} is in use by another running search"]
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
