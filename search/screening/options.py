"""What a strategy's ``screening:`` option says: how many candidates to propose per trial, how to
rank them, and when the learned surrogate takes over from the zero-cost proxies.

Screening is off unless asked for (``candidates: 1`` proposes one candidate and trains it, as a
search without screening does), so a config without the section behaves as before.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from einspace.errors import ConfigError
from einspace.proxies import check_proxies

from .surrogate import SURROGATES


@dataclass(frozen=True)
class ScreeningOptions:
    """How candidates are screened before one of them is trained."""

    candidates: int = 1
    """K: candidates proposed per worker slot; the best-ranked one is trained."""
    proxies: tuple[str, ...] = ("naswot", "synflow")
    """Zero-cost proxies computed per candidate: features of the surrogate, and the ranking
    while the surrogate has too few trials to learn from.  The default pair is the cheapest
    (one forward pass of the batch; one forward/backward of one input): grad_norm and jacob_cov
    each add a backward pass over the batch, about tripling the cost, and ranked recorded
    addnist_lite trials no better (benchmarks/bench_screening.py)."""
    surrogate: str = "random_forest"
    min_trials: int = 10
    """Finished trials with a score the surrogate needs before it ranks instead of the proxies."""
    batch_size: int = 16
    """Training inputs (no labels) the proxies see, drawn once per search."""

    def __post_init__(self) -> None:
        for name in ("candidates", "min_trials", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"screening.{name} must be a positive integer, got {value!r}")
        if self.batch_size < 2:
            raise ConfigError(f"screening.batch_size must be at least 2 (the proxies compare "
                              f"samples), got {self.batch_size}")
        object.__setattr__(self, "proxies", check_proxies(self.proxies))
        if self.surrogate not in SURROGATES:
            raise ConfigError(f"screening.surrogate must be one of {', '.join(SURROGATES)}, "
                              f"got {self.surrogate!r}")

    @property
    def enabled(self) -> bool:
        return self.candidates > 1

    def to_section(self) -> dict:
        """The section as the run's stored config holds it (plain YAML types)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in fields(self)}

    @classmethod
    def from_dict(cls, section: dict | None) -> ScreeningOptions:
        """Options from a config's ``screening:`` mapping (None or absent: screening off);
        ConfigError for unknown keys or bad values."""
        if section is None:
            return cls()
        if not isinstance(section, dict):
            raise ConfigError(f"screening must be a mapping, got {section!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f"unknown screening keys {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(known))}")
        return cls(**section)
