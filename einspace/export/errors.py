"""The one error type of exporting: what could not be exported, where, and why.

Every failure a user can cause or meet (a bad source, a missing weights file, a node no exporter
handles) is an :class:`ExportError`, so the CLI prints one line instead of a traceback.  When the
failure belongs to one node of the architecture, the message names its derivation path and
terminal, like the shape errors of :mod:`einspace.analysis` do.
"""

from __future__ import annotations

from einspace.errors import EinspaceError

from .locate import Place


class ExportError(EinspaceError):
    """An export that failed; ``place`` is the node it failed at (None: not one node's fault)."""

    def __init__(self, reason: str, place: Place | None = None, fmt: str | None = None):
        self.reason = reason
        self.place = place
        self.format = fmt
        where = f"at {place}: " if place is not None else ""
        prefix = f"cannot export to {fmt}: " if fmt else ""
        super().__init__(f"{prefix}{where}{reason}")


def first_line(error: BaseException, limit: int = 300) -> str:
    """The gist of an exception from torch or onnx (their messages can hold whole graphs)."""
    text = str(error).split("[Caused by")[0].strip()  # torch.onnx appends a graph excerpt
    line = text.splitlines()[0].strip() if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
