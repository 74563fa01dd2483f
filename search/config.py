"""The YAML configuration of a search, validated into one :class:`SearchConfig`.

```yaml
task: {name: addnist_lite, size: default, seed: 0}   # or unseen:/path/to/addnist
seed: 0                       # the search seed (proposals, trial training seeds)
search:
  strategy: evolution         # evolution | random | optuna (any registered strategy)
  trials: 200                 # trained trials (duplicates never count)
  time: null                  # or a wall-clock budget: 3600, "90m", "2h"
  workers: 2                  # concurrent trials
  ordering: deterministic     # or asynchronous (never waits, not repeatable)
  cpus_per_trial: 1
  gpus_per_trial: 0           # fractions pack several trials on one GPU
  retries: 1                  # re-runs after an infrastructure failure (dead worker)
  scheduler: none             # or asha (stops weak candidates after grace_epochs)
  grace_epochs: 1
  address: null               # a Ray cluster (head-ip:6379); local Ray otherwise
  storage: null               # database URL; sqlite file in the run directory otherwise
  keep_weights: 3             # trained weights kept for the best K trials
  memory_per_trial: auto      # memory budget per trial: auto (from the Ray nodes), 6GB, or off
  time_per_trial: auto        # training-time share per trial: auto (from search.time), 90s, or off
evolution:
  population_size: 100
  tournament_size: 10
  seeds: [resnet18]
  crossover_rate: 0.0         # probability that a child is a crossover of two winners
  novelty_weight: 0.0         # rank contestants by score + w * novelty (0 = off)
  min_distance: 0.0           # redraw a child within this tree edit distance of its parent
  inherit_weights: true       # children start from their parents' trained weights
optuna: {sampler: tpe}        # tpe | random
# each strategy's section is its typed settings (einspace.search.strategies), named like it
training: {epochs: 8, lr: 0.04}      # any Recipe key (einspace.tasks.recipe)
final: {top_k: 1, epochs: null}      # retrain the best on train+valid, score test; top_k 0 = skip
screening: {candidates: 1}    # K > 1: rank K candidates per slot, train the best one
fidelity: {rungs: [], eta: 3}        # successive halving over [data fraction, epochs] rungs
grammar: {...}                # as in einspace.config
budget: {...}
```
A config may start with ``extends: NAME`` to inherit another config (shipped or a path) and
override some of its keys.  Every key has a default; unknown keys and bad values are
:class:`~einspace.errors.ConfigError` naming the key.  The resolved config
(:meth:`SearchConfig.to_dict`) is written into the run directory and read back by ``--resume``.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from einspace.config import SpaceConfig, read_yaml, space_config
from einspace.errors import ConfigError
from einspace.memory import parse_bytes
from einspace.tasks.recipe import Recipe

from .checks import check_choice, check_integer, check_number
from .fidelity import FIDELITY_DEFAULTS, check_fidelity
from .screening import ScreeningOptions
from .shipped import SHIPPED, shipped_names
from .strategies import (
    StrategySettings,
    get_strategy,
    read_sections,
    section_defaults,
    strategy_names,
)

ORDERINGS = ("deterministic", "asynchronous")
SCHEDULERS = ("none", "asha")

SEARCH_DEFAULTS: dict = {
    "task": {"name": "addnist_lite", "size": "default", "seed": 0, "root": None},
    "seed": 0,
    "search": {"strategy": "evolution", "trials": 200, "time": None, "workers": 2,
               "ordering": "deterministic", "cpus_per_trial": 1, "gpus_per_trial": 0,
               "retries": 1, "scheduler": "none", "grace_epochs": 1, "address": None,
               "storage": None, "keep_weights": 3, "memory_per_trial": "auto",
               "time_per_trial": "auto"},
    "training": {},
    "final": {"top_k": 1, "epochs": None},
    "screening": ScreeningOptions().to_section(),
    "fidelity": FIDELITY_DEFAULTS,
    "grammar": {},
    "budget": {},
}
"""The sections every search has; the registered strategies' sections follow ``search``."""
_FREE_SECTIONS = ("training", "grammar", "budget")


