"""A run's export works on the task's raw arrays: a tiny search on local Ray, its best network
exported to every format, each export scored in a Python process that cannot import einspace on
the raw ``test_x.npy`` must give the run's reported final test score; the card records the
trainer's statistics."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from einspace.export import FORMATS, export, from_run
from einspace.search.config import resolve
from einspace.search.engine import load_search_task, run_search
from einspace.tasks.registry import build_task
from einspace.tasks.trainer import fit_normalizer

TASK = {"name": "language_lite", "size": "small", "seed": 0}
CONFIG = {
    "task": TASK,
    "seed": 1,
    "search": {"strategy": "random", "trials": 2, "workers": 1},
    "training": {"epochs": 2, "batch_size": 64},
    "budget": {"max_params": 100_000, "max_flops": 5_000_000, "max_activations": 200_000},
    "final": {"top_k": 1, "epochs": 3},
}

SCORER = textwrap.dedent('''
    import sys
    sys.modules["einspace"] = None  # the exports must not need einspace
    import importlib.util, json
    from pathlib import Path
    import numpy as np
    import torch

    out, task = Path(sys.argv[1]), Path(sys.argv[2])
    x, y = np.load(task / "test_x.npy"), np.load(task / "test_y.npy")

    def pt2(batch):
        return torch.export.load(str(out / "model.pt2")).module()(batch)

    def torchscript(batch):
        return torch.jit.load(str(out / "model.torchscript.pt"))(batch)

    def onnx(batch):
        import onnxruntime
        session = onnxruntime.InferenceSession(str(out / "model.onnx"))
        return torch.from_numpy(session.run(None, {"input": batch.numpy()})[0])

    def pytorch(batch):
        spec = importlib.util.spec_from_file_location("model", out / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.load()(batch)

    scores = {}
    for fmt in sys.argv[3:]:
        with torch.no_grad():
            logits = globals()[fmt](torch.from_numpy(x))
        scores[fmt] = float((logits.argmax(1).numpy() == y).mean())
    print(json.dumps(scores))
''')


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    run = tmp_path_factory.mktemp("raw") / "run"
    run_search(resolve(CONFIG), run, quiet=True)
    return run


@pytest.mark.slow
def test_every_export_scores_the_runs_test_score_on_raw_arrays(searched, tmp_path):
    test_score = json.loads((searched / "final" / "results.json").read_text())[0]["test_score"]
    done = export(from_run(searched), FORMATS, tmp_path / "best")
    assert not done.failures, done.failures
    task_dir = build_task(TASK["name"], None, TASK["seed"], TASK["size"])
    scored = subprocess.run([sys.executable, "-I", "-c", SCORER, str(done.out_dir),
                             str(task_dir), *FORMATS], capture_output=True, text=True,
                            timeout=600, cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    scores = json.loads(scored.stdout)
    assert set(scores) == set(FORMATS)
    for fmt, score in scores.items():
        assert abs(score - test_score) <= 0.01, (fmt, score, test_score)
    card = done.card
    assert card["scores"]["test"] == test_score and card["weights"]["kind"] == "final"
    stats = fit_normalizer(load_search_task(resolve(CONFIG)).for_final())
    assert card["input"]["mean"] == pytest.approx(stats.mean.tolist())
    assert card["input"]["std"] == pytest.approx(stats.std.tolist())
    assert card["input"]["input_dtype"] == str(np.load(task_dir / "test_x.npy").dtype)
    assert card["input"]["statistics_of"].startswith("train + valid")
    assert all(entry["verified_batches"] == [1, 3] for entry in card["formats"].values())
    assert all(entry["batch"] == "dynamic" for fmt, entry in card["formats"].items()
               if fmt in ("pt2", "onnx"))


@pytest.mark.slow
def test_bare_export_takes_normalised_inputs(searched, tmp_path):
    done = export(from_run(searched, bare=True), ("pt2",), tmp_path / "bare")
    assert not done.failures and not done.card["input"]["applied_inside_export"]
    assert done.card["sample"]["inputs"].startswith("seeded random")


@pytest.mark.slow
def test_uint8_images_stored_without_channels_export_raw(tmp_path):
    """An Unseen-NAS task of uint8 (N, H, W) images: the export adds the channel axis, casts and
    normalises inside, and scores the trainer's own test accuracy on the stored arrays."""
    import torch

    import einspace
    from einspace.export import from_task
    from einspace.tasks.handle import resolve_task
    from einspace.tasks.recipe import Recipe
    from einspace.tasks.trainer import evaluate, train

    rng = np.random.default_rng(0)
    task_dir = tmp_path / "digits"
    task_dir.mkdir()
    for split, n in (("train", 96), ("valid", 32), ("test", 32)):
        y = np.arange(n) % 3
        x = rng.integers(0, 60, (n, 8, 8)) + (y * 60)[:, None, None]  # class sets the level
        np.save(task_dir / f"{split}_x.npy", x.astype(np.uint8))
        np.save(task_dir / f"{split}_y.npy", y.astype(np.int64))
    task = f"unseen:{task_dir}"
    data = resolve_task(task).load()
    arch = "(sequential (computation norm) (computation linear16))"
    derivation = einspace.parse(arch)
    result = train(lambda: einspace.build(derivation, data.input_shape, num_classes=3), data,
                   Recipe(epochs=15, batch_size=32, device="cpu"), keep_model=True)
    torch.save(result.model.state_dict(), tmp_path / "w.pt")
    done = export(from_task(arch, task, tmp_path / "w.pt"), ("pt2", "onnx"), tmp_path / "out")
    assert not done.failures, done.failures
    entry = done.card["input"]
    assert entry["input_dtype"] == "uint8" and entry["input_shape"] == ["batch", 8, 8]
    assert entry["steps"][0] == "add a channel axis (dim 1)" and entry["input_range"][1] >= 120
    raw = np.load(task_dir / "test_x.npy")
    model = torch.export.load(str(done.out_dir / "model.pt2")).module()
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(raw)).argmax(1).numpy() == data.splits["test"].y)
    expected = evaluate(result.model, data, "test", recipe=Recipe(device="cpu"))
    assert float(accuracy.mean()) == pytest.approx(expected, abs=1e-9)
    assert expected > 0.5  # trained: a transformation lost would show
