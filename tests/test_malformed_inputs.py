"""Bad input, widely: every malformed input below ends in one line ``einspace: error: ...`` on
stderr and exit status 2, with no traceback, and writes nothing (the working directory, the task
cache and any named run or data directory are unchanged afterwards).

One parametrised table per input family, so ``pytest --collect-only`` shows how many there are:
command-line arguments, space configs, search configs, architecture text, Unseen-NAS directories
and damaged run directories.  Everything runs in-process through ``einspace.cli.main``; Ray is
never started (``start_ray`` is replaced by a function that fails the test).
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import einspace
from einspace.cli import main
from einspace.errors import ParseError
from einspace.search import engine
from einspace.search.config import resolve
from einspace.search.engine import prepare_run_dir
from einspace.search.store import TrialStore, default_url
from einspace.search.strategy import FAILED, OK, Proposal

ERROR = "einspace: error: "


def tree(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``roots`` with its size and modification time."""
    found = {}
    for root in roots:
        for path in [root, *root.rglob("*")] if root.exists() else []:
            stat = path.stat()
            found[str(path)] = (stat.st_size if path.is_file() else 0, stat.st_mtime_ns)
    return found


def _no_ray(*args, **kwargs):
    raise AssertionError("a refused input reached start_ray: it must fail before Ray starts")


