"""``einspace export``: seeds and sampled architectures (both terminal sets) exported to every
format reproduce the original outputs in a Python process that cannot import einspace; the
generated ``model.py`` is plain, lint-clean torch code; run directories, weights and unexportable
nodes fail with one-line errors that say what and where."""

import ast
import json
import math
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

import einspace
from einspace import Budget, Sampler
from einspace.blocks.registry import Kind, get, terminals
from einspace.cli import main
from einspace.export import FORMATS, ExportError, check_exports, export, from_run, from_spec
from einspace.export.pipeline import SAMPLE
from einspace.export.to_onnx import pooling_matrix
from einspace.search.config import resolve
from einspace.search.engine import load_search_task, prepare_run_dir, read_run_config
from einspace.search.store import TrialStore, default_url
from einspace.search.strategies import Proposal
from einspace.tasks.status import Status
from einspace.tasks.trainer import fit_normalizer

SHAPE = (3, 16, 16)
RUFF = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "ruff"
PAPER_TERMINALS = {t.name for t in terminals() if t.family != "einspace"}


def words(derivation) -> set[str]:
    """The production and terminal names in a derivation's text."""
    return set(derivation.text.replace("(", " ").replace(")", " ").split())


def sampled():
    """Ten small sampled architectures: four from the einspace terminals, six from the
    seed-paper set that use at least one paper primitive; shapes in image and token mode."""
    budget = Budget(max_params=200_000, max_flops=20_000_000, max_nodes=80, max_depth=16)
    picked = []
    for terminal_set, count, needs_paper in (("einspace", 4, False), ("seed-papers", 6, True)):
        sampler = Sampler(einspace.load_grammar(terminal_set=terminal_set), budget)
        shapes = [(3, 16, 16), (1, 24, 24), (16, 32)]
        seed = 0
        while sum(p[0] == terminal_set for p in picked) < count:
            shape = shapes[seed % 3]
            d = sampler.sample(shape, random.Random(seed)).derivation
            seed += 1
            if d.size < 5 or needs_paper and not PAPER_TERMINALS & words(d):
                continue
            picked.append((terminal_set, shape, d))
    return picked


SAMPLED = sampled()
CASES = [(f"seed-{name}", einspace.load_seed(name), SHAPE, {"num_classes": 10})
         for name in einspace.seed_names()]
CASES += [(f"{ts}-{i}", d, shape, {"num_classes": 5}) for i, (ts, shape, d) in enumerate(SAMPLED)]
# a repeated branch inside a repeated branch: 64 LeakyReLUs, written as two loops
CLONE8 = ("(sequential (routing im2col3k1s1p (computation linear16) col2im) (sequential "
          "(branching clone_tensor8 (sequential (computation norm) (branching clone_tensor8 "
          "(sequential (computation leakyrelu) (computation linear16)) add_tensors)) add_tensors) "
          "(sequential (computation norm) (computation leakyrelu))))")
