"""Screening in a real search on local Ray: with ``ordering: deterministic`` the same config and
seed give the same trials with screening on, each child's screening is stored with its trial,
and summary.json holds screening's seconds and share of the training seconds."""

import json

import pytest

from einspace.search.config import resolve
from einspace.search.engine import run_search
from einspace.search.store import open_run_store

CONFIG = {
    "task": {"name": "language_lite", "size": "small"},
    "seed": 4,
    "search": {"strategy": "evolution", "trials": 8, "workers": 2},
    "evolution": {"population_size": 3, "tournament_size": 2, "seeds": []},
    "screening": {"candidates": 3, "min_trials": 3, "batch_size": 8},
    "training": {"epochs": 1, "batch_size": 64},
    "budget": {"max_params": 100_000, "max_flops": 10_000_000, "max_activations": 100_000},
    "final": {"top_k": 0},
}


@pytest.mark.slow
def test_screened_searches_repeat_and_record_their_screening(tmp_path, local_ray):
    runs = [tmp_path / "first", tmp_path / "second"]
    for run in runs:
        run_search(resolve(CONFIG), run, quiet=True)
    trials = [sorted(open_run_store(run).latest(), key=lambda t: t.index) for run in runs]
    assert [(t.hash, t.score, t.status) for t in trials[0]] == \
        [(t.hash, t.score, t.status) for t in trials[1]]
    population = CONFIG["evolution"]["population_size"]
    for trial in trials[0]:
        screening = trial.proposal["choices"].get("screening")
        assert (screening is None) == (trial.index < population)
        if screening is not None:
            assert screening["ranking"][0][0] == trial.hash
    overhead = json.loads((runs[0] / "summary.json").read_text())["screening"]
    assert overhead["seconds"] > 0 and 0 < overhead["share_of_training"] < 1
