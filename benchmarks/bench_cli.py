"""Start-up time of the ``einspace`` command: ``--help`` and every ``COMMAND --help``.

Run as ``python -m benchmarks.bench_cli [--repeat 5]``.  Each line is the median wall-clock time
of ``--repeat`` fresh processes of the installed ``einspace`` script (``python -m einspace`` when
there is none), beside the goal of 1.5 s.  ``tasks list`` is measured too: it imports the task
recipes and with them torch, so it shows what a command that needs torch pays at start-up.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from einspace.cli import make_parser

GOAL_S = 1.5


def command() -> list[str]:
    """The installed ``einspace`` script beside this interpreter, else ``python -m einspace``."""
    script = Path(sys.executable).with_name("einspace")
    if script.is_file():
        return [str(script)]
    found = shutil.which("einspace")
    return [found] if found else [sys.executable, "-m", "einspace"]


def seconds(argv: list[str], repeat: int) -> float:
    """Median wall-clock seconds of ``repeat`` runs of ``argv`` (output discarded)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (default 5)")
    args = parser.parse_args()
    base = command()
    cases = [["--help"]] + [[name, "--help"] for name in make_parser().commands]
    cases += [["tasks", "list"]]
    print(f"{' '.join(base)}: median of {args.repeat} runs, goal for --help {GOAL_S} s")
    for case in cases:
        taken = seconds(base + case, args.repeat)
        verdict = "" if case[-1] != "--help" else (" (met)" if taken < GOAL_S else " (NOT met)")
        print(f"  einspace {' '.join(case):22s} {taken:6.3f} s{verdict}")


if __name__ == "__main__":
    main()
