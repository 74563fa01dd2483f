"""Errors a user can cause; each message says what was wrong and where.

Everything user-facing raises a subclass of :class:`EinspaceError`; the CLI turns them into a
one-line message and exit status 2 instead of a traceback.
"""

from __future__ import annotations


class EinspaceError(Exception):
    """Base of every error caused by input (architecture text, shapes, configs, grammars)."""


class ParseError(EinspaceError):
    """Architecture text that is not a well-formed derivation."""


class ShapeError(EinspaceError):
    """A derivation that does not fit its input shape."""


class GrammarError(EinspaceError):
    """A grammar file or override that cannot be used."""


class ConfigError(EinspaceError):
    """A configuration file or key that is not understood."""


class SamplingError(EinspaceError):
    """No derivation could be drawn within the budgets (or no valid mutation/crossover found)."""


def format_path(path: tuple[int, ...]) -> str:
    """Human-readable node address: ``/`` for the root, ``/1/0`` for child 0 of child 1."""
    return "/" + "/".join(map(str, path))


class NoRuleError(EinspaceError):
    """A walker met a production it has no rule for (a production added without one)."""
