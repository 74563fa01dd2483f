"""A real search with a fidelity ladder on local Ray: every trial records its rung, the best
candidates are promoted and trained on more data for longer, the top rung ranks first, and a
resumed run keeps the rungs and promotes as the uninterrupted one."""

import csv

import pytest
import yaml

from einspace.search.config import resolve
from einspace.search.engine import run_search
from einspace.search.store import open_run_store

CONFIG = {
    "task": {"name": "language_lite", "size": "small"},
    "seed": 4,
    "search": {"strategy": "evolution", "trials": 10, "workers": 2},
    "evolution": {"population_size": 4, "tournament_size": 2, "seeds": []},
    "training": {"epochs": 2, "batch_size": 64},
    "budget": {"max_params": 100_000, "max_flops": 4_000_000, "max_activations": 100_000},
    "final": {"top_k": 0},
    "fidelity": {"rungs": [[0.25, 1], [1.0, 2]], "eta": 2},
}


def signature(run) -> list[tuple]:
    return [(t.index, t.hash, t.status, t.origin, t.proposal["rung"]["level"])
            for t in open_run_store(run).latest()]


@pytest.mark.slow
def test_a_ladder_search_records_rungs_promotes_and_resumes(tmp_path, local_ray):
    summary = run_search(resolve(CONFIG), tmp_path / "full", quiet=True)
    trials = open_run_store(tmp_path / "full").latest()
    assert summary.trials == 10 and all(t.done for t in trials)
    promoted = [t for t in trials if t.proposal["rung"]["level"] == 1]
    assert promoted and all(t.origin == "promotion" for t in promoted)
    for t in promoted:
        source = trials[t.proposal["parents"][0]]
        assert source.hash == t.hash and source.proposal["rung"] == {
            "level": 0, "fraction": 0.25, "epochs": 1}
        assert t.proposal["rung"] == {"level": 1, "fraction": 1.0, "epochs": 2}
        assert t.status != "ok" or t.result["epochs_run"] == 2
    with (tmp_path / "full" / "leaderboard.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["rung"] == "1:1x2" and summary.best_index == int(rows[0]["index"])

    short = resolve({**CONFIG, "search": {**CONFIG["search"], "trials": 6}})
    run_search(short, tmp_path / "resumed", quiet=True)
    stored = tmp_path / "resumed" / "config.yaml"
    config = yaml.safe_load(stored.read_text())
    config["search"]["trials"] = 10
    stored.write_text(yaml.safe_dump(config))
    run_search(None, tmp_path / "resumed", resume=True, quiet=True)
    assert signature(tmp_path / "resumed") == signature(tmp_path / "full")
