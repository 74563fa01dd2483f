"""The search-quality benchmark's harness (not its numbers): the CPU protocol config resolves and
its seeds fit every task, the plan covers what the issue asks, the results file and the README
table it generates."""

from __future__ import annotations

import json

import numpy as np
import pytest

import einspace
from benchmarks.quality.cells import cell_config
from benchmarks.quality.plan import ABLATION_TASKS, ALL_TASKS, Cell, plan, strategies
from benchmarks.quality.results import ResultsFileError, read_rows, row_key
from benchmarks.quality.table import BEGIN, END, ReadmeMarkersError, render, replace_block
from einspace.search.config import load_config
from einspace.search.strategies.evolution import resolve_seeds
from einspace.tasks.handle import resolve_task
from einspace.tasks.registry import list_tasks


def unseen_dir(root, shape=(3, 32, 32), classes=5):
    """A directory in the Unseen-NAS format: x/y arrays per split."""
    rng = np.random.default_rng(0)
    root.mkdir()
    for split, n in (("train", 10), ("valid", 5), ("test", 5)):
        np.save(root / f"{split}_x.npy", rng.standard_normal((n, *shape)).astype(np.float32))
        np.save(root / f"{split}_y.npy", np.arange(n, dtype=np.int64) % classes)
    return f"unseen:{root}"


def test_the_benchmark_knows_every_built_in_task():
    assert sorted(ALL_TASKS) == sorted(spec.name for spec in list_tasks())


@pytest.mark.parametrize("task", ALL_TASKS)
def test_cpu_config_resolves_and_its_seeds_fit_every_built_in_task(task):
    config = load_config("cpu", {"task": {"name": task}, "search": {"time": "10m"}})
    assert config.search["time"] == 600 and config.search["trials"] is None
    assert config.search["ordering"] == "deterministic"
    handle = resolve_task(task)
    seeds = resolve_seeds(config.settings.seeds, handle.input_shape)
    assert [label for label, _ in seeds] == ["small_cnn", "mlp"]
    head = ({"num_classes": handle.num_classes} if handle.num_classes is not None
            else {"output_shape": handle.target_shape})
    cell = Cell(task, next(s for s in strategies() if s.name == "cpu"), 0)
    for budget in (config.raw["budget"], cell_config(cell, 10).raw["budget"]):
        for _, derivation in seeds:
            cost = einspace.count(derivation, handle.input_shape, **head)
            for key, value in (("max_params", cost.params), ("max_flops", cost.flops),
                               ("max_activations", cost.activations), ("max_nodes", cost.nodes)):
                assert value <= budget.get(key, value), (task, key)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (1, 1, 40)])
def test_cpu_config_seeds_fit_an_unseen_directory(tmp_path, shape):
    name = unseen_dir(tmp_path / "ds", shape)
    config = load_config("cpu", {"task": {"name": name}})
    assert len(resolve_seeds(config.settings.seeds, resolve_task(name).input_shape)) == 2


def test_every_strategy_is_the_cpu_protocol_with_its_own_keys():
    for strategy in strategies():
        if strategy.is_seed_alone or strategy.waiting_for:
            continue
        config = cell_config(Cell("mnist1d", strategy, 1), 3)
        assert (config.task["name"], config.seed, config.search["time"]) == ("mnist1d", 1, 180)
        assert config.raw["final"] == load_config("cpu").raw["final"]
    random = next(s for s in strategies() if s.name == "random")
    assert cell_config(Cell("mnist1d", random, 0), 10).strategy == "random"


def test_plan_covers_the_issue():
    cells = plan()
    for name in ("seed", "random", "cpu"):
        assert {(c.task, c.seed) for c in cells if c.strategy.name == name} == {
            (t, s) for t in ALL_TASKS for s in (0, 1)}
    assert len(ABLATION_TASKS) >= 3
    assert {c.task for c in cells if c.strategy.name == "evolution"} == set(ABLATION_TASKS)
    assert {c.strategy.name for c in cells} >= {"cpu-with-inherit", "cpu-no-size",
                                                 "cpu-with-screen", "cpu-no-growth"}
    picked = plan(["mnist1d"], ["cpu"], [0])
    assert [c.name for c in picked] == ["mnist1d-cpu-s0"]
    assert picked[0].key(3) == row_key({"task": "mnist1d", "strategy": "cpu", "seed": 0,
                                        "minutes": 3})


