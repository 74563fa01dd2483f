"""Importing this module registers every built-in task (their data sources are imported only
when a task is generated)."""

from . import chess_wdl, darcy, digits, language, mnist1d_task  # noqa: F401
