"""T4 chesseract_wdl: determinism, exact balance, splits disjoint up to board symmetry, the on-disk
round trip, the missing-package / missing-table errors, and that a tiny conv net beats chance.

Skipped when python-chess or the Syzygy tables (from the chess sdist) are absent."""

import sys

import numpy as np
import pytest
from task_checks import checksum

import einspace
from einspace.tasks import chesseract_wdl
from einspace.tasks.data import Split, TaskData
from einspace.tasks.recipe import Recipe
from einspace.tasks.registry import TaskError, get_task
from einspace.tasks.trainer import train

chess = pytest.importorskip("chess", reason=f"install with `{chesseract_wdl.INSTALL}`")
try:
    chesseract_wdl._tables(chesseract_wdl.default_table_dir())
except TaskError:
    pytest.skip(f"Syzygy tables absent; fetch them with `{chesseract_wdl.FETCH}`",
                allow_module_level=True)


@pytest.fixture(scope="module")
def small() -> TaskData:
    return chesseract_wdl.make_chesseract_wdl(0, "small")


def test_deterministic(small):
    assert checksum(small) == checksum(chesseract_wdl.make_chesseract_wdl(0, "small"))
    assert checksum(small) != checksum(chesseract_wdl.make_chesseract_wdl(1, "small"))


def test_shapes_balance_and_metadata(small):
    spec = get_task("chesseract_wdl")
    assert small.input_shape == (12, 8, 8) == spec.input_shape and small.num_classes == 3
    assert small.metadata["codename"] == "chesseract_wdl" and small.metadata["n_classes"] == 3
    assert len(small.metadata["source_sha256"]) == 64
    for name, per_class in zip(("train", "valid", "test"), chesseract_wdl.SIZES["small"],
                               strict=True):
        split = small.splits[name]
        assert split.x.shape == (3 * per_class, 12, 8, 8) and split.x.dtype == np.float32
        assert split.y.dtype == np.int64
        assert np.array_equal(np.bincount(split.y, minlength=3), np.full(3, per_class))
        assert set(np.unique(split.x)) <= {0.0, 1.0}
        assert np.all(split.x[:, 5].sum(axis=(1, 2)) == 1)  # one king each side
        assert np.all(split.x[:, 11].sum(axis=(1, 2)) == 1)
        assert 3 <= split.x.sum(axis=(1, 2, 3)).min() and split.x.sum(axis=(1, 2, 3)).max() <= 4


def _board(planes: np.ndarray):
    board = chess.Board(None)
    board.castling_rights = chess.BB_EMPTY
    for plane, rank, file in zip(*np.nonzero(planes), strict=True):
        colour = chess.WHITE if plane < 6 else chess.BLACK
        board.set_piece_at(rank * 8 + file, chess.Piece(int(plane) % 6 + 1, colour))
    return board


def test_splits_disjoint_up_to_symmetry(small):
    keys = {name: [chesseract_wdl._canonical_key(chess, _board(x)) for x in small.splits[name].x]
            for name in ("train", "valid", "test")}
    for name, split_keys in keys.items():
        assert len(set(split_keys)) == len(split_keys), name
    assert not set(keys["train"]) & set(keys["valid"])
    assert not set(keys["train"]) & set(keys["test"])
    assert not set(keys["valid"]) & set(keys["test"])


def test_canonical_key_merges_symmetric_twins():
    board = chess.Board("8/8/8/3k4/8/8/1R6/K7 w - - 0 1")  # pawnless: 8 symmetries
    key = chesseract_wdl._canonical_key(chess, board)
    for f in (chess.flip_horizontal, chess.flip_vertical, chess.flip_diagonal,
              chess.flip_anti_diagonal):
        assert chesseract_wdl._canonical_key(chess, board.transform(f)) == key
    pawn = chess.Board("8/8/8/3k4/8/8/1P6/K7 w - - 0 1")  # with a pawn: only the file flip
    pkey = chesseract_wdl._canonical_key(chess, pawn)
    assert chesseract_wdl._canonical_key(chess, pawn.transform(chess.flip_horizontal)) == pkey
    assert chesseract_wdl._canonical_key(chess, pawn.transform(chess.flip_vertical)) != pkey


def test_labels_match_the_tables(small):
    """Re-probe a few decoded positions: the stored label is the mover's WDL class."""
    import chess.syzygy

    split = small.splits["test"]
    with chess.syzygy.open_tablebase(str(chesseract_wdl.default_table_dir())) as tb:
        for x, y in zip(split.x[:30], split.y[:30], strict=True):
            wdl = tb.probe_wdl(_board(x))
            assert (0 if wdl == -2 else 2 if wdl == 2 else 1) == y


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "chess", None)
    monkeypatch.setitem(sys.modules, "chess.syzygy", None)
    with pytest.raises(TaskError, match="pip install chess==1.11.2"):
        chesseract_wdl.make_chesseract_wdl(0, "small")


def test_missing_tables_name_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("EINSPACE_SYZYGY", str(tmp_path / "none"))
    with pytest.raises(TaskError, match="python -m einspace.tasks.fetch_syzygy --fetch"):
        chesseract_wdl.make_chesseract_wdl(0, "small")


@pytest.mark.slow
def test_tiny_conv_beats_chance(monkeypatch):
    """Three 3x3 conv layers (no pooling) on 2,400 positions, a few seconds of SGD."""
    monkeypatch.setitem(chesseract_wdl.SIZES, "small", (800, 200, 10))
    data = chesseract_wdl.make_chesseract_wdl(0, "small")
    task = TaskData(data.name, data.input_shape, data.task_type,
                    {"train": data.splits["train"],
                     "valid": Split(data.splits["valid"].x, data.splits["valid"].y)},
                    num_classes=3)
    layer = "(sequential (routing im2col{} (computation linear{}) col2im) (computation leakyrelu))"
    text = f"(sequential {layer.format('3k1s1p', 32)} {layer.format('3k1s1p', 32)})"
    result = train(lambda: einspace.build(einspace.parse(text), task.input_shape, num_classes=3),
                   task, Recipe(epochs=8, batch_size=64, lr=0.05, device="cpu"))
    print(f"chesseract_wdl tiny conv accuracy {result.score:.3f} (chance 0.333)")
    assert result.status == "ok" and result.score > 0.45
