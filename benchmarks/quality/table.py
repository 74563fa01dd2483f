"""The README's search-quality table, generated from the results file.

Per task, one column per strategy: the mean final test score over the search seeds that ran,
± half their range (with two seeds, the distance of each from the mean).  A task is marked
where the CPU protocol's mean beats both the seeds alone and random search, the issue's
acceptance test; the last line counts those tasks.
"""

from __future__ import annotations

from statistics import mean

from einspace.errors import EinspaceError

BEGIN = "<!-- search-quality table: begin (python -m benchmarks.bench_search_quality --table) -->"
END = "<!-- search-quality table: end -->"
FIXED = ("seed", "random", "cpu")


class ReadmeMarkersError(EinspaceError):
    """The README lacks the markers the table goes between."""


def summary(scores: list[float]) -> str:
    if not scores:
        return "—"
    if len(scores) == 1:
        return f"{scores[0]:.4f} (1 seed)"
    return f"{mean(scores):.4f} ± {(max(scores) - min(scores)) / 2:.4f}"


def _scores(rows: list[dict], task: str, strategy: str) -> list[float]:
    return [r["test"] for r in rows
            if r["task"] == task and r["strategy"] == strategy and r.get("test") is not None]


def render(rows: list[dict], labels: dict[str, str], minutes: float | None = None) -> str:
    """The markdown table of ``rows`` (search rows of other budgets than ``minutes`` left
    out); ``labels`` names the strategies' columns, in order."""
    if minutes is not None:
        rows = [r for r in rows if r.get("minutes") in (None, minutes)]
    present = {r["strategy"] for r in rows}
    columns = [s for s in labels if s in FIXED or s in present]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    lines = ["| task | " + " | ".join(labels[s] for s in columns) + " | CPU beats both |",
             "|---" * (len(columns) + 2) + "|"]
    wins = compared = 0
    for task in tasks:
        cells = {s: _scores(rows, task, s) for s in columns}
        means = {s: mean(v) for s, v in cells.items() if v}
        verdict = "—"
        if all(s in means for s in FIXED):
            compared += 1
            beats = means["cpu"] > max(means["seed"], means["random"])
            wins += beats
            verdict = "**yes**" if beats else "no"
        lines.append(f"| {task} | " + " | ".join(summary(cells[s]) for s in columns)
                     + f" | {verdict} |")
    budgets = sorted({r["minutes"] for r in rows if r.get("minutes") is not None})
    shown = ", ".join(f"{m:g}" for m in budgets) or "no"
    lines.append("")
    lines.append(f"CPU protocol beats both the seeds alone and random search on {wins} of "
                 f"{compared} tasks with all three measured ({shown} minute(s) per search; final "
                 f"test score, mean ± half range over search seeds).")
    return "\n".join(lines)


def replace_block(text: str, table: str) -> str:
    """``text`` (the README) with the table between its markers replaced by ``table``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ReadmeMarkersError(f"README has no {BEGIN!r} ... {END!r} block to put the "
                                 f"table in")
    return text[:start + len(BEGIN)] + "\n" + table + "\n" + text[end:]
