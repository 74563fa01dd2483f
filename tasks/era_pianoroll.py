"""T8 ``era_pianoroll``: which era is this stretch of music from?  (Unseen NAS "Isabella".)

Isabella classifies recordings by era (Baroque, Classical, Romantic, 20th century) from 1x64x128
spectrograms and was never released.  This stand-in keeps the question and the shape but reads
scores instead of audio: the corpus that ships inside the ``music21`` wheel, parsed at generation
time, so the task builds offline and no music data is vendored.

Classes, in chronological order (the corpus has too little Romantic or 20th-century music, so the
five eras it covers with at least 24 works each take their place):

0. ``medieval``: Italian Trecento mass movements, madrigals and ballate (``trecento``, 96 works);
1. ``renaissance``: Palestrina masses (``palestrina``, 106 masses);
2. ``early_baroque``: Monteverdi madrigals, books 3-5 (``monteverdi``, 48);
3. ``late_baroque``: Bach four-part chorales (``bach``, 400);
4. ``classical``: Haydn and Mozart string-quartet movements (24; the corpus's Beethoven quartets
   are left out: they take 1-10 s each to parse, and all but op. 18 no. 1 are middle or late
   Beethoven rather than Classical).

All five are polyphonic ensemble music (folk tunes would be separable by voice count alone).  The
corpus is very unbalanced (1,318 Palestrina files, 24 quartet movements), so each class uses the
same number of works, :data:`PIECES` (24 by default: a first build parses 120 scores, about 25 s
of CPU), and gets exactly the same number of windows per split.

A *work* groups the files that are versions of one piece (Bach's alternative harmonisations such
as ``bwv248.23-2``/``-s``, the Trecento ``a``/``b`` editions and ``_bak`` copies) or share its
material (the movements and sections of one Palestrina mass); one file represents each work.
Works are taken in a fixed hash order (not the seed), so one build fills the parse cache for every
seed; the seed assigns them to splits (about 70/15/15), so no work reaches two splits.

Each score becomes a piano roll on a 16th-note grid (triplets are rounded) with values 1.0 at a
note's onset, 0.5 while it sounds and 0 in silence, so repeated notes stay distinguishable.  A
window is 128 steps (eight 4/4 bars) of MIDI pitches 30-93 (row 0 = F#1), cut at a random offset
and transposed by a random -6..+5 semitones, which removes absolute key as a cue (notes pushed out
of range are dropped).  What is left is texture: voice count and spacing, rhythmic density,
cadence and counterpoint patterns over long time spans.

Parsing costs 0.05-1 s per score, so the notes of every parsed file are cached as a ``.npz`` under
``$EINSPACE_CACHE`` (or ``~/.cache/einspace``) in ``pianoroll/music21-<version>-<grid>``, checked
against the sha256 of the file; a warm build takes a few seconds.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import CLASSIFICATION, Split, TaskData
from .provenance import SourceDigest, file_sha256
from .registry import TaskError, TaskSpec, default_root, register_task, split_sizes

NAME = "era_pianoroll"
INSTALL = "pip install music21"
STEPS_PER_QUARTER = 4
WINDOW = 128
LOWEST = 30  # MIDI F#1; row r is pitch LOWEST + r
N_PITCHES = 64
TRANSPOSE = (-6, 5)  # inclusive range of semitone shifts
INPUT_SHAPE = (1, N_PITCHES, WINDOW)
HELD_OUT = 0.15  # fraction of a class's works in valid, and again in test
SIZES: dict[str, tuple[int, int, int]] = {"default": (6000, 1000, 1000), "small": (200, 100, 100)}
PIECES = {"default": 24, "small": 3}  # works per class (fewer where the corpus has fewer)
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Era:
    """One class: corpus files (glob under ``music21/corpus``), and ``work``, a regex whose group
    ``work`` names the file's work (files it does not fully match are not used); matches of
    ``variant`` are removed from that name, so editions of one piece share it."""

    name: str
    glob: str
    work: str
    variant: str = ""


ERAS = (
    Era("medieval", "trecento/*.xml", r"trecento/(?P<work>.+?)(?:_bak)?\.xml",
        variant=r"(?<=\d)[ab]\b| [ab]$"),
    Era("renaissance", "palestrina/*.krn", r"palestrina/[A-Za-z_]+?_(?P<work>\d+)(?:_[a-z])?\.krn"),
    Era("early_baroque", "monteverdi/*.mxl", r"monteverdi/(?P<work>madrigal\.\d+\.\d+)\.mxl"),
    Era("late_baroque", "bach/*.mxl", r"bach/(?P<work>bwv\d+(?:\.\d+)?)(?:-\w+)?\.mxl"),
    Era("classical", "*/*/movement*.mxl", r"(?P<work>(?:haydn|mozart)/[^/]+/movement\d+)\.mxl"),
)
LABELS = tuple(era.name for era in ERAS)


@dataclass(frozen=True)
class Piece:
    """One parsed score: its corpus path, era index, work name and 16th-note piano roll."""

    path: str
    label: int
    work: str
    roll: np.ndarray  # uint8 (128 MIDI pitches, steps): 0 silent, 1 sounding, 2 onset

    @property
    def steps(self) -> int:
        return self.roll.shape[1]


def corpus_dir() -> tuple[Path, str]:
    """music21's corpus directory and the music21 version; TaskError when it is not installed."""
    try:
        import music21
    except ImportError:
        raise TaskError(f"task {NAME!r} needs the music21 score corpus; install it with "
                        f"`{INSTALL}`") from None
    directory = Path(music21.__file__).resolve().parent / "corpus"
    if not directory.is_dir():
        raise TaskError(f"task {NAME!r}: music21 at {directory.parent} has no corpus; reinstall "
                        f"it with `{INSTALL}`")
    return directory, music21.__version__


