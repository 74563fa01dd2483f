"""Verification of exports in a separate Python process that cannot import einspace.

An export is only reported after its file, loaded the way a user would load it
(``torch.export.load``, ``torch.jit.load``, an ``onnxruntime`` session, ``import model``),
reproduced the original network's output on the saved sample batches (sizes 1 and 3, so a batch
size baked into the file fails).  The check runs :mod:`standalone_check` in a fresh interpreter
(``-I``: no user site, no ``PYTHON*`` variables; ``-B``: no ``__pycache__`` left in the export)
whose ``import einspace`` raises, so a file that still needs einspace fails the check instead of
passing by accident.  Several export directories can be checked in one process (the interpreter
and torch start once).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ExportError

CHECKER = Path(__file__).with_name("standalone_check.py")
ABS_TOL, REL_TOL = 1e-4, 1e-4


@dataclass(frozen=True)
class Check:
    """The outcome for one exported format in one directory."""

    dir: Path
    format: str
    max_abs_error: float | None
    tolerance: float | None
    isolated: bool
    error: str = ""
    batches: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.error and self.isolated and self.max_abs_error <= self.tolerance

    def problem(self) -> str:
        """Why the check failed, in words ('' when it passed)."""
        if self.error:
            return f"the exported file fails in a fresh process: {self.error}"
        if not self.isolated:
            return "the check process could import einspace, so it proves nothing"
        if not self.ok:
            return (f"its output differs from the original network's by up to "
                    f"{self.max_abs_error:.3g} (tolerance {self.tolerance:.3g})")
        return ""


def check_exports(jobs: list[tuple[Path, str, dict[str, str]]],
                  timeout: float = 900) -> list[Check]:
    """Check ``(directory, sample file, {format: file})`` jobs in one einspace-free process."""
    payload = [{"dir": str(Path(d).resolve()), "sample": sample, "files": files}
               for d, sample, files in jobs]
    command = [sys.executable, "-I", "-B", str(CHECKER), json.dumps(payload),
               str(torch.get_num_threads())]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        raise ExportError(f"the standalone check took longer than {timeout:.0f} s") from None
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or len(results) != sum(len(files) for *_, files in jobs):
        lines = done.stderr.strip().splitlines()
        raise ExportError(f"the standalone check process failed: "
                          f"{lines[-1] if lines else f'exit status {done.returncode}'}")
    return [_check(r) for r in results]


def _check(result: dict) -> Check:
    error = result.get("max_abs_error")
    tolerance = None if error is None else ABS_TOL + REL_TOL * result["scale"]
    return Check(Path(result["dir"]), result["format"], error, tolerance, result["isolated"],
                 result.get("error", ""), tuple(result.get("batches", ())))
