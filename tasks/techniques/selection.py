"""``Techniques``: which techniques a recipe enables, with which options.

The class is made from the registry, one optional field per registered technique (its options,
or None for off) in registration order, so a technique is declared once, in its own module, and
still reads as ``recipe.techniques.grad_noise``.  It is a frozen dataclass, so recipes holding it
stay comparable, hashable and picklable as before.
"""

from __future__ import annotations

from dataclasses import asdict, field, fields, make_dataclass
from typing import Any

from einspace.errors import ConfigError

from .base import Technique, option_path


class TechniqueSelection:
    """The behaviour of :class:`Techniques`; its fields come from :func:`techniques_class`."""

    def __post_init__(self) -> None:
        for name, kind in self.options_classes().items():
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise ConfigError(f"recipe.techniques.{name} must be {kind.__name__} options "
                                  f"or None, got {value!r}")

    @classmethod
    def options_classes(cls) -> dict[str, type]:
        """Technique name (the YAML key) -> its options class."""
        return {f.name: f.metadata["options_class"] for f in fields(cls)}

    @classmethod
    def from_dict(cls, data: dict | None) -> TechniqueSelection:
        """The techniques of a parsed YAML mapping ``{name: true | false | null | {options}}``."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError(f"recipe.techniques must be a mapping of technique names to "
                              f"options, got {type(data).__name__}")
        kinds = cls.options_classes()
        for name in data:
            if name not in kinds:
                raise ConfigError(f"unknown training technique {name!r} in recipe.techniques; "
                                  f"valid: {', '.join(kinds)}")
        return cls(**{name: read_options(name, kinds[name], value)
                      for name, value in data.items()})

    @property
    def enabled(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self) if getattr(self, f.name) is not None)

    def to_dict(self) -> dict:
        """The enabled techniques as ``{name: {option: value}}`` (``from_dict`` reads it)."""
        return {name: asdict(getattr(self, name)) for name in self.enabled}


def read_options(name: str, kind: type, value: Any):
    """One technique's options from YAML: ``true`` the defaults, ``false`` / ``null`` off, a
    mapping some values (numbers YAML left as strings are read as numbers)."""
    if value is None or value is False:
        return None
    if value is True:
        return kind()
    if not isinstance(value, dict):
        raise ConfigError(f"recipe.techniques.{name} must be true, false or a mapping of "
                          f"options, got {value!r}")
    defaults = {f.name: f.default for f in fields(kind)}
    for key in value:
        if key not in defaults:
            valid = ", ".join(defaults) or "none"
            raise ConfigError(f"unknown key {key!r} in recipe.techniques.{name}; valid keys: "
                              f"{valid}")
    coerced = {}
    for key, item in value.items():
        if isinstance(defaults[key], float) and isinstance(item, str):
            try:
                item = float(item)  # YAML 1.1 reads 5e-3 as a string
            except ValueError:
                raise ConfigError(f"{option_path(name, key)} must be a number, "
                                  f"got {item!r}") from None
        coerced[key] = item
    return kind(**coerced)


def techniques_class(techniques: dict[str, type[Technique]], module: str) -> type:
    """The frozen ``Techniques`` dataclass with one ``name: Options | None = None`` field per
    technique; ``module`` is where it is published (pickle finds it there)."""
    made = make_dataclass(
        "Techniques",
        [(name, f"{t.options_class.__name__} | None",
          field(default=None, metadata={"options_class": t.options_class}))
         for name, t in techniques.items()],
        bases=(TechniqueSelection,), frozen=True)
    made.__module__ = module
    return made
