"""``einspace report RUN_DIR``: what a search found, as printed text, PNG figures and one HTML page.

Everything is read from the run directory, so a report can be made during a search, after it, or
after a crash: the trial database (latest attempt per trial), the resolved config (for the input
shape the graphs need), ``final/results.json`` and the kept weights.  Files, in ``RUN/report``
unless another directory is given:

* ``report.html`` — one self-contained page with all of the below (figures embedded);
* ``progress.png`` — best score so far against trials and against time;
* ``pareto.png`` — score against parameters with the Pareto front;
* ``terminals.png`` — which terminals (and seed papers) the top candidates use, against all;
* ``failures.png`` — failed trials by reason;
* ``graphs/rank-<r>-trial-<index>.png`` and ``.svg`` — data-flow graphs of the best candidates
  (the page embeds the SVG).

A run without a successful trial still gets a report (counts and failures).  A directory that is
not a run, a missing or corrupted database, or an unwritable output directory is a one-line
:class:`~einspace.errors.EinspaceError`.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from einspace.analysis import annotate
from einspace.dataflow_picture import write_picture
from einspace.errors import EinspaceError
from einspace.inspect import human
from einspace.tasks.status import Status

from . import report_figures as figs
from . import report_html as html
from .outputs import plot_progress, ranked
from .run_dir import RunDir
from .store import StoredTrial, StoreError, open_run_store

GRAPHS_DIR = "graphs"
FIGURES = ("progress.png", "pareto.png", "terminals.png", "failures.png")
#: Rows of the HTML leaderboard; the run's leaderboard.csv has all of them.
HTML_ROWS = 200


@dataclass
class RunFacts:
    """What a report is made from: the run's trials and the files around them."""

    run_dir: Path
    task: str
    strategy: str
    input_shape: tuple[int, ...] | None
    trials: list[StoredTrial]
    final: list[dict] = field(default_factory=list)
    weights: dict[int, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def order(self) -> list[StoredTrial]:
        """Finished trials best first (ok by score, then stopped, then failed), then the
        unfinished ones."""
        return ranked([t for t in self.trials if t.done]) + [t for t in self.trials
                                                              if not t.done]

    @property
    def successful(self) -> list[StoredTrial]:
        return [t for t in self.order if t.status == Status.OK and t.score is not None]

    @property
    def failures(self) -> Counter:
        return Counter(t.reason for t in self.trials if t.status == Status.FAILED)


@dataclass
class Report:
    directory: Path
    page: Path
    figures: list[Path]
    text: str


def read_run(run_dir: str | Path) -> RunFacts:
    """The facts of a run directory; EinspaceError (one line) for anything unreadable that the
    report cannot do without."""
    run = RunDir(run_dir)
    config = run.config()
    store = open_run_store(run.path, config.search["storage"])
    try:
        trials = store.latest()
    except (SQLAlchemyError, ValueError) as e:  # a damaged file, or damaged JSON inside it
        raise StoreError(f"cannot read the trial database of {run}: "
                         f"{str(e).splitlines()[0]}") from None
    notes: list[str] = []
    shape = _input_shape(config.task, notes)
    return RunFacts(run.path, config.task["name"], config.strategy, shape, trials,
                    _final_results(run, notes), _kept_weights(run, notes), notes)


def _input_shape(task: dict, notes: list[str]) -> tuple[int, ...] | None:
    """The task's input shape (the data-flow graphs need it); None with a note when the task's
    data cannot be found any more."""
    from einspace.tasks.handle import resolve_task

    try:
        return tuple(resolve_task(task["name"]).input_shape)
    except EinspaceError as e:
        notes.append(f"no data-flow graphs: the task's input shape is unknown ({e})")
        return None


def _final_results(run: RunDir, notes: list[str]) -> list[dict]:
    try:
        return run.final_results()
    except EinspaceError as e:
        notes.append(f"{e}; the final evaluation was left out")
        return []


def _kept_weights(run: RunDir, notes: list[str]) -> dict[int, Path]:
    """Trial index -> kept weights file; a trial the keeper's index lists whose file is gone
    becomes a note."""
    files = run.kept_weights()
    try:
        listed = run.listed_weights()
    except EinspaceError as e:
        notes.append(str(e))
        listed = []
    for missing in sorted(set(listed) - set(files)):
        notes.append(f"weights of trial {missing} are listed in {run.weights_index} but the "
                     f"file {run.weights_path(missing)} is missing")
    return files


def write_report(run_dir: str | Path, out: str | Path | None = None, *, top_k: int = 10,
                 graphs: int = 5) -> Report:
    """Write the report of ``run_dir`` into ``out`` (default ``RUN/report``) and return it with
    its printed summary.  ``top_k`` candidates are listed and compared against all trials in
    the terminal figure; the best ``graphs`` get a data-flow graph."""
    if graphs < 0:
        raise EinspaceError(f"the number of graphs must be 0 or more, got {graphs}")
    facts = read_run(run_dir)
    directory = Path(out) if out is not None else RunDir(facts.run_dir).report_dir
    try:
        (directory / GRAPHS_DIR).mkdir(parents=True, exist_ok=True)
        _clear(directory)
        figures, parts = _figures_and_sections(facts, directory, top_k, graphs)
        page = directory / "report.html"
        page.write_text(html.page(f"einspace report: {facts.run_dir.name}", parts))
    except OSError as e:
        raise EinspaceError(f"cannot write the report into {directory}: {e.strerror or e} "
                            f"(--out chooses another directory)") from None
    text = summary_text(facts, top_k) + f"\nreport: {page} ({len(figures)} figures)"
    return Report(directory, page, figures, text)


def _clear(directory: Path) -> None:
    """Remove the figures of an earlier report, so none outlives the data it showed."""
    for name in FIGURES:
        (directory / name).unlink(missing_ok=True)
    for old in (directory / GRAPHS_DIR).glob("rank-*-trial-*.*"):
        old.unlink()


def _figures_and_sections(facts: RunFacts, directory: Path, top_k: int,
                          graphs: int) -> tuple[list[Path], list[str]]:
    good = facts.successful
    top = good[:top_k]
    figures: list[Path] = []

    def draw(name: str, caption: str, plot, *args) -> str:
        path = directory / name
        plot(path, *args)
        figures.append(path)
        return html.figure(directory, path, caption)

    parts = [html.paragraph(line) for line in _headline(facts)]
    parts += [html.paragraph(note, note=True) for note in facts.notes]
    parts.append(html.section("Leaderboard", _leaderboard_html(facts)))
    if good:
        parts.append(html.section(
            "Search progress",
            draw("progress.png", "best score so far against trials and against minutes",
                 plot_progress, facts.trials),
            draw("pareto.png", "score against parameters; the Pareto front in red, the top "
                 f"{len(top)} labelled by trial index", figs.plot_pareto, good,
                 {t.index for t in top})))
        parts.append(html.section(
            f"Terminals of the top {len(top)}",
            draw("terminals.png", f"share of the top {len(top)} and of all {len(good)} "
                 "successful candidates using each terminal and seed paper",
                 figs.plot_terminals, [t.derivation for t in top],
                 [t.derivation for t in good])))
    else:
        parts.append(html.paragraph("No trial succeeded, so there is no score to plot.",
                                    note=True))
    failures = facts.failures
    failed = [html.paragraph("No trial failed.")]
    if failures:
        failed = [draw("failures.png", "failed trials by reason", figs.plot_failures, failures),
                  html.table(["trials", "reason"], [[n, r] for r, n in failures.most_common()],
                             {1: "text"})]
    parts.append(html.section("Failures", *failed))
    if facts.final:
        parts.append(html.section("Final evaluation (retrained on train + valid, scored on test)",
                                  html.table(["trial", "search score", "test score", "status",
                                              "epochs", "seconds"], _final_rows(facts.final))))
    if graphs and good and facts.input_shape is not None:
        items = []
        for rank, t in enumerate(good[:graphs], 1):
            png = directory / GRAPHS_DIR / f"rank-{rank}-trial-{t.index}.png"
            annotation = annotate(t.derivation, facts.input_shape)
            for picture in (png, png.with_suffix(".svg")):
                write_picture(annotation, picture)
                figures.append(picture)
            items.append(html.graph_figure(
                directory, png, png.with_suffix(".svg"),
                f"rank {rank}: trial {t.index}, score {t.score:.4f}, "
                f"{human(t.proposal.get('params', 0))} params"))
        parts.append(html.section(f"Data-flow graphs of the best {len(items)}",
                                  '<div class="graphs">' + "".join(items) + "</div>"))
    return figures, parts


def _headline(facts: RunFacts) -> list[str]:
    counts = Counter(t.status if t.done else "unfinished" for t in facts.trials)
    lines = [f"run {facts.run_dir}: task {facts.task}, strategy {facts.strategy}",
             f"trials: {len(facts.trials)} ({counts[Status.OK]} ok, "
             f"{counts[Status.FAILED]} failed, {counts[Status.STOPPED]} stopped, "
             + (f"{counts[Status.REJECTED]} rejected before training, "
                if counts[Status.REJECTED] else "")
             + f"{counts['unfinished']} unfinished)"
             + _span(facts.trials)]
    good = facts.successful
    if not good:
        lines.append("best: none (no trial succeeded)")
    else:
        best = good[0]
        lines.append(f"best: trial {best.index}, score {best.score:.4f}, "
                     f"{human(best.proposal.get('params', 0))} params, "
                     f"{human(best.proposal.get('flops', 0))} FLOPs, hash {best.hash}")
    return lines


def _span(trials: list[StoredTrial]) -> str:
    starts = [t.started for t in trials if t.started is not None]
    ends = [t.finished for t in trials if t.finished is not None]
    if not starts or not ends:
        return ""
    return (f" from {time.strftime('%Y-%m-%d %H:%M', time.localtime(min(starts)))}, "
            f"{(max(ends) - min(starts)) / 60:.1f} min to the last finish")


def _score(t: StoredTrial) -> str:
    return "" if t.score is None or not math.isfinite(t.score) else f"{t.score:.4f}"


def _row(rank: int, t: StoredTrial) -> list:
    return [rank, t.index, _score(t), t.status or "unfinished",
            human(t.proposal.get("params", 0)), human(t.proposal.get("flops", 0)), t.origin,
            f"{t.result['seconds']:.1f}" if "seconds" in t.result else "",
            human(t.result["inherited_params"]) if "inherited_params" in t.result else "",
            t.hash, t.reason]


ROW_HEADERS = ["rank", "trial", "score", "status", "params", "FLOPs", "origin", "seconds",
               "inherited", "hash", "reason"]
"""``inherited``: the trainable parameters a child took from its parents (weight inheritance)."""


def _leaderboard_html(facts: RunFacts) -> str:
    order = facts.order
    if not order:
        return html.paragraph("No trial has been recorded yet.")
    rows = [_row(rank, t) + [t.derivation.text] for rank, t in enumerate(order[:HTML_ROWS], 1)]
    more = (html.paragraph(f"{len(order) - HTML_ROWS} more trials are in leaderboard.csv of the "
                           f"run directory.") if len(order) > HTML_ROWS else "")
    return html.table(ROW_HEADERS + ["derivation"], rows,
                      {6: "text", 10: "text", 11: "arch"}) + more


def _final_rows(final: list[dict]) -> list[list]:
    def number(value) -> str:
        return f"{value:.4f}" if isinstance(value, (int, float)) else "—"

    return [[r["index"], number(r.get("search_score")), number(r.get("test_score")),
             r.get("status", ""), r.get("epochs", ""), number(r.get("seconds"))] for r in final]


def summary_text(facts: RunFacts, top_k: int = 10) -> str:
    """The printed summary: headline, the top ``top_k``, failures, final scores, weights,
    notes."""
    lines = _headline(facts)
    order = [t for t in facts.order if t.done][:top_k]
    if order:
        rows = [ROW_HEADERS[:-1]] + [[str(c) for c in _row(rank, t)[:-1]]
                                     for rank, t in enumerate(order, 1)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines.append("")
        lines += ["  ".join(c.ljust(w) if i in (3, 6, 9) else c.rjust(w)
                            for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
                  for r in rows]
    failures = facts.failures
    if failures:
        lines += ["", "failures by reason:"]
        lines += [f"  {n:4d}  {reason or '(no reason given)'}"
                  for reason, n in failures.most_common()]
    for r in facts.final:
        test = r.get("test_score")
        lines.append(f"final: trial {r['index']} test score "
                     + (f"{test:.4f}" if isinstance(test, (int, float)) else
                        f"failed ({r.get('reason', '')})"))
    if facts.weights:
        lines.append(f"weights kept: trials {', '.join(map(str, sorted(facts.weights)))} in "
                     f"{RunDir(facts.run_dir).weights_dir} (einspace inspect ARCH --weights "
                     f"FILE)")
    lines += [f"note: {note}" for note in facts.notes]
    return "\n".join(lines)

