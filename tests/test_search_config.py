"""The search configuration: defaults, unknown keys, bad values, durations, the training recipe
and the search-space sections."""

from __future__ import annotations

import pytest

from einspace.errors import ConfigError
from einspace.search.config import (
    SEARCH_DEFAULTS,
    default_config,
    load_config,
    merge_user,
    parse_duration,
    resolve,
    shipped_config,
    shipped_names,
)


def test_defaults_resolve():
    config = resolve()
    assert config.strategy == "evolution"
    assert config.seed == 0
    assert config.task == {"name": "addnist_lite", "size": "default", "seed": 0, "root": None}
    assert config.search["trials"] == 200 and config.search["workers"] == 2
    assert config.search["time"] is None
    assert config.raw["evolution"]["seeds"] == ["resnet18"]
    assert config.recipe.epochs == 8 and config.recipe.lr == 0.04
    assert config.space.budget.max_params == 25_000_000
    # the defaults themselves are never modified by resolving
    resolve({"search": {"workers": 5}, "evolution": {"seeds": "mlp"}})
    assert SEARCH_DEFAULTS["search"]["workers"] == 2
    assert default_config()["evolution"]["seeds"] == ["resnet18"]


def test_overrides_and_resolved_round_trip():
    config = resolve({"task": "unseen:/data/addnist", "seed": 3,
                      "search": {"strategy": "optuna", "time": "2h", "trials": None,
                                 "ordering": "asynchronous", "gpus_per_trial": 0.25},
                      "optuna": {"sampler": "random"}, "evolution": {"seeds": None},
                      "training": {"epochs": 2, "lr": "3e-4"},
                      "budget": {"max_params": 1000}, "final": {"top_k": 0}})
    assert config.task["name"] == "unseen:/data/addnist" and config.task["size"] == "default"
    assert config.strategy == "optuna" and config.seed == 3
    assert config.search["time"] == 7200.0 and config.search["trials"] is None
    assert config.raw["evolution"]["seeds"] == []
    assert config.recipe.epochs == 2 and config.recipe.lr == pytest.approx(3e-4)
    assert config.space.budget.max_params == 1000
    # what is written into the run directory resolves to the same config (--resume)
    again = resolve(config.to_dict())
    assert again.raw == config.raw
    assert again.recipe == config.recipe
    copy = config.to_dict()
    copy["search"]["workers"] = 9
    assert config.search["workers"] == 2


@pytest.mark.parametrize("data, key", [
    ({"serach": {}}, "'serach'"),
    ({"search": {"trails": 10}}, "'search.trails'"),
    ({"evolution": {"populaton_size": 10}}, "'evolution.populaton_size'"),
    ({"task": {"nmae": "x"}}, "'task.nmae'"),
    ({"final": {"top": 1}}, "'final.top'"),
    ({"optuna": {"kind": "tpe"}}, "'optuna.kind'"),
    ({"training": {"epohcs": 3}}, "'epohcs'"),
    ({"budget": {"max_param": 10}}, "budget.max_param"),
    ({"grammar": {"terminals": ["norm"]}}, "grammar.terminals"),
])
def test_unknown_keys_are_named(data, key):
    with pytest.raises(ConfigError) as info:
        resolve(data)
    assert key in str(info.value)


