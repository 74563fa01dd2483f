"""``gutenberg_lite``: which text is this three-word phrase from?  (Unseen NAS "Gutenberg".)

The original asks which of six Project Gutenberg authors wrote a phrase of three consecutive
words.  Those texts ship in no package, so the built-in task uses six topical categories of the
Debian ``fortunes`` package (``/usr/share/games/fortunes/<category>``, read at generation time so
nothing derived is vendored) as its "authors": the six with the most usable phrases.
:func:`make_from_texts` applies the same recipe to your own text files, one per class (e.g. the
original 18 Project Gutenberg books merged per author).

Recipe (re-implemented from the published description): lowercase, every character outside
``a``...``z`` is a word separator, and a phrase is three consecutive words of 3-6 letters each.
Phrases never cross a fortune separator (a ``%`` line), a blank line, an attribution line
(``-- author``) or an all-caps line (titles), and a word of another length breaks the run.
Phrases found in more than one class are removed, since their label is ambiguous.  Each word is
right-padded with ``_`` to six characters and the 18 characters are one-hot encoded as 1x27x18
(row = symbol ``a``...``z``, ``_``; column = position), the original's layout.

Splits are by phrase: each class's sorted unique phrases are shuffled with the task seed and cut
into 1,500 train, 250 valid and 250 test phrases (the "small" size takes a prefix of each), so no
phrase occurs twice in the task.  Words do recur across splits, as in the original: the signal is
sparse lexical identity, which rewards word-aligned 1-D processing and embedding-like first
layers over 2-D convolutions (the original is the hardest Unseen NAS task: best about 50 %,
chance 17 %).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np

from .data import CLASSIFICATION, Split, TaskData
from .provenance import SourceDigest
from .registry import TaskError, TaskSpec, register_task, split_sizes

NAME = "gutenberg_lite"
INSTALL = "apt-get install -y fortunes"
SOURCE_DIR = Path("/usr/share/games/fortunes")
# The six fortune categories with the most unique phrases, in label order (alphabetical).
CATEGORIES = ("computers", "cookie", "definitions", "men-women", "people", "songs-poems")
SYMBOLS = "abcdefghijklmnopqrstuvwxyz_"
WORD_LENGTHS = range(3, 7)
WORDS_PER_PHRASE = 3
PHRASE_LENGTH = max(WORD_LENGTHS) * WORDS_PER_PHRASE  # 18 character positions
INPUT_SHAPE = (1, len(SYMBOLS), PHRASE_LENGTH)
# Phrases per class (train, valid, test); "small" takes a prefix of each default split.
SIZES: dict[str, tuple[int, int, int]] = {"default": (1500, 250, 250), "small": (60, 20, 20)}
_SEPARATOR = re.compile(f"[^{SYMBOLS[0]}-{SYMBOLS[-2]}]+")
_ATTRIBUTION = re.compile(r"^\s*--")


def phrases(text: str) -> set[str]:
    """The distinct phrases of ``text``, each as its 18-character ``_``-padded string."""
    found: set[str] = set()
    run: list[str] = []  # the current run of consecutive usable words
    for line in text.splitlines():
        stripped = line.strip()
        letters = sum(c.isalpha() for c in line)
        if stripped in ("", "%") or _ATTRIBUTION.match(line) or (letters > 1 and line.isupper()):
            run = []
            continue
        for word in _SEPARATOR.split(line.lower()):
            if not word:
                continue
            if len(word) not in WORD_LENGTHS:
                run = []
                continue
            run.append(word.ljust(max(WORD_LENGTHS), "_"))
            if len(run) >= WORDS_PER_PHRASE:
                found.add("".join(run[-WORDS_PER_PHRASE:]))
    return found


def unique_phrases(texts: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """Per class, its sorted phrases that occur in no other class."""
    found = {label: phrases(text) for label, text in texts.items()}
    seen = Counter(p for group in found.values() for p in group)
    return {label: tuple(sorted(p for p in group if seen[p] == 1))
            for label, group in found.items()}


def source_dir() -> Path:
    """The fortunes directory; TaskError naming the install command when a category is absent."""
    missing = [c for c in CATEGORIES if not (SOURCE_DIR / c).is_file()]
    if missing:
        raise TaskError(f"task {NAME!r} needs the Debian fortunes files ({', '.join(missing)} "
                        f"missing in {SOURCE_DIR}); install them with `{INSTALL}`")
    return SOURCE_DIR


def read_phrases() -> tuple[dict[str, tuple[str, ...]], str]:
    """Each category's unique phrases and a sha256 of the category files (cached per directory)."""
    return _read_phrases(source_dir())


