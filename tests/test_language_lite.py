"""language_lite: deterministic, word-disjoint splits from pyspellchecker's lists, the Unseen-NAS
file round trip, a clear missing-source error, and a tiny network that learns the task."""

from __future__ import annotations

import importlib.util
import sys
import time

import numpy as np
import pytest
from task_checks import checksum

import einspace
from einspace.tasks.data import CLASSIFICATION
from einspace.tasks.language_lite import (
    ALPHABET,
    INSTALL,
    LANGUAGES,
    NAME,
    decode,
    encode,
    make_language,
    read_vocabularies,
)
from einspace.tasks.recipe import Recipe
from einspace.tasks.registry import TaskError, get_task
from einspace.tasks.trainer import train

needs_source = pytest.mark.skipif(importlib.util.find_spec("spellchecker") is None,
                                  reason=f"pyspellchecker is not installed ({INSTALL})")

# sha256 of make_language(0, "small") for the pyspellchecker 0.9.1 word lists (whose sha256 is
# KNOWN_SOURCE); another release of the lists legitimately changes the data, so it is only
# compared when the source matches.
KNOWN_SOURCE = "9602c3c8a31fd2ee89fb73c950ce23e52d4c7ebbf16c0768e766e364fcc363eb"
KNOWN_SMALL = "92e3f3e8b52414d1666e633686eeaca342a22afa9a6b9f4b42efe65594280843"


def words_of(x: np.ndarray) -> set[str]:
    return {w for row in x for w in decode(row)}


@pytest.fixture(scope="module")
def small():
    return make_language(0, "small")


@needs_source
def test_same_seed_same_arrays_other_seed_different(small):
    assert checksum(make_language(0, "small")) == checksum(small)
    assert checksum(make_language(1, "small")) != checksum(small)


@needs_source
def test_checksum(small):
    if small.metadata["source_sha256"] != KNOWN_SOURCE:
        pytest.skip("a different release of the pyspellchecker word lists")
    assert checksum(small) == KNOWN_SMALL


@needs_source
def test_shapes_types_and_balance(small):
    assert small.input_shape == (1, 24, 24) and small.num_classes == len(LANGUAGES) == 9
    assert small.task_type == CLASSIFICATION
    for name, n in (("train", 360), ("valid", 180), ("test", 180)):
        split = small.split(name)
        assert split.x.shape == (n, 1, 24, 24) and split.x.dtype == np.float32
        assert split.y.shape == (n,) and split.y.dtype == np.int64
        assert (split.x.sum(axis=3) == 1).all()  # one letter per position
        counts = np.bincount(split.y, minlength=9)
        assert counts.max() - counts.min() <= 1
    meta = small.metadata
    assert meta["labels"] == sorted(LANGUAGES) and meta["codename"] == NAME
    assert len(meta["source_sha256"]) == 64 and meta["n_classes"] == 9


@needs_source
def test_train_and_eval_words_are_disjoint_and_belong_to_their_language(small):
    train_words = words_of(small.split("train").x)
    eval_words = words_of(small.split("valid").x) | words_of(small.split("test").x)
    assert train_words and eval_words and not train_words & eval_words
    vocab, _ = read_vocabularies()
    owner = {w: code for code, words in vocab.items() for w in words}
    assert len(owner) == sum(len(words) for words in vocab.values())  # no shared words
    for name in ("train", "valid", "test"):
        split = small.split(name)
        for x, y in zip(split.x, split.y, strict=True):
            assert {owner[w] for w in decode(x)} == {LANGUAGES[y]}
    # The full-size split uses the same vocabulary cut: no train word in valid/test there either.
    big = make_language(0, "default")
    assert not words_of(big.split("train").x) & (words_of(big.split("valid").x)
                                                 | words_of(big.split("test").x))


def test_encode_decode_round_trip():
    words = ["abcdef", "uvwxab", "langue", "prueba"]
    x = encode(words)
    assert x.shape == (1, 24, 24) and decode(x) == words
    assert x[0, 0, ALPHABET.index("a")] == 1 and x.sum() == 24


def test_spec_is_registered():
    spec = get_task(NAME)
    assert spec.install == INSTALL and spec.metric == "accuracy" and spec.num_classes == 9
    assert spec.input_shape == (1, 24, 24) and spec.generator is make_language


def test_missing_source_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "spellchecker", None)  # makes `import spellchecker` fail
    with pytest.raises(TaskError, match=INSTALL):
        make_language(0, "small")


@pytest.mark.slow
@needs_source
def test_default_size_is_fast_and_a_tiny_mlp_beats_chance():
    began = time.perf_counter()
    data = make_language(0, "default")
    seconds = time.perf_counter() - began
    assert seconds < 60
    assert [len(data.split(s)) for s in ("train", "valid", "test")] == [10_000, 2_000, 2_000]
    mlp = ("(routing im2col1k1s0p (routing permute21 (sequential (computation linear128) "
           "(computation leakyrelu)) identity) identity)")
    result = train(lambda: einspace.build(einspace.parse(mlp), (1, 24, 24), num_classes=9), data,
                   Recipe(epochs=3, batch_size=64, device="cpu"))
    print(f"language_lite default generation {seconds:.2f} s; tiny MLP accuracy "
          f"{result.score:.3f} (chance {1 / 9:.3f})")
    assert result.status == "ok" and result.score > 0.5
