"""The sha256 a generated task records as ``source_sha256``: which source files it was made from.

Every built-in task reads its raw material from an installed package or a data directory and
stores a digest of it in its metadata, so a built copy says exactly what it came from.  The
digests are defined here once; their byte layout is what earlier builds recorded, so the
metadata of a task built before and after this module existed is the same.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """sha256 of one file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def package_file_sha256(package: str, name: str) -> str:
    """sha256 of a data file shipped inside an installed package."""
    return hashlib.sha256((resources.files(package) / name).read_bytes()).hexdigest()


class SourceDigest:
    """A sha256 over named parts, each fed as ``name NUL bytes``, in the order they are added.

    Naming each part makes the digest change when a file is renamed or the parts are reordered,
    not only when a file's bytes change."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def add(self, name: str, raw: bytes) -> bytes:
        """Feed one part; returns ``raw`` so a caller can hash and use it in one step."""
        self._sha.update(name.encode() + b"\0" + raw)
        return raw

    def add_file(self, name: str, path: str | Path) -> bytes:
        """Feed a file's bytes under ``name``; returns them."""
        return self.add(name, Path(path).read_bytes())

    def hexdigest(self) -> str:
        return self._sha.hexdigest()
