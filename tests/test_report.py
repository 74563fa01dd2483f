"""``einspace report``: figures, a self-contained HTML page and a printed summary, made from a run
directory written through the store as a search would (no Ray)."""

import base64
import json
import math
import random
from html.parser import HTMLParser

import pytest

import einspace
from einspace.blocks.registry import Kind
from einspace.cli import main
from einspace.search.config import resolve
from einspace.search.engine import prepare_run_dir
from einspace.search.report_figures import paper_usage, pareto_front, terminal_uses
from einspace.search.store import TrialStore, default_url
from einspace.search.strategies import Proposal

SHAPE = (1, 24, 24)  # language_lite
SAMPLER = einspace.Sampler(budget=einspace.Budget(max_params=30_000, max_nodes=30, max_depth=7))
PNG = b"\x89PNG\r\n\x1a\n"


def make_run(run_dir, outcomes):
    """A run directory whose store holds one trial per (status, score, reason)."""
    prepare_run_dir(resolve({"task": {"name": "language_lite", "size": "small"}}), run_dir)
    store = TrialStore(default_url(run_dir))
    for index, (status, score, reason) in enumerate(outcomes):
        d = SAMPLER.sample(SHAPE, random.Random(index)).derivation
        cost = einspace.count(d, SHAPE, num_classes=9)
        number = store.start(index, Proposal(d, "sample"), {"params": cost.params,
                                                             "flops": cost.flops})
        result = {"history": [{"epoch": 0, "score": score}], "seconds": 2.0} if score else {}
        store.finish(number, status, score if score else -math.inf, reason, result, index)
    return run_dir


OUTCOMES = [("ok", 0.3, ""), ("ok", 0.6, ""), ("failed", None, "out of memory"),
            ("ok", 0.45, ""), ("stopped", 0.2, "stopped early by the scheduler after epoch 0"),
            ("failed", None, "out of memory"), ("ok", 0.5, ""), ("failed", None, "NaN loss")]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "run", OUTCOMES)


