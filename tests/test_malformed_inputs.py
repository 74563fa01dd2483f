"""Bad input, widely: every malformed input below ends in one line ``einspace: error: ...`` on
stderr and exit status 2, with no traceback, and writes nothing outside a run directory it was
given: the working directory, the task cache and the data directories are unchanged afterwards.

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
from collections.abc import Callable
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
from einspace.search.strategies import Proposal
from einspace.tasks.data import CLASSIFICATION, Split, TaskData
from einspace.tasks.status import Status
from einspace.tasks.unseen_nas import write_unseen_nas

ERROR = "einspace: error: "
Damage = Callable[[Path], Path]  # changes a copy of a data or run directory, returns its path


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
LONG = "x" * 5000  # longer than any file name the system accepts
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
    (["inspect", "resnet18", *SHAPE, "--graph", "x.bmp"], "use a .png, .svg, .dot or .graphml"),
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
    (["search", "--config", "quickstart", "--trials", "0"], "must be at least 1"),
    (["search", "--config", "quickstart", "--trials", "many"], "is not an integer"),
    (["search", "--config", "quickstart", "--time", "soon"], "search.time"),
    (["search", "--config", "quickstart", "--time=-5m"], "search.time"),
    (["search", "--config", "quickstart", "--budget", "5", "--trials", "3"],
     "cannot be combined"),
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
    *[(argv, "File name too long") for argv in (
        ["grammar", "--config", LONG], ["sample", *SHAPE, "--config", LONG],
        ["search", "--config", LONG], ["search", "--resume", LONG], ["report", LONG],
        ["inspect", "resnet18", *SHAPE, "--tree", f"{LONG}.png"], ["evaluate", LONG],
        ["export", LONG, "--out", "o"],
        ["export", "resnet18", *SHAPE, "--out", LONG], ["tasks", "show", f"unseen:{LONG}"],
        ["inspect", "resnet18", *SHAPE, "--weights", LONG])],
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


# ----------------------------------------------------------------------------- search configs

SEARCH_CASES = [
    ("serch: {trials: 3}\n", "unknown config key 'serch'"),
    ("search: {trails: 3}\n", "unknown config key 'search.trails'"),
    ("search: [1, 2]\n", "'search' must be a mapping"),
    ("task: 5\n", "'task' must be a mapping"),
    ("task: {name: ''}\n", "task.name must be"),
    ("task: {name: [a]}\n", "task.name must be"),
    ("task: {name: nosuch}\n", "unknown task 'nosuch'"),
    ("task: {size: huge}\n", "task.size must be one of"),
    ("task: {seed: -1}\n", "task.seed must be an integer >= 0"),
    ("task: {root: 5}\n", "task.root must be a path"),
    ("task: {nme: mnist1d}\n", "unknown config key 'task.nme'"),
    ("seed: abc\n", "seed must be an integer >= 0"),
    ("seed: 1.0e+30\n", "seed must be an integer >= 0"),
    ("search: {strategy: greedy}\n", "search.strategy must be one of"),
    ("search: {ordering: random}\n", "search.ordering must be one of"),
    ("search: {scheduler: hyperband}\n", "search.scheduler must be one of"),
    ("search: {trials: 0}\n", "search.trials must be an integer >= 1"),
    ("search: {trials: 1.5}\n", "search.trials must be an integer >= 1"),
    ("search: {trials: 1e400}\n", "search.trials must be an integer >= 1"),
    ("search: {trials: '12'}\n", "search.trials must be an integer >= 1"),
    ("search: {trials: null, time: null}\n", "the search needs a budget"),
    ("search: {time: -5}\n", "search.time must be a positive number"),
    ("search: {time: soon}\n", "search.time must be a positive number"),
    ("search: {time: .inf}\n", "search.time must be a positive number"),
    ("search: {time: 1e999m}\n", "search.time must be a positive number"),
    ("search: {workers: 0}\n", "search.workers must be an integer >= 1"),
    ("search: {workers: 1e400}\n", "search.workers must be an integer >= 1"),
    ("search: {retries: -1}\n", "search.retries must be an integer >= 0"),
    ("search: {grace_epochs: 0}\n", "search.grace_epochs must be an integer >= 1"),
    ("search: {keep_weights: -1}\n", "search.keep_weights must be an integer >= 0"),
    ("search: {cpus_per_trial: 0}\n", "search.cpus_per_trial must be a finite number > 0"),
    ("search: {cpus_per_trial: .inf}\n", "search.cpus_per_trial must be a finite number"),
    ("search: {cpus_per_trial: 1e999}\n", "search.cpus_per_trial must be a finite number"),
    ("search: {gpus_per_trial: .nan}\n", "search.gpus_per_trial must be a finite number"),
    ("search: {gpus_per_trial: -0.5}\n", "search.gpus_per_trial must be a finite number"),
    ("search: {storage: 5}\n", "search.storage must be a database URL"),
    ("search: {address: [head, 6379]}\n", "search.address must be"),
    ("evolution: {population_size: 0}\n", "evolution.population_size must be an integer"),
    ("evolution: {population_size: 1e400}\n", "evolution.population_size must be an integer"),
    ("evolution: {tournament_size: 0}\n", "evolution.tournament_size must be an integer"),
    ("evolution: {crossover_rate: 1.5}\n", "evolution.crossover_rate must be at most 1"),
    ("evolution: {crossover_rate: .nan}\n", "evolution.crossover_rate must be a finite"),
    ("evolution: {crossover_rate: '0.1'}\n", "evolution.crossover_rate must be a finite"),
    ("evolution: {seeds: 5}\n", "evolution.seeds must be a list"),
    ("evolution: {seeds: [resnet19]}\n", "evolution.seeds[0] = 'resnet19' is neither"),
    ("evolution: {seeds: [resnet18, '(computation nrom)']}\n", "evolution.seeds[1]"),
    ("evolution: {seeds: ['(sequential (computation norm)']}\n", "evolution.seeds[0]"),
    ("optuna: {sampler: cmaes}\n", "optuna.sampler must be one of"),
    ("training: {epochs: 0}\n", "recipe.epochs must be at least 1"),
    ("training: {lr: -1}\n", "recipe.lr must be greater than 0"),
    ("training: {lr: .nan}\n", "recipe.lr must be a finite number"),
    ("training: {nosuch: 1}\n", "unknown training recipe key 'nosuch'"),
    ("training: {techniques: {nosuch: {}}}\n", "nosuch"),
    ("training: {techniques: [grad_noise]}\n", "techniques"),
    ("training: {batch_size: 1e400}\n", "recipe.batch_size must be"),
    ("training: 5\n", "'training' must be a mapping"),
    ("final: {top_k: -1}\n", "final.top_k must be an integer >= 0"),
    ("final: {epochs: 0}\n", "final.epochs must be an integer >= 1"),
    ("budget: {max_params: 0}\n", "max_params must be a positive integer"),
    ("budget: {max_params: 1e999}\n", "max_params must be a positive integer"),
    ("grammar: {disable: [no_such_op]}\n", "'no_such_op' is not a terminal"),
    ("grammar: {add: {compute: linear_x4}}\n", "grammar.add.compute must be a list"),
    ("extends: nosuch\n", "'nosuch' is neither a file nor a shipped config"),
    ("extends: 5\n", "extends must be a config name or path"),
    ("extends: [quickstart]\n", "extends must be a config name or path"),
    ("extends: search.yaml\n", "forms a cycle"),
    ("extends: cycle_a.yaml\n", "forms a cycle"),
    ("extends: broken.yaml\n", "not valid YAML"),
    ("extends: quickstart\nsearch: {trials: -4}\n", "search.trials must be an integer >= 1"),
    ("- extends\n- quickstart\n", "top level must be a mapping"),
    ("search: {trials: 3\n", "not valid YAML"),
    (b"search: {trials: 3}\n\xff\xfe\n", "not valid UTF-8"),
]


@pytest.mark.parametrize("text, expected", SEARCH_CASES,
                         ids=[repr(t)[:60] for t, _ in SEARCH_CASES])
def test_bad_search_config(sandbox, capsys, text, expected):
    Path("cycle_a.yaml").write_text("extends: cycle_b.yaml\n")
    Path("cycle_b.yaml").write_text("extends: cycle_a.yaml\nseed: 1\n")
    Path("broken.yaml").write_text("search: [\n")
    config = write_config("search.yaml", text)
    assert expected in refused(capsys, ["search", "--config", config])


# ----------------------------------------------------------------------------- architecture text

ARCH_CASES = [
    ("(", "unclosed '('"),
    (")", "neither architecture text"),
    ("()", "production name"),
    ("(()", "unclosed '('"),
    ("(sequential", "unclosed '('"),
    ("(computation norm))", "unbalanced ')'"),
    ("(computation norm) )(", "unbalanced ')'"),
    ("((computation norm))", "production name"),
    ("(computation (norm))", "expected a computation terminal name"),
    ("(computation [norm])", "unknown computation terminal"),
    ("(computation norm)(computation norm)", "continues after"),
    ("(computation\tnorm", "unclosed '('"),
    ("(computation linear1e3)", "unknown computation terminal 'linear1e3'"),
    ("(computation linear-5)", "unknown computation terminal 'linear-5'"),
    ("(computation linear99999999999999999999)", "unknown computation terminal"),
    ("(computation norm\0)", "unknown computation terminal"),
    ("(computation norm)" + ")" * 5000, "unbalanced ')'"),
    ("(" * 5000, "5000 unclosed '('"),
    ("(sequential " * 600 + "(computation norm) " * 601 + ")" * 600, "nesting depth"),
    ("(sequential (computation norm) (computation norm)", "unclosed '('"),
    ("(sequential (computation norm) computation norm))", "unbalanced ')'"),
    ("(routing im2col3k1s1p (computation linear64) col2im", "unclosed '('"),
    ("(routing im2col3k1s1p) (computation linear64) col2im)", "unbalanced ')'"),
    ("(branching clone_tensor2 (computation norm) (computation norm) add_tensors))",
     "unbalanced ')'"),
    ("(branching clone_tensor2 ((computation norm)) (computation norm) add_tensors)",
     "production name"),
    ("(computation norm) # ( a comment, then )))", "unbalanced ')'"),
]


@pytest.mark.parametrize("text, expected", ARCH_CASES, ids=[repr(t)[:50] for t, _ in ARCH_CASES])
def test_bad_architecture_text(sandbox, capsys, text, expected):
    assert expected in refused(capsys, ["inspect", text, *SHAPE])


@pytest.mark.parametrize("content, expected", [
    (b"", "empty"),
    (b"# only a comment\n", "empty"),
    (b"\xff\xfe(computation norm)", "cannot be read as architecture text"),
    (b"(computation norm", "unclosed '('"),
    (b"(computation norm)\n(computation norm)\n", "continues after"),
], ids=["empty", "comment", "binary", "unclosed", "two"])
def test_bad_architecture_file(sandbox, capsys, content, expected):
    Path("net.arch").write_bytes(content)
    message = refused(capsys, ["inspect", "net.arch", *SHAPE])
    assert message.startswith("net.arch") and expected in message


WORDS = ["(", ")", " ", "\n", "sequential", "branching", "routing", "computation", "norm",
         "linear16", "clone_tensor2", "add_tensors", "im2col3k1s1p", "col2im", "identity",
         "((", "))", "#", "x"]


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(WORDS), max_size=40).map("".join)
       | st.text(max_size=60).map(lambda s: "(" + s))
def test_any_text_parses_or_is_a_parse_error(text):
    try:
        derivation = einspace.parse(text)
    except ParseError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert einspace.parse(derivation.text) == derivation


# ----------------------------------------------------------------------------- Unseen-NAS data

SIZES = {"train": 12, "valid": 6, "test": 6}


def write_dataset(root: Path, shape=(1, 8, 8), classes: int = 3) -> Path:
    """A small valid classification dataset, written with the Unseen-NAS writer."""
    rng = np.random.default_rng(0)
    splits = {s: Split(rng.standard_normal((n, *shape)).astype(np.float32),
                       np.arange(n, dtype=np.int64) % classes) for s, n in SIZES.items()}
    return write_unseen_nas(root, TaskData("toy", shape, CLASSIFICATION, splits,
                                           num_classes=classes, metadata={"lr": 0.01}))


def put(name: str, value) -> Damage:
    """A damage: replace one file with an array, text or bytes."""
    def damage(root: Path) -> Path:
        path = root / name
        if isinstance(value, np.ndarray):
            np.save(path, value, allow_pickle=value.dtype.hasobject)
        else:
            path.write_bytes(value if isinstance(value, bytes) else value.encode())
        return root
    return damage


def edit(name: str, change) -> Damage:
    """A damage: load one array, change it, save it back."""
    def damage(root: Path) -> Path:
        arr = np.load(root / name)
        np.save(root / name, change(arr))
        return root
    return damage


def meta(**keys) -> Damage:
    def damage(root: Path) -> Path:
        data = json.loads((root / "metadata").read_text())
        (root / "metadata").write_text(json.dumps({**data, **keys}))
        return root
    return damage


def remove(name: str) -> Damage:
    def damage(root: Path) -> Path:
        (root / name).unlink()
        return root
    return damage


def truncate(name: str, keep: float) -> Damage:
    def damage(root: Path) -> Path:
        data = (root / name).read_bytes()
        (root / name).write_bytes(data[:int(len(data) * keep)])
        return root
    return damage


def empty(split: str) -> Damage:
    def damage(root: Path) -> Path:
        for part in ("x", "y"):
            edit(f"{split}_{part}.npy", lambda a: a[:0])(root)
        return root
    return damage


def with_nan(arr, at=(0, 0, 0, 0), value=np.nan):
    arr = arr.copy()
    arr[at] = value
    return arr


def regression(root: Path) -> Path:
    """The dataset turned into a dense regression task with a NaN target."""
    for s, n in SIZES.items():
        y = np.zeros((n, 1, 8, 8), np.float32)
        np.save(root / f"{s}_y.npy", with_nan(y) if s == "valid" else y)
    return meta(task_type="regression", num_classes=None)(root)


def renamed(name: str, damage=None) -> Damage:
    """The dataset under another directory name (known datasets are checked by name)."""
    def move(root: Path) -> Path:
        target = root.parent / name
        root.rename(target)
        return damage(target) if damage else target
    return move


class Evil:
    def __reduce__(self):
        return (Path("pwned").write_text, ("unpickled",))


def pickled(root: Path) -> Path:
    import pickle

    (root / "train_y.npy").write_bytes(pickle.dumps(Evil()))
    return root


DATA_CASES = [
    ("json", put("metadata", "{"), "malformed JSON"),
    ("json-list", put("metadata", "[1, 2]"), "expected a JSON object"),
    ("json-binary", put("metadata", b"\xff\xfe{}"), "cannot be read"),
    ("classes-0", meta(num_classes=0), "'num_classes' is 0, expected a positive integer"),
    ("classes-str", meta(num_classes="four"), "expected a positive integer"),
    ("classes-float", meta(num_classes=2.5), "expected a positive integer"),
    ("shape-meta", meta(input_shape=[3, 9, 9]), "does not match the arrays"),
    ("shape-meta-type", meta(input_shape="1x8x8"), "expected a list of positive integers"),
    ("aliases", meta(num_classes=3, n_classes=5), "keys disagree"),
    ("task-type", meta(task_type="segmentation"), "'task_type' is 'segmentation'"),
    ("lr-nan", put("metadata", '{"lr": NaN}'), "expected a finite number"),
    ("batch-negative", meta(batch_size=-8), "expected a positive integer"),
    ("codename-type", meta(codename=7), "expected a string"),
    ("lengths", edit("train_y.npy", lambda y: y[:-1]), "11 labels for 12 inputs"),
    ("lengths-test", edit("test_y.npy", lambda y: np.concatenate([y, y])), "12 labels for 6"),
    ("sample-shape", edit("valid_x.npy", lambda x: x[:, :, :7]), "differs from train_x.npy"),
    ("nan-train", edit("train_x.npy", with_nan), "train_x.npy: inputs contain NaN"),
    ("inf-valid", edit("valid_x.npy", lambda x: with_nan(x, value=np.inf)), "infinity"),
    ("nan-test", edit("test_x.npy", lambda x: with_nan(x, (5, 0, 7, 7))), "test_x.npy"),
    ("nan-float16", edit("train_x.npy", lambda x: with_nan(x.astype(np.float16))), "NaN"),
    ("object-x", put("train_x.npy", np.array([[1], "a"], dtype=object)), "Python objects"),
    ("object-y", put("valid_y.npy", np.array([None] * 6, dtype=object)), "Python objects"),
    ("pickle-y", pickled, "not a valid .npy file"),
    ("str-x", put("train_x.npy", np.full((12, 1, 8, 8), "a")), "expected a numeric dtype"),
    ("complex-x", edit("train_x.npy", lambda x: x.astype(np.complex64)), "numeric dtype"),
    ("datetime-x", put("valid_x.npy", np.zeros((6, 1, 8, 8), "datetime64[s]")), "numeric"),
    ("struct-x", put("test_x.npy", np.zeros((6, 1, 8, 8), "i4,f4")), "numeric dtype"),
    ("label-float", edit("train_y.npy", lambda y: y + 0.5), "is not an integer class id"),
    ("label-nan", edit("train_y.npy", lambda y: with_nan(y.astype(float), 3)), "finite"),
    ("label-negative", edit("valid_y.npy", lambda y: y - 1), "label -1 is outside [0, 3)"),
    ("label-beyond", edit("valid_y.npy", lambda y: y + 5), "is outside [0, 3)"),
    ("label-3d", edit("train_y.npy", lambda y: y.reshape(12, 1, 1)), "expected (N,) class"),
    ("label-str", put("train_y.npy", np.array(["cat"] * 12)), "expected integer class ids"),
    ("one-hot", put("train_y.npy", np.ones((12, 3), np.int64)), "not one-hot"),
    ("empty-train", empty("train"), "train_x.npy: no samples"),
    ("empty-valid", empty("valid"), "valid_x.npy: no samples"),
    ("empty-test", empty("test"), "test_x.npy: no samples"),
    ("missing-x", remove("train_x.npy"), "missing train_x.npy"),
    ("missing-y", remove("valid_y.npy"), "missing valid_y.npy"),
    ("truncated", truncate("train_x.npy", 0.5), "cannot be read as a .npy array"),
    ("zero-bytes", truncate("valid_x.npy", 0), "not a valid .npy file"),
    ("npz", put("train_x.npy", b"PK\x03\x04" + b"\0" * 64), "not a valid .npy file"),
    ("x-1d", put("train_x.npy", np.zeros(12, np.float32)), "expected (N, C, H, W)"),
    ("x-5d", edit("train_x.npy", lambda x: x[:, None]), "expected (N, C, H, W)"),
    ("regression-nan", regression, "regression targets contain NaN"),
    ("known-shape", renamed("addnist"), "addnist expects per-sample shape (3, 28, 28)"),
    ("known-classes", renamed("chesseract", meta(input_shape=None)), "chesseract expects"),
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "toy")


def damaged_copy(source: Path, where: Path, damage) -> Path:
    root = shutil.copytree(source, where / source.name)
    return damage(root)


@pytest.mark.parametrize("damage, expected", [c[1:] for c in DATA_CASES],
                         ids=[c[0] for c in DATA_CASES])
def test_bad_unseen_nas_directory(sandbox, tmp_path, capsys, dataset, damage, expected):
    root = damaged_copy(dataset, tmp_path, damage)
    spec = f"unseen:{root}"
    for argv in (["tasks", "show", spec], ["search", "--config", "quickstart", "--task", spec],
                 ["tasks", "baseline", spec, "--arch", "mlp"]):
        assert expected in refused(capsys, argv, root)
    assert not Path("pwned").exists()


@pytest.mark.parametrize("out, expected", [
    ("afile", "File exists"), ("afile/run", "Not a directory"), ("/proc/einspace-run", "No such"),
], ids=["file", "under-a-file", "unwritable"])
def test_search_into_an_impossible_run_directory(sandbox, capsys, dataset, out, expected):
    Path("afile").write_text("a file\n")
    message = refused(capsys, ["search", "--config", "quickstart", "--task", f"unseen:{dataset}",
                               "--out", out], dataset)
    assert f"cannot make the run directory {out}: {expected}" in message


def test_unseen_nas_directory_is_shown(sandbox, capsys, dataset):
    assert main(["tasks", "show", f"unseen:{dataset}", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["input_shape"] == [1, 8, 8] and info["num_classes"] == 3
    assert info["task_type"] == CLASSIFICATION and info["target_shape"] is None
    assert info["splits"] == SIZES and info["withheld_targets"] == []
    assert info["metadata"]["lr"] == 0.01 and info["metadata"]["codename"] == "toy"
    assert info["source"] == f"unseen:{dataset}"
    assert main(["tasks", "show", f"unseen:{dataset}"]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["input_shape"] == "[1, 8, 8]" and lines["num_classes"] == "3"
    assert lines["splits"] == "train 12, valid 6, test 6"


def test_withheld_test_labels_are_shown(sandbox, tmp_path, capsys, dataset):
    root = damaged_copy(dataset, tmp_path, remove("test_y.npy"))
    assert main(["tasks", "show", f"unseen:{root}", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["withheld_targets"] == ["test"] and info["splits"]["test"] == 6


# ----------------------------------------------------------------------------- damaged run dirs

RUN_ARCHS = [("(computation linear16)", Status.OK, 0.5),
             ("(computation norm)", Status.FAILED, -math.inf),
             ("(sequential (computation linear32) (computation leakyrelu))", Status.OK, 0.7)]


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, dataset) -> Path:
    """A finished run written through the store as a search would (no Ray), on the toy dataset:
    trial 0 ok 0.5, trial 1 failed, trial 2 ok 0.7 (the best); both ok trials kept weights."""
    run = tmp_path_factory.mktemp("search") / "run"
    prepare_run_dir(resolve({"task": {"name": f"unseen:{dataset}"},
                             "search": {"trials": 3, "keep_weights": 2}}), run)
    store = TrialStore(default_url(run))
    (run / "weights").mkdir()
    for index, (text, status, score) in enumerate(RUN_ARCHS):
        derivation = einspace.parse(text)
        number = store.start(index, Proposal(derivation, "sample"), {})
        store.finish(number, status, score, "diverged" if status == Status.FAILED else "", {},
                     index)
        if status == Status.OK:
            net = einspace.build(derivation, (1, 8, 8), num_classes=3)
            torch.save(net.state_dict(), run / "weights" / f"trial-{index}.pt")
    return run


def sql(statement: str) -> Damage:
    """A damage: one SQL statement run on the trial database."""
    def damage(run: Path) -> Path:
        with sqlite3.connect(run / "trials.db") as db:
            db.execute(statement)
        return run
    return damage


def foreign_study(run: Path) -> Path:
    """The database of another program's Optuna study."""
    (run / "trials.db").unlink()
    TrialStore(default_url(run))  # a fresh database with an empty einspace study
    sql("UPDATE studies SET study_name = 'someone-else'")(run)
    return run


