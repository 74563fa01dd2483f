"""The einspace command: output formats, graphs, and one-line errors with exit status 2."""

import json
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

import einspace
from einspace.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sample_json_lines_are_complete_and_reproducible(capsys):
    code, out, _ = run(capsys, "sample", "--input-shape", "3,28,28", "-n", "5", "--seed", "0",
                       "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 5
    for i, row in enumerate(rows):
        assert {"arch", "hash", "params", "flops", "output_shape", "nodes", "depth"} <= set(row)
        d = einspace.parse(row["arch"])
        assert d.hash == row["hash"] and row["seed"] == i
        annotation = einspace.annotate(d, (3, 28, 28))
        assert row["params"] == annotation.cost.params
        assert row["flops"] == annotation.cost.flops
        assert tuple(row["output_shape"]) == annotation.output_shape
    _, again, _ = run(capsys, "sample", "--input-shape", "3x28x28", "-n", "1", "--seed", "3",
                      "--json")
    assert json.loads(again)["hash"] == rows[3]["hash"]


def test_sample_counts_the_head_when_asked(capsys):
    _, plain, _ = run(capsys, "sample", "--input-shape", "1,24,24", "--json")
    _, headed, _ = run(capsys, "sample", "--input-shape", "1,24,24", "--json",
                       "--num-classes", "10")
    plain, headed = json.loads(plain), json.loads(headed)
    net = einspace.build(einspace.parse(plain["arch"]), (1, 24, 24), num_classes=10)
    assert headed["params"] == sum(p.numel() for p in net.parameters())
    assert headed["params"] > plain["params"]


def test_sample_text_output(capsys):
    code, out, _ = run(capsys, "sample", "--input-shape", "3,28,28", "-n", "2")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 4
    assert lines[0].startswith("# seed 0") and lines[1].startswith("(")


def test_sample_uses_config_budget(tmp_path, capsys):
    config = tmp_path / "space.yaml"
    config.write_text("budget:\n  max_params: 2000\n")
    _, out, _ = run(capsys, "sample", "--input-shape", "3,28,28", "-n", "20", "--json",
                    "--config", str(config))
    assert all(json.loads(line)["params"] <= 2000 for line in out.splitlines())


@pytest.mark.parametrize("arch_kind", ["seed", "text", "file"])
def test_inspect_json(arch_kind, tmp_path, capsys):
    seed = einspace.load_seed("resnet18")
    arch = {"seed": "resnet18", "text": seed.text, "file": None}[arch_kind]
    if arch_kind == "file":
        path = tmp_path / "arch.txt"
        path.write_text("# my network\n" + seed.pretty())
        arch = str(path)
    code, out, _ = run(capsys, "inspect", arch, "--input-shape", "3,28,28", "--json")
    info = json.loads(out)
    assert code == 0
    assert info["hash"] == seed.hash and info["params"] == 11_210_560
    assert info["output_shape"] == [512, 2, 2] and info["nodes"] == seed.size
    assert info["depth"] == seed.depth


def test_inspect_tree_lists_every_node_with_shapes(capsys):
    code, out, _ = run(capsys, "inspect",
                       "(sequential (routing im2col3k1s1p (computation linear64) col2im) "
                       "(computation norm))", "--input-shape", "3,28,28")
    assert code == 0
    assert "prerouting im2col3k1s1p" in out and "3×28×28 → 784×27" in out
    assert "computation norm" in out and "64×28×28 → 64×28×28" in out
    assert "params 1,920" in out and "nodes 8" in out and "depth 3" in out


@pytest.mark.parametrize("suffix", [".dot", ".graphml", ".png"])
def test_inspect_writes_graph(suffix, tmp_path, capsys):
    target = tmp_path / f"graph{suffix}"
    code, _, _ = run(capsys, "inspect", "vit", "--input-shape", "3,28,28", "--graph",
                     str(target))
    assert code == 0 and target.stat().st_size > 0
    if suffix == ".graphml":
        graph = nx.read_graphml(target)
        assert nx.is_directed_acyclic_graph(graph)
        # 4 layers x 4 heads x 3 q/k/v linears + 4 x 3 more linears + patch embedding
        linears = [v for v, d in graph.nodes(data=True) if d["label"].startswith("linear")]
        assert len(linears) == 4 * 4 * 3 + 4 * 3 + 1
    if suffix == ".dot":
        assert target.read_text().startswith("digraph einspace {")


def test_seeds_lists_shipped_seeds(capsys):
    code, out, _ = run(capsys, "seeds", "--json")
    names = {json.loads(line)["name"] for line in out.splitlines()}
    assert code == 0 and {"resnet18", "wrn16_4", "vit", "mlp_mixer"} <= names


def test_grammar_prints_overridden_grammar(tmp_path, capsys):
    config = tmp_path / "space.yaml"
    config.write_text("grammar:\n  disable: [softmax]\n  probabilities:\n"
                      "    module: {computation: 0.5}\n")
    code, out, _ = run(capsys, "grammar", "--config", str(config))
    assert code == 0 and "'softmax'" not in out and "computation [0.5]" in out
    assert einspace.load_grammar  # the printed text loads back:
    path = tmp_path / "g.pcfg"
    path.write_text(out)
    assert "'softmax'" not in einspace.load_grammar(path).to_text()


@pytest.mark.parametrize("argv,expected", [
    ([], "a command is required"),
    (["sample"], "--input-shape"),
    (["sample", "--input-shape", "3,a,4"], "is not a shape"),
    (["sample", "--input-shape", "3,28,28,5"], "C,H,W or N,D"),
    (["sample", "--input-shape", "3,28,28", "-n", "0"], "must be at least 1"),
    (["sample", "--input-shape", "3,28,28", "--bogus"], "unrecognized arguments"),
    (["frobnicate"], "invalid choice"),
    (["inspect", "resnet19", "--input-shape", "3,28,28"], "neither architecture text"),
    (["inspect", "(sequential (computation norm)", "--input-shape", "3,28,28"], "unclosed"),
    (["inspect", "(routing identity (computation norm) col2im)", "--input-shape", "3,8,8"],
     "at /2"),
    (["inspect", "resnet18", "--input-shape", "3,28,28", "--graph", "out.jpeg"], ".png"),
    (["sample", "--input-shape", "3,28,28", "--config", "/nonexistent.yaml"], "does not exist"),
    (["distance", "resnet18"], "the following arguments are required: b"),
    (["distance", "resnet18", "resnet19"], "neither architecture text"),
    (["distance", "resnet18", "vit", "--indel-node", "0"], "indel_node"),
])
def test_usage_errors_are_one_line_exit_2(argv, expected, capsys):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("einspace: error: ")
    assert expected in err


def test_distance_of_seeds_files_and_texts(tmp_path, capsys):
    code, out, _ = run(capsys, "distance", "resnet18", "resnet18")
    assert code == 0 and out == "0  (the same network)\n"
    arch = tmp_path / "net.arch"
    arch.write_text("# norm, then an identity the compiler drops\n"
                    "(sequential (computation norm) (computation identity))\n")
    code, out, _ = run(capsys, "distance", str(arch), "(computation norm)", "--json")
    info = json.loads(out)
    assert code == 0 and info["distance"] == 0 and info["same_network"]
    assert info["a_hash"] != info["b_hash"]
    assert info["a_canonical_hash"] == info["b_canonical_hash"]
    code, out, _ = run(capsys, "distance", "(computation norm)", "(computation linear16)",
                       "--relabel-terminal", "0.5")
    assert code == 0 and out == "0.5\n"
    code, out, _ = run(capsys, "distance", "resnet18", "vit")
    assert float(out) == einspace.distance(einspace.load_seed("resnet18"),
                                           einspace.load_seed("vit")) > 0


@pytest.mark.slow
def test_installed_command_never_prints_a_traceback():
    result = subprocess.run([sys.executable, "-m", "einspace", "inspect", "(computation nrom)",
                             "--input-shape", "3,8,8"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "unknown computation terminal 'nrom'" in result.stderr


def test_terminals_lists_every_registered_terminal(capsys):
    from einspace.blocks import terminals

    code, out, _ = run(capsys, "terminals", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == len(terminals())
    for row in rows:
        assert {"name", "kind", "modes", "family", "paper", "parameters"} <= set(row)
    assert any(r["name"] == "linear64" and r["parameters"] == {"out": 64} for r in rows)
    code, table, _ = run(capsys, "terminals", "--papers")
    assert code == 0 and table.startswith("| # | paper |")
    for t in terminals():
        if t.seed_papers:
            assert f"`{t.name}`" in table


HEAVY = ("torch", "ray", "optuna", "nltk", "onnx")


@pytest.mark.parametrize("argv", [["--help"], ["search", "--help"], ["evaluate", "--help"],
                                  ["export", "--help"], ["inspect", "--help"],
                                  ["tasks", "baseline", "--help"]])
def test_help_imports_no_heavy_library(argv):
    """``--help`` answers without importing torch, Ray, Optuna, nltk or onnx (what made it take
    seconds); the time itself is measured by benchmarks/bench_cli.py, not asserted here."""
    probe = ("import sys\nfrom einspace.cli import main\ntry:\n    main(sys.argv[1:])\n"
             "except SystemExit:\n    pass\n"
             f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "usage: einspace" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_import_einspace_is_lazy_and_keeps_the_public_api():
    probe = ("import sys, einspace\nbefore = 'torch' in sys.modules\n"
             "d = einspace.sample((3, 8, 8), seed=0)\n"
             "assert einspace.parse(str(d)) == d\n"
             "print(before, 'torch' in sys.modules, sorted(set(einspace.__all__) - set(dir("
             "einspace))))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "[]"]
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        einspace.no_such_name  # noqa: B018


def test_baseline_default_results_file_matches_the_library():
    from einspace.cli import BASELINE_RESULTS
    from einspace.tasks.baseline import DEFAULT_RESULTS

    assert Path(BASELINE_RESULTS) == DEFAULT_RESULTS


def search_flags(*argv: str) -> dict:
    """The config overrides ``einspace search ARGV`` would apply."""
    from einspace.cli import make_parser
    from einspace.search.commands import _overrides

    return _overrides(make_parser().parse_args(["search", *argv]))


@pytest.mark.parametrize("argv, search", [
    (["--trials", "5"], {"trials": 5}),
    (["--time", "30m"], {"time": "30m", "trials": None}),
    (["--trials", "5", "--time", "2h"], {"time": "2h", "trials": 5}),
    ([], {}),
])
def test_search_trials_and_time_flags_set_the_budget(argv, search):
    assert search_flags(*argv).get("search", {}) == search


@pytest.mark.parametrize("budget, same_as", [("50", ["--trials", "50"]),
                                             ("2h", ["--time", "2h"])])
def test_search_budget_flag_is_a_deprecated_alias(capsys, budget, same_as):
    assert search_flags("--budget", budget) == search_flags(*same_as)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--budget is deprecated" in err and "--trials" in err
    search_flags(*same_as)
    assert capsys.readouterr().err == ""