def default_config() -> dict:
    """The resolved config of an empty file: :data:`SEARCH_DEFAULTS` with each registered
    strategy's section (its settings' defaults) after ``search``, in registration order."""
    defaults = copy.deepcopy(SEARCH_DEFAULTS)
    head = {key: defaults.pop(key) for key in ("task", "seed", "search")}
    return {**head, **section_defaults(), **defaults}


@dataclass
class SearchConfig:
    """A validated search configuration (``raw`` is the resolved mapping it came from;
    ``settings`` the chosen strategy's typed section, None for a strategy without one)."""

    raw: dict
    space: SpaceConfig = field(repr=False)
    recipe: Recipe
    settings: StrategySettings | None = None

    @property
    def task(self) -> dict:
        return self.raw["task"]

    @property
    def search(self) -> dict:
        return self.raw["search"]

    @property
    def seed(self) -> int:
        return self.raw["seed"]

    @property
    def strategy(self) -> str:
        return self.search["strategy"]

    @property
    def screening(self) -> ScreeningOptions:
        return ScreeningOptions.from_dict(self.raw["screening"])

    def to_dict(self) -> dict:
        return copy.deepcopy(self.raw)


def parse_duration(value, key: str = "search.time") -> float | None:
    """Seconds from ``3600``, ``"90s"``, ``"30m"``, ``"2h"`` (None stays None); errors name
    ``key``."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 \
            and math.isfinite(value):
        return float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(value))
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"{key} must be a positive number of seconds or like '90m', "
                          f"'2h'; got {value!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def merge(base: dict, override: dict, where: str = "") -> dict:
    """``base`` with ``override`` applied key by key; an unknown key is an error naming it (the
    free-form sections ``training``, ``grammar`` and ``budget`` are checked by their own
    validators)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        name = f"{where}{key}"
        if key not in base:
            raise ConfigError(f"unknown config key {name!r}; valid keys here: "
                              f"{', '.join(sorted(base))}")
        if isinstance(base[key], dict):
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"config key {name!r} must be a mapping, got {value!r}")
            out[key] = ({**base[key], **copy.deepcopy(value)} if name in _FREE_SECTIONS
                        else merge(base[key], value, f"{name}."))
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve(data: dict | None = None, base_dir: Path | None = None) -> SearchConfig:
    """Defaults + ``data`` (a parsed YAML mapping), validated."""
    data = dict(data or {})
    if isinstance(data.get("task"), str):
        data["task"] = {"name": data["task"]}
    raw = merge(default_config(), data)
    sections = _check(raw)
    space = space_config({k: raw[k] for k in ("grammar", "budget") if raw[k]}, base_dir)
    recipe = Recipe.from_dict(raw["training"])
    return SearchConfig(raw, space, recipe, sections.get(raw["search"]["strategy"]))


def load_config(path: str | Path | None, overrides: dict | None = None) -> SearchConfig:
    """A config file (a path, or the name of a shipped config) plus command-line overrides."""
    data: dict = {}
    base_dir = None
    if path is not None:
        file = shipped_config(path)
        data = read_config_file(file)
        base_dir = file.parent
    return resolve(merge_user(data, overrides or {}), base_dir)


def read_config_file(file: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A config file's mapping with its ``extends:`` chain applied: ``extends: evolution`` (a
    shipped config's name, or a path relative to the file) is read first and this file's keys
    are laid over it."""
    data = read_yaml(file)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{file}: extends must be a config name or path, got {parent!r}")
    relative = file.parent / parent
    base_file = shipped_config(relative if relative.is_file() else parent)
    if base_file.resolve() in seen:
        raise ConfigError(f"{file}: extends {parent!r} forms a cycle")
    base = read_config_file(base_file, (*seen, file.resolve()))
    return merge_user(base, data)


def merge_user(data: dict, overrides: dict) -> dict:
    """Nested ``overrides`` (from command-line flags) laid over a user's mapping."""
    out = copy.deepcopy(data)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_user(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), str):
            out[key] = merge_user({"name": out[key]}, value)
        else:
            out[key] = value
    return out