def config_edit(change) -> Damage:
    def damage(run: Path) -> Path:
        path = run / "config.yaml"
        path.write_text(change(path.read_text()))
        return run
    return damage


def config_dir(run: Path) -> Path:
    (run / "config.yaml").unlink()
    (run / "config.yaml").mkdir()
    return run


def run_is_file(run: Path) -> Path:
    shutil.rmtree(run)
    run.write_text("not a run\n")
    return run


RECORD = "UPDATE trial_user_attributes SET value_json = {} WHERE key = 'trial'"
NO_DB = "no trial database"
NOT_RUN = "is not a search run directory"
RUN_CASES = [
    ("db-truncated", truncate("trials.db", 0.5), "trial database"),
    ("db-empty", truncate("trials.db", 0), "trial database"),
    ("db-garbage", put("trials.db", b"this is not a database" * 200), "trial database"),
    ("db-missing", remove("trials.db"), NO_DB),
    ("db-not-optuna", sql("DROP TABLE studies"), "no einspace run in this database"),
    ("db-other-study", foreign_study, "no einspace run in this database"),
    ("db-record-text", sql(RECORD.format("'{\"index\": 0, \"derivation\": \"(computation\"}'")),
     "unreadable record"),
    ("db-record-json", sql(RECORD.format("'{'")), "trial database"),
    ("db-record-type", sql(RECORD.format("'[1, 2]'")), "unreadable record"),
    ("config-missing", remove("config.yaml"), NOT_RUN),
    ("config-dir", config_dir, NOT_RUN),
    ("config-not-yaml", put("config.yaml", "search: [\n"), "not valid YAML"),
    ("config-binary", put("config.yaml", b"\xff\xfe\x00"), "not valid UTF-8"),
    ("config-list", put("config.yaml", "- task\n- search\n"), "must be a mapping"),
    ("config-empty", put("config.yaml", ""), "config.yaml is empty"),
    ("config-unknown", config_edit(lambda t: t + "extra: 1\n"), "unknown config key 'extra'"),
    ("config-bad-value", config_edit(lambda t: t.replace("workers: 2", "workers: 0")),
     "search.workers must be an integer >= 1"),
    ("config-task-gone", config_edit(lambda t: t.replace("/toy", "/gone")), "gone"),
    ("run-is-file", run_is_file, "run"),
]
RUN_COMMANDS = {
    "export": ["export", "{run}", "--out", "exported"],
    "report": ["report", "{run}"],
    "evaluate": ["evaluate", "{run}"],
    "resume": ["search", "--resume", "{run}"],
}
EXPECTED_WHEN_NOT_A_DIRECTORY = {"export": "architecture text must start with '('",
                                 "report": NOT_RUN, "evaluate": NOT_RUN, "resume": NOT_RUN}
