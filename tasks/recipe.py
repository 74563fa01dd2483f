"""The training recipe that scores one candidate: optimiser, schedule, budget, device, seed.

The defaults are the reference's Unseen-NAS recipe (SGD with momentum 0.9, lr 0.04, weight decay
3e-4, batch 256, cosine schedule, 8 epochs during search and 64 for the final evaluation,
per-channel normalisation from train statistics).  A task overrides them with
:meth:`Recipe.with_overrides`; a YAML ``training:`` mapping goes through :meth:`Recipe.from_dict`,
which rejects unknown keys and bad values with a :class:`~einspace.errors.ConfigError`::

    recipe = Recipe.from_dict({"lr": 0.1, "epochs": 25})          # defaults + overrides
    final = recipe.for_final()                                   # epochs = eval_epochs

Schedule ``"cosine"`` anneals the learning rate **per step** from ``lr`` towards 0 over all the
planned steps (``epochs`` x steps per epoch): ``lr_t = lr * (1 + cos(pi * t / T)) / 2``.  The
reference stepped ``CosineAnnealingLR`` once per epoch, which with 8 epochs is a staircase of 8
values; per step is the same curve without the stairs.  ``"constant"`` keeps ``lr``.
A time budget (``max_seconds``) caps a run but does not shorten the schedule.

``techniques`` enables the seed papers' training techniques (gradient noise, TrAct, guidance, ...),
each off by default; :mod:`einspace.tasks.techniques` lists them with their options::

    recipe = Recipe.from_dict({"techniques": {"grad_noise": {"eta": 0.01}, "tract": True}})

A ``techniques`` mapping replaces the base recipe's techniques as a whole.

Two keys only change how fast a candidate trains on an accelerator, both chosen so the default
keeps today's numerics: ``precision`` (``"auto"``: bf16 autocast on CUDA, float32 elsewhere;
``"fp32"`` or ``"bf16"`` force one on any device) and ``compile`` (``"off"`` by default, or a
``torch.compile`` mode: ``"default"``, ``"reduce-overhead"`` (CUDA graphs where the candidate
allows them), ``"max-autotune"``, ``"max-autotune-no-cudagraphs"``; YAML ``true`` means
``"default"``).  :mod:`einspace.tasks.compilation` says what is compiled and how a failure falls
back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from einspace.errors import ConfigError

from .compilation import COMPILE_MODES
from .techniques import Techniques

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant")
METRICS = ("auto", "accuracy", "neg_mse", "neg_relative_l2")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class Recipe:
    """How one candidate is trained and scored (immutable; validated on construction).

    ``metric`` ``"auto"`` means accuracy for classification and ``"neg_mse"`` (minus the mean
    squared error over all target elements) for regression; ``"neg_relative_l2"`` is minus the
    mean over samples of ``||pred - y|| / ||y||`` (the reference's darcyflow score, but averaged
    instead of summed so it does not grow with the split size).  Scores are higher-is-better.
    ``device`` is ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` or
    ``"cuda:N"``.  ``precision`` and ``compile`` are described in the module docstring.
    """

    optimizer: str = "sgd"
    lr: float = 0.04
    momentum: float = 0.9
    weight_decay: float = 3e-4
    batch_size: int = 256
    schedule: str = "cosine"
    epochs: int = 8
    eval_epochs: int = 64
    max_seconds: float | None = None
    normalize: bool = True
    seed: int = 0
    device: str = "auto"
    metric: str = "auto"
    precision: str = "auto"
    compile: str = "off"
    techniques: Techniques = Techniques()

    def __post_init__(self) -> None:
        if self.techniques is None or isinstance(self.techniques, dict):
            object.__setattr__(self, "techniques", Techniques.from_dict(self.techniques))
        elif not isinstance(self.techniques, Techniques):
            raise ConfigError(f"recipe.techniques must be a mapping of technique names to "
                              f"options, got {type(self.techniques).__name__}")
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("metric", self.metric, METRICS)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("compile", self.compile, COMPILE_MODES)
        _check_number("lr", self.lr, minimum=0.0, strict=True)
        _check_number("momentum", self.momentum, minimum=0.0)
        if self.momentum >= 1:
            raise ConfigError(f"recipe.momentum must be in [0, 1), got {self.momentum!r}")
        _check_number("weight_decay", self.weight_decay, minimum=0.0)
        for name in ("batch_size", "epochs", "eval_epochs"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("seed", self.seed, minimum=0)
        if self.max_seconds is not None:
            _check_number("max_seconds", self.max_seconds, minimum=0.0, strict=True)
        if not isinstance(self.normalize, bool):
            raise ConfigError(f"recipe.normalize must be true or false, got {self.normalize!r}")
        device = self.device
        if not isinstance(device, str) or not (
                device in ("auto", "cpu", "cuda")
                or (device.startswith("cuda:") and device[5:].isdigit())):
            raise ConfigError(f"recipe.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', "
                              f"got {device!r}")

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def with_overrides(self, **overrides: Any) -> Recipe:
        """A copy with some fields changed (validated like :meth:`from_dict`)."""
        _check_keys(overrides)
        return replace(self, **{k: _coerce(k, v) for k, v in overrides.items()})

    @classmethod
    def from_dict(cls, data: dict | None, base: Recipe | None = None) -> Recipe:
        """``base`` (the defaults when None) with the keys of a parsed YAML mapping applied.

        Numbers written as strings (YAML 1.1 reads ``3e-4`` as a string) are accepted for the
        float fields; ``null`` is accepted for ``max_seconds``."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"the training recipe must be a mapping of keys, got "
                              f"{type(data).__name__}")
        return (base or cls()).with_overrides(**data)

    def for_final(self) -> Recipe:
        """The recipe of the final evaluation: the same with ``epochs = eval_epochs``."""
        return replace(self, epochs=self.eval_epochs)

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["techniques"] = self.techniques.to_dict()
        return data


_FLOAT_KEYS = {"lr", "momentum", "weight_decay", "max_seconds"}


def _check_keys(data: dict) -> None:
    valid = Recipe.keys()
    for key in data:
        if key not in valid:
            raise ConfigError(f"unknown training recipe key {key!r}; valid keys: "
                              f"{', '.join(sorted(valid))}")


def _coerce(key: str, value: Any) -> Any:
    if key == "compile" and isinstance(value, bool):
        return "default" if value else "off"
    if key in _FLOAT_KEYS and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"recipe.{key} must be a number, got {value!r}") from None
    return value


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"recipe.{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_number(name: str, value: Any, minimum: float, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"recipe.{name} must be a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        relation = "greater than" if strict else "at least"
        raise ConfigError(f"recipe.{name} must be {relation} {minimum:g}, got {value!r}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"recipe.{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"recipe.{name} must be at least {minimum}, got {value!r}")