def shipped_config(name: str | Path) -> Path:
    """A path as given, or ``SHIPPED/<name>.yaml`` for a shipped config's name."""
    path = Path(name)
    if path.is_file():
        return path
    candidate = SHIPPED / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    names = ", ".join(shipped_names())
    raise ConfigError(f"config {str(name)!r} is neither a file nor a shipped config "
                      f"({names})")


def _check(raw: dict) -> dict[str, StrategySettings]:
    """Validate ``raw`` in place (bringing values to their stored form) and return every
    strategy's checked settings."""
    s = raw["search"]
    check_choice("search.strategy", s["strategy"], strategy_names())
    check_choice("search.ordering", s["ordering"], ORDERINGS)
    check_choice("search.scheduler", s["scheduler"], SCHEDULERS)
    check_choice("task.size", raw["task"]["size"], ("small", "default"))
    if not isinstance(raw["task"]["name"], str) or not raw["task"]["name"]:
        raise ConfigError(f"task.name must be a task name or unseen:/path, "
                          f"got {raw['task']['name']!r}")
    for name, value, what in (("task.root", raw["task"]["root"], "a path"),
                              ("search.storage", s["storage"], "a database URL"),
                              ("search.address", s["address"], "a host:port address")):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{name} must be {what} (or null), got {value!r}")
    for key, minimum in (("trials", 1), ("workers", 1), ("retries", 0), ("grace_epochs", 1),
                         ("keep_weights", 0)):
        if s[key] is None and key == "trials":
            continue
        check_integer(f"search.{key}", s[key], minimum)
    if s["trials"] is None and s["time"] is None:
        raise ConfigError("give search.trials or search.time (or both): the search needs a "
                          "budget")
    s["time"] = parse_duration(s["time"])
    check_number("search.cpus_per_trial", s["cpus_per_trial"], 0.0, strict=True)
    if s["memory_per_trial"] not in ("auto", "off", None):
        parse_bytes(s["memory_per_trial"], "search.memory_per_trial")
    if s["time_per_trial"] is None or s["time_per_trial"] is False:
        s["time_per_trial"] = "off"  # YAML 1.1 reads a bare `off` as false
    if s["time_per_trial"] not in ("auto", "off"):
        s["time_per_trial"] = parse_duration(s["time_per_trial"], "search.time_per_trial")
    if s["address"] is not None:
        if not isinstance(s["address"], str) or not s["address"]:
            raise ConfigError(f"search.address must be host:port, 'local' or null, got "
                              f"{s['address']!r}")
        if s["address"].startswith("ray://"):
            raise ConfigError(f"search.address {s['address']}: Ray Client (ray://) addresses "
                              f"are not supported; give the head's host:port")
    check_number("search.gpus_per_trial", s["gpus_per_trial"], 0.0)
    check_integer("seed", raw["seed"], 0)
    check_integer("task.seed", raw["task"]["seed"], 0)
    sections = read_sections(raw)
    for name, settings in sections.items():
        raw[name] = settings.to_section()
    raw["screening"] = _checked_screening(raw["screening"], s["strategy"]).to_section()
    check_fidelity(raw["fidelity"])
    if raw["fidelity"]["rungs"] and s["scheduler"] != "none":
        raise ConfigError("fidelity.rungs and search.scheduler: asha both stop weak candidates "
                          "early; use one of them")
    f = raw["final"]
    check_integer("final.top_k", f["top_k"], 0)
    if f["epochs"] is not None:
        check_integer("final.epochs", f["epochs"], 1)
    return sections


def _checked_screening(section: dict, strategy: str) -> ScreeningOptions:
    """The ``screening`` section, refused when it screens for a strategy that cannot (Optuna's
    trials are drawn by its own sampler, one per trial)."""
    screening = ScreeningOptions.from_dict(section)
    if screening.enabled and not get_strategy(strategy).supports_screening:
        able = ", ".join(n for n in strategy_names() if get_strategy(n).supports_screening)
        raise ConfigError(f"screening.candidates = {screening.candidates}: the {strategy} "
                          f"strategy does not screen candidates; set it to 1 or use {able}")
    return screening
