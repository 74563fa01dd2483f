"""Search strategies: the ask/tell interface, the registry, and one module per strategy.

Importing this package registers the shipped strategies; the import order below is the order
of ``--strategy``'s choices and of the strategy sections in a resolved config.
"""

# isort: off
from . import evolution  # noqa: F401  (registers "evolution")
from . import random_search  # noqa: F401  (registers "random")
from . import optuna_strategy  # noqa: F401  (registers "optuna")
# isort: on
from .base import Outcome, Proposal, Strategy, StrategyContext
from .registry import (
    create_strategy,
    get_strategy,
    read_sections,
    register,
    section_defaults,
    strategy_names,
)
from .settings import StrategySettings

__all__ = ["Outcome", "Proposal", "Strategy", "StrategyContext", "StrategySettings",
           "create_strategy", "get_strategy", "read_sections", "register", "section_defaults",
           "strategy_names"]
