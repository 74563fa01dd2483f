"""The task registry: built-in Unseen-NAS-style tasks, built offline into a cache directory.

A built-in task is a :class:`TaskSpec` whose generator makes its splits deterministically from a
seed; ``build_task`` writes them in the real Unseen-NAS format (``unseen_nas.write_unseen_nas``) so
one loader serves real and built-in data, and a second build with the same name, version, seed and
size reuses the files.  ``load_task`` takes a built-in name or ``unseen:/path`` for real data;
``task_recipe`` gives the training recipe that goes with either.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from einspace.errors import EinspaceError

from .data import TaskData
from .recipe import Recipe
from .unseen_nas import load_unseen_nas, task_from_spec, write_unseen_nas

SIZES = ("small", "default")


class TaskError(EinspaceError):
    """An unknown task, or a task whose data source is not installed."""


@dataclass(frozen=True)
class TaskSpec:
    """What a built-in task is, where its data comes from, and how to make it.

    ``generator(seed, size)`` returns the task's :class:`TaskData`; ``size`` is ``"default"`` (the
    documented sizes) or ``"small"`` (a few hundred samples, for tests).  It raises
    :class:`TaskError` with ``install`` in the message when its source is absent.
    """

    name: str
    description: str
    mirrors: str
    input_shape: tuple[int, ...]
    task_type: str
    metric: str
    source: str
    install: str
    version: str
    generator: Callable[[int, str], TaskData]
    num_classes: int | None = None
    target_shape: tuple[int, ...] | None = None
    recipe: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"name": self.name, "description": self.description, "mirrors": self.mirrors,
                "input_shape": list(self.input_shape), "task_type": self.task_type,
                "num_classes": self.num_classes,
                "target_shape": list(self.target_shape) if self.target_shape else None,
                "metric": self.metric, "source": self.source, "install": self.install,
                "version": self.version, "recipe": dict(self.recipe)}


_TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    if spec.name in _TASKS:
        raise ValueError(f"task {spec.name!r} is registered twice")
    _TASKS[spec.name] = spec
    return spec


def list_tasks() -> list[TaskSpec]:
    """Built-in tasks in registration order."""
    return list(_TASKS.values())


def get_task(name: str) -> TaskSpec:
    try:
        return _TASKS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_TASKS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        known = ", ".join(_TASKS) or "none registered"
        raise TaskError(f"unknown task {name!r}{hint} (built-in tasks: {known}; real data: "
                        f"unseen:/path/to/dir)") from None


def task_summary(spec: str) -> dict:
    """A built-in task's specification, or what an ``unseen:/path`` directory holds (read and
    validated by the loader, arrays memory-mapped)."""
    if spec.startswith("unseen:"):
        return {**task_from_spec(spec).summary(), "source": spec}
    return get_task(spec).summary()


def default_root() -> Path:
    """Where built tasks are cached: ``$EINSPACE_CACHE/tasks`` or ``~/.cache/einspace/tasks``."""
    base = os.environ.get("EINSPACE_CACHE") or Path.home() / ".cache" / "einspace"
    return Path(base) / "tasks"


def task_dir(spec: TaskSpec, root: Path, seed: int, size: str) -> Path:
    return Path(root) / f"{spec.name}-v{spec.version}-seed{seed}-{size}"


def build_task(name: str, root: str | Path | None = None, seed: int = 0,
               size: str = "default", force: bool = False) -> Path:
    """Generate a built-in task into ``root`` (cached) and return its directory."""
    if size not in SIZES:
        raise TaskError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    spec = get_task(name)
    directory = task_dir(spec, Path(root) if root else default_root(), seed, size)
    if force or not (directory / "metadata").is_file():
        data = spec.generator(seed, size)
        metadata = {**data.metadata, "generator_version": spec.version, "seed": seed,
                    "source": spec.source, "metric": spec.metric, "size": size}
        write_unseen_nas(directory, TaskData(data.name, data.input_shape, data.task_type,
                                             data.splits, data.num_classes, data.target_shape,
                                             metadata))
    return directory


def load_task(spec: str, root: str | Path | None = None, seed: int = 0,
              size: str = "default") -> TaskData:
    """A task's data: ``unseen:/path`` for a real Unseen-NAS directory, else a built-in name."""
    if spec.startswith("unseen:"):
        return task_from_spec(spec)
    directory = build_task(spec, root, seed, size)
    data = load_unseen_nas(directory)
    return TaskData(spec, data.input_shape, data.task_type, data.splits, data.num_classes,
                    data.target_shape, data.metadata)


def task_recipe(spec: str, overrides: dict | None = None) -> Recipe:
    """The recipe a task is trained with: the defaults, then the task's own settings, then
    ``overrides`` (a user's flags or a YAML ``training:`` mapping, read by
    :meth:`Recipe.from_dict`), each layer validated by :class:`Recipe`.

    A built-in task's settings are its ``TaskSpec.recipe`` on top of its ``metric`` (so darcy
    is scored by relative L2, not the regression default of MSE); an ``unseen:`` directory has
    no settings of its own and gets the reference defaults.  This is the one place that layers
    them, so a baseline and a search score a task the same way."""
    recipe = Recipe()
    if not spec.startswith("unseen:"):
        task = get_task(spec)
        recipe = recipe.with_overrides(**{"metric": task.metric, **task.recipe})
    return Recipe.from_dict(overrides, base=recipe)
