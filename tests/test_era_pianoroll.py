"""era_pianoroll: deterministic splits of music21 corpus scores with no work in two splits, shapes
and exact class balance, windows that are slices of their pieces, the parse cache, a clear
missing-source error, and default-size generation in under a minute of CPU from a cold cache."""

from __future__ import annotations

import importlib.util
import sys
import time

import numpy as np
import pytest
from task_checks import checksum

from einspace.tasks import era_pianoroll
from einspace.tasks.data import CLASSIFICATION
from einspace.tasks.era_pianoroll import (
    ERAS,
    INSTALL,
    LABELS,
    NAME,
    SIZES,
    Piece,
    generate,
    make_era_pianoroll,
    piano_roll,
    window,
    works,
)
from einspace.tasks.registry import TaskError, get_task

needs_source = pytest.mark.skipif(importlib.util.find_spec("music21") is None,
                                  reason=f"music21 is not installed ({INSTALL})")

# sha256 of make_era_pianoroll(0, "small") for the music21 10.5.1 corpus files (whose combined
# sha256 is KNOWN_SOURCE); another corpus release legitimately changes the data.
KNOWN_SOURCE = "7e2370301ca6e40acf696b7a99b9981b061dcd10c7313157fb40bd9088f03cba"
KNOWN_SMALL = "cd7c2329fbbcd96136c0d6ba4281bd237b6e886257c8a6f04a70906a12adb29c"


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Parse into an empty cache of this module's own, so the cold path is what is timed."""
    patch = pytest.MonkeyPatch()
    patch.setenv("EINSPACE_CACHE", str(tmp_path_factory.mktemp("einspace-cache")))
    yield
    patch.undo()


@pytest.fixture(scope="module")
def small():
    return generate(0, "small")


@needs_source
def test_same_seed_same_arrays_other_seed_different(small):
    data, _ = small
    assert checksum(make_era_pianoroll(0, "small")) == checksum(data)  # now from the cache
    assert checksum(make_era_pianoroll(1, "small")) != checksum(data)


@needs_source
def test_checksum(small):
    data, _ = small
    if data.metadata["source_sha256"] != KNOWN_SOURCE:
        pytest.skip("a different release of the music21 corpus")
    assert checksum(data) == KNOWN_SMALL


@needs_source
def test_global_rng_untouched():
    np.random.seed(5)
    before = np.random.get_state()[1].copy()
    make_era_pianoroll(0, "small")
    assert np.array_equal(np.random.get_state()[1], before)


@needs_source
def test_shapes_values_and_exact_balance(small):
    data, _ = small
    assert data.input_shape == (1, 64, 128) and data.num_classes == len(LABELS) == 5
    assert data.task_type == CLASSIFICATION
    for name, n in zip(("train", "valid", "test"), SIZES["small"], strict=True):
        split = data.split(name)
        assert split.x.shape == (n, 1, 64, 128) and split.x.dtype == np.float32
        assert split.y.shape == (n,) and split.y.dtype == np.int64
        assert set(np.unique(split.x)) == {0.0, 0.5, 1.0}
        assert (split.x.reshape(n, -1).max(axis=1) > 0).all()  # no silent windows
        assert np.bincount(split.y, minlength=5).tolist() == [n // 5] * 5
        assert not np.array_equal(split.y[:5], np.arange(5))  # shuffled, not in class order
    meta = data.metadata
    assert meta["labels"] == list(LABELS) and meta["codename"] == NAME and meta["n_classes"] == 5
    assert len(meta["source_sha256"]) == 64 and meta["music21_version"]


@needs_source
def test_windows_are_slices_of_their_pieces_and_no_work_is_in_two_splits(small):
    data, sources = small
    pieces: list[Piece] = sources["pieces"]
    used = {}
    for name in ("train", "valid", "test"):
        split, where = data.split(name), sources[f"{name}_windows"]
        for x, y, (i, offset, shift) in zip(split.x, split.y, where, strict=True):
            assert y == pieces[i].label and -6 <= shift <= 5
            np.testing.assert_array_equal(x, window(pieces[i], offset, shift))
        used[name] = {(pieces[i].label, pieces[i].work) for i in where[:, 0]}
        assert {label for label, _ in used[name]} == set(range(5))
        assert sorted(pieces[i].path for i in set(where[:, 0])) == sorted(
            p for paths in data.metadata["pieces"][name].values() for p in paths)
    assert not used["train"] & used["valid"] and not used["train"] & used["test"]
    assert not used["valid"] & used["test"]
    assert len({p.path for p in pieces}) == len({(p.label, p.work) for p in pieces}) == len(pieces)


def test_editions_of_one_work_are_grouped(tmp_path):
    names = {
        "medieval": ["trecento/PMFC_12_10a-Credo PMFC12.10a.xml",
                     "trecento/PMFC_12_10b-Credo PMFC12.10b.xml",
                     "trecento/PMFC_23_15a-Kyrie Humano Generi a.xml",
                     "trecento/PMFC_23_15b-Kyrie Humano Generi b.xml",
                     "trecento/PMFC_12_4-Gloria Rvat 1419.xml",
                     "trecento/PMFC_12_4-Gloria Rvat 1419_bak.xml"],
        "renaissance": ["palestrina/Kyrie_57_a.krn", "palestrina/Kyrie_57_b.krn",
                        "palestrina/Agnus_II_57.krn", "palestrina/Agnus.krn"],
        "early_baroque": ["monteverdi/madrigal.3.1.mxl", "monteverdi/madrigal.3.1_old.mxl"],
        "late_baroque": ["bach/bwv248.23-2.mxl", "bach/bwv248.23-s.mxl", "bach/bwv69.6-a.mxl"],
        "classical": ["haydn/opus1no1/movement1.mxl", "mozart/k545/movement1_exposition.mxl",
                      "beethoven/opus59no1/movement1.mxl"],
    }
    for paths in names.values():
        for path in paths:
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).touch()
    found = {era.name: sorted(work for work, _ in works(era, tmp_path)) for era in ERAS}
    assert found == {
        "medieval": ["PMFC_12_10-Credo PMFC12.10", "PMFC_12_4-Gloria Rvat 1419",
                     "PMFC_23_15-Kyrie Humano Generi"],
        "renaissance": ["57"],  # one mass; the unnumbered file is not used
        "early_baroque": ["madrigal.3.1"],
        "late_baroque": ["bwv248.23", "bwv69.6"],
        "classical": ["haydn/opus1no1/movement1"],  # quartets by Haydn and Mozart only
    }


