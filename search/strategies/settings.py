"""The typed config section a strategy declares: a dataclass whose fields are the section's keys.

The field defaults are the section's defaults in every resolved config, and :meth:`check`
validates the values a config gives.  The search config reads a section through
:meth:`StrategySettings.from_section` and stores :meth:`to_section` back, so the run's
``config.yaml`` holds each key once, in field order, in its checked form."""

from __future__ import annotations

import copy
import dataclasses
from typing import TypeVar

SettingsType = TypeVar("SettingsType", bound="StrategySettings")


@dataclasses.dataclass
class StrategySettings:
    """Base of every strategy's settings; a subclass is a dataclass with a default per field."""

    @classmethod
    def defaults(cls) -> dict:
        """The section as a config with no such section resolves it."""
        return cls().to_section()

    @classmethod
    def from_section(cls: type[SettingsType], section: str, values: dict) -> SettingsType:
        """Settings from a resolved section (its keys are already known to be fields),
        checked: a bad value is a ConfigError naming ``section.key``."""
        settings = cls(**copy.deepcopy(values))
        settings.check(section)
        return settings

    def check(self, section: str) -> None:
        """Raise a ConfigError naming ``section.key`` for a bad value; may also bring a value
        to its canonical form (what the run's config then stores).  Nothing to check here."""
        del section

    def to_section(self) -> dict:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}
