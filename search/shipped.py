"""The search configs shipped in ``search/configs/``, usable by name (``--config quickstart``).

Kept apart from :mod:`einspace.search.config`, which imports the grammar and the recipe, so that
``einspace search --help`` can list the names without importing nltk or torch.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED = Path(__file__).parent / "configs"


def shipped_names() -> list[str]:
    """The names of the shipped configs, sorted."""
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))