CASES += [("clone8-nested", einspace.parse(CLONE8), (3, 8, 8), {"num_classes": 3})]
# dense heads: adaptive pooling of tokens and of an image map to a grid that does not divide it
CASES += [("dense-tokens", einspace.parse("(computation linear16)"), (16, 32),
           {"output_shape": (2, 5, 5)}),
          ("dense-image", einspace.parse("(routing im2col3k1s1p (computation linear16) col2im)"),
           (3, 16, 16), {"output_shape": (1, 3, 3)})]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every case exported to every format, then all checked in one einspace-free process."""
    root = tmp_path_factory.mktemp("exports")
    done = {}
    for name, derivation, shape, head in CASES:
        candidate = from_spec(derivation.text, shape, head.get("num_classes"),
                              head.get("output_shape"))
        done[name] = export(candidate, FORMATS, root / name, verify=False)
    jobs = [(e.out_dir, SAMPLE, {f: entry["files"][0] for f, entry in e.card["formats"].items()})
            for e in done.values()]
    cheat = root / "cheat"  # a model.py that needs einspace must fail the check
    cheat.mkdir()
    torch.save({"batches": [{"input": torch.zeros(1, 2), "output": torch.zeros(1, 2)}],
                "fixed_batch": {}}, cheat / SAMPLE)
    (cheat / "model.py").write_text("import einspace\n")
    jobs.append((cheat, SAMPLE, {"pytorch": "model.py"}))
    checks = {(c.dir.name, c.format): c for c in check_exports(jobs)}
    return done, checks


@pytest.mark.slow
@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_every_format_reproduces_the_outputs_without_einspace(exported, case):
    done, checks = exported
    assert [str(e) for e in done[case].failures] == []
    assert set(done[case].card["formats"]) == set(FORMATS)
    for fmt in FORMATS:
        check = checks[(case, fmt)]
        assert check.isolated, "the checking process could import einspace"
        assert check.ok, f"{fmt}: {check.problem()}"


def test_sampled_architectures_cover_paper_primitives():
    papers = [d for ts, _, d in SAMPLED if ts == "seed-papers"]
    used = set().union(*(words(d) for d in papers))
    assert len(used & PAPER_TERMINALS) >= 4


@pytest.mark.slow
def test_generated_model_py_is_plain_torch_and_lint_clean(exported):
    done, _ = exported
    files = [e.out_dir / "model.py" for e in done.values() if "pytorch" in e.card["formats"]]
    for file in files:
        imports = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                imports |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                imports.add(node.module.split(".")[0])
        assert imports <= {"torch", "pathlib"}, (file, imports)
    if not RUFF.exists():
        pytest.skip("ruff is not installed in .venv")
    lint = subprocess.run([str(RUFF), "check", "--isolated", "--no-cache", "--select", "E,F,W",
                           "--line-length", "100", *map(str, files)],
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout[-3000:]


@pytest.mark.slow
def test_model_py_comments_name_derivation_nodes(exported):
    done, _ = exported
    source = (done["seed-resnet18"].out_dir / "model.py").read_text()
    assert "# /0 (routing, compiled to Conv2d)" in source
    assert "nn.Conv2d(3, 64, kernel_size=(3, 3)" in source
    assert "import einspace" not in source


@pytest.mark.slow
def test_model_py_loops_over_repeated_branches(exported):
    done, _ = exported
    source = (done["clone8-nested"].out_dir / "model.py").read_text()
    derivation = einspace.parse(CLONE8)
    assert len(source.splitlines()) < 3 * derivation.size, len(source.splitlines())
    assert source.count("nn.ModuleList([") == 2 and source.count("nn.LeakyReLU()") == 2
    assert "sum(block(conv1) for block in self.blocks1)" in source
    state = torch.load(done["clone8-nested"].out_dir / "state_dict.pt", weights_only=True)
    copies = [k for k in state if k.endswith("fc1.weight") and k.startswith("blocks1.")]
    assert len(copies) == 64 and not torch.equal(state[copies[0]], state[copies[1]])


@pytest.mark.slow
def test_card_describes_the_export(exported):
    done, _ = exported
    card = json.loads((done["seed-slab"].out_dir / "card.json").read_text())
    slab = einspace.load_seed("slab")
    cost = einspace.count(slab, SHAPE, num_classes=10)
    assert card["derivation"] == slab.text and card["hash"] == slab.hash
    assert card["input_shape"] == list(SHAPE) and card["output_shape"] == [10]
    assert card["parameters"] == cost.params and card["flops"] == cost.flops
    assert card["weights"]["kind"] == "untrained" and card["source"]["kind"] == "text"
    assert card["formats"]["torchscript"]["method"] == "torch.jit.script"
    assert card["formats"]["onnx"]["batch"] == "dynamic"
    terminator = json.loads((done["seed-terminator"].out_dir / "card.json").read_text())
    for fmt in ("pt2", "onnx"):  # HyperZ·Z·W's convolution grouped per sample: dynamic too
        assert terminator["formats"][fmt]["batch"] == "dynamic"
        assert "note" not in terminator["formats"][fmt]
    assert card["input"]["applied_inside_export"] is False  # an architecture: the bare network


def test_onnx_pooling_matrices_match_adaptive_pooling():
    x = torch.randn(2, 3, 16, 11)
    for out in ((3, 3), (5, 7), (4, 11), (16, 1)):
        pooled = pooling_matrix(16, out[0]) @ x @ pooling_matrix(11, out[1]).T
        torch.testing.assert_close(pooled, nn.functional.adaptive_avg_pool2d(x, out))


@pytest.mark.slow
def test_the_check_process_cannot_import_einspace(exported):
    check = exported[1][("cheat", "pytorch")]
    assert check.isolated and not check.ok
    assert "ImportError" in check.error or "ModuleNotFoundError" in check.error


# -- the command, run directories and errors ---------------------------------------------------

ARCHS = ["(computation linear16)", "(sequential (computation linear32) (computation leakyrelu))",
         "(sequential (computation norm) (computation linear16))",
         "(sequential (computation leakyrelu) (computation linear64))"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished search run without Ray: language_lite (1x24x24, 9 classes); trial 0 ok 0.5,
    1 failed, 2 ok 0.7 (the best), 3 ok 0.6 without kept weights.  Tests must not change it."""
    run = tmp_path_factory.mktemp("search") / "run"
    prepare_run_dir(resolve({"task": {"name": "language_lite", "size": "small"},
                             "search": {"keep_weights": 2}}), run)
    store = TrialStore(default_url(run))
    outcomes = [(Status.OK, 0.5), (Status.FAILED, -math.inf), (Status.OK, 0.7), (Status.OK, 0.6)]
    (run / "weights").mkdir()
    for index, (text, (status, score)) in enumerate(zip(ARCHS, outcomes, strict=True)):
        derivation = einspace.parse(text)
        number = store.start(index, Proposal(derivation, "sample"), {})
        store.finish(number, status, score, "out of memory" if status == Status.FAILED else "", {},
                     index)
        if index in (0, 2):
            torch.manual_seed(100 + index)
            net = einspace.build(derivation, (1, 24, 24), num_classes=9)
            torch.save(net.state_dict(), run / "weights" / f"trial-{index}.pt")
    return run


