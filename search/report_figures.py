"""The figures of ``einspace report`` (matplotlib, Agg): the trade-off between score and size, which
terminals the best candidates are made of, and why trials failed.

The data side of each figure is a plain function (``pareto_front``, ``terminal_usage``) so tests
and other tools can use the numbers without drawing.
"""

from __future__ import annotations

import math
import textwrap
from collections import Counter
from pathlib import Path

from einspace.blocks.registry import Kind, get, terminals
from einspace.blocks.seed_papers import PRIMITIVE_PAPERS
from einspace.derivation import Derivation
from einspace.structure import MODULE, child_slots

from .store import StoredTrial

#: Most rows a bar chart shows (the rest are left out, largest first).
MAX_BARS = 25


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Positions of the points (params, score) no other point beats: none has at most as many
    parameters and a higher score, or fewer parameters and the same score.  In ascending
    parameter order."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(path: Path, trials: list[StoredTrial], top: set[int]) -> None:
    """Score against parameters (log scale) of every scored trial, the front drawn as a staircase
    and the top candidates labelled with their trial index."""
    plt = _pyplot()
    scored = [t for t in trials if t.score is not None and t.proposal.get("params")]
    points = [(float(t.proposal["params"]), t.score) for t in scored]
    front = [scored[i] for i in pareto_front(points)]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if not points:
        ax.text(0.5, 0.5, "no parameter counts recorded", ha="center", va="center")
        ax.set_axis_off()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return
    ax.scatter(*zip(*points, strict=True), s=14, alpha=0.45, color="C0", label="trial")
    ax.step([t.proposal["params"] for t in front], [t.score for t in front], where="post",
            color="C3", lw=1.2)
    ax.scatter([t.proposal["params"] for t in front], [t.score for t in front], s=30,
               color="C3", label="Pareto front", zorder=3)
    for t in scored:
        if t.index in top:
            ax.annotate(str(t.index), (t.proposal["params"], t.score), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("parameters (with head)")
    ax.set_ylabel("score")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def terminal_uses(derivation: Derivation) -> set[tuple[Kind, str]]:
    """The (kind, name) of every terminal the derivation uses; a name can fill several kinds
    (``identity``), so the kind comes from the slot it fills."""
    uses = set()
    for _, node in derivation.walk():
        if isinstance(node, Derivation):
            for slot, child in zip(child_slots(node), node.children, strict=True):
                if slot != MODULE:
                    uses.add((slot, child))
    return uses


def terminal_usage(derivations: list[Derivation]) -> Counter:
    """How many of ``derivations`` use each (kind, name) at least once."""
    counts: Counter = Counter()
    for d in derivations:
        counts.update(terminal_uses(d))
    return counts


def paper_usage(derivations: list[Derivation]) -> Counter:
    """Per seed paper (its number in the seed list): how many of ``derivations`` use at least one
    of its terminals."""
    papers: Counter = Counter()
    for d in derivations:
        papers.update({n for kind, name in terminal_uses(d) for n in get(kind, name).seed_papers})
    return papers


def _terminal_label(kind: Kind, name: str) -> str:
    kinds = sum(1 for t in terminals() if t.name == name)
    return f"{name} ({kind.value})" if kinds > 1 else name


def plot_terminals(path: Path, top: list[Derivation], everyone: list[Derivation]) -> None:
    """Share of candidates using each terminal, top candidates against all successful trials;
    beside it the same per seed paper, when any candidate uses a seed paper's terminal (an empty
    panel would only say that nothing is there)."""
    plt = _pyplot()
    top_use, all_use = terminal_usage(top), terminal_usage(everyone)
    keys = sorted(all_use, key=lambda k: (-top_use[k] / len(top), -all_use[k], k[1]))[:MAX_BARS]
    top_papers, all_papers = paper_usage(top), paper_usage(everyone)
    numbers = sorted(all_papers, key=lambda n: (-top_papers[n], -all_papers[n], n))[:MAX_BARS]
    height = max(3.5, 0.26 * max(len(keys), len(numbers)) + 1.2)
    if numbers:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, height),
                                          gridspec_kw={"width_ratios": [3, 2]})
    else:
        fig, left = plt.subplots(figsize=(7, height))
    _bars(left, [_terminal_label(*k) for k in keys],
          [top_use[k] / len(top) for k in keys], [all_use[k] / len(everyone) for k in keys],
          len(top), len(everyone))
    left.set_title("terminals", fontsize=9)
    if numbers:
        _bars(right, [textwrap.shorten(f"#{n} {PRIMITIVE_PAPERS.get(n, '')}", 38)
                      for n in numbers],
              [top_papers[n] / len(top) for n in numbers],
              [all_papers[n] / len(everyone) for n in numbers],
              len(top), len(everyone))
        right.set_title("seed papers", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _bars(ax, labels: list[str], top: list[float], everyone: list[float], n_top: int,
          n_all: int) -> None:
    ys = range(len(labels))
    ax.barh([y - 0.2 for y in ys], top, height=0.4, color="C3", label=f"top {n_top}")
    ax.barh([y + 0.2 for y in ys], everyone, height=0.4, color="C0", alpha=0.6,
            label=f"all {n_all} successful")
    ax.set_yticks(list(ys), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of candidates using it", fontsize=8)
    ax.legend(loc="lower right", fontsize=7)


def plot_failures(path: Path, reasons: Counter) -> None:
    """Failed trials per reason (long reasons wrapped), most frequent first."""
    plt = _pyplot()
    items = reasons.most_common(MAX_BARS)
    labels = [textwrap.fill(textwrap.shorten(reason or "(no reason given)", 160), 60)
              for reason, _ in items]
    lines = sum(label.count("\n") + 1 for label in labels)
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.22 * lines + 0.5 * len(items) + 0.8)))
    ax.barh(range(len(items)), [n for _, n in items], color="C3")
    ax.set_yticks(range(len(items)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("failed trials")
    ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
