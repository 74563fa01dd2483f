"""The task a search's config names, loaded, and the recipe its trials train with.

Kept apart from the driver (:mod:`einspace.search.engine`) because export needs them for a
finished run without starting, or importing, Ray.
"""

from __future__ import annotations

from einspace.tasks import builtin  # noqa: F401  (registers the built-in tasks)
from einspace.tasks.data import TaskData
from einspace.tasks.recipe import Recipe
from einspace.tasks.registry import load_task, task_recipe

from .config import SearchConfig


def search_recipe(config: SearchConfig) -> Recipe:
    """The recipe trials train with: the task's (defaults, its metric and own overrides), then
    the config's ``training`` section."""
    return task_recipe(config.task["name"], config.raw["training"])


def load_search_task(config: SearchConfig) -> TaskData:
    task = config.task
    return load_task(task["name"], task["root"], seed=task["seed"], size=task["size"])