def cache_dir(version: str) -> Path:
    """Where parsed notes are kept: ``<einspace cache>/pianoroll/music21-<version>-<grid>``."""
    return default_root().parent / "pianoroll" / f"music21-{version}-{STEPS_PER_QUARTER}perquarter"


def works(era: Era, corpus: Path) -> list[tuple[str, str]]:
    """(work, representative file) for every work of ``era`` in a fixed, seed-independent order.

    Both the order of the works and the file that represents each are by sha256 of the name, so
    that (say) Palestrina is not represented by Agnus Dei movements only, the first by name."""
    pattern, variant = re.compile(era.work), re.compile(era.variant)
    first: dict[str, str] = {}
    for path in sorted((p.relative_to(corpus).as_posix() for p in corpus.glob(era.glob)),
                       key=_scramble):
        match = pattern.fullmatch(path)
        if match:
            work = variant.sub("", match["work"])
            first.setdefault(work, path)
    return sorted(first.items(), key=lambda item: _scramble(f"{era.name}/{item[0]}"))


def _scramble(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def parse_notes(path: Path) -> np.ndarray:
    """The notes of one score as int32 rows (MIDI pitch, start step, end step, is onset).

    Grace notes (no duration) are dropped; a note tied from the previous one is not an onset."""
    from music21 import converter

    parser = converter.Converter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # music21 warns about overfull bars it then repairs
        parser.parseFileNoPickle(path)
    rows = []
    for note in parser.stream.flatten().notes:
        length = float(note.quarterLength)
        if length <= 0:
            continue
        start = round(float(note.offset) * STEPS_PER_QUARTER)
        end = max(start + 1, round((float(note.offset) + length) * STEPS_PER_QUARTER))
        onset = note.tie is None or note.tie.type == "start"
        rows.extend((p.midi, start, end, onset) for p in note.pitches)
    return np.array(rows, dtype=np.int32).reshape(-1, 4)


def cached_notes(path: Path, name: str, cache: Path) -> tuple[np.ndarray, str]:
    """The notes of the file at ``path`` and its sha256, from the cache when the hash matches."""
    digest = file_sha256(path)
    stored = cache / (name.replace("/", "__") + ".npz")
    if stored.is_file():
        with np.load(stored) as saved:
            if str(saved["sha256"]) == digest:
                return saved["notes"], digest
    notes = parse_notes(path)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache, suffix=".tmp", delete=False) as out:
            np.savez(out, notes=notes, sha256=np.array(digest))
        os.replace(out.name, stored)  # atomic: concurrent builds never read a partial file
    except OSError:
        pass  # a read-only cache only costs speed
    return notes, digest


def piano_roll(notes: np.ndarray) -> np.ndarray:
    """uint8 (128, steps) roll of ``notes``: 2 at onsets, 1 while a note sounds, else 0."""
    steps = int(notes[:, 2].max()) if len(notes) else 0
    change = np.zeros((128, steps + 1), dtype=np.int32)
    np.add.at(change, (notes[:, 0], notes[:, 1]), 1)
    np.add.at(change, (notes[:, 0], notes[:, 2]), -1)
    roll = (np.cumsum(change, axis=1)[:, :steps] > 0).astype(np.uint8)
    onsets = notes[notes[:, 3] == 1]
    roll[onsets[:, 0], onsets[:, 1]] = 2
    return roll


def window(piece: Piece, offset: int, shift: int) -> np.ndarray:
    """The 1x64x128 float32 window of ``piece`` at step ``offset``, transposed by ``shift``."""
    rows = piece.roll[LOWEST - shift:LOWEST - shift + N_PITCHES, offset:offset + WINDOW]
    return (rows.astype(np.float32) / 2)[None]