# A report needs no data (its graphs are left out with a note, see the test below)
REPORTABLE = {"config-task-gone"}
DAMAGED_RUNS = [pytest.param(damage, expected, command, id=f"{name}-{command}")
                for name, damage, expected in RUN_CASES for command in RUN_COMMANDS
                if not (command == "report" and name in REPORTABLE)]


@pytest.mark.parametrize("damage, expected, command", DAMAGED_RUNS)
def test_damaged_run_directory(sandbox, tmp_path, capsys, dataset, good_run, damage, expected,
                               command):
    run = damaged_copy(good_run, tmp_path, damage)
    if damage is run_is_file:
        expected = EXPECTED_WHEN_NOT_A_DIRECTORY[command]
    argv = [a.format(run=run) for a in RUN_COMMANDS[command]]
    assert expected in refused(capsys, argv, dataset)  # the run itself may be written


def weights(content) -> Damage:
    def damage(run: Path) -> Path:
        path = run / "weights" / "trial-2.pt"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            torch.save(content, path)
        return run
    return damage


EXPORT_CASES = [
    ("weights-missing", remove("weights/trial-2.pt"), [], "no weights for trial 2"),
    ("weights-garbage", weights(b"garbage" * 10), [], "not a readable state_dict"),
    ("weights-truncated", truncate("weights/trial-2.pt", 0.5), [], "not a readable state_dict"),
    ("weights-pickle", weights(Evil()), [], "not a readable state_dict"),
    ("weights-list", weights([torch.zeros(2)]), [], "not a state_dict"),
    ("weights-other-arch", weights({"backbone.weight": torch.zeros(3, 3)}), [],
     "does not fit this architecture"),
    ("trial-failed", lambda run: run, ["--trial", "1"], "failed (diverged)"),
    ("trial-unknown", lambda run: run, ["--trial", "9"], "has no trial 9"),
    ("trial-negative", lambda run: run, ["--trial", "-1"], "has no trial -1"),
    ("rank-beyond", lambda run: run, ["--rank", "3"], "--rank 3 is out of range"),
    ("shape-with-run", lambda run: run, ["--input-shape", "1,8,8"], "cannot be used with a run"),
    ("weights-with-run", lambda run: run, ["--weights", "w.pt"], "cannot be used with a run"),
]