def run_cli(*argv) -> int:
    return main(["export", *map(str, argv)])


def error_of(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("einspace: error: ") and "\n" not in err, err
    return err


def test_export_of_a_run_exports_its_best_trial_with_its_weights(run_dir, tmp_path, capsys):
    out = tmp_path / "best"
    assert run_cli(run_dir, "--format", "pytorch", "--out", out) == 0
    assert "trial 2 of" in capsys.readouterr().out
    card = json.loads((out / "card.json").read_text())
    assert card["source"]["trial"] == 2 and card["source"]["rank"] == 1
    assert card["scores"]["search"] == 0.7 and card["task"]["name"] == "language_lite"
    assert card["weights"]["kind"] == "search" and card["input_shape"] == [1, 24, 24]
    assert card["num_classes"] == 9 and card["formats"]["pytorch"]["verified"]
    net = einspace.build(einspace.parse(ARCHS[2]), (1, 24, 24), num_classes=9).eval()
    net.load_state_dict(torch.load(run_dir / "weights" / "trial-2.pt", weights_only=True))
    sample = torch.load(out / SAMPLE, weights_only=True)["batches"][-1]
    raw = sample["input"]  # the task's raw test rows; the network saw them normalised
    mean, std = fit_normalizer(load_search_task(read_run_config(run_dir))).tensors(3, "cpu")
    torch.testing.assert_close(net((raw.float() - mean) / std), sample["output"])
    assert card["input"]["applied_inside_export"] and card["input"]["statistics_of"] == \
        "train split"


def test_rank_and_trial_choose_the_candidate(run_dir):
    assert from_run(run_dir, rank=3).source["trial"] == 0
    chosen = from_run(run_dir, trial=0)
    assert chosen.source["rank"] == 3 and chosen.weights["kind"] == "search"
    untrained = from_run(run_dir, trial=1, allow_untrained=True)
    assert untrained.state_dict is None and untrained.weights["kind"] == "untrained"
    assert untrained.source["status"] == Status.FAILED


@pytest.mark.parametrize("argv, expected", [
    (["--rank", "9"], "--rank 9 is out of range: "),
    (["--trial", "7"], "has no trial 7 (its trial indices: 0 to 3)"),
    (["--trial", "1"], "trial 1 of"),
    (["--rank", "2"], "no weights for trial 3 of"),
    (["--input-shape", "1,24,24"], "--input-shape cannot be used with a run directory"),
])
def test_run_errors_are_one_line(run_dir, tmp_path, capsys, argv, expected):
    assert run_cli(run_dir, *argv, "--out", tmp_path / "out") == 2
    err = error_of(capsys)
    assert expected in err
    if argv == ["--trial", "1"]:
        assert "failed (out of memory)" in err and "--allow-untrained" in err
    if argv == ["--rank", "2"]:
        assert "weights/trial-3.pt is missing" in err and "--allow-untrained" in err


def test_corrupted_trial_database_is_a_clear_error(run_dir, tmp_path, capsys):
    run = shutil.copytree(run_dir, tmp_path / "run")
    (run / "trials.db").write_bytes(b"this is not a database" * 100)
    assert run_cli(run, "--out", tmp_path / "out") == 2
    assert "cannot open the trial database" in error_of(capsys)


def test_run_without_a_successful_trial_or_a_database(tmp_path, capsys):
    run = tmp_path / "run"
    prepare_run_dir(resolve({"task": {"name": "language_lite", "size": "small"}}), run)
    assert run_cli(run, "--out", tmp_path / "a") == 2
    assert "no trial database" in error_of(capsys)
    store = TrialStore(default_url(run))
    number = store.start(0, Proposal(einspace.parse(ARCHS[0]), "sample"), {})
    store.finish(number, Status.FAILED, -math.inf, "diverged", {}, 0)
    assert run_cli(run, "--out", tmp_path / "b") == 2
    assert "has no successful trial to export (1 trial(s), 1 failed)" in error_of(capsys)


def test_architecture_weights_must_exist_and_fit(tmp_path, capsys):
    common = ["--input-shape", "1,24,24", "--num-classes", "9", "--out"]
    assert run_cli(ARCHS[0], *common, tmp_path / "a", "--weights", tmp_path / "none.pt") == 2
    assert "none.pt does not exist" in error_of(capsys)
    other = einspace.build(einspace.parse(ARCHS[1]), (1, 24, 24), num_classes=9)
    torch.save(other.state_dict(), tmp_path / "other.pt")
    assert run_cli(ARCHS[0], *common, tmp_path / "b", "--weights", tmp_path / "other.pt") == 2
    assert "does not fit this architecture (missing backbone.weight" in error_of(capsys)
    assert run_cli(ARCHS[0], "--out", tmp_path / "c") == 2
    assert "--input-shape is required" in error_of(capsys)


def test_output_directory_is_not_overwritten_without_force(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert run_cli(ARCHS[0], "--input-shape", "1,24,24", "--out", out) == 2
    assert "is not empty" in error_of(capsys)
    assert (out / "keep.txt").exists()


class Unexportable(nn.Module):
    """One weak spot per exporter: control flow on a tensor value (torch.fx), a lambda
    (TorchScript), an operator with no ONNX form (cummax)."""

    def forward(self, x):
        double = lambda t: t * 2  # noqa: E731
        if x.abs().sum() > 0:
            return torch.cummax(double(x), -1)[0]
        return x


@pytest.mark.slow
def test_unexportable_node_is_named_with_the_reason(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(get(Kind.COMPUTATION, "leakyrelu"), "build", lambda x, ctx: Unexportable())
    out = tmp_path / "out"
    assert run_cli(ARCHS[3], "--input-shape", "1,24,24", "--num-classes", "9", "--out", out,
                   "--format", "all", "--json") == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("einspace: error: ") and "\n" not in err, err
    assert "cannot export to onnx: at /0/0 (computation leakyrelu): torch.onnx.export fails " \
           "(Exporting the operator 'aten::cummax'" in err
    assert "cannot export to pytorch: at /0/0 (computation leakyrelu): torch.fx cannot trace" in err
    card = json.loads(captured.out)  # the formats that worked are written, checked and carded
    assert card == json.loads((out / "card.json").read_text())
    assert list(card["formats"]) == ["torchscript"] and card["formats"]["torchscript"]["verified"]
    assert card["formats"]["torchscript"]["method"] == "torch.jit.trace"
    assert "script fails at /0/0 (computation leakyrelu)" in card["formats"]["torchscript"]["note"]
    assert not (out / "model.onnx").exists() and not (out / "model.py").exists()


def test_force_replaces_an_earlier_export(tmp_path):
    out = tmp_path / "out"
    candidate = from_spec(ARCHS[0], (1, 24, 24))
    export(candidate, ["pytorch"], out, verify=False)
    with pytest.raises(ExportError, match="is not empty"):
        export(candidate, ["torchscript"], out, verify=False)
    card = export(candidate, ["torchscript"], out, force=True, verify=False).card
    assert list(card["formats"]) == ["torchscript"] and card["output_shape"] == [1, 24, 16]
    assert card["num_classes"] is None and card["sample"]["checked_in"] == "not checked"
    assert not (out / "model.py").exists()


@pytest.mark.slow
def test_task_gives_an_architecture_its_shapes_and_raw_inputs(run_dir, tmp_path, capsys):
    out = tmp_path / "task"
    weights = run_dir / "weights" / "trial-2.pt"
    assert run_cli(ARCHS[2], "--task", "language_lite", "--task-size", "small", "--weights",
                   weights, "--format", "onnx", "--out", out) == 0
    assert "raw float32 arrays (batch, 1, 24, 24)" in capsys.readouterr().out
    card = json.loads((out / "card.json").read_text())
    assert card["num_classes"] == 9 and card["formats"]["onnx"]["verified_batches"] == [1, 3]
    data = load_search_task(read_run_config(run_dir))
    norm = fit_normalizer(data)
    assert card["input"]["mean"] == pytest.approx(norm.mean.tolist())
    net = einspace.build(einspace.parse(ARCHS[2]), (1, 24, 24), num_classes=9).eval()
    net.load_state_dict(torch.load(weights, weights_only=True))
    sample = torch.load(out / SAMPLE, weights_only=True)["batches"][-1]
    torch.testing.assert_close(sample["input"], torch.tensor(data.splits["test"].x[:3]))
    mean, std = norm.tensors(3, "cpu")
    torch.testing.assert_close(net((sample["input"] - mean) / std), sample["output"])
    assert run_cli(ARCHS[2], "--bare", "--input-shape", "1,24,24", "--out", tmp_path / "b") == 2
    assert "--bare applies to a run directory or --task" in error_of(capsys)
