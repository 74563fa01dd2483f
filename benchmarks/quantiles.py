"""The nearest-rank quantile the benchmark reports print (p90 next to the median)."""

from __future__ import annotations

from collections.abc import Iterable


def quantile(values: Iterable[float], q: float) -> float:
    """The value at rank ``q * n`` of the sorted values (the largest for ``q`` near 1): an
    observed time or size, never an interpolation between two."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
