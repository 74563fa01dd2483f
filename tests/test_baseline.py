"""``einspace tasks baseline``: the task's recipe is the one applied, the record is written, the
final view retrains on train + valid and scores test, and input errors are one line."""

import json

import numpy as np
import pytest
import torch

import einspace
from einspace.cli import main
from einspace.errors import ConfigError
from einspace.tasks import registry
from einspace.tasks.data import CLASSIFICATION, Split, TaskData
from einspace.tasks.handle import resolve_task
from einspace.tasks.recipe import Recipe
from einspace.tasks.registry import TaskSpec
from einspace.tasks.unseen_nas import write_unseen_nas

TASK_RECIPE = {"batch_size": 16, "lr": 0.05, "weight_decay": 0.0}


def make_bars(seed: int, size: str, flip_test: bool = True) -> TaskData:
    """A bright row (class 0) or column (class 1) on noise; the test labels are flipped, so a
    model that learned the rule scores high on valid and low on test."""
    rng = np.random.RandomState(seed)
    n = 64 if size == "small" else 256
    splits = {}
    for name in ("train", "valid", "test"):
        y = np.arange(n) % 2
        x = rng.randn(n, 1, 6, 6).astype(np.float32)
        for i, label in enumerate(y):
            k = rng.randint(2, 4)
            if label == 0:
                x[i, 0, k, :] += 3.0
            else:
                x[i, 0, :, k] += 3.0
        splits[name] = Split(x, (1 - y if name == "test" and flip_test else y).astype(np.int64))
    return TaskData("bars", (1, 6, 6), CLASSIFICATION, splits, num_classes=2)


@pytest.fixture
def bars(monkeypatch, tmp_path):
    spec = TaskSpec(name="bars", description="bars toy task", mirrors="none",
                    input_shape=(1, 6, 6), task_type=CLASSIFICATION, metric="accuracy",
                    source="numpy", install="pip install numpy", version="1",
                    generator=make_bars, num_classes=2, recipe=dict(TASK_RECIPE))
    monkeypatch.setitem(registry._TASKS, "bars", spec)
    return spec


