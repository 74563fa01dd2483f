"""Seed architectures shipped with the package as derivation text (``blocks/seeds/*.arch``).

Each file is indented text of one derivation; the name of the file is the seed's name.  Seeds are
written with shape-relative terminals where needed, so they adapt to any input shape they fit.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from .derivation import Derivation
from .errors import EinspaceError
from .text import parse


def _files():
    return resources.files("einspace.blocks").joinpath("seeds")


def seed_names() -> list[str]:
    """Names of the shipped seeds, sorted."""
    return sorted(f.name[: -len(".arch")] for f in _files().iterdir() if f.name.endswith(".arch"))


@lru_cache(maxsize=None)
def load_seed(name: str) -> Derivation:
    """The derivation of the shipped seed ``name``."""
    file = _files().joinpath(f"{name}.arch")
    if not file.is_file():
        raise EinspaceError(f"unknown seed {name!r}; shipped seeds: {', '.join(seed_names())}")
    return parse(strip_comments(file.read_text()))


def strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())