@pytest.mark.parametrize("data, key", [
    ({"search": {"strategy": "genetic"}}, "search.strategy"),
    ({"search": {"workers": 0}}, "search.workers"),
    ({"search": {"workers": 1.5}}, "search.workers"),
    ({"search": {"trials": True}}, "search.trials"),
    ({"search": {"time": "5x"}}, "search.time"),
    ({"search": {"time": 0}}, "search.time"),
    ({"search": {"time": -30}}, "search.time"),
    ({"search": {"trials": None}}, "search.trials or search.time"),
    ({"search": {"ordering": "random"}}, "search.ordering"),
    ({"search": {"scheduler": "hyperband"}}, "search.scheduler"),
    ({"search": {"cpus_per_trial": 0}}, "search.cpus_per_trial"),
    ({"search": {"gpus_per_trial": -1}}, "search.gpus_per_trial"),
    ({"search": {"retries": -1}}, "search.retries"),
    ({"search": {"keep_weights": "3"}}, "search.keep_weights"),
    ({"search": 5}, "'search' must be a mapping"),
    ({"evolution": {"crossover_rate": 2}}, "evolution.crossover_rate"),
    ({"evolution": {"crossover_rate": -0.1}}, "evolution.crossover_rate"),
    ({"evolution": {"novelty_weight": -1}}, "evolution.novelty_weight"),
    ({"evolution": {"min_distance": "near"}}, "evolution.min_distance"),
    ({"evolution": {"population_size": 0}}, "evolution.population_size"),
    ({"evolution": {"tournament_size": "5"}}, "evolution.tournament_size"),
    ({"evolution": {"seeds": {"resnet18": 1}}}, "evolution.seeds"),
    ({"evolution": {"seeds": ["resnet18", 3]}}, "evolution.seeds"),
    ({"optuna": {"sampler": "cmaes"}}, "optuna.sampler"),
    ({"task": {"size": "huge"}}, "task.size"),
    ({"task": {"name": ""}}, "task.name"),
    ({"task": {"seed": -1}}, "task.seed"),
    ({"seed": "zero"}, "seed"),
    ({"final": {"top_k": -1}}, "final.top_k"),
    ({"final": {"epochs": 0}}, "final.epochs"),
    ({"training": {"epochs": 0}}, "recipe.epochs"),
    ({"training": {"lr": "fast"}}, "recipe.lr"),
    ({"training": [1, 2]}, "'training' must be a mapping"),
    ({"budget": {"max_nodes": 0}}, "max_nodes"),
])
def test_bad_values_are_config_errors(data, key):
    with pytest.raises(ConfigError) as info:
        resolve(data)
    assert key in str(info.value)


def test_seeds_given_as_one_name_become_a_list():
    assert resolve({"evolution": {"seeds": "resnet18"}}).raw["evolution"]["seeds"] == \
        ["resnet18"]


@pytest.mark.parametrize("value, seconds", [
    (None, None), (3600, 3600.0), (1.5, 1.5), ("90m", 5400.0), ("90", 90.0), ("45s", 45.0),
    ("2h", 7200.0), (" 1.5h ", 5400.0), ("0.5m", 30.0)])
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5x", "", "m", "-1m", "0", 0, -2, "1d", True, "1 hour"])
def test_parse_duration_rejects(value):
    with pytest.raises(ConfigError, match="search.time"):
        parse_duration(value)


def test_time_budget_resolves_to_seconds():
    assert resolve({"search": {"time": "90m"}}).search["time"] == 5400.0


def test_load_config_file_with_overrides(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("task: digits\nsearch:\n  strategy: random\n  trials: 12\n"
                    "training:\n  epochs: 3\n")
    config = load_config(path, {"search": {"workers": 4}, "task": {"size": "small"},
                                "training": {"lr": 0.1}})
    assert config.task["name"] == "digits" and config.task["size"] == "small"
    assert config.strategy == "random"
    assert (config.search["trials"], config.search["workers"]) == (12, 4)
    assert (config.recipe.epochs, config.recipe.lr) == (3, 0.1)
    assert load_config(None).raw == resolve().raw


def test_load_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listed)
    typo = tmp_path / "typo.yaml"
    typo.write_text("search:\n  trails: 5\n")
    with pytest.raises(ConfigError, match="'search.trails'"):
        load_config(typo)


def test_unknown_shipped_config_lists_the_shipped_names():
    with pytest.raises(ConfigError, match="neither a file nor a shipped config") as info:
        shipped_config("no_such_config")
    assert ", ".join(shipped_names()) in str(info.value)
    assert "'no_such_config'" in str(info.value)
    for name in shipped_names():
        assert shipped_config(name).is_file()
        resolve_shipped = load_config(name)
        assert resolve_shipped.strategy in ("evolution", "random", "optuna")


def test_merge_user_lays_overrides_over_nested_mappings():
    data = {"task": "digits", "search": {"trials": 5, "workers": 2}}
    merged = merge_user(data, {"task": {"seed": 2}, "search": {"workers": 3}, "seed": 7})
    assert merged == {"task": {"name": "digits", "seed": 2},
                      "search": {"trials": 5, "workers": 3}, "seed": 7}
    assert data["search"]["workers"] == 2
