"""Checks of one config value, each failing with a :class:`ConfigError` that names its key.

Shared by the search config and the strategies' typed sections, so a bad value reads the same
wherever it is declared."""

from __future__ import annotations

import math

from einspace.errors import ConfigError


def check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def check_integer(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_number(name: str, value, minimum: float, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ConfigError(f"{name} must be a finite number {relation} {minimum:g}, got "
                          f"{value!r}")
