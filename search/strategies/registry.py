"""The strategy registry: ``@register`` on a :class:`Strategy` subclass offers it to the search.

A registered strategy is everything the rest of the search needs to know about it: the config
accepts its name as ``search.strategy`` and its ``Settings`` as the section of the same name
(defaults, checks, the stored form), ``einspace search --strategy`` lists it, and the engine
builds it through :meth:`Strategy.create`.  Adding a strategy is therefore one file that
defines and registers its class (shipped ones are imported by this package's ``__init__``).
"""

from __future__ import annotations

import difflib

from einspace.errors import ConfigError

from .base import Strategy, StrategyContext
from .settings import StrategySettings

_REGISTRY: dict[str, type[Strategy]] = {}


def register(strategy: type[Strategy]) -> type[Strategy]:
    """Class decorator: make ``strategy`` available under its ``name``."""
    if not strategy.name or not strategy.name.isidentifier():
        raise ValueError(f"a strategy needs an identifier as its name, got {strategy.name!r}")
    if strategy.name in _REGISTRY:
        raise ValueError(f"strategy {strategy.name!r} is registered twice")
    _REGISTRY[strategy.name] = strategy
    return strategy


def strategy_names() -> tuple[str, ...]:
    """The registered strategies' names, in registration order."""
    return tuple(_REGISTRY)


def get_strategy(name: str) -> type[Strategy]:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"unknown strategy {name!r}; known: {', '.join(_REGISTRY)}{hint}") \
            from None


def section_defaults() -> dict[str, dict]:
    """The default config section of every strategy that has settings, keyed by its name."""
    return {name: strategy.Settings.defaults() for name, strategy in _REGISTRY.items()
            if strategy.Settings is not None}


def read_sections(raw: dict) -> dict[str, StrategySettings]:
    """Every strategy's settings from its section of a resolved config, checked (all of them,
    not only the chosen strategy's: a stored config stays valid whichever strategy it runs)."""
    return {name: strategy.Settings.from_section(name, raw[name])
            for name, strategy in _REGISTRY.items() if strategy.Settings is not None}


def create_strategy(name: str, settings: StrategySettings | None,
                    context: StrategyContext) -> Strategy:
    """A new instance of strategy ``name`` with its settings (None when it has none)."""
    return get_strategy(name).create(settings, context)
