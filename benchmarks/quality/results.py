"""The benchmark's results file: one JSON line per finished cell, kept in the repository.

Lines are only appended, so a table can always be rebuilt from the file and a rerun of the
benchmark knows which cells are done without opening any run directory.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

from einspace.errors import EinspaceError

RESULTS_FILE = Path(__file__).resolve().parents[1] / "results" / "search_quality.jsonl"


class ResultsFileError(EinspaceError):
    """The results file cannot be read as JSON lines."""


def read_rows(path: Path = RESULTS_FILE) -> list[dict]:
    """Every recorded cell, in the order they finished (none when the file does not exist)."""
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ResultsFileError(f"{path}:{number}: not a JSON line ({e.msg})") from None
    return rows


def row_key(row: dict) -> tuple:
    """The cell a row belongs to (see :meth:`benchmarks.quality.plan.Cell.key`)."""
    minutes = row.get("minutes")
    return (row["task"], row["strategy"], row["seed"],
            None if minutes is None else float(minutes))


def append_row(row: dict, path: Path = RESULTS_FILE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def provenance() -> dict:
    """Where and when a cell ran, so rows from different machines or commits can be told
    apart: the host and its cores, the UTC date, the repository's commit."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True, timeout=10,
                                cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": commit}
