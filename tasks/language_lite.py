"""``language_lite``: which language are these four words from?  (Unseen NAS "Language".)

The source is the word-frequency lists that ship inside the ``pyspellchecker`` wheel
(``spellchecker/resources/<code>.json.gz``), read at generation time so no derived word data is
vendored.  The recipe follows the published Language dataset: keep lowercase six-letter words over
the letters ``a``...``x`` (``y``, ``z``, capitals and diacritics are dropped), remove every word
that occurs in more than one language, split each language's vocabulary 70/30 into a train word set
and an evaluation word set, and make each example from four words drawn with replacement from one
language's set.  The 24 letters are one-hot encoded into a 1x24x24 image (row = position 0..23,
column = letter a..x).

Train words never appear in valid or test (valid and test share the evaluation word set), so a
network cannot pass by memorising words: it must learn letter and bigram statistics at
word-aligned positions.  There is no spatial locality along the letter axis, which is what makes
the task "unseen" for image architectures (a Conv1d over the 24 positions beats MLPs and 2-D
convolutions).  ``pyspellchecker`` has nine Latin-script languages, so there are nine classes
(the original has ten, with Finnish, Swahili and Zulu, none of which ship offline).
"""

from __future__ import annotations

import gzip
import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from .data import CLASSIFICATION, Split, TaskData
from .provenance import SourceDigest
from .registry import TaskError, TaskSpec, register_task, split_sizes

NAME = "language_lite"
INSTALL = "pip install pyspellchecker"
# Latin-script lists in pyspellchecker, in label order (alphabetical by ISO 639-1 code).
LANGUAGES = ("de", "en", "es", "eu", "fr", "it", "lv", "nl", "pt")
ALPHABET = "abcdefghijklmnopqrstuvwx"
WORD_LENGTH = 6
WORDS_PER_EXAMPLE = 4
SEQUENCE = WORD_LENGTH * WORDS_PER_EXAMPLE  # 24 letter positions
TRAIN_FRACTION = 0.7
SIZES = {"default": (10_000, 2_000, 2_000), "small": (360, 180, 180)}
_WORD = re.compile(f"^[{ALPHABET[0]}-{ALPHABET[-1]}]{{{WORD_LENGTH}}}$")


def resource_dir() -> Path:
    """The directory of pyspellchecker's packaged word lists; TaskError when not installed."""
    try:
        import spellchecker
    except ImportError:
        raise TaskError(f"task {NAME!r} needs the pyspellchecker word lists; install them with "
                        f"`{INSTALL}`") from None
    directory = Path(spellchecker.__file__).resolve().parent / "resources"
    missing = [c for c in LANGUAGES if not (directory / f"{c}.json.gz").is_file()]
    if missing:
        raise TaskError(f"task {NAME!r}: pyspellchecker at {directory} lacks the word lists "
                        f"{', '.join(missing)}; reinstall it with `{INSTALL}`")
    return directory


def read_vocabularies() -> tuple[dict[str, tuple[str, ...]], str]:
    """Each language's usable words (sorted, unique to that language) and a sha256 of the files.

    A word is usable when it is six letters from ``a``...``x`` and lowercase in the list; words
    found in two or more languages are removed from all of them, since their label is ambiguous.
    Reading takes about a second, so the result is cached per resource directory.
    """
    return _read_vocabularies(resource_dir())


@lru_cache(maxsize=2)
def _read_vocabularies(directory: Path) -> tuple[dict[str, tuple[str, ...]], str]:
    digest = SourceDigest()
    candidates: dict[str, set[str]] = {}
    for code in LANGUAGES:
        raw = digest.add_file(code, directory / f"{code}.json.gz")
        words = json.loads(gzip.decompress(raw).decode("utf-8"))
        candidates[code] = {w for w in words if _WORD.match(w)}
    seen: dict[str, int] = {}
    for words in candidates.values():
        for w in words:
            seen[w] = seen.get(w, 0) + 1
    vocab = {code: tuple(sorted(w for w in words if seen[w] == 1))
             for code, words in candidates.items()}
    return vocab, digest.hexdigest()


