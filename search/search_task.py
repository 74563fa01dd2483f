"""The task a search's config names, loaded, and the recipe its trials train with.

Kept apart from the driver (:mod:`einspace.search.engine`) because export needs them for a
finished run without starting, or importing, Ray.
"""

from __future__ import annotations

from einspace.tasks.data import TaskData
from einspace.tasks.handle import resolve_task
from einspace.tasks.recipe import Recipe

from .config import SearchConfig


def search_recipe(config: SearchConfig) -> Recipe:
    """The recipe trials train with: the task's (defaults, its metric and own overrides), then
    the config's ``training`` section."""
    return resolve_task(config.task["name"]).recipe(config.raw["training"])


def load_search_task(config: SearchConfig) -> TaskData:
    task = config.task
    return resolve_task(task["name"]).load(task["seed"], task["size"], task["root"])