def report(capsys, *argv):
    code = main(["report", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


class Images(HTMLParser):
    """Every <img> of a page, and every address that would load something from elsewhere."""

    def __init__(self):
        super().__init__()
        self.images, self.remote = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        for key in ("src", "href"):
            if (attrs.get(key) or "").startswith(("http:", "https:", "//")):
                self.remote.append(attrs[key])


def test_report_writes_figures_and_a_self_contained_page(run_dir, capsys):
    code, out, err = report(capsys, run_dir, "--top-k", "3", "--graphs", "2")
    assert code == 0, err
    assert "best: trial 1, score 0.6000" in out
    assert "trials: 8 (4 ok, 3 failed, 1 stopped, 0 unfinished)" in out
    assert "2  out of memory" in out and "1  NaN loss" in out
    assert f"report: {run_dir / 'report' / 'report.html'}" in out
    top = [line.split()[1] for line in out.splitlines()[5:8]]
    assert top == ["1", "6", "3"]  # trial indices, best first

    directory = run_dir / "report"
    page = Images()
    page.feed((directory / "report.html").read_text())
    assert not page.remote
    files = [image["data-file"] for image in page.images]
    assert set(files) == {"progress.png", "pareto.png", "terminals.png", "failures.png",
                          "graphs/rank-1-trial-1.png", "graphs/rank-2-trial-6.png"}
    for image in page.images:
        file = directory / image["data-file"]
        assert file.is_file(), image["data-file"]
        prefix = "data:image/png;base64,"
        assert image["src"].startswith(prefix)
        assert base64.b64decode(image["src"][len(prefix):]) == file.read_bytes()
        assert file.read_bytes().startswith(PNG)


def test_report_notes_kept_final_and_missing_weights(run_dir, capsys, tmp_path):
    (run_dir / "weights").mkdir(exist_ok=True)
    (run_dir / "weights" / "trial-1.pt").write_bytes(b"")
    (run_dir / "weights" / "index.json").write_text(json.dumps({"1": 0.6, "6": 0.5}))
    (run_dir / "final").mkdir(exist_ok=True)
    (run_dir / "final" / "results.json").write_text(json.dumps([
        {"index": 1, "search_score": 0.6, "test_score": 0.55, "status": "ok", "reason": "",
         "epochs": 1, "seconds": 3.0}]))
    code, out, err = report(capsys, run_dir, "--out", tmp_path / "elsewhere", "--graphs", "0")
    assert code == 0, err
    assert "final: trial 1 test score 0.5500" in out
    assert "weights kept: trials 1" in out
    assert f"file {run_dir / 'weights' / 'trial-6.pt'} is missing" in out
    html = (tmp_path / "elsewhere" / "report.html").read_text()
    assert "trial-6.pt is missing" in html and "Final evaluation" in html
    assert not list((tmp_path / "elsewhere" / "graphs").iterdir())


def test_report_of_a_run_without_success(tmp_path, capsys):
    run = make_run(tmp_path / "failing", [("failed", None, "out of memory"),
                                          ("failed", None, "the trial's worker failed")])
    code, out, err = report(capsys, run)
    assert code == 0, err
    assert "best: none (no trial succeeded)" in out
    directory = run / "report"
    assert (directory / "failures.png").is_file() and not (directory / "pareto.png").exists()
    page = Images()
    page.feed((directory / "report.html").read_text())
    assert [image["data-file"] for image in page.images] == ["failures.png"]
    assert "No trial succeeded" in (directory / "report.html").read_text()


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("einspace: error: "), err
    return lines[0]


def test_corrupted_database_is_one_line(tmp_path, capsys):
    run = make_run(tmp_path / "broken", OUTCOMES[:2])
    (run / "trials.db").write_bytes(b"this is not a database" * 100)
    code, _, err = report(capsys, run)
    assert code == 2 and "trial database" in one_error_line(err)


def test_not_a_run_directory_is_one_line(tmp_path, capsys):
    code, _, err = report(capsys, tmp_path)
    assert code == 2 and "not a search run directory" in one_error_line(err)
    prepare_run_dir(resolve({"task": {"name": "language_lite", "size": "small"}}), tmp_path / "r")
    code, _, err = report(capsys, tmp_path / "r")
    assert code == 2 and "no trial database" in one_error_line(err)


def test_pareto_front_keeps_only_unbeaten_points():
    points = [(100, 0.5), (50, 0.5), (200, 0.7), (10, 0.1), (300, 0.6), (200, 0.65)]
    assert pareto_front(points) == [3, 1, 2]


def test_terminal_uses_know_the_slot_and_the_seed_paper():
    d = einspace.parse("(routing identity (sequential (computation identity) "
                       "(computation linear16)) permute21)")
    assert terminal_uses(d) == {(Kind.PREROUTING, "identity"), (Kind.COMPUTATION, "identity"),
                                (Kind.COMPUTATION, "linear16"), (Kind.POSTROUTING, "permute21")}
    slab = einspace.load_seed("slab")
    assert paper_usage([slab, slab, d]) == {26: 2}


class Pictures(HTMLParser):
    """The SVG sources of every <picture> of a page."""

    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "source" and attrs.get("type") == "image/svg+xml":
            self.sources.append(attrs["srcset"])


def test_report_embeds_svg_graphs_and_drops_the_empty_seed_paper_panel(run_dir, capsys,
                                                                         tmp_path):
    from PIL import Image

    out_dir = tmp_path / "svg-report"
    code, _, err = report(capsys, run_dir, "--out", out_dir, "--graphs", "2")
    assert code == 0, err
    page = (out_dir / "report.html").read_text()
    pictures = Pictures()
    pictures.feed(page)
    svgs = sorted((out_dir / "graphs").glob("*.svg"))
    assert [f.name for f in svgs] == ["rank-1-trial-1.svg", "rank-2-trial-6.svg"]
    prefix = "data:image/svg+xml;base64,"
    embedded = [base64.b64decode(s[len(prefix):]) for s in pictures.sources]
    assert embedded == [f.read_bytes() for f in svgs]
    assert all(b"<svg" in svg for svg in embedded)
    assert 'href="graphs/rank-1-trial-1.svg"' in page
    # No candidate of this run uses a seed paper's terminal: the figure has one panel.
    with Image.open(out_dir / "terminals.png") as figure:
        assert figure.size[0] == 700