def load_pieces(size: str) -> tuple[list[Piece], str, str]:
    """Each era's first ``PIECES[size]`` works (in :func:`works` order) that last at least one
    window, with the sha256 of their files and the music21 version."""
    corpus, version = corpus_dir()
    cache = cache_dir(version)
    pieces, digest = [], SourceDigest()
    for label, era in enumerate(ERAS):
        taken = 0
        for work, path in works(era, corpus):
            if taken == PIECES[size]:
                break
            notes, file_sha = cached_notes(corpus / path, path, cache)
            roll = piano_roll(notes)
            if roll.shape[1] >= WINDOW:
                pieces.append(Piece(path, label, work, roll))
                digest.add(path, f"{file_sha}\n".encode())
                taken += 1
        if taken < 3:
            raise TaskError(f"task {NAME!r}: the music21 {version} corpus has {taken} usable "
                            f"{era.name} works at {corpus}, fewer than the 3 splits need")
    return pieces, digest.hexdigest(), version


def assign_splits(pieces: list[Piece], rng: np.random.RandomState) -> dict[str, list[int]]:
    """Per split, indices into ``pieces``: each era's works are shuffled and ~15 % (at least one)
    go to valid, as many to test, the rest to train."""
    splits: dict[str, list[int]] = {name: [] for name in SPLITS}
    for label in range(len(ERAS)):
        members = np.flatnonzero([p.label == label for p in pieces])
        members = members[rng.permutation(len(members))]
        held = max(1, int(round(HELD_OUT * len(members))))
        splits["valid"].extend(members[:held].tolist())
        splits["test"].extend(members[held:2 * held].tolist())
        splits["train"].extend(members[2 * held:].tolist())
    return splits


def sample_windows(pieces: list[Piece], members: list[int], n: int, rng: np.random.RandomState
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` windows, ``n / 5`` per era, the era's pieces in turn, each at a random offset and
    shift; returns x, y and (n, 3) rows (piece index, offset, shift), all in shuffled order."""
    per_class = n // len(ERAS)
    chosen = []
    for label in range(len(ERAS)):
        own = np.array([i for i in members if pieces[i].label == label])
        index = own[np.arange(per_class) % len(own)]
        offsets = rng.randint(0, np.array([pieces[i].steps - WINDOW + 1 for i in index]))
        shifts = rng.randint(TRANSPOSE[0], TRANSPOSE[1] + 1, size=per_class)
        chosen.append(np.stack([index, offsets, shifts], axis=1))
    where = np.concatenate(chosen)[rng.permutation(per_class * len(ERAS))]
    x = np.empty((len(where), *INPUT_SHAPE), dtype=np.float32)
    for row, (i, offset, shift) in enumerate(where):
        x[row] = window(pieces[i], offset, shift)
    y = np.array([pieces[i].label for i in where[:, 0]], dtype=np.int64)
    return x, y, where


def generate(seed: int, size: str = "default") -> tuple[TaskData, dict]:
    """The task's data plus its provenance: ``pieces`` (every used :class:`Piece`) and, per split,
    ``<split>_windows`` (N, 3) rows of (piece index, offset, shift) -- what the tests check."""
    counts = split_sizes(SIZES, size)
    pieces, source_sha, version = load_pieces(size)
    rng = np.random.RandomState(seed)
    members = assign_splits(pieces, rng)
    splits, sources = {}, {"pieces": pieces}
    for name, n in zip(SPLITS, counts, strict=True):
        x, y, where = sample_windows(pieces, members[name], n, rng)
        splits[name] = Split(x, y)
        sources[f"{name}_windows"] = where
    metadata = {
        "codename": NAME, "task_type": CLASSIFICATION, "n_classes": len(ERAS),
        "labels": list(LABELS), "source_sha256": source_sha, "music21_version": version,
        "works": {era.name: era.work for era in ERAS}, "steps_per_quarter": STEPS_PER_QUARTER,
        "lowest_midi": LOWEST, "transpose": list(TRANSPOSE),
        "values": {"onset": 1.0, "sounding": 0.5, "silent": 0.0},
        "pieces": {name: {era.name: sorted(pieces[i].path for i in members[name]
                                           if pieces[i].label == label)
                          for label, era in enumerate(ERAS)} for name in SPLITS},
    }
    data = TaskData(NAME, INPUT_SHAPE, CLASSIFICATION, splits, num_classes=len(ERAS),
                    metadata=metadata)
    return data, sources


def make_era_pianoroll(seed: int, size: str = "default") -> TaskData:
    """The ``era_pianoroll`` splits for ``seed`` (deterministic; a private RandomState)."""
    return generate(seed, size)[0]


register_task(TaskSpec(
    name=NAME,
    description=("Era classification: 128 16th-note steps x 64 pitches of a music21 corpus score "
                 "(Trecento, Palestrina, Monteverdi, Bach chorales, Haydn/Mozart quartets), "
                 "randomly transposed, as a 1x64x128 piano roll; splits hold disjoint works."),
    mirrors="Unseen NAS Isabella (Geada et al., CVPR 2024)",
    input_shape=INPUT_SHAPE,
    task_type=CLASSIFICATION,
    metric="accuracy",
    source="music21 (corpus)",
    install=INSTALL,
    version="1",
    generator=make_era_pianoroll,
    num_classes=len(ERAS),
))
