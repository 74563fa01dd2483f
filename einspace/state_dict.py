"""The weights file format of einspace: a plain ``state_dict`` saved with ``torch.save``, tensors
on CPU.

A search's trials, its final evaluation, ``inspect --weights`` and ``export`` all write or read
this one format, so it is written and read here only: a file that one of them wrote, the others
can read, and a file from elsewhere gets the same one-line error from each of them.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

from .errors import EinspaceError


def serialize_state(model: nn.Module) -> bytes:
    """A model's ``state_dict`` as the bytes of a weights file (on CPU, so any machine reads
    it)."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A weights file's ``state_dict``, read with ``weights_only=True`` so that a file from
    elsewhere cannot run code; an :class:`EinspaceError` for a missing file or one that is not
    a plain ``state_dict``."""
    path = Path(path)
    if not path.is_file():
        raise EinspaceError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a damaged or foreign file
        raise EinspaceError(f"weights file {path} is not a readable state_dict "
                            f"({_gist(e)})") from None
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise EinspaceError(f"weights file {path} holds a {type(state).__name__}, not a "
                            f"state_dict (a mapping of names to tensors)")
    return state


def _gist(error: BaseException, limit: int = 300) -> str:
    """The first line of torch's message (an unpickling error can quote a whole traceback)."""
    text = str(error).strip()
    line = text.splitlines()[0].strip() if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