def baseline(capsys, tmp_path, *argv):
    """Run the CLI on the small toy task; returns (exit code, stdout, stderr, records)."""
    out = tmp_path / "results" / "baselines.jsonl"
    code = main(["tasks", "baseline", *argv, "--size", "small", "--root", str(tmp_path / "tasks"),
                 "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return code, stdout, stderr, records


def test_cli_trains_prints_and_appends_a_record(bars, tmp_path, capsys):
    code, out, err, records = baseline(capsys, tmp_path, "bars", "--arch", "mlp",
                                       "--epochs", "3", "--json")
    assert code == 0 and len(records) == 1
    record = records[0]
    assert json.loads(out) == record
    assert record["task"] == "bars" and record["arch"] == "mlp" and record["status"] == "ok"
    assert record["hash"] == einspace.load_seed("mlp").hash
    assert record["metric"] == "accuracy" and record["eval_split"] == "valid"
    assert record["epochs"] == record["planned_epochs"] == 3 and len(record["history"]) == 3
    assert record["params"] == einspace.count(einspace.load_seed("mlp"), (1, 6, 6),
                                              num_classes=2).params
    assert record["score"] > 0.9  # the rule is learnable on valid
    assert record["recipe"]["epochs"] == 3
    # a second run with text output appends, and gives the same score (deterministic)
    code, out, err, records = baseline(capsys, tmp_path, "bars", "--arch", "mlp", "--epochs", "3")
    assert code == 0 and len(records) == 2 and records[1]["score"] == record["score"]
    assert out.startswith("bars mlp: accuracy") and "epochs 3/3" in out
    assert err.count("epoch") == 3  # per-epoch progress on stderr


def test_task_recipe_layers_defaults_task_and_user(bars):
    recipe = resolve_task("bars").recipe()
    assert recipe == Recipe().with_overrides(metric="accuracy", **TASK_RECIPE)
    assert resolve_task("bars").recipe({"lr": 0.2, "epochs": 2}).lr == 0.2
    assert resolve_task("bars").recipe({"epochs": 2}).batch_size == 16
    assert resolve_task("unseen:/anywhere").recipe({"epochs": 2}) == Recipe(epochs=2)
    with pytest.raises(ConfigError, match="unknown training recipe key"):
        resolve_task("bars").recipe({"learning_rate": 1.0})


def test_builtin_task_recipes_resolve():
    darcy = resolve_task("darcy_lite").recipe()
    assert (darcy.metric, darcy.batch_size, darcy.optimizer) == ("neg_relative_l2", 16, "adamw")
    assert resolve_task("mnist1d").recipe().metric == "accuracy"


def test_cli_applies_the_task_recipe(bars, tmp_path, capsys):
    code, _, _, records = baseline(capsys, tmp_path, "bars", "--arch", "mlp", "--epochs", "1",
                                   "--seed", "3", "--seconds", "600")
    recipe = records[0]["recipe"]
    assert code == 0
    assert {k: recipe[k] for k in TASK_RECIPE} == TASK_RECIPE
    assert (recipe["seed"], recipe["epochs"], recipe["max_seconds"]) == (3, 1, 600.0)


def test_final_view_concatenates_train_and_valid_and_scores_test():
    data = make_bars(0, "small")
    final = data.for_final()
    assert set(final.splits) == {"train", "valid"}
    train, valid, test = (data.split(s) for s in ("train", "valid", "test"))
    np.testing.assert_array_equal(final.split("train").x, np.concatenate([train.x, valid.x]))
    np.testing.assert_array_equal(final.split("train").y, np.concatenate([train.y, valid.y]))
    assert final.split("valid") is test
    assert (final.name, final.input_shape, final.num_classes) == ("bars", (1, 6, 6), 2)


def test_final_view_refuses_withheld_test_labels():
    data = make_bars(0, "small")
    withheld = TaskData(data.name, data.input_shape, data.task_type,
                        {**data.splits, "test": Split(data.split("test").x, None)}, 2)
    with pytest.raises(ConfigError, match="no test labels"):
        withheld.for_final()
    with pytest.raises(ConfigError, match="no 'test' split"):
        TaskData("two", (1, 6, 6), CLASSIFICATION,
                 {"train": data.split("train"), "valid": data.split("valid")}, 2).for_final()


def test_cli_final_retrains_for_eval_epochs_and_scores_test(bars, tmp_path, capsys):
    code, _, _, records = baseline(capsys, tmp_path, "bars", "--arch", "mlp", "--epochs", "3",
                                   "--final")
    record = records[0]
    assert code == 0 and record["final"] and record["eval_split"] == "test"
    assert record["planned_epochs"] == record["recipe"]["eval_epochs"] == 3
    assert record["score"] < 0.1  # the flipped test labels: it scored on test


def test_cli_final_with_withheld_test_labels_is_one_line(tmp_path, capsys):
    data = make_bars(0, "small")
    write_unseen_nas(tmp_path / "bars", TaskData(
        "bars", data.input_shape, data.task_type,
        {**data.splits, "test": Split(data.split("test").x, None)}, 2,
        metadata={"codename": "bars"}))
    code, _, err, records = baseline(capsys, tmp_path, f"unseen:{tmp_path / 'bars'}",
                                     "--arch", "mlp", "--epochs", "1", "--final")
    assert code == 2 and err.count("\n") == 1 and "no test labels" in err and not records


@pytest.mark.parametrize("argv,expected", [
    (["bars", "--arch", "(sequential (computation norm)"], "unclosed"),
    (["bars", "--arch", "resnet19"], "neither architecture text"),
    (["bars", "--arch", "(routing identity (computation norm) col2im)"], "at /2"),
    (["barz", "--arch", "mlp"], "unknown task 'barz'; did you mean bars"),
    (["bars"], "--arch"),
    (["bars", "--arch", "mlp", "--epochs", "0"], "must be at least 1"),
    (["bars", "--arch", "mlp", "--seconds", "-1"], "positive number of seconds"),
    (["bars", "--arch", "mlp", "--seed", "-1"], "recipe.seed must be at least 0"),
])
def test_input_errors_are_one_line_exit_2(bars, argv, expected, tmp_path, capsys):
    code, _, err, records = baseline(capsys, tmp_path, *argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("einspace: error: ")
    assert expected in err and not records


BUILTIN_SHAPES = [(3, 16, 16), (12, 8, 8), (1, 24, 24), (1, 1, 40), (1, 32, 32), (1, 27, 18),
                  (1, 56, 56), (1, 64, 128)]


@pytest.mark.parametrize("shape", BUILTIN_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_mlp_seed_fits_every_task_shape(shape):
    """The ``mlp`` seed: H*W -> 512 -> 256 per channel plus a learned per-channel offset; with
    one channel that is a plain flatten-MLP."""
    c, h, w = shape
    d = einspace.load_seed("mlp")
    expected = c * h * w + (h * w + 1) * 512 + 513 * 256 + 257 * 10
    assert einspace.count(d, shape, num_classes=10).params == expected
    net = einspace.build(d, shape, num_classes=10)
    assert sum(p.numel() for p in net.parameters()) == expected
    assert net(torch.zeros(2, *shape)).shape == (2, 10)
