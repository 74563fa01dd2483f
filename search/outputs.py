"""The files a search leaves in its run directory, all derived from the trial database.

* ``leaderboard.csv`` — one row per trial (latest attempt), best first, failed trials last; with
  a fidelity ladder the ``rung`` column says at which (data fraction x epochs) a score was
  measured, and the top rung ranks first;
* ``best.arch`` — the best architecture's derivation text (also rewritten live during the run);
* ``progress.png`` — best score so far against trials and against wall-clock time;
* ``summary.json`` — counts, the best trial, the best seed trial (what the search must beat),
  failures by reason, and with screening on its seconds and share of the training seconds.

They can be regenerated at any time from ``trials.db`` (``write_outputs``), so a killed run loses
none of them for good.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path

from einspace.tasks.status import Status

from .run_dir import RunDir
from .store import StoredTrial, TrialStore

COLUMNS = ("rank", "index", "score", "status", "params", "flops", "origin", "parents", "seconds",
           "epochs", "rung", "node", "inherited_params", "fresh_params", "inherited_from", "hash",
           "reason", "derivation")
"""``inherited_from``: ``parent:params`` pairs of a child that inherited weights."""


def ranked(trials: list[StoredTrial]) -> list[StoredTrial]:
    """Best first: ok trials by fidelity rung, highest first (scores at different rungs do not
    compete; without a ladder every trial is at rung 0), then by score (ties: lower index),
    then stopped, then failed and rejected."""
    def key(t: StoredTrial):
        score = t.score if t.score is not None and math.isfinite(t.score) else -math.inf
        group = 0 if t.status == Status.OK else 1 if t.status == Status.STOPPED else 2
        return (group, -t.rung, -score, t.index)
    return sorted(trials, key=key)


def write_outputs(run: RunDir, store: TrialStore) -> dict:
    trials = store.latest()
    order = ranked([t for t in trials if t.done])
    _leaderboard(run.leaderboard, order)
    best = order[0] if order and order[0].status == Status.OK else None
    seed = best_seed(order)
    if best is not None:
        run.write_best_arch(best.derivation.text)
    summary = {
        "trials": len(trials), "finished": len(order),
        **{status: sum(t.status == status for t in order)
           for status in (Status.OK, Status.FAILED, Status.STOPPED, Status.REJECTED)},
        "failures": Counter(t.reason for t in order if t.status == Status.FAILED),
        "best": None if best is None else {"index": best.index, "score": best.score,
                                           "hash": best.hash,
                                           "derivation": best.derivation.text},
        "seed": None if seed is None else {"index": seed.index,
                                           "origin": seed_origin(seed, order),
                                           "score": seed.score},
        **_inheritance_summary(order),
    }
    screening = store.run("screening_seconds")
    if screening is not None:
        summary["screening"] = screening_overhead(screening, trials)
    run.summary_file.write_text(json.dumps(summary, indent=1))
    if order:
        plot_progress(run.progress_picture, trials)
    return summary


def _inheritance_summary(order: list[StoredTrial]) -> dict:
    """How much the children inherited (nothing for a search without weight inheritance)."""
    children = [t.result for t in order if "inherited_params" in t.result]
    if not children:
        return {}
    total = sum(r["inherited_params"] + r["fresh_params"] for r in children)
    return {"inheritance": {
        "children": len(children),
        "inherited": sum(r["inherited_params"] > 0 for r in children),
        "inherited_fraction": sum(r["inherited_params"] for r in children) / total if total
        else 0.0}}


def screening_overhead(seconds: float, trials: list[StoredTrial]) -> dict:
    """Screening's wall-clock seconds on the driver beside the trials' training seconds: the
    issue's bound is a share under 5 %."""
    training = sum(t.result.get("seconds") or 0.0 for t in trials)
    return {"seconds": round(seconds, 3), "training_seconds": round(training, 3),
            "share_of_training": round(seconds / training, 4) if training else None}


def best_seed(order: list[StoredTrial]) -> StoredTrial | None:
    """The best successful seed trial of ``order`` (ranked best first): the starting point whose
    score a search from seeds has to beat; None for a search without seeds.  With a fidelity
    ladder a seed's promotions are the seed too, and only a result at the best trial's rung
    counts (None when no seed got there): scores at other rungs are not comparable."""
    top = order[0].rung if order else 0
    return next((t for t in order if t.status == Status.OK and t.rung == top
                 and seed_origin(t, order).startswith("seed:")), None)


def seed_origin(trial: StoredTrial, trials: list[StoredTrial]) -> str:
    """How a trial's network was first proposed: its own origin, or for a promotion (a seed's
    network at a higher fidelity rung) the origin of the trial it was promoted from."""
    by_index = {t.index: t for t in trials}
    while trial.origin == "promotion" and trial.proposal["parents"][0] in by_index:
        trial = by_index[trial.proposal["parents"][0]]
    return trial.origin


def _leaderboard(path: Path, order: list[StoredTrial]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for rank, t in enumerate(order, 1):
            writer.writerow([
                rank, t.index, "" if t.score is None else t.score, t.status,
                t.proposal.get("params", ""), t.proposal.get("flops", ""), t.origin,
                " ".join(map(str, t.proposal.get("parents", []))),
                round(t.result.get("seconds", 0.0), 3), t.result.get("epochs_run", ""),
                _rung_text(t), t.result.get("node", ""), t.result.get("inherited_params", ""),
                t.result.get("fresh_params", ""),
                " ".join(f"{p}:{n}" for p, n in t.result.get("inherited_from", [])),
                t.hash, t.reason, t.derivation.text])


def _rung_text(trial: StoredTrial) -> str:
    """``LEVEL:FRACTIONxEPOCHS`` (e.g. ``1:0.5x2``) of a ladder's trial, empty without one."""
    rung = trial.proposal.get("rung")
    return "" if rung is None else f"{rung['level']}:{rung['fraction']:g}x{rung['epochs']}"


def best_curve(trials: list[StoredTrial], by: str = "index") -> tuple[list[float], list[float]]:
    """(x, best score so far) at every finished trial with a score; x is the trial index
    (``by="index"``) or the minutes since the first trial started (``by="time"``), in order."""
    scored = [t for t in trials if t.done and t.score is not None and math.isfinite(t.score)]
    starts = [t.started for t in trials if t.started is not None]
    t0 = min(starts) if starts else 0.0
    if by == "index":
        points = sorted((float(t.index), t.score) for t in scored)
    else:
        points = sorted((((t.finished or t0) - t0) / 60, t.score) for t in scored)
    xs, best, current = [], [], -math.inf
    for x, score in points:
        current = max(current, score)
        xs.append(x)
        best.append(current)
    return xs, best


def plot_progress(path: Path, trials: list[StoredTrial]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [(t.index, t.score) for t in trials
              if t.done and t.score is not None and math.isfinite(t.score)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    if scored:
        left.scatter(*zip(*scored, strict=True), s=10, alpha=0.4, label="trial score")
    left.step(*best_curve(trials, "index"), where="post", color="C1", label="best so far")
    left.set_xlabel("trial")
    left.set_ylabel("score")
    # Above the axes: inside them the legend covered the markers of whichever trials fell there.
    left.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, fontsize=8, frameon=False,
                borderaxespad=0.2)
    right.step(*best_curve(trials, "time"), where="post", color="C1")
    right.set_xlabel("minutes")
    right.set_ylabel("best score so far")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
