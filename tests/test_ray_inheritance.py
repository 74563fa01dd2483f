"""Weight inheritance end to end on local Ray: a quickstart-sized search (mnist1d, seeded with
the small CNN and the MLP, inheritance on as evolution's default) in which children of trained
members start from their weights."""

import subprocess
import sys

import pytest
import torch
import yaml

import einspace
from einspace.search.store import open_run_store
from einspace.tasks.mnist1d import INPUT_SHAPE, N_CLASSES


@pytest.mark.slow
def test_children_of_trained_members_inherit_their_weights(tmp_path):
    run = tmp_path / "run"
    config = tmp_path / "inheriting.yaml"
    config.write_text(yaml.safe_dump({"extends": "quickstart", "evolution": {
        "seeds": ["small_cnn", "mlp"], "population_size": 4, "tournament_size": 2,
        "inherit_weights": True}}))
    done = subprocess.run([sys.executable, "-m", "einspace", "search", "--config", str(config),
                           "--trials", "6", "--epochs", "1", "--no-final", "--quiet",
                           "--out", str(run)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    trials = open_run_store(run).latest()
    children = [t for t in trials if t.origin in ("mutation", "crossover")]
    assert children and all("inherited_params" in t.result for t in children)
    inheriting = [t for t in children if t.result["inherited_params"] > 0]
    assert inheriting, [t.result for t in children]
    for t in inheriting:
        took = dict(t.result["inherited_from"])
        assert set(took) <= set(t.proposal["parents"]) and sum(took.values()) == \
            t.result["inherited_params"]
        assert t.result["pooled"] is True
    header = (run / "leaderboard.csv").read_text().splitlines()[0].split(",")
    assert {"inherited_params", "fresh_params", "inherited_from"} <= set(header)
    # The pool holds trained trials' own weights (each loads into its architecture).
    pool = sorted((run / "weights" / "pool").glob("trial-*.pt"))
    assert pool
    by_index = {t.index: t for t in trials}
    for file in pool:
        trial = by_index[int(file.stem.removeprefix("trial-"))]
        einspace.build(trial.derivation, INPUT_SHAPE, num_classes=N_CLASSES).load_state_dict(
            torch.load(file, weights_only=True))
