"""Keeping exporters quiet: torch's exporters print graph listings and warnings (through Python
and straight to the process's file descriptors) when an export fails, but the export reports
its error in one line itself."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings


@contextlib.contextmanager
def silenced(fd: int):
    """No warnings, and nothing written to file descriptor ``fd`` (1 stdout, 2 stderr), whether
    through Python or at the file-descriptor level, for the duration of the block."""
    stream = sys.stdout if fd == 1 else sys.stderr
    stream.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null, warnings.catch_warnings(), (
                contextlib.redirect_stdout(null) if fd == 1 else contextlib.redirect_stderr(null)):
            warnings.simplefilter("ignore")
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