@pytest.mark.parametrize("damage, extra, expected", [c[1:] for c in EXPORT_CASES],
                         ids=[c[0] for c in EXPORT_CASES])
def test_damaged_run_for_export(sandbox, tmp_path, capsys, dataset, good_run, damage, extra,
                                expected):
    run = damaged_copy(good_run, tmp_path, damage)
    assert expected in refused(capsys, ["export", run, "--out", "exported", *extra], dataset)
    assert not Path("pwned").exists()


def no_success(run: Path) -> Path:
    return sql("UPDATE trial_user_attributes SET value_json = "
               "replace(value_json, '\"status\": \"ok\"', '\"status\": \"failed\"') "
               "WHERE key = 'outcome'")(run)


@pytest.mark.parametrize("argv, expected", [
    (["evaluate", "{run}"], "no successful trial to evaluate"),
    (["export", "{run}", "--out", "exported"], "has no successful trial to export"),
], ids=["evaluate", "export"])
def test_run_without_a_successful_trial(sandbox, tmp_path, capsys, dataset, good_run, argv,
                                        expected):
    run = damaged_copy(good_run, tmp_path, no_success)
    assert expected in refused(capsys, [a.format(run=run) for a in argv], dataset)


def test_report_into_a_file_is_refused(sandbox, tmp_path, capsys, good_run):
    run = damaged_copy(good_run, tmp_path, lambda r: r)
    Path("taken").write_text("a file\n")
    assert "cannot write the report into taken" in refused(capsys, ["report", run, "--out",
                                                                    "taken"], run)


