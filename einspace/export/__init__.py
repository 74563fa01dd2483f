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
"""

from .errors import ExportError
from .pipeline import FORMATS, Exported, export
from .source import Candidate, from_run, from_spec, from_task
from .verify import Check, check_exports

__all__ = ["Candidate", "Check", "ExportError", "Exported", "FORMATS", "check_exports", "export",
           "from_run", "from_spec", "from_task"]
