"""``torch.export`` export: an ``ExportedProgram`` saved as ``model.pt2`` with a dynamic batch
dimension, loadable with ``torch.export.load(path).module()`` where einspace is not installed (and
the input of AOTInductor and ExecuTorch).  Should a node need its batch size fixed, the program is
exported for the sample's batch size and the card names the node and the reason."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .culprit import find_culprit
from .errors import ExportError, first_line
from .locate import Place
from .silence import silenced

FILE = "model.pt2"


def _export(module: nn.Module, args: tuple, dynamic: bool):
    if len(args) == 1 and isinstance(args[0], list):  # an aggregation: one list argument
        shapes = ([{0: torch.export.Dim("batch", min=1)} for _ in args[0]],)
    else:
        shapes = tuple({0: torch.export.Dim("batch", min=1)} for _ in args)
    with silenced(2):
        return torch.export.export(module, args, dynamic_shapes=shapes if dynamic else None)


def export_pt2(network: nn.Module, sample: Tensor, out_dir: Path,
               places: dict[str, Place]) -> dict:
    """Write ``model.pt2``; returns the card's entry for the format."""
    info = {"files": [FILE], "exporter": f"torch.export.export (torch {torch.__version__})",
            "loader": "torch.export.load('model.pt2').module()", "batch": "dynamic"}
    try:
        program = _export(network, (sample,), dynamic=True)
    except Exception as dynamic_error:
        try:
            program = _export(network, (sample,), dynamic=False)
        except Exception as e:
            found = find_culprit(network, places, sample,
                                 lambda m, args: _export(m, args, dynamic=False))
            place, reason = found if found else (None, first_line(e))
            raise ExportError(f"torch.export fails ({reason})", place, "pt2") from None
        found = find_culprit(network, places, sample,
                             lambda m, args: _export(m, args, dynamic=True))
        place, reason = found if found else (None, first_line(dynamic_error))
        where = f" at {place}" if place else ""
        info["batch"] = sample.shape[0]
        info["note"] = (f"batch size fixed to {sample.shape[0]}: a dynamic batch fails{where} "
                        f"({reason})")
    torch.export.save(program, str(out_dir / FILE))
    return info
