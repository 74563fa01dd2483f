"""Turning Ray's and Tune's failure reports into one-line trial reasons.

A trial's worker can die for reasons the trial itself never sees: Ray's memory monitor kills it,
its node or raylet dies, someone sends it SIGKILL.  Tune reports these as exceptions whose text
runs to dozens of lines (or, for a memory-monitor kill, raises out of ``Tuner.fit`` altogether);
the trial database wants one line that says what happened, and the driver wants to know which
trial's worker it was.
"""

from __future__ import annotations

import re

MEMORY_MONITOR = "killed by Ray's memory monitor"

_NODE_MEMORY = re.compile(r"was ([\d.]+\s*[KMGT]?B) used / ([\d.]+\s*[KMGT]?B) limit \(([\d.]+)\)")
_THRESHOLD = re.compile(r"threshold of \d+B \(([\d.]+)% of")
_SELECTED = re.compile(r"Selected to kill: \(Actor\(([0-9a-f]+)\).*?pid=(\d+), actual memory "
                       r"used=([\d.]+\s*[KMGT]?B)", re.S)


def is_memory_kill(text: str) -> bool:
    return "running low on memory" in text or "OutOfMemoryError" in text


def memory_kill_reason(text: str) -> str:
    """``killed by Ray's memory monitor: node at 95 % of 23.5GB (threshold 95 %); the
    worker used 8.6GB`` from the monitor's report (the parts it names)."""
    parts = []
    node = _NODE_MEMORY.search(text)
    if node:
        used, limit, fraction = node.groups()
        parts.append(f"node at {float(fraction):.0%} of {limit} ({used} used)")
    threshold = _THRESHOLD.search(text)
    if threshold:
        parts.append(f"kill threshold {float(threshold.group(1)):.0f} %")
    selected = _SELECTED.search(text)
    if selected:
        parts.append(f"the killed worker (pid {selected.group(2)}) used {selected.group(3)}")
    return f"{MEMORY_MONITOR}: {', '.join(parts) or 'the node ran low on memory'}"


def killed_actor(text: str) -> tuple[str, int] | None:
    """The hex id and pid of the actor the memory monitor chose, if its report names one."""
    selected = _SELECTED.search(text)
    return (selected.group(1), int(selected.group(2))) if selected else None


def describe(error: BaseException | str | None) -> str:
    """One line for why a trial's worker failed."""
    if error is None:
        return "the trial's worker failed without an error report"
    text = str(error)
    if is_memory_kill(text):
        return memory_kill_reason(text)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for marker in ("node", "died", "Error", "error"):
        for line in lines:
            if marker in line and not line.startswith("File "):
                return _short(line)
    return _short(lines[0]) if lines else type(error).__name__


def _short(line: str, limit: int = 300) -> str:
    return line if len(line) <= limit else line[:limit - 1] + "…"