def test_report_of_a_run_whose_data_is_gone_notes_it(sandbox, tmp_path, capsys, good_run):
    run = damaged_copy(good_run, tmp_path,
                       config_edit(lambda t: t.replace("/toy", "/gone")))
    assert main(["report", str(run), "--graphs", "0"]) == 0
    assert "note: no data-flow graphs: the task's input shape is unknown" in \
        capsys.readouterr().out


def test_the_good_run_is_readable(sandbox, capsys, good_run):
    """The damaged runs above fail because of their damage: the undamaged one exports."""
    assert main(["export", str(good_run), "--format", "pytorch", "--out", "exported"]) == 0
    assert "trial 2 of" in capsys.readouterr().out


# ----------------------------------------------------------------------------- real processes

@pytest.mark.slow
@pytest.mark.parametrize("case", ["config", "data", "run"])
def test_a_real_process_prints_one_line_and_exits_2(sandbox, tmp_path, dataset, good_run, case):
    """The same refusals from the installed command, in a process of its own (no capsys)."""
    if case == "config":
        argv = ["search", "--config", write_config("search.yaml", "search: {trials: 0}\n")]
    elif case == "data":
        root = damaged_copy(dataset, tmp_path, edit("train_x.npy", with_nan))
        argv = ["tasks", "show", f"unseen:{root}"]
    else:
        argv = ["report", damaged_copy(good_run, tmp_path, truncate("trials.db", 0.5))]
    before = tree(sandbox)
    done = subprocess.run([sys.executable, "-m", "einspace", *map(str, argv)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(ERROR) and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert tree(sandbox) == before