@lru_cache(maxsize=2)
def _read_phrases(directory: Path) -> tuple[dict[str, tuple[str, ...]], str]:
    digest = SourceDigest()
    texts = {}
    for category in CATEGORIES:
        raw = digest.add_file(category, directory / category)
        texts[category] = raw.decode("utf-8", errors="replace")
    return unique_phrases(texts), digest.hexdigest()


def encode(batch: list[str]) -> np.ndarray:
    """Phrases as (N, 1, 27, 18) float32 one-hot images: row = symbol, column = position."""
    codes = np.array([[SYMBOLS.index(c) for c in p] for p in batch], dtype=np.int64)
    x = np.zeros((len(batch), *INPUT_SHAPE), dtype=np.float32)
    x[np.arange(len(batch))[:, None], 0, codes, np.arange(PHRASE_LENGTH)[None, :]] = 1.0
    return x


def decode(x: np.ndarray) -> str:
    """The 18-character phrase of one encoded example (inverse of :func:`encode`)."""
    return "".join(SYMBOLS[i] for i in np.asarray(x).reshape(INPUT_SHAPE[1:]).argmax(0))


def build(name: str, by_class: Mapping[str, tuple[str, ...]], seed: int, size: str,
          metadata: dict) -> TaskData:
    """The phrase-disjoint, class-balanced splits of ``by_class`` for ``seed`` and ``size``."""
    counts = split_sizes(SIZES, size)
    per_class = SIZES["default"]
    short = {label: len(group) for label, group in by_class.items()
             if len(group) < sum(per_class)}
    if short:
        raise TaskError(f"task {name!r} needs {sum(per_class)} unique phrases per class; too few "
                        f"in {', '.join(f'{label} ({n})' for label, n in short.items())}")
    rng = np.random.RandomState(seed)
    cuts = np.cumsum((0, *per_class))
    chosen: dict[str, list[str]] = {split: [] for split in ("train", "valid", "test")}
    labels: dict[str, list[int]] = {split: [] for split in chosen}
    for k, group in enumerate(by_class.values()):
        order = rng.permutation(len(group))
        for s, (split, n) in enumerate(zip(chosen, counts, strict=True)):
            chosen[split] += [group[i] for i in order[cuts[s]:cuts[s] + n]]
            labels[split] += [k] * n
    splits = {}
    for split, batch in chosen.items():
        order = rng.permutation(len(batch))
        splits[split] = Split(encode([batch[i] for i in order]),
                              np.asarray(labels[split], dtype=np.int64)[order])
    metadata = {"codename": name, "task_type": CLASSIFICATION, "n_classes": len(by_class),
                "labels": list(by_class), "symbols": SYMBOLS,
                "unique_phrases": {label: len(group) for label, group in by_class.items()},
                **metadata}
    return TaskData(name, INPUT_SHAPE, CLASSIFICATION, splits, num_classes=len(by_class),
                    metadata=metadata)


def make_gutenberg(seed: int, size: str = "default") -> TaskData:
    """The ``gutenberg_lite`` splits for ``seed`` (deterministic; a private RandomState)."""
    by_class, source_sha = read_phrases()
    return build(NAME, by_class, seed, size, {
        "source_sha256": source_sha,
        "source_files": [str(SOURCE_DIR / c) for c in CATEGORIES]})


def make_from_texts(files: Mapping[str, str | Path], seed: int = 0,
                    size: str = "default", name: str = "gutenberg_texts") -> TaskData:
    """The same recipe on your own UTF-8 text files, one per class, labelled in ``files`` order.

    Each class needs 2,000 unique phrases (about 200 KB of prose).  Boilerplate shared by all
    files (a Project Gutenberg licence) is removed by the uniqueness rule, but strip per-book
    headers if you want none of them.  Write the result with
    ``einspace.tasks.unseen_nas.write_unseen_nas`` and load it as ``unseen:/that/dir``.
    """
    digest = SourceDigest()
    texts = {}
    for label, path in files.items():
        raw = digest.add_file(label, path)
        texts[label] = raw.decode("utf-8", errors="replace")
    return build(name, unique_phrases(texts), seed, size, {
        "source_sha256": digest.hexdigest(),
        "source_files": [str(path) for path in files.values()]})


register_task(TaskSpec(
    name=NAME,
    description=("Source identification: a phrase of three 3-6-letter words from one of six "
                 "Debian fortunes categories, one-hot encoded as 1x27x18 (symbol x position); "
                 "no phrase occurs in two classes or two splits."),
    mirrors="Unseen NAS Gutenberg (Geada et al., CVPR 2024)",
    input_shape=INPUT_SHAPE,
    task_type=CLASSIFICATION,
    metric="accuracy",
    source="Debian fortunes (/usr/share/games/fortunes)",
    install=INSTALL,
    version="1",
    generator=make_gutenberg,
    num_classes=len(CATEGORIES),
))
