"""Search quality at equal wall-clock budget: the CPU protocol against random search and the
seeds trained alone, on every built-in task (issue 12, item 7).

    python -m benchmarks.bench_search_quality                    # the whole plan (~7 hours)
    python -m benchmarks.bench_search_quality --tasks mnist1d --strategies cpu --seeds 0 \\
        --minutes 3                                              # one cell
    python -m benchmarks.bench_search_quality --list             # the plan, and what is done
    python -m benchmarks.bench_search_quality --table [--readme] # the table (into README.md)

Every strategy is the shipped ``cpu`` config (``search/configs/cpu.yaml``) with a few keys
changed (:mod:`benchmarks.quality.plan`), searching for ``--minutes`` of wall clock, after
which its best candidate is retrained with the protocol's final retraining and scored on test.
Each (task, strategy, search seed) cell is its own run directory under ``results/quality/``
and, once finished, one line of ``benchmarks/results/search_quality.jsonl``; a rerun skips
the finished cells and resumes a cell that was killed midway.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from einspace.errors import EinspaceError
from einspace.search.run_dir import RunDir

from .quality.cells import run_search_cell, run_seed_cell
from .quality.plan import QUALITY_DIR, Cell, plan, strategies, strategy_names
from .quality.results import RESULTS_FILE, append_row, provenance, read_rows, row_key
from .quality.table import render, replace_block

README = Path(__file__).resolve().parents[1] / "README.md"
DEFAULT_MINUTES = 10.0


def seed_alone_score(cell: Cell, rows: list[dict], results: Path, root: Path) -> float | None:
    """The seeds-alone test score for the cell's task and seed, running that cell first when
    it has not run yet (every search row carries it)."""
    seed_cell = Cell(cell.task, next(s for s in strategies() if s.is_seed_alone), cell.seed)
    found = [r for r in rows if row_key(r) == seed_cell.key(0)]
    if not found:
        found = [run_cell(seed_cell, 0, rows, results, root)]
    return found[-1]["test"]


def run_cell(cell: Cell, minutes: float, rows: list[dict], results: Path, root: Path) -> dict:
    """Run one cell and append its row to ``results`` (and to ``rows``)."""
    print(f"{cell.name}: running", flush=True)
    row = {"task": cell.task, "strategy": cell.strategy.name, "seed": cell.seed}
    if cell.strategy.is_seed_alone:
        row.update(minutes=None, **run_seed_cell(cell))
    else:
        alone = seed_alone_score(cell, rows, results, root)
        row.update(minutes=minutes, **run_search_cell(cell, minutes, root), seed_alone=alone)
    row.update(provenance())
    append_row(row, results)
    rows.append(row)
    print(f"{cell.name}: " + ", ".join(f"{k} {row[k]}" for k in ("trials", "valid", "test",
                                                                   "seed_alone", "seconds")
                                       if k in row), flush=True)
    return row


def state(cell: Cell, minutes: float, done: set, root: Path) -> str:
    if cell.strategy.waiting_for:
        return f"waiting for {cell.strategy.waiting_for}"
    if cell.key(minutes) in done:
        return "done"
    run = RunDir(cell.run_dir(root))
    if not cell.strategy.is_seed_alone and run.is_run():
        stored = run.config().search["time"] / 60
        return ("started (resumes)" if stored == minutes
                else f"started with --minutes {stored:g}")
    return "to run"


def parse_list(text: str | None, kind=str) -> list | None:
    return None if text is None else [kind(x) for x in text.split(",") if x]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", help="comma-separated tasks (default: the plan's)")
    parser.add_argument("--strategies", help=f"comma-separated, of {', '.join(strategy_names())}")
    parser.add_argument("--seeds", help="comma-separated search seeds (default 0,1)")
    parser.add_argument("--minutes", type=float, help=f"search wall clock per cell (default "
                        f"{DEFAULT_MINUTES:g}; with --table: show only that budget's cells)")
    parser.add_argument("--list", action="store_true", help="print the plan and what is done")
    parser.add_argument("--table", action="store_true", help="print the table of the results")
    parser.add_argument("--readme", action="store_true", help="with --table: write it into "
                        "README.md between its markers")
    parser.add_argument("--results", type=Path, default=RESULTS_FILE, help="results file")
    parser.add_argument("--out", type=Path, default=QUALITY_DIR, help="cells' run directories")
    args = parser.parse_args(argv)
    try:
        run(args)
    except EinspaceError as e:
        sys.exit(f"bench_search_quality: {e}")


def run(args) -> None:
    names = parse_list(args.strategies)
    unknown = sorted(set(names or ()) - set(strategy_names()))
    if unknown or (args.minutes is not None and args.minutes <= 0):
        raise EinspaceError(f"unknown strategies {unknown}; choose from "
                            f"{', '.join(strategy_names())}" if unknown
                            else "--minutes must be positive")
    rows = read_rows(args.results)
    if args.table:
        labels = {s.name: s.label for s in strategies()}
        table = render(rows, labels, args.minutes)
        print(table)
        if args.readme:
            README.write_text(replace_block(README.read_text(), table))
        return
    minutes = args.minutes or DEFAULT_MINUTES
    cells = plan(parse_list(args.tasks), names, parse_list(args.seeds, int))
    done = {row_key(r) for r in rows}
    if args.list:
        for cell in cells:
            print(f"{cell.name:40s} {state(cell, minutes, done, args.out)}")
        return
    for cell in cells:
        if state(cell, minutes, done, args.out) in ("done", f"waiting for "
                                                     f"{cell.strategy.waiting_for}"):
            continue
        run_cell(cell, minutes, rows, args.results, args.out)
        done = {row_key(r) for r in rows}


if __name__ == "__main__":
    main()
