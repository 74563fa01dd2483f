"""One file is enough for a new task: a module that declares a TaskSpec and registers it.

The test writes such a module, then, in a fresh interpreter that imports it, runs ``einspace
search`` on local Ray and ``einspace tasks show`` through the CLI entry point.
"""

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TOY_TASK = '''
"""``toy_stripes``: horizontal or vertical stripes on noise (two classes)."""

import numpy as np

from einspace.tasks import TaskSpec, register_task
from einspace.tasks.data import CLASSIFICATION, Split, TaskData


def make_toy_stripes(seed: int, size: str) -> TaskData:
    rng = np.random.RandomState(seed)
    splits = {}
    for name in ("train", "valid", "test"):
        y = np.arange(32, dtype=np.int64) % 2
        x = rng.randn(32, 1, 6, 6).astype(np.float32)
        x[y == 0, :, ::2, :] += 2.0
        x[y == 1, :, :, ::2] += 2.0
        splits[name] = Split(x, y)
    return TaskData("toy_stripes", (1, 6, 6), CLASSIFICATION, splits, num_classes=2)


register_task(TaskSpec(
    name="toy_stripes", description="toy stripes task written by a test", mirrors="none",
    input_shape=(1, 6, 6), task_type=CLASSIFICATION, metric="accuracy", source="numpy",
    install="pip install numpy", version="1", generator=make_toy_stripes, num_classes=2,
))
'''

RUN_CLI = '''
import sys

import toy_task  # noqa: F401  (registers toy_stripes)
from einspace.cli import main

sys.exit(main(sys.argv[1:]))
'''


def einspace_with_toy(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "EINSPACE_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-c", RUN_CLI, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_task_declared_in_one_file_searches_end_to_end(tmp_path):
    (tmp_path / "toy_task.py").write_text(textwrap.dedent(TOY_TASK))
    shown = einspace_with_toy(tmp_path, "tasks", "show", "toy_stripes", "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["name"] == "toy_stripes" and info["input_shape"] == [1, 6, 6]
    assert info["num_classes"] == 2 and info["description"] == "toy stripes task written by a test"

    out = tmp_path / "run"
    searched = einspace_with_toy(tmp_path, "search", "--task", "toy_stripes", "--budget", "2",
                                 "--epochs", "1", "--no-final", "--workers", "1", "--quiet",
                                 "--out", str(out))
    assert searched.returncode == 0, searched.stderr[-3000:]
    with sqlite3.connect(out / "trials.db") as db:
        states = [row[0] for row in db.execute("select state from trials")]
    assert states.count("COMPLETE") == 2
    assert (tmp_path / "cache" / "tasks" / "toy_stripes-v1-seed0-default" / "metadata").is_file()