def test_an_ablation_flips_its_piece_whichever_way_the_protocol_has_it():
    by_name = {s.name: s for s in strategies()}
    protocol = load_config("cpu").raw
    assert protocol["evolution"]["inherit_weights"] is False
    assert protocol["search"]["time_per_trial"] == "auto"
    with_inherit = cell_config(Cell("mnist1d", by_name["cpu-with-inherit"], 0), 3).raw
    assert with_inherit["evolution"]["inherit_weights"] is True
    with_ladder = cell_config(Cell("mnist1d", by_name["cpu-with-fidelity"], 0), 3).raw
    assert with_ladder["fidelity"]["rungs"] == [[1.0, 4], [1.0, 16]]
    assert protocol["fidelity"]["rungs"] == []
    with_screen = cell_config(Cell("mnist1d", by_name["cpu-with-screen"], 0), 3).raw
    assert with_screen["screening"]["candidates"] == 4
    no_growth = cell_config(Cell("mnist1d", by_name["cpu-no-growth"], 0), 3).raw
    assert protocol["evolution"]["growth_rate"] == 0.5
    assert no_growth["evolution"]["growth_rate"] == 0.0
    no_size = cell_config(Cell("mnist1d", by_name["cpu-no-size"], 0), 3).raw
    assert no_size["search"]["time_per_trial"] == "off"
    assert no_size["evolution"]["inherit_weights"] is False
    plain = cell_config(Cell("mnist1d", by_name["evolution"], 0), 3).raw
    assert plain["evolution"]["inherit_weights"] is False
    assert plain["search"]["time_per_trial"] == "off" and plain["fidelity"]["rungs"] == []
    assert plain["evolution"]["growth_rate"] == 0.0


def rows_file(tmp_path) -> list[dict]:
    rows = []
    for task, seed_scores, random_scores, cpu_scores in (
            ("a", [0.5, 0.7], [0.4, 0.4], [0.8, 0.6]),   # cpu 0.7 beats seed 0.6, random 0.4
            ("b", [0.9, 0.9], [0.5, 0.5], [0.8, 0.8])):  # cpu loses to the seed
        for seed in (0, 1):
            rows.append({"task": task, "strategy": "seed", "seed": seed, "minutes": None,
                         "test": seed_scores[seed]})
            rows.append({"task": task, "strategy": "random", "seed": seed, "minutes": 10.0,
                         "test": random_scores[seed]})
            rows.append({"task": task, "strategy": "cpu", "seed": seed, "minutes": 10.0,
                         "test": cpu_scores[seed]})
    rows.append({"task": "a", "strategy": "evolution", "seed": 0, "minutes": 10.0, "test": 0.65})
    rows.append({"task": "a", "strategy": "cpu", "seed": 2, "minutes": 3.0, "test": 0.0})
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return read_rows(path)


def test_table_from_a_synthetic_results_file(tmp_path):
    labels = {s.name: s.label for s in strategies()}
    table = render(rows_file(tmp_path), labels, 10.0).splitlines()
    assert table[0] == ("| task | seed alone | random search | CPU protocol | plain evolution | "
                        "CPU beats both |")
    assert table[2] == ("| a | 0.6000 ± 0.1000 | 0.4000 ± 0.0000 | 0.7000 ± 0.1000 | "
                        "0.6500 (1 seed) | **yes** |")
    assert table[3] == "| b | 0.9000 ± 0.0000 | 0.5000 ± 0.0000 | 0.8000 ± 0.0000 | — | no |"
    assert "on 1 of 2 tasks" in table[-1] and "10 minute(s)" in table[-1]
    unfiltered = render(rows_file(tmp_path), labels)
    assert "0.4667 ± 0.4000" in unfiltered and "3, 10 minute(s)" in unfiltered


def test_table_goes_between_the_readme_markers():
    text = f"intro\n{BEGIN}\nold table\n{END}\nrest\n"
    assert replace_block(text, "| new |") == f"intro\n{BEGIN}\n| new |\n{END}\nrest\n"
    with pytest.raises(ReadmeMarkersError, match="no .* block"):
        replace_block("no markers here", "| new |")


def test_a_damaged_results_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"task": "a"}\n{broken\n')
    with pytest.raises(ResultsFileError, match=r"r.jsonl:2: not a JSON line"):
        read_rows(path)


def test_the_readme_has_the_table_block():
    from benchmarks.bench_search_quality import README

    text = README.read_text()
    assert text.index(BEGIN) < text.index(END)
