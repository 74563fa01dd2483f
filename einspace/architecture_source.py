"""Where an architecture given by a user comes from: derivation text, a file holding it, or the
name of a shipped seed.

Every command and config that accepts an architecture resolves it here, so the three forms are
told apart in one order everywhere: text (it starts with ``(``), then an existing file, then a
seed name.  A file shadows a seed of the same name, as a path on a command line would.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from .derivation import Derivation
from .errors import EinspaceError
from .seeds import load_seed, seed_names, strip_comments
from .text import parse

SourceKind = Literal["text", "file", "seed", "unknown"]


def architecture_kind(spec: str, *, files: bool = True) -> SourceKind:
    """Which form ``spec`` has (``unknown`` when it has none); ``files=False`` never takes it
    for a path."""
    if spec.lstrip().startswith("("):
        return "text"
    if files and os.path.isfile(spec):  # unlike Path.is_file, False for a name too long
        return "file"
    if spec in seed_names():
        return "seed"
    return "unknown"


def resolve_architecture(spec: str, *, what: str = "architecture",
                         files: bool = True) -> Derivation:
    """The derivation ``spec`` names.  ``what`` says in errors what ``spec`` was given as (e.g.
    ``evolution.seeds[0]``); ``files=False`` is for a run's config, whose seeds must resolve
    the same from whatever directory a resumed run is started in.  Text that does not parse
    raises its :class:`~einspace.errors.ParseError`; a file's problems name the file."""
    kind = architecture_kind(spec, files=files)
    if kind == "text":
        return parse(spec)
    if kind == "file":
        return _read_file(Path(spec))
    if kind == "seed":
        return load_seed(spec)
    file_form = ", an existing file," if files else ""
    raise EinspaceError(f"{what} {spec!r} is neither architecture text{file_form} nor a seed "
                        f"name ({', '.join(seed_names())})")


def _read_file(path: Path) -> Derivation:
    try:
        return parse(strip_comments(path.read_text(encoding="utf-8")))
    except EinspaceError as e:
        raise EinspaceError(f"{path}: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EinspaceError(f"{path}: cannot be read as architecture text ({e})") from None
