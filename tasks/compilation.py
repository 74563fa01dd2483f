"""``torch.compile`` of one candidate's training step, timed, with a fallback that never fails it.

Small networks on a large GPU are bound by Python and kernel-launch overhead, which compilation
(fused kernels) and CUDA graphs (one launch per step) remove.  But compilation costs tens of
seconds per candidate and some candidates do not compile, so it is optional
(``Recipe.compile``), its cost is measured, and a failure falls back to the eager model:

* only the **training forward** is compiled (``torch.compile(model, mode=...)``; backward follows
  through AOTAutograd).  Scoring runs the eager module, which shares the weights: it is a small
  part of an epoch and would cost a second compilation plus one for its last, smaller batch;
* ``CompileRecord.seconds`` is the wall time of the first compiled training step (forward and
  backward, the device synchronised after it), which is where compilation happens; it includes
  that one step's work, milliseconds beside the compilation;
* a step of the compiled model that raises is **redone with the eager model**: if that works, the
  run continues eagerly for good and ``CompileRecord.fallback`` says why compilation failed; if
  it raises too, the eager error is the candidate's failure.  A step that failed inside backward
  may already have updated BatchNorm statistics once, so a fallen-back run is not bit-identical
  to an eager one;
* ``"reduce-overhead"`` and ``"max-autotune"`` capture CUDA graphs on CUDA where the candidate
  allows it (inductor skips them for CPU ops, dynamic shapes or mutated inputs);
  ``CompileRecord.cuda_graphs`` says whether any skip was counted during the first step;
* dynamo's caches are reset before each candidate is compiled (one compiled candidate per
  process at a time, as in a Ray worker): otherwise candidates built from the same module classes
  would reach dynamo's recompile limit and silently run eagerly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TypeVar

import torch
from torch import nn

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")

T = TypeVar("T")
Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class CompileRecord:
    """What compilation did for one run: its mode, the seconds of the compiling step (None when
    nothing was compiled), why it fell back to eager (empty when it did not) and whether the
    compiled steps ran as CUDA graphs."""

    mode: str = "off"
    seconds: float | None = None
    fallback: str = ""
    cuda_graphs: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _describe(error: BaseException) -> str:
    message = str(error).strip()
    first = message.splitlines()[0][:300] if message else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _cudagraph_skips() -> int | None:
    """Inductor's count of graphs it did not capture (a private counter; None if it moved)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return None
    return int(counters["inductor"]["cudagraph_skips"])


class CompiledTraining:
    """Runs training steps through the compiled ``model`` (or the eager one, see the module
    docstring) and keeps the :class:`CompileRecord`."""

    def __init__(self, model: nn.Module, mode: str, device: torch.device):
        if mode not in COMPILE_MODES:
            raise ValueError(f"unknown compile mode {mode!r}; expected one of "
                             f"{', '.join(COMPILE_MODES)}")
        self.eager = model
        self.device = device
        self.record = CompileRecord(mode=mode)
        self.compiled: Forward | None = None
        self._first = True
        self._mark_steps = device.type == "cuda" and mode in CUDA_GRAPH_MODES
        if mode == "off":
            return
        try:
            torch._dynamo.reset()
            self.compiled = torch.compile(model, mode=None if mode == "default" else mode)
        except Exception as error:  # e.g. a Python version torch.compile does not support
            self.record.fallback = _describe(error)

    def step(self, run: Callable[[Forward], T]) -> T:
        """``run(forward)`` is one step's forward and backward with ``forward`` the model to
        call; it runs with the compiled model while that works."""
        if self.compiled is None:
            return run(self.eager)
        if self._mark_steps:
            torch.compiler.cudagraph_mark_step_begin()
        first, skips = self._first, _cudagraph_skips()
        began = time.perf_counter()
        try:
            result = run(self.compiled)
        except Exception as error:
            result = run(self.eager)  # raises the candidate's own error when eager fails too
            self.compiled = None
            self.record.fallback = _describe(error)
            self.record.cuda_graphs = False
            return result
        if first:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self._first = False
            self.record.seconds = time.perf_counter() - began
            self.record.cuda_graphs = self._mark_steps and skips is not None \
                and _cudagraph_skips() == skips
        return result
