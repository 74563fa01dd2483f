"""The README's first command, `einspace search --config quickstart`: its config resolves, and
every seed it starts from builds for its task within its budgets, so the first trials train the
seeds instead of being rejected (the old budget excluded the MLP itself)."""

import pytest

import einspace
from einspace.search.config import load_config
from einspace.tasks.registry import get_task


def test_quickstart_resolves_to_a_seeded_evolution():
    raw = load_config("quickstart").to_dict()
    assert raw["search"]["strategy"] == "evolution"
    assert raw["evolution"]["seeds"], "a random initial population mostly sits at chance"
    assert raw["final"]["top_k"] >= 1


@pytest.mark.parametrize("config", ["quickstart", "evolution-small"])
def test_seeds_fit_the_task_and_its_budget(config):
    raw = load_config(config).to_dict()
    task = get_task(raw["task"]["name"])
    budget = raw["budget"]
    fitting = 0
    for name in raw["evolution"]["seeds"]:
        d = einspace.load_seed(name)
        try:
            cost = einspace.count(d, task.input_shape, num_classes=task.num_classes)
        except einspace.ShapeError:
            assert config != "quickstart", f"{name} does not fit {task.name}"
            continue
        fitting += 1
        for key, value in (("max_params", cost.params), ("max_flops", cost.flops),
                           ("max_activations", cost.activations), ("max_nodes", cost.nodes)):
            assert value <= budget.get(key, value), (name, key)
    assert fitting >= (1 if config == "quickstart" else 2)  # the quickstart grows the MLP


def test_best_seed_is_the_best_successful_seed_trial():
    """What the search prints as "seed: ..." and measures its improvement from."""
    from einspace.search.outputs import best_seed, ranked
    from einspace.search.store import StoredTrial

    d = einspace.load_seed("mlp")
    trials = [StoredTrial(0, 0, d, "seed:small_cnn", {}, "failed", None),
              StoredTrial(1, 1, d, "seed:mlp", {}, "ok", 0.5),
              StoredTrial(2, 2, d, "mutation", {}, "ok", 0.9),
              StoredTrial(3, 3, d, "seed:other", {}, "ok", 0.4)]
    assert best_seed(ranked(trials)).index == 1
    assert best_seed(ranked(trials[2:3])) is None
