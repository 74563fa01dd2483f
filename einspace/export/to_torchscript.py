"""TorchScript export: the compiled network scripted with ``torch.jit.script`` (einspace modules
are written to be scriptable), or traced with ``torch.jit.trace`` when scripting fails, which the
card notes together with the node that could not be scripted."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from .culprit import find_culprit
from .errors import ExportError, first_line
from .locate import Place

FILE = "model.torchscript.pt"


def export_torchscript(network: nn.Module, sample: Tensor, out_dir: Path,
                       places: dict[str, Place]) -> dict:
    """Write ``model.torchscript.pt``; returns the card's entry for the format."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = torch.jit.script(network)
            info = {"method": "torch.jit.script"}
        except Exception as e:
            found = find_culprit(network, places, sample, lambda m, _: torch.jit.script(m))
            place, reason = found if found else (None, first_line(e))
            try:
                module = torch.jit.trace(network, (sample,), check_trace=False)
            except Exception as traced:
                raise ExportError(f"torch.jit.script fails ({reason}) and so does "
                                  f"torch.jit.trace ({first_line(traced)})", place,
                                  "torchscript") from None
            where = f" at {place}" if place else ""
            info = {"method": "torch.jit.trace",
                    "note": f"torch.jit.script fails{where} ({reason}); traced on the sample "
                            f"batch instead, so Python control flow is fixed to the path the "
                            f"sample took"}
        torch.jit.save(module, str(out_dir / FILE))
    return {"files": [FILE], **info}
