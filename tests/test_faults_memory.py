"""Memory faults: every way memory ends a trial is a recorded outcome, never a crashed search.

The memory-monitor case lowers ``RAY_memory_usage_threshold`` to a few GB above what the machine
uses now and runs a candidate that keeps allocating: Ray's monitor kills its worker the way it
does in production (the path that used to raise out of ``Tuner.fit``).  The others check the
memory estimate, screening candidates against the per-trial memory budget, and a run directory
whose disk fills up.
"""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ray import cloudpickle as ray_cloudpickle
from search_setups import FAULTS_CONFIG as CONFIG
from torch import nn

import einspace
from einspace.errors import ConfigError
from einspace.memory import parse_bytes, training_memory
from einspace.search.config import resolve
from einspace.search.engine import run_search
from einspace.search.faults import describe, killed_actor, memory_kill_reason
from einspace.search.loop import LoopTrial, SearchLoop
from einspace.search.run_dir import RunDir
from einspace.search.store import StoreError, open_run_store
from einspace.search.strategies import Outcome
from einspace.search.strategies.random_search import RandomSearch

MONITOR_REPORT = (
    "1 worker(s) were killed due to the node running low on memory. Memory on the node (IP: "
    "10.0.0.2, ID: ab12) was 22.40GB used / 23.54GB limit (0.951600)\nOOM kill reason: Memory "
    "usage 24053206220B exceeded threshold of 24012000000B (95.0% of 25275973632B limit)\n"
    "Selected to kill: (Actor(a8bfc9ef7f0aa8e94f83929a01000000): job ID=01000000, task "
    "name=ImplicitFunc.__init__, pid=8826, actual memory used=8.60GB, worker ID=585d)")


def test_memory_monitor_report_becomes_one_line_naming_memory():
    reason = memory_kill_reason(MONITOR_REPORT)
    assert reason == ("killed by Ray's memory monitor: node at 95% of 23.54GB (22.40GB used), "
                      "kill threshold 95 %, the killed worker (pid 8826) used 8.60GB")
    assert describe(RuntimeError(f"Caught unexpected exception: {MONITOR_REPORT}")) == reason
    assert killed_actor(MONITOR_REPORT) == ("a8bfc9ef7f0aa8e94f83929a01000000", 8826)
    assert describe("Traceback\n  File x\nRayActorError: The actor died unexpectedly") == \
        "RayActorError: The actor died unexpectedly"


def test_training_memory_estimate_follows_its_formula():
    cost = einspace.count(einspace.load_seed("mlp"), (1, 24, 24), 9)
    estimate = training_memory(cost, batch_size=256, optimizer="sgd", momentum=0.9,
                               data_bytes=1000, overhead=0)
    assert estimate.weights == estimate.gradients == estimate.optimizer == cost.params * 4
    assert estimate.activations == int(cost.activations * 256 * 4 * 1.5)
    assert estimate.workspace == 2 * cost.params * 4
    assert estimate.total == 5 * cost.params * 4 + estimate.activations + 1000
    adam = training_memory(cost, batch_size=256, optimizer="adam", overhead=0)
    assert adam.optimizer == 2 * cost.params * 4
    assert parse_bytes("6GB", "x") == 6 * 2**30 and parse_bytes("512 MiB", "x") == 512 * 2**20
    with pytest.raises(ConfigError, match="positive size"):
        parse_bytes("lots", "search.memory_per_trial")


def test_rejected_proposals_keep_their_index_but_not_the_trial_budget():
    strategy = RandomSearch(resolve(CONFIG).space.sampler(), (1, 24, 24))
    def screen(p):
        return ("too big" if p.derivation.hash[0] in "01234567" else None)
    loop = SearchLoop(strategy, seed=0, max_trials=4, lag=None, screen=screen)
    launched = []
    while isinstance(item := loop.next(), LoopTrial):
        launched.append(item.index)
        loop.finish(item.index, Outcome(item.index, item.proposal.derivation, 0.5, "ok"))
    rejected = [t.index for t in loop.trials if t.rejected]
    assert len(launched) == 4 and rejected, "some proposals should have been screened out"
    assert sorted(launched + rejected) == list(range(len(loop.trials)))
    assert all(loop.trials[i].reason == "too big" for i in rejected)
    assert loop.trained == 4


