"""YAML configuration of the search space: grammar file and overrides, and sampling budgets.

```yaml
grammar:
  file: my_grammar.pcfg          # optional; the shipped einspace grammar otherwise
  terminal_set: seed-papers      # einspace (default) | seed-papers | [list of terminal names]
  family_weights: {attention: 2.0}   # multiply the weight of a family's terminals
  probabilities:                 # nonterminal -> {alternative: probability}
    module: {computation: 0.4}
  disable: [softmax]             # terminals removed everywhere
  add: {compute: [linear_x4]}    # registered terminals added to a category
budget:
  max_params: 10000000
  max_flops: 2000000000
  max_activations: 20000000
  max_nodes: 1000
  max_depth: 40
```
Unknown keys are errors that name the key and list the valid ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from .errors import ConfigError
from .grammar import Grammar, load_grammar
from .sampler import Budget, Sampler

SECTIONS = {"grammar": {"file", "terminal_set", "family_weights", "probabilities", "disable",
                        "add"},
            "budget": {f.name for f in fields(Budget)}}


@dataclass
class SpaceConfig:
    """The resolved search-space part of a config."""

    grammar: Grammar = field(default_factory=load_grammar)
    budget: Budget = field(default_factory=Budget)

    def sampler(self) -> Sampler:
        return Sampler(self.grammar, self.budget)


def read_yaml(path: str | Path) -> dict:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {str(file)!r} does not exist")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{file}: not valid YAML: {str(e).splitlines()[0]}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{file}: not valid UTF-8 text ({e.reason} at byte {e.start})") \
            from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the top level must be a mapping of sections")
    return data


def space_config(data: dict | None = None, base_dir: Path | None = None) -> SpaceConfig:
    """Validate the ``grammar`` and ``budget`` sections of a parsed config."""
    data = data or {}
    for section, keys in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section {section!r}; valid sections: "
                              f"{', '.join(sorted(SECTIONS))}")
        if not isinstance(keys, dict):
            raise ConfigError(f"config section {section!r} must be a mapping")
        for key in keys:
            if key not in SECTIONS[section]:
                raise ConfigError(f"unknown key {section}.{key}; valid keys: "
                                  f"{', '.join(sorted(SECTIONS[section]))}")
    grammar_cfg = dict(data.get("grammar", {}))
    _check_grammar_types(grammar_cfg)
    file = grammar_cfg.pop("file", None)
    if file is not None and base_dir is not None and not Path(file).is_absolute():
        file = base_dir / file
    disable = grammar_cfg.get("disable", [])
    grammar = load_grammar(file, terminal_set=grammar_cfg.get("terminal_set", "einspace"),
                           family_weights=grammar_cfg.get("family_weights"),
                           probabilities=grammar_cfg.get("probabilities"),
                           disable=disable, add=grammar_cfg.get("add"))
    return SpaceConfig(grammar, Budget(**data.get("budget", {})))


def _check_grammar_types(cfg: dict) -> None:
    """The shapes of the grammar section's values; the grammar itself checks the names and
    numbers inside them (a string where a list belongs would be read letter by letter)."""
    def names(value) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    if cfg.get("file") is not None and not isinstance(cfg["file"], str):
        raise ConfigError(f"grammar.file must be a path, got {cfg['file']!r}")
    if not names(cfg.get("disable", [])):
        raise ConfigError("grammar.disable must be a list of terminal names")
    for key, inner in (("family_weights", None), ("probabilities", dict), ("add", list)):
        value = cfg.get(key) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"grammar.{key} must be a mapping, got {value!r}")
        for name, item in value.items():
            if inner is dict and not isinstance(item, dict):
                raise ConfigError(f"grammar.probabilities.{name} must be a mapping of "
                                  f"alternatives to probabilities, got {item!r}")
            if inner is list and not names(item):
                raise ConfigError(f"grammar.add.{name} must be a list of terminal names, got "
                                  f"{item!r}")


def load_space_config(path: str | Path | None) -> SpaceConfig:
    """The search-space config from a YAML file (defaults when ``path`` is None)."""
    if path is None:
        return SpaceConfig()
    return space_config(read_yaml(path), Path(path).parent)
