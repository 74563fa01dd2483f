"""The task registry: built-in Unseen-NAS-style tasks, built offline into a cache directory.

A built-in task is a :class:`TaskSpec` whose generator makes its splits deterministically from a
seed; ``build_task`` writes them in the real Unseen-NAS format (``unseen_nas.write_unseen_nas``) so
one loader serves real and built-in data, and a second build with the same name, version, seed and
size reuses the files.  Tasks register themselves when ``einspace.tasks`` is imported; callers
name a task through :func:`einspace.tasks.handle.resolve_task`, which also takes ``unseen:/path``
for real data.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from einspace.errors import EinspaceError

from .data import TaskData
from .unseen_nas import write_unseen_nas

SIZES = ("small", "default")
T = TypeVar("T")


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


def split_sizes(sizes: dict[str, T], size: str) -> T:
    """A task's split sizes for ``size`` ("small" or "default"); an unknown size is refused with
    the sizes the task knows."""
    if size not in sizes:
        raise TaskError(f"size must be one of {', '.join(sizes)}, got {size!r}")
    return sizes[size]


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
        write_unseen_nas(directory, replace(data, metadata=metadata))
    return directory
