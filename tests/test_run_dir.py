"""RunDir: the layout of a run directory, its config, its files and their errors."""

import json

import pytest
import torch

from einspace.errors import ConfigError, EinspaceError
from einspace.search.config import resolve
from einspace.search.run_dir import RunDir, RunFileError, trial_weights_files
from einspace.state_dict import read_state_dict, serialize_state

CONFIG = {"task": {"name": "language_lite", "size": "small"}, "seed": 7}


def test_the_layout(tmp_path):
    run = RunDir(tmp_path / "run")
    root = tmp_path / "run"
    assert run.config_file == root / "config.yaml"
    assert run.database == root / "trials.db"
    assert run.store_url() == f"sqlite:///{(root / 'trials.db').resolve()}"
    assert run.store_url("postgresql://db/x") == "postgresql://db/x"
    assert run.weights_path(3) == root / "weights" / "trial-3.pt"
    assert run.weights_index == root / "weights" / "index.json"
    assert run.final_weights_path(3) == root / "final" / "trial-3.pt"
    assert run.final_results_file == root / "final" / "results.json"
    assert [run.best_arch, run.summary_file, run.leaderboard, run.progress_picture] == [
        root / "best.arch", root / "summary.json", root / "leaderboard.csv",
        root / "progress.png"]
    assert (run.report_dir, run.tune_dir, run.lock_file) == (root / "report", root / "tune",
                                                             root / ".lock")
    assert str(run) == str(root)


def test_prepare_writes_the_config_that_config_reads(tmp_path):
    run = RunDir(tmp_path / "a" / "run")
    assert not run.is_run()
    run.prepare(resolve(CONFIG))
    assert run.is_run()
    assert run.config().seed == 7 and run.config().task["name"] == "language_lite"
    assert run.recorded_trials() == 0 and not run.has_outputs()
    assert run.next_tune_session() == "session-0"
    (run.tune_dir / "session-0").mkdir(parents=True)
    assert run.next_tune_session() == "session-1"


@pytest.mark.parametrize("make, expected", [
    (lambda root: None, "is not a search run directory: it does not exist"),
    (lambda root: (root.mkdir(), (root / ".lock").touch()), "stopped before it started"),
    (lambda root: (root.mkdir(), (root / "other").touch()), r"is not a search run directory "
                                                            r"\(no config.yaml\)"),
    (lambda root: (root.mkdir(), (root / "config.yaml").write_text("a: [\n")), "not valid YAML"),
    (lambda root: (root.mkdir(), (root / "config.yaml").write_text("")), "is empty"),
    (lambda root: (root.mkdir(), (root / "config.yaml").write_text("- x\n")),
     "must be a mapping"),
], ids=["missing", "lock-only", "no-config", "not-yaml", "empty", "list"])
def test_a_run_without_a_readable_config_is_one_line(tmp_path, make, expected):
    root = tmp_path / "run"
    make(root)
    with pytest.raises(ConfigError, match=expected) as error:
        RunDir(root).config()
    assert "\n" not in str(error.value)


def test_a_run_with_trials_is_not_prepared_again(tmp_path):
    run = RunDir(tmp_path)
    run.prepare(resolve(CONFIG))
    run.database.write_bytes(b"not sqlite")  # unreadable counts as holding trials
    with pytest.raises(ConfigError, match="already holds a search"):
        run.prepare(resolve(CONFIG))


def test_the_lock_is_exclusive(tmp_path):
    run = RunDir(tmp_path)
    with run.lock():
        with pytest.raises(ConfigError, match="in use by another running search"):
            with RunDir(tmp_path).lock():
                pass
    with run.lock():
        pass


def test_weights_final_first_then_search(tmp_path):
    run = RunDir(tmp_path)
    assert run.trained_weights_path(2) is None
    run.weights_dir.mkdir()
    model = torch.nn.Linear(2, 3)
    run.weights_path(2).write_bytes(serialize_state(model))
    (run.weights_dir / "trial-x.pt").write_bytes(b"")  # not a trial's file
    assert run.trained_weights_path(2) == run.weights_path(2)
    assert run.kept_weights() == {2: run.weights_path(2)}
    run.final_dir.mkdir()
    run.final_weights_path(2).write_bytes(serialize_state(model))
    assert run.trained_weights_path(2) == run.final_weights_path(2)
    assert trial_weights_files(run.final_dir) == {2: run.final_weights_path(2)}
    state = read_state_dict(run.trained_weights_path(2))
    assert torch.equal(state["weight"], model.weight.detach())


def test_listed_weights_and_final_results(tmp_path):
    run = RunDir(tmp_path)
    assert run.listed_weights() == [] and run.final_results() == []
    run.weights_dir.mkdir()
    run.weights_index.write_text(json.dumps({"4": 0.5, "1": 0.4}))
    assert run.listed_weights() == [4, 1]
    run.final_dir.mkdir()
    run.write_final_results([{"index": 4, "test_score": 0.6}, "junk", {"no": "index"}])
    assert run.final_results() == [{"index": 4, "test_score": 0.6}]
    for file in (run.weights_index, run.final_results_file):
        file.write_text("{")
    with pytest.raises(RunFileError, match="index.json is unreadable"):
        run.listed_weights()
    with pytest.raises(RunFileError, match="results.json is unreadable"):
        run.final_results()


@pytest.mark.parametrize("content, expected", [
    (None, "does not exist"), (b"garbage", "not a readable state_dict"),
    ([torch.zeros(2)], "holds a list, not a state_dict")])
def test_a_bad_weights_file_is_one_line(tmp_path, content, expected):
    file = tmp_path / "trial-0.pt"
    if isinstance(content, bytes):
        file.write_bytes(content)
    elif content is not None:
        torch.save(content, file)
    with pytest.raises(EinspaceError, match=expected) as error:
        read_state_dict(file)
    assert "\n" not in str(error.value)


def test_reading_a_run_imports_neither_ray_nor_optuna_nor_the_driver():
    import subprocess
    import sys

    code = ("import sys, einspace.search.run_dir, einspace.export.source; "
            "print([m for m in ('ray', 'optuna', 'einspace.search.engine', 'einspace.cli') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
