"""Exporting an architecture with its weights: torch.export (``model.pt2``), ONNX, a standalone
``model.py``, or TorchScript; by default behind the trainer's input transformation, so a run's or
a task's export takes the task's raw arrays.

    from einspace.export import export, from_run, from_spec

    done = export(from_run("results/run", rank=1), ["pt2", "onnx", "pytorch"], "exported/")
    done = export(from_spec("resnet18", (3, 32, 32), num_classes=10), FORMATS, "rn18/")

Every export is checked before it is reported: loaded in a separate Python process that cannot
import einspace, it must reproduce the original network's output at batch sizes 1 and 3 (on the
task's raw rows for a run or a task, else on seeded random tensors).  A card
(``card.json``) beside the files records the derivation, shapes, costs, task, scores and sources.
The modules, one job each: :mod:`.source` (what to export), :mod:`.locate` (module -> derivation
node), :mod:`.trace` and :mod:`.codegen` (the ``model.py``), :mod:`.to_torchscript`,
:mod:`.to_onnx`, :mod:`.to_pytorch`, :mod:`.to_pt2`, :mod:`.preprocess` (the trainer's
input transformation), :mod:`.verify` with :mod:`.standalone_check`, :mod:`.card`,
:mod:`.pipeline` (one export) and :mod:`.command` (``einspace export``).

The names are imported on first use, as in :mod:`einspace`: ``einspace export --help`` must not
wait for torch and onnx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .formats import FORMATS

if TYPE_CHECKING:
    from .errors import ExportError
    from .pipeline import Exported, export
    from .source import Candidate, from_run, from_spec, from_task
    from .verify import Check, check_exports

__all__ = ["Candidate", "Check", "ExportError", "Exported", "FORMATS", "check_exports", "export",
           "from_run", "from_spec", "from_task"]

#: Public name -> the submodule that defines it.
_LAZY = {"ExportError": "errors", "Exported": "pipeline", "export": "pipeline",
         "Candidate": "source", "from_run": "source", "from_spec": "source",
         "from_task": "source",
         "Check": "verify", "check_exports": "verify"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
