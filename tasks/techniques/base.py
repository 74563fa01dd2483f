"""What every training technique shares: the option checks, the run context, the hooks of a
training step, and the registry that collects the techniques.

A technique is one class (in one module of this package) that names its YAML key, its options
class, and overrides the step hooks it needs; ``@register`` adds it.  The options class is a
frozen dataclass whose fields are the technique's options with the paper's defaults; it checks its
own values, so a recipe with a bad value fails when it is read, before any training.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, ContextManager

import torch
from torch import Tensor, nn

from einspace.errors import ConfigError

from ..data import TaskData


def option_path(technique: str, key: str) -> str:
    """Where an option sits in a recipe, for error messages."""
    return f"recipe.techniques.{technique}.{key}"


def check_number(technique: str, key: str, value: Any, minimum: float, strict: bool = False,
                 below: float | None = None) -> None:
    """Refuse a non-number, a non-finite number or one out of range, naming the option."""
    where = option_path(technique, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        relation = "greater than" if strict else "at least"
        raise ConfigError(f"{where} must be {relation} {minimum:g}, got {value!r}")
    if below is not None and value >= below:
        raise ConfigError(f"{where} must be less than {below:g}, got {value!r}")


def derived_seed(seed: int, name: str) -> int:
    """A seed per technique, so their random streams differ from each other and the shuffle."""
    return zlib.crc32(f"{name}:{seed}".encode())


@dataclass(frozen=True)
class Context:
    """What a technique may know about its run."""

    data: TaskData
    device: torch.device
    seed: int
    autocast: Callable[[], ContextManager]


@dataclass(frozen=True)
class Batch:
    """One training step's batch, the model and its output, as the loss hooks see them."""

    model: nn.Module
    x: Tensor
    y: Tensor
    out: Tensor
    classification: bool


class Recorder:
    """The latest output of each of some modules (forward hooks), until cleared; with
    ``training_only``, outputs of eval-mode forwards (the scoring) are not kept."""

    def __init__(self, training_only: bool):
        self.outputs: dict[int, Tensor] = {}
        self.training_only = training_only

    def keep(self, index: int, module: nn.Module, inputs, output) -> None:
        if module.training or not self.training_only:
            self.outputs[index] = output


class Technique:
    """Hooks into a training step; each default does nothing.

    Subclasses set ``name`` (the key under ``training.techniques``) and ``options_class``."""

    name: ClassVar[str]
    options_class: ClassVar[type]

    def __init__(self, options, ctx: Context):
        self.options, self.ctx = options, ctx
        self.handles: list = []
        self.recorders: list[Recorder] = []

    def record(self, modules: list[nn.Module], training_only: bool = True) -> Recorder:
        """A recorder of the outputs of ``modules``, emptied by :meth:`forget`."""
        recorder = Recorder(training_only)
        self.handles.extend(m.register_forward_hook(functools.partial(recorder.keep, i))
                            for i, m in enumerate(modules))
        self.recorders.append(recorder)
        return recorder

    def attach(self, model: nn.Module) -> list[nn.Parameter]:
        """Prepare ``model`` before the optimiser is made; returns extra trainable parameters."""
        return []

    def augment(self, x: Tensor) -> Tensor:
        return x

    def loss(self, loss: Tensor, batch: Batch) -> Tensor:
        return loss

    def before_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """After backward, before the optimiser step."""

    def forget(self) -> None:
        """Drop what this step recorded."""
        for recorder in self.recorders:
            recorder.outputs.clear()

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.forget()


_TECHNIQUES: dict[str, type[Technique]] = {}


def register(technique: type[Technique]) -> type[Technique]:
    """Add a technique class (used as a decorator); names are unique."""
    if technique.name in _TECHNIQUES:
        raise ValueError(f"training technique {technique.name!r} is registered twice")
    _TECHNIQUES[technique.name] = technique
    return technique


def registered() -> dict[str, type[Technique]]:
    """Technique name -> its class, in registration order (the order recipes list them)."""
    return dict(_TECHNIQUES)