class _Hog(nn.Module):
    """Keeps allocating 4 GB per forward pass until something kills its process."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.kept = []

    def forward(self, x):
        self.kept.append(torch.ones(2**30))
        time.sleep(0.5)
        return self.model(x)


def hog_trial_1(index: int, model: nn.Module) -> nn.Module:
    return _Hog(model) if index == 1 else model


def _memory_in_use() -> int:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    kb = {k: int(v.split()[0]) * 1024 for k, v in info.items() if v.strip().endswith("kB")}
    return kb["MemTotal"] - kb["MemAvailable"], kb["MemTotal"]


@pytest.mark.slow
def test_memory_monitor_kill_is_a_failed_trial_and_the_search_completes(tmp_path, monkeypatch,
                                                                     no_ray):
    used, total = _memory_in_use()
    if total - used < 10 * 2**30:
        pytest.skip("needs 10 GB of free memory to let the memory monitor fire safely")
    monkeypatch.setenv("RAY_memory_usage_threshold", f"{(used + 4 * 2**30) / total:.3f}")
    ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])
    config = resolve({**CONFIG, "search": {**CONFIG["search"], "memory_per_trial": "off"}})
    summary = run_search(config, tmp_path / "oom", wrap_model=hog_trial_1, quiet=True)
    assert summary.trials == 3 and summary.failed == 1
    attempts = open_run_store(tmp_path / "oom").trials()
    latest = {t.index: t for t in open_run_store(tmp_path / "oom").latest()}
    assert latest[1].status == "failed"
    assert latest[1].reason.startswith("killed by Ray's memory monitor")
    assert latest[0].status == latest[2].status == "ok"
    lost = [t for t in attempts if t.index == 1 and t.status == "lost"]
    assert len(lost) == 1 and "memory monitor" in lost[0].reason  # retried once (retries: 1)
    assert lost[0].result["pid"] and lost[0].result["seconds"] > 0


@pytest.mark.slow
def test_oversized_candidates_are_rejected_before_launch(tmp_path, local_ray):
    config = resolve({**CONFIG, "search": {**CONFIG["search"], "trials": 4,
                                           "memory_per_trial": "800MB"},
                      "budget": {"max_params": 200_000, "max_flops": 50_000_000,
                                 "max_activations": 2_000_000}})
    summary = run_search(config, tmp_path / "screen", quiet=True)
    latest = open_run_store(tmp_path / "screen").latest()
    rejected = [t for t in latest if t.status == "rejected"]
    launched = [t for t in latest if t.status != "rejected"]
    assert len(launched) == 4 and summary.trials == 4 and summary.rejected == len(rejected)
    assert rejected, "an 800 MB budget rejects some default-sized candidates"
    for t in rejected:
        assert "over the per-trial memory budget of 800.0 MB" in t.reason
        assert t.proposal["memory_estimate"] > 800 * 2**20
        assert not t.result  # never ran
    assert all(t.proposal["memory_estimate"] <= 800 * 2**20 for t in launched)
    stored = RunDir(tmp_path / "screen").config().search["memory_per_trial"]
    assert stored == 800 * 2**20



@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs (needs root and mount): a run directory that can fill up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
def test_a_full_run_directory_stops_with_one_line_and_resumes(small_disk, tmp_path, local_ray):
    run = small_disk / "run"
    filler = small_disk / "filler"

    def fill_after_first_trial(index: int, model: nn.Module) -> nn.Module:
        if index == 1:
            with open(filler, "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 2**20)
                except OSError:
                    pass
        return model

    config = resolve({**CONFIG, "search": {**CONFIG["search"], "keep_weights": 0}})
    with pytest.raises(StoreError, match="cannot write the trial database") as failure:
        run_search(config, run, quiet=True, wrap_model=fill_after_first_trial)
    assert len(str(failure.value).splitlines()) == 1 and "--resume" in str(failure.value)
    kept = [t.index for t in open_run_store(run).latest() if t.done]
    assert 0 in kept
    filler.unlink()
    summary = run_search(None, run, resume=True, quiet=True)
    assert summary.trials == 3
    assert [t.index for t in open_run_store(run).latest() if t.done] == [0, 1, 2]


