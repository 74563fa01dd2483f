"""Importing this module registers every built-in task (their data sources are imported only
when a task is generated)."""

from . import (  # noqa: F401
    chess_wdl,
    darcy,
    digits,
    fashiontile,
    gutenberg,
    language,
    mnist1d_task,
    pianoroll,
)