def test_piano_roll_marks_onsets_and_sustain():
    # pitch, start, end, onset: a held C, then the same C tied over, and a two-step E
    notes = np.array([[60, 0, 3, 1], [60, 3, 5, 0], [64, 1, 3, 1]], dtype=np.int32)
    roll = piano_roll(notes)
    assert roll.shape == (128, 5) and roll.dtype == np.uint8
    assert roll[60].tolist() == [2, 1, 1, 1, 1] and roll[64].tolist() == [0, 2, 1, 0, 0]
    assert roll.sum() == roll[60].sum() + roll[64].sum()


def test_window_transposes_and_drops_notes_out_of_range():
    notes = np.array([[30, 0, 200, 1], [93, 0, 200, 1], [60, 10, 12, 1]], dtype=np.int32)
    piece = Piece("x", 0, "x", piano_roll(notes))
    x = window(piece, 5, 0)
    assert x.shape == (1, 64, 128) and x.dtype == np.float32
    assert x[0, 0, 0] == 0.5 and x[0, 63, 0] == 0.5 and x[0, 30, 5] == 1.0 and x[0, 30, 6] == 0.5
    up = window(piece, 5, 2)
    np.testing.assert_array_equal(up[0, 2:], x[0, :-2])  # two semitones up, top rows cut off
    assert not up[0, :2].any() and x[0, 30, 7] == 0


def test_spec_is_registered():
    spec = get_task(NAME)
    assert spec.install == INSTALL and spec.metric == "accuracy" and spec.num_classes == 5
    assert spec.input_shape == (1, 64, 128) and spec.generator is make_era_pianoroll


def test_missing_source_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "music21", None)  # makes `import music21` fail
    with pytest.raises(TaskError, match=INSTALL):
        make_era_pianoroll(0, "small")


def test_unknown_size():
    with pytest.raises(TaskError, match="size must be one of"):
        make_era_pianoroll(0, "huge")


@pytest.mark.slow
@needs_source
def test_default_size_under_a_minute_cold_and_seconds_from_the_cache():
    """The limit is on CPU seconds: the build is single-threaded, so that is its wall time on an
    idle 2-core machine, while wall time on a shared one mostly measures the neighbours."""
    began, cpu = time.perf_counter(), time.process_time()
    data = make_era_pianoroll(0, "default")
    cold, cold_cpu = time.perf_counter() - began, time.process_time() - cpu
    began, cpu = time.perf_counter(), time.process_time()
    again = make_era_pianoroll(0, "default")
    warm, warm_cpu = time.perf_counter() - began, time.process_time() - cpu
    print(f"era_pianoroll default generation: cold {cold:.1f} s ({cold_cpu:.1f} s CPU), from the "
          f"cache {warm:.1f} s ({warm_cpu:.1f} s CPU)")
    assert cold_cpu < 60 and warm_cpu < 10 and checksum(again) == checksum(data)
    assert [len(data.split(s)) for s in ("train", "valid", "test")] == list(SIZES["default"])
    for name in ("train", "valid", "test"):
        assert np.bincount(data.split(name).y).tolist() == [SIZES["default"][0 if name == "train"
                                                                             else 1] // 5] * 5
    files = {name: {p for paths in per_era.values() for p in paths}
             for name, per_era in data.metadata["pieces"].items()}
    assert not files["train"] & files["valid"] and not files["train"] & files["test"]
    assert not files["valid"] & files["test"]
    assert [len(files[name]) for name in ("train", "valid", "test")] == [80, 20, 20]
    assert era_pianoroll.cache_dir(data.metadata["music21_version"]).is_dir()
