"""Plain PyTorch export: a generated ``model.py`` (torch only, no einspace) and the
``state_dict.pt`` its ``Model`` loads with ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .codegen import generate
from .locate import Place
from .trace import trace

SOURCE, WEIGHTS = "model.py", "state_dict.pt"


def export_pytorch(network: nn.Module, out_dir: Path, places: dict[str, Place],
                   header: str) -> dict:
    """Write ``model.py`` (``header`` is its docstring) and ``state_dict.pt``; returns the
    card's entry for the format."""
    source, state = generate(network, trace(network, places), places, header)
    (out_dir / SOURCE).write_text(source)
    torch.save(state, out_dir / WEIGHTS)
    return {"files": [SOURCE, WEIGHTS], "class": "Model", "loader": "load()",
            "mode": "evaluation (the forward traced with the network in eval mode)"}
