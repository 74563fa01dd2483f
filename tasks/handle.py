"""A ``--task`` value resolved once: a built-in name or ``unseen:/path`` becomes a :class:`Task`.

Every caller (the search engine, the CLI, the exporter, baselines, reports) used to test the
``unseen:`` prefix itself and pick between the registry and the Unseen-NAS loader.  Resolving the
value once into a handle keeps that choice here: the handle knows the task's shapes, its metric,
the recipe it trains with, where its arrays live and how to load them.

Resolving is cheap and touches no data: a built-in name is looked up in the registry (an unknown
name fails at once, with suggestions) and an ``unseen:`` directory is only read the first time a
caller needs its shapes or its data.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .data import TaskData
from .registry import TaskSpec, build_task, get_task
from .unseen_nas import SPEC_PREFIX, load_unseen_nas, spec_directory

if TYPE_CHECKING:
    from .recipe import Recipe


class TaskShapes(Protocol):
    """The four facts a network is built from; a :class:`TaskSpec` and a :class:`TaskData` both
    state them, so a handle reads them from whichever it holds."""

    input_shape: tuple[int, ...]
    task_type: str
    num_classes: int | None
    target_shape: tuple[int, ...] | None


class Task(ABC):
    """What every caller needs from a task, whatever holds its data."""

    #: The value the task was named by (``addnist_lite`` or ``unseen:/data/addnist``); runs,
    #: records and exports carry it so that the same task can be resolved again.
    name: str

    @property
    def short_name(self) -> str:
        """A name fit for a folder: the task's name, or an ``unseen:`` directory's last part."""
        return Path(self.name.removeprefix(SPEC_PREFIX)).name

    @property
    @abstractmethod
    def _shapes(self) -> TaskShapes:
        """What states the task's shapes: a built-in task's spec, an Unseen-NAS directory's data."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._shapes.input_shape

    @property
    def task_type(self) -> str:
        return self._shapes.task_type

    @property
    def num_classes(self) -> int | None:
        return self._shapes.num_classes

    @property
    def target_shape(self) -> tuple[int, ...] | None:
        return self._shapes.target_shape

    @property
    @abstractmethod
    def metric(self) -> str:
        """What the task is scored by (``"auto"``: the recipe's default for its task type)."""

    @abstractmethod
    def directory(self, seed: int = 0, size: str = "default",
                  root: str | Path | None = None) -> Path:
        """The Unseen-NAS directory holding the arrays (a built-in task is built into its cache
        first)."""

    @abstractmethod
    def load(self, seed: int = 0, size: str = "default",
             root: str | Path | None = None) -> TaskData:
        """The task's splits; ``seed`` and ``size`` choose a built-in task's generated copy."""

    @abstractmethod
    def summary(self) -> dict:
        """The JSON-friendly description ``einspace tasks show`` prints."""

    @abstractmethod
    def _own_recipe(self) -> dict:
        """The task's recipe settings on top of the defaults (empty when it has none)."""

    def recipe(self, overrides: dict | None = None) -> Recipe:
        """The recipe the task is trained with: the defaults, then the task's own settings, then
        ``overrides`` (a user's flags or a YAML ``training:`` mapping), each layer validated by
        :class:`Recipe`.  This is the one place that layers them, so a baseline and a search
        score a task the same way."""
        from .recipe import Recipe  # the recipe's techniques import torch; listing tasks must not

        return Recipe.from_dict(overrides, base=Recipe().with_overrides(**self._own_recipe()))


@dataclass(frozen=True)
class BuiltinTask(Task):
    """A registered task: its spec says everything, its data is generated into a cache."""

    spec: TaskSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def _shapes(self) -> TaskSpec:
        return self.spec

    @property
    def metric(self) -> str:
        return self.spec.metric

    def directory(self, seed: int = 0, size: str = "default",
                  root: str | Path | None = None) -> Path:
        return build_task(self.spec.name, root, seed, size)

    def load(self, seed: int = 0, size: str = "default",
             root: str | Path | None = None) -> TaskData:
        return replace(load_unseen_nas(self.directory(seed, size, root)), name=self.spec.name)

    def summary(self) -> dict:
        return self.spec.summary()

    def _own_recipe(self) -> dict:
        """The spec's recipe on top of its ``metric`` (so darcy is scored by relative L2, not the
        regression default of MSE)."""
        return {"metric": self.metric, **self.spec.recipe}


@dataclass(frozen=True)
class UnseenTask(Task):
    """A real Unseen-NAS directory: its metadata gives the shapes; it has no recipe of its own."""

    name: str
    path: str

    @cached_property
    def _data(self) -> TaskData:
        """The directory read and validated once (arrays memory-mapped)."""
        return load_unseen_nas(self.path)

    @property
    def _shapes(self) -> TaskData:
        return self._data

    @property
    def metric(self) -> str:
        return "auto"

    def directory(self, seed: int = 0, size: str = "default",
                  root: str | Path | None = None) -> Path:
        return Path(self.path)

    def load(self, seed: int = 0, size: str = "default",
             root: str | Path | None = None) -> TaskData:
        return self._data

    def summary(self) -> dict:
        return {**self._data.summary(), "source": self.name}

    def _own_recipe(self) -> dict:
        return {}


def resolve_task(spec: str) -> Task:
    """The handle for a ``--task`` value: ``unseen:/path/to/dir`` or a registered name."""
    if spec.startswith(SPEC_PREFIX):
        return UnseenTask(spec, spec_directory(spec))
    return BuiltinTask(get_task(spec))
