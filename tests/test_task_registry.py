"""The task registry: build into a cache, reuse it, load through the Unseen-NAS format, CLI."""

import json

import numpy as np
import pytest

from einspace.cli import main
from einspace.errors import EinspaceError
from einspace.tasks import registry
from einspace.tasks.data import CLASSIFICATION, Split, TaskData
from einspace.tasks.handle import resolve_task
from einspace.tasks.registry import TaskError, TaskSpec, build_task, get_task
from einspace.tasks.unseen_nas import normalize_metadata

CALLS = []


def make_stripes(seed: int, size: str) -> TaskData:
    """Horizontal or vertical stripes on noise: a two-class toy task."""
    CALLS.append((seed, size))
    rng = np.random.RandomState(seed)
    n = 16 if size == "small" else 64
    splits = {}
    for name in ("train", "valid", "test"):
        y = rng.randint(0, 2, n).astype(np.int64)
        x = rng.randn(n, 1, 6, 6).astype(np.float32)
        x[y == 0, :, ::2, :] += 2.0
        x[y == 1, :, :, ::2] += 2.0
        splits[name] = Split(x, y)
    return TaskData("stripes", (1, 6, 6), CLASSIFICATION, splits, num_classes=2,
                    metadata={"codename": "stripes"})


@pytest.fixture
def stripes(monkeypatch):
    spec = TaskSpec(name="stripes", description="stripes toy task", mirrors="none",
                    input_shape=(1, 6, 6), task_type=CLASSIFICATION, metric="accuracy",
                    source="numpy", install="pip install numpy", version="1",
                    generator=make_stripes, num_classes=2)
    monkeypatch.setitem(registry._TASKS, "stripes", spec)
    CALLS.clear()
    return spec


def test_build_caches_and_load_reads_back(stripes, tmp_path):
    first = build_task("stripes", tmp_path, seed=3, size="small")
    again = build_task("stripes", tmp_path, seed=3, size="small")
    assert first == again and CALLS == [(3, "small")]
    data = resolve_task("stripes").load(3, "small", tmp_path)
    expected = make_stripes(3, "small")
    for name in ("train", "valid", "test"):
        np.testing.assert_array_equal(data.split(name).x, expected.split(name).x)
        np.testing.assert_array_equal(data.split(name).y, expected.split(name).y)
    assert data.num_classes == 2 and data.input_shape == (1, 6, 6)
    assert data.metadata["generator_version"] == "1" and data.metadata["seed"] == 3
    build_task("stripes", tmp_path, seed=3, size="small", force=True)
    assert len(CALLS) == 3  # the forced rebuild and the load's reference build above


def test_a_task_value_resolves_once_into_a_handle(stripes, tmp_path):
    task = resolve_task("stripes")
    assert (task.name, task.input_shape, task.num_classes, task.target_shape, task.metric) == \
        ("stripes", (1, 6, 6), 2, None, "accuracy")
    directory = task.directory(3, "small", tmp_path)
    assert directory == build_task("stripes", tmp_path, seed=3, size="small")
    unseen = resolve_task(f"unseen:{directory}")
    assert unseen.name == f"unseen:{directory}" and unseen.directory() == directory
    assert (unseen.input_shape, unseen.num_classes, unseen.metric) == ((1, 6, 6), 2, "auto")
    built = task.load(3, "small", tmp_path)
    np.testing.assert_array_equal(unseen.load().split("train").x, built.split("train").x)
    assert unseen.summary()["source"] == f"unseen:{directory}"
    assert resolve_task("unseen:no/such/dir").recipe().metric == "auto"  # resolving reads nothing
    with pytest.raises(TaskError, match="did you mean stripes"):
        resolve_task("stripe")
    with pytest.raises(EinspaceError, match="names no directory"):
        resolve_task("unseen:")


def test_unknown_task_and_size(stripes, tmp_path):
    with pytest.raises(TaskError, match="did you mean stripes"):
        get_task("stripe")
    with pytest.raises(TaskError, match="size must be one of"):
        build_task("stripes", tmp_path, size="huge")


def test_cli_tasks_list_show_build(stripes, tmp_path, capsys):
    assert main(["tasks", "list", "--json"]) == 0
    names = [json.loads(line)["name"] for line in capsys.readouterr().out.splitlines()]
    assert "stripes" in names
    assert main(["tasks", "show", "stripes"]) == 0
    assert "stripes toy task" in capsys.readouterr().out
    assert main(["tasks", "build", "stripes", "--root", str(tmp_path), "--size", "small"]) == 0
    built = capsys.readouterr().out.strip()
    assert (tmp_path / built.rsplit("/", 1)[-1] / "train_x.npy").is_file()
    assert main(["tasks", "show", "no-such-task"]) == 2
    assert "unknown task" in capsys.readouterr().err
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    assert main(["tasks", "build", "stripes", "--root", str(blocked), "--size", "small"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write task 'stripes'" in err


def _builtin_names() -> list[str]:
    return [spec.name for spec in registry.list_tasks()]


@pytest.mark.parametrize("name", _builtin_names())
def test_every_builtin_task_round_trips_through_the_cache(name, tmp_path):
    """build_task writes the real format; the handle loads back exactly what the generator made,
    with the spec's shapes and every metadata entry kept."""
    spec = get_task(name)
    try:
        fresh = spec.generator(1, "small")
    except TaskError as e:
        pytest.skip(str(e))
    directory = build_task(name, tmp_path, seed=1, size="small")
    assert (directory / "metadata").is_file() and (directory / "train_x.npy").is_file()
    loaded = resolve_task(name).load(1, "small", tmp_path)
    assert loaded.input_shape == spec.input_shape and loaded.task_type == spec.task_type
    assert loaded.num_classes == spec.num_classes == fresh.num_classes
    assert loaded.target_shape == spec.target_shape
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(loaded.split(split).x, fresh.split(split).x)
        np.testing.assert_array_equal(loaded.split(split).y, fresh.split(split).y)
    for key, value in normalize_metadata(fresh.metadata).items():
        assert loaded.metadata[key] == (pytest.approx(value) if isinstance(value, float)
                                        else value), key
    assert loaded.metadata["metric"] == spec.metric
    assert loaded.metadata["generator_version"] == spec.version