def split_vocabularies(vocab: dict[str, tuple[str, ...]], rng: np.random.RandomState
                       ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per language, a random 70 % of the words for train and the other 30 % for valid/test."""
    train, held_out = {}, {}
    for code in LANGUAGES:
        words = vocab[code]
        order = rng.permutation(len(words))
        cut = int(round(TRAIN_FRACTION * len(words)))
        train[code] = sorted(words[i] for i in order[:cut])
        held_out[code] = sorted(words[i] for i in order[cut:])
    return train, held_out


def encode(words: list[str]) -> np.ndarray:
    """Four six-letter words as a 1x24x24 one-hot image: row = position, column = letter."""
    text = "".join(words)
    x = np.zeros((1, SEQUENCE, len(ALPHABET)), dtype=np.float32)
    x[0, np.arange(SEQUENCE), [ALPHABET.index(c) for c in text]] = 1.0
    return x


def sample_split(words: dict[str, list[str]], n: int, rng: np.random.RandomState
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` balanced examples (class counts differ by at most one), their labels, and the word
    indices used, as (n, 4) rows into the concatenated vocabulary (kept for the tests)."""
    labels = np.arange(n, dtype=np.int64) % len(LANGUAGES)
    rng.shuffle(labels)
    # Letters as integer codes per language: (words, 6) arrays make encoding vectorised.
    codes = {c: np.array([[ALPHABET.index(ch) for ch in w] for w in words[c]], dtype=np.int64)
             for c in LANGUAGES}
    picks = np.empty((n, WORDS_PER_EXAMPLE), dtype=np.int64)
    letters = np.empty((n, SEQUENCE), dtype=np.int64)
    for k, code in enumerate(LANGUAGES):
        rows = np.flatnonzero(labels == k)
        chosen = rng.randint(0, len(words[code]), size=(len(rows), WORDS_PER_EXAMPLE))
        picks[rows] = chosen
        letters[rows] = codes[code][chosen].reshape(len(rows), SEQUENCE)
    x = np.zeros((n, 1, SEQUENCE, len(ALPHABET)), dtype=np.float32)
    x[np.arange(n)[:, None], 0, np.arange(SEQUENCE)[None, :], letters] = 1.0
    return x, labels, picks


def decode(x: np.ndarray) -> list[str]:
    """The four words of one encoded example (inverse of :func:`encode`)."""
    text = "".join(ALPHABET[i] for i in np.asarray(x).reshape(SEQUENCE, len(ALPHABET)).argmax(1))
    return [text[i:i + WORD_LENGTH] for i in range(0, SEQUENCE, WORD_LENGTH)]


def make_language(seed: int, size: str = "default") -> TaskData:
    """The ``language_lite`` splits for ``seed`` (deterministic; a private RandomState)."""
    n_train, n_valid, n_test = split_sizes(SIZES, size)
    vocab, source_sha = read_vocabularies()
    rng = np.random.RandomState(seed)
    train_words, eval_words = split_vocabularies(vocab, rng)
    splits = {}
    for name, words, n in (("train", train_words, n_train), ("valid", eval_words, n_valid),
                           ("test", eval_words, n_test)):
        x, y, _ = sample_split(words, n, rng)
        splits[name] = Split(x, y)
    metadata = {
        "codename": NAME, "task_type": CLASSIFICATION, "n_classes": len(LANGUAGES),
        "labels": list(LANGUAGES), "alphabet": ALPHABET, "source_sha256": source_sha,
        "source_files": [f"spellchecker/resources/{c}.json.gz" for c in LANGUAGES],
        "vocabulary_sizes": {c: len(vocab[c]) for c in LANGUAGES},
        "train_words": {c: len(train_words[c]) for c in LANGUAGES},
        "eval_words": {c: len(eval_words[c]) for c in LANGUAGES},
    }
    return TaskData(NAME, (1, SEQUENCE, len(ALPHABET)), CLASSIFICATION, splits,
                    num_classes=len(LANGUAGES), metadata=metadata)


register_task(TaskSpec(
    name=NAME,
    description=("Language identification: four six-letter words from one of nine languages, "
                 "one-hot encoded as 1x24x24 (position x letter); train and valid/test words "
                 "come from disjoint vocabularies."),
    mirrors="Unseen NAS Language (Geada et al., CVPR 2024)",
    input_shape=(1, SEQUENCE, len(ALPHABET)),
    task_type=CLASSIFICATION,
    metric="accuracy",
    source="pyspellchecker",
    install=INSTALL,
    version="1",
    generator=make_language,
    num_classes=len(LANGUAGES),
))