@pytest.fixture
def sandbox(tmp_path, monkeypatch) -> Path:
    """A fresh working directory (which also holds the task cache) and no Ray."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("EINSPACE_CACHE", str(cwd / "cache"))
    monkeypatch.setattr(engine, "start_ray", _no_ray)
    return cwd


def refused(capsys, argv: list, *watched: Path) -> str:
    """Run the command; assert exit status 2, one error line, no traceback, nothing written in
    the working directory or ``watched``; return the message."""
    before = tree(Path.cwd(), *watched)
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own exits (must not happen: _Parser raises instead)
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert err.startswith(ERROR) and err.count("\n") == 1, err
    assert "Traceback" not in out + err
    assert tree(Path.cwd(), *watched) == before, "a refused input wrote files"
    return err[len(ERROR):].strip()


# ----------------------------------------------------------------------------- CLI arguments

SHAPE = ["--input-shape", "3,8,8"]
CLI_CASES = [
    ([], "a command is required"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["--bogus"], "unrecognized arguments"),
    (["sample"], "--input-shape"),
    (["sample", "--input-shape", "abc"], "is not a shape"),
    (["sample", "--input-shape", "0,4,4"], "positive sizes"),
    (["sample", "--input-shape", "1,2,3,4"], "C,H,W or N,D"),
    (["sample", "--input-shape", "3,-8,8"], "positive sizes"),
    (["sample", "--input-shape", ""], "is not a shape"),
    (["sample", *SHAPE, "-n", "0"], "must be at least 1"),
    (["sample", *SHAPE, "-n", "many"], "is not an integer"),
    (["sample", *SHAPE, "--seed", "1.5"], "invalid int value"),
    (["sample", *SHAPE, "--num-classes", "-3"], "must be at least 1"),
    (["sample", *SHAPE, "--config", "missing.yaml"], "does not exist"),
    (["sample", *SHAPE, "--config", "."], "does not exist"),
    (["sample", *SHAPE, "--frob"], "unrecognized arguments"),
    (["inspect"], "arch"),
    (["inspect", "resnet18"], "--input-shape"),
    (["inspect", "resnet19", *SHAPE], "neither architecture text"),
    (["inspect", "", *SHAPE], "neither architecture text"),
    (["inspect", "a\0b", *SHAPE], "neither architecture text"),
    (["inspect", "x" * 5000, *SHAPE], "neither architecture text"),
    (["inspect", "resnet18", *SHAPE, "--graph", "x.svg"], "use a .dot, .graphml or .png"),
    (["inspect", "resnet18", *SHAPE, "--tree", "x.jpeg"], ".png"),
    (["inspect", "resnet18", *SHAPE, "--graph", "no/such/dir/g.dot"], "cannot write graph"),
    (["inspect", "resnet18", *SHAPE, "--weights", "missing.pt"], "missing.pt"),
    (["inspect", "resnet18", *SHAPE, "--num-classes", "0"], "must be at least 1"),
    (["inspect", "(routing im2col16k16s0p (computation linear16) col2im)", *SHAPE],
     "smaller than the 16x16 window"),
    (["seeds", "extra"], "unrecognized arguments"),
    (["seeds", "--json", "--papers"], "unrecognized arguments"),
    (["terminals", "--bogus"], "unrecognized arguments"),
    (["tasks"], "required: ACTION"),
    (["tasks", "run"], "invalid choice: 'run'"),
    (["tasks", "show"], "name"),
    (["tasks", "show", "mnist1e"], "did you mean mnist1d"),
    (["tasks", "show", "unseen:"], "names no directory"),
    (["tasks", "show", "unseen:no/such/dir"], "not a directory"),
    (["tasks", "build", "nosuch"], "unknown task 'nosuch'"),
    (["tasks", "build", "mnist1d", "--size", "huge"], "invalid choice: 'huge'"),
    (["tasks", "build", "mnist1d", "--seed", "x"], "invalid int value"),
    (["tasks", "list", "extra"], "unrecognized arguments"),
    (["tasks", "baseline", "mnist1d"], "--arch"),
    (["tasks", "baseline", "nosuch", "--arch", "mlp"], "unknown task 'nosuch'"),
    (["tasks", "baseline", "mnist1d", "--arch", "nosuch"], "neither architecture text"),
    (["tasks", "baseline", "mnist1d", "--arch", "mlp", "--epochs", "0"], "at least 1"),
    (["tasks", "baseline", "mnist1d", "--arch", "mlp", "--seconds", "nan"], "positive number"),
    (["tasks", "baseline", "mnist1d", "--arch", "mlp", "--seconds", "inf"], "positive number"),
    (["tasks", "baseline", "unseen:no/such/dir", "--arch", "mlp"], "not a directory"),
    (["grammar", "--config", "missing.yaml"], "does not exist"),
    (["grammar", "extra"], "unrecognized arguments"),
    (["search", "--config", "nosuch"], "neither a file nor a shipped config"),
    (["search", "--config", "quickstart", "--budget", "0"], "at least 1 trial"),
    (["search", "--config", "quickstart", "--budget", "soon"], "search.time"),
    (["search", "--config", "quickstart", "--budget=-5m"], "search.time"),
    (["search", "--config", "quickstart", "--workers", "0"], "must be at least 1"),
    (["search", "--config", "quickstart", "--cpus-per-trial", "0"], "positive number"),
    (["search", "--config", "quickstart", "--gpus-per-trial", "-1"], "gpus_per_trial"),
    (["search", "--config", "quickstart", "--gpus-per-trial", "nan"], "gpus_per_trial"),
    (["search", "--config", "quickstart", "--gpus-per-trial", "inf"], "gpus_per_trial"),
    (["search", "--strategy", "greedy"], "invalid choice: 'greedy'"),
    (["search", "--config", "quickstart", "--task", "nosuch"], "unknown task 'nosuch'"),
    (["search", "--config", "quickstart", "--task", "unseen:no/such/dir"], "not a directory"),
    (["search", "--config", "quickstart", "--seed", "-1"], "seed must be an integer >= 0"),
    (["search", "--config", "quickstart", "--epochs", "0"], "must be at least 1"),
    (["search", "--task-size", "huge"], "invalid choice: 'huge'"),
    (["search", "--resume", "nowhere"], "not a search run directory"),
    (["search", "--resume", "nowhere", "--config", "quickstart"], "cannot change it"),
    (["evaluate"], "run_dir"),
    (["evaluate", "nowhere"], "not a search run directory"),
    (["evaluate", "nowhere", "--top-k", "0"], "must be at least 1"),
    (["export"], "source"),
    (["export", "resnet18"], "--out"),
    (["export", "resnet18", "--out", "o"], "--input-shape is required"),
    (["export", "resnet18", "--out", "o", *SHAPE, "--format", "svg"], "invalid choice"),
    (["export", "resnet18", "--out", "o", "--rank", "1"], "is not a directory"),
    (["export", "resnet18", "--out", "o", "--rank", "1", "--trial", "2"], "not allowed with"),
    (["export", "resnet18", "--out", "o", "--rank", "0"], "must be at least 1"),
    (["export", "resnet18", "--out", "o", *SHAPE, "--num-classes", "10", "--output-shape",
      "1,8,8"], "not both"),
    (["export", "resnet18", "--out", "o", *SHAPE, "--weights", "missing.pt"], "does not exist"),
    (["export", "(computation nrom)", "--out", "o", *SHAPE], "unknown computation terminal"),
    (["report"], "run_dir"),
    (["report", "nowhere"], "not a search run directory"),
    (["report", "nowhere", "--graphs", "-1"], "0 or more"),
    (["report", "nowhere", "--top-k", "0"], "must be at least 1"),
]


@pytest.mark.parametrize("argv, expected", CLI_CASES, ids=[" ".join(a)[:60] or "(none)"
                                                          for a, _ in CLI_CASES])
def test_bad_command_line(sandbox, capsys, argv, expected):
    assert expected in refused(capsys, argv)


# ----------------------------------------------------------------------------- space configs

SPACE_CASES = [
    ("budget:\n  max_parms: 10\n", "unknown key budget.max_parms"),
    ("grammer: {}\n", "unknown config section 'grammer'"),
    ("budget: 5\n", "must be a mapping"),
    ("- grammar\n- budget\n", "top level must be a mapping"),
    ("budget: {max_params: -3}\n", "max_params must be a positive integer"),
    ("budget: {max_params: 1.5}\n", "max_params must be a positive integer"),
    ("budget: {max_params: '10'}\n", "max_params must be a positive integer"),
    ("budget: {max_depth: true}\n", "max_depth must be a positive integer"),
    ("budget: {max_flops: 1e999}\n", "max_flops must be a positive integer"),
    ("budget: {max_nodes: .nan}\n", "max_nodes must be a positive integer"),
    ("grammar: {disable: softmax}\n", "grammar.disable must be a list"),
    ("grammar: {disable: [no_such_op]}\n", "'no_such_op' is not a terminal"),
    ("grammar: {disable: [[1]]}\n", "grammar.disable"),
    ("grammar: {terminal_set: bogus}\n", "terminal_set must be"),
    ("grammar: {terminal_set: 5}\n", "terminal_set must be"),
    ("grammar: {terminal_set: [no_such_op]}\n", "unknown terminals no_such_op"),
    ("grammar: {family_weights: {attention: -1}}\n", "not a number >= 0"),
    ("grammar: {family_weights: {attention: .nan}}\n", "family_weights.attention"),
    ("grammar: {family_weights: {attention: .inf}}\n", "family_weights.attention"),
    ("grammar: {family_weights: {attention: high}}\n", "family_weights.attention"),
    ("grammar: {family_weights: [1]}\n", "grammar.family_weights must be a mapping"),
    ("grammar: {family_weights: {no_family: 2}}\n", "unknown families no_family"),
    ("grammar: {probabilities: {module: {computation: 2}}}\n", "not a number in [0, 1]"),
    ("grammar: {probabilities: {module: {computation: .nan}}}\n", "not a number in [0, 1]"),
    ("grammar: {probabilities: {module: {convolution: 0.5}}}\n", "not an alternative"),
    ("grammar: {probabilities: {nowhere: {a: 1}}}\n", "'nowhere' is not a nonterminal"),
    ("grammar: {probabilities: 5}\n", "grammar.probabilities must be a mapping"),
    ("grammar: {probabilities: {module: 0.5}}\n", "grammar.probabilities.module must be a"),
    ("grammar: {add: {compute: [no_such_op]}}\n", "no_such_op"),
    ("grammar: {add: {nowhere: [norm]}}\n", "'nowhere' is not a nonterminal"),
    ("grammar: {add: [norm]}\n", "grammar.add must be a mapping"),
    ("grammar: {add: {compute: norm}}\n", "grammar.add.compute must be a list"),
    ("grammar: {file: nowhere.pcfg}\n", "does not exist"),
    ("grammar: {file: 5}\n", "grammar.file must be a path"),
    ("grammar: {file: garbage.pcfg}\n", "garbage.pcfg"),
    ("grammar: {file: binary.pcfg}\n", "binary.pcfg"),
    ("budget: [1, 2\n", "not valid YAML"),
    ("budget: {max_params: 1\n  max_flops: 2}\n", "not valid YAML"),
    ("!!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),
    (b"\xff\xfe\x00budget: {}\n", "not valid UTF-8"),
]


def write_config(name: str, text: str | bytes) -> Path:
    """A config file (and the broken grammar files the table names) in the working directory."""
    Path("garbage.pcfg").write_text("network -> -> [1.0]\n")
    Path("binary.pcfg").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xff")
    path = Path(name)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("text, expected", SPACE_CASES,
                         ids=[repr(t)[:60] for t, _ in SPACE_CASES])
def test_bad_space_config(sandbox, capsys, text, expected):
    config = write_config("space.yaml", text)
    for command in (["sample", *SHAPE], ["grammar"]):
        assert expected in refused(capsys, [*command, "--config", config])
