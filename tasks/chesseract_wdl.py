"""T4 ``chesseract_wdl``: win/draw/loss of random <=4-piece chess endgames, a Chesseract stand-in.

Source: the Syzygy WDL tables for all 3- and 4-piece endgames that ship in the *source
distribution* of python-chess 1.11.2 (``data/syzygy/regular/*.rtbw``; the installed wheel-less
package lacks them) probed with the package's pure-Python ``chess.syzygy``.  The labels are exact
(no noise, unlike the real Chesseract), yet depend on highly non-local rules (opposition, the
square of the pawn, checks, stalemate tricks), so dense 3x3 conv stacks without pooling beat MLPs
and pooling-heavy CNNs (research digest §4.2: 88.8 % vs 73.8 % vs 61.0 %).

The package and the tables are GPL; they are used at run time only and nothing derived from them is
part of this repository.  The tables live in ``$EINSPACE_SYZYGY`` or ``~/.cache/einspace/syzygy``;
``python -m einspace.tasks.fetch_syzygy --fetch [DIR]`` (or :func:`fetch_syzygy_tables`) downloads
the sdist with pip and extracts them there.

Positions: a material signature is drawn uniformly from :data:`SIGNATURES` (white's pieces first),
colours are swapped with p = 0.5 and the side to move is random; pieces go on distinct random
squares (pawns never on the back ranks), with no castling rights and no en-passant square.
Positions that are illegal (``not board.is_valid()``), checkmate or stalemate are rejected.  The
label is ``probe_wdl`` for the side to move: -2 -> 0 (loss), -1/0/+1 -> 1 (draw, including cursed
wins and blessed losses), +2 -> 2 (win).

Encoding (12x8x8, Chesseract's shape): the board is first mirrored (``Board.mirror``: vertical
flip + colour swap) when black is to move, so the side to move is always "white" and no
side-to-move plane is needed; planes 0-5 are the mover's P N B R Q K, planes 6-11 the opponent's,
indexed [rank, file] with rank 0 = the mover's back rank.

Balance: the raw label distribution is skewed (loss 20 %, draw 44 %, win 36 %, digest §4.3), so
positions are accepted per class until every split holds exactly equal counts (chance = 1/3).

Splits: every position is reduced to a canonical key, the smallest FEN among its images under the
WDL-preserving board symmetries (after the side-to-move normalisation above, which already merges
a position with its colour mirror): the file flip, and for pawnless positions all eight
rotations/reflections of the square.  The split is a hash of (seed, key), so a position and all its
mirrored/rotated twins land in the same split, and no key occurs twice in the whole task.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from .data import CLASSIFICATION, Split, TaskData
from .provenance import SourceDigest
from .registry import TaskError, TaskSpec, register_task, split_sizes

NAME = "chesseract_wdl"
CHESS_VERSION = "1.11.2"
INSTALL = f"pip install chess=={CHESS_VERSION}"
FETCH = "python -m einspace.tasks.fetch_syzygy --fetch"
ENV = "EINSPACE_SYZYGY"
# White's pieces then black's; colours are swapped at random, so each also appears reversed.
SIGNATURES = ("KQvKR", "KRvKP", "KPvKP", "KQvKP", "KRvKN", "KRvKB", "KPPvK", "KBNvK", "KRvKR",
              "KNvKP", "KBvKP", "KQvKQ")
INPUT_SHAPE = (12, 8, 8)
N_CLASSES = 3
# Per-class counts (train, valid, test): default 20,001 / 3,999 / 3,999 in all (digest: 20k/4k/4k).
SIZES: dict[str, tuple[int, int, int]] = {"default": (6667, 1333, 1333), "small": (100, 30, 30)}
SPLITS = ("train", "valid", "test")
_TABLE = re.compile(r"^[KQRBNP]+v[KQRBNP]+\.rtbw$")


def default_table_dir() -> Path:
    """``$EINSPACE_SYZYGY`` or ``~/.cache/einspace/syzygy``."""
    return Path(os.environ.get(ENV) or Path.home() / ".cache" / "einspace" / "syzygy")


def fetch_syzygy_tables(dest: str | Path | None = None, sdist: str | Path | None = None) -> Path:
    """Download the chess sdist with pip (or use ``sdist``, a local ``chess-*.tar.gz``) and extract
    its ``data/syzygy/regular/*.rtbw|*.rtbz`` files, flat, into ``dest``; returns ``dest``."""
    dest = Path(dest) if dest else default_table_dir()
    with tempfile.TemporaryDirectory() as tmp:
        if sdist is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   f"chess=={CHESS_VERSION}", "-d", tmp]
            done = subprocess.run(cmd, capture_output=True, text=True)
            found = sorted(Path(tmp).glob("chess-*.tar.gz"))
            if done.returncode or not found:
                raise TaskError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
            sdist = found[0]
        dest.mkdir(parents=True, exist_ok=True)
        count = 0
        with tarfile.open(sdist, "r:gz") as tar:
            for member in tar.getmembers():
                parts = member.name.split("/")
                if (member.isfile() and parts[-3:-1] == ["syzygy", "regular"]
                        and parts[-1].endswith((".rtbw", ".rtbz")) and "/" not in parts[-1]):
                    source = tar.extractfile(member)
                    with open(dest / parts[-1], "wb") as out:
                        shutil.copyfileobj(source, out)
                    count += 1
        if not count:
            raise TaskError(f"{sdist} holds no data/syzygy/regular tables")
    return dest


def _import_chess():
    try:
        import chess
        import chess.syzygy
    except ImportError:
        raise TaskError(f"task {NAME!r} needs python-chess; install it with `{INSTALL}`, then "
                        f"fetch its endgame tables with `{FETCH}`") from None
    return chess


def _tables(directory: Path) -> list[Path]:
    """The <=4-piece WDL tables in ``directory``; TaskError (naming the fetch command) if any of
    the signatures' tables is missing."""
    present = {p.name: p for p in directory.glob("*.rtbw") if _TABLE.match(p.name)} \
        if directory.is_dir() else {}
    missing = [s for s in SIGNATURES if f"{s}.rtbw" not in present]
    if missing:
        raise TaskError(
            f"task {NAME!r} needs the Syzygy <=4-piece tables from the chess {CHESS_VERSION} "
            f"source distribution in {directory} (set ${ENV} to use another directory); missing "
            f"{', '.join(s + '.rtbw' for s in missing)}. Fetch them with `{FETCH} {directory}` "
            f"(it runs `pip download --no-deps --no-binary :all: chess=={CHESS_VERSION}` and "
            f"extracts chess-{CHESS_VERSION}/data/syzygy/regular/*.rtbw/*.rtbz there)")
    return [present[n] for n in sorted(present) if len(n.split(".")[0]) <= 5]


def _canonical_key(chess, board) -> str:
    """The smallest FEN over the position's WDL-preserving symmetries (white to move)."""
    transforms = [lambda b: b, lambda b: b.transform(chess.flip_horizontal)]
    if not (board.pawns):
        base = [lambda b: b, lambda b: b.transform(chess.flip_diagonal)]
        flips = [lambda b: b, lambda b: b.transform(chess.flip_vertical)]
        hflips = [lambda b: b, lambda b: b.transform(chess.flip_horizontal)]
        transforms = [lambda b, f=f, g=g, h=h: h(g(f(b))) for f in base for g in flips
                      for h in hflips]
    return min(t(board).board_fen() for t in transforms)


def _random_board(chess, rng: np.random.RandomState):
    """A random position of a random signature, mirrored so white is to move (may be illegal)."""
    signature = SIGNATURES[rng.randint(len(SIGNATURES))]
    sides = signature.split("v")
    if rng.rand() < 0.5:
        sides = sides[::-1]
    board = chess.Board(None)
    board.castling_rights = chess.BB_EMPTY
    occupied: set[int] = set()
    for colour, pieces in zip((chess.WHITE, chess.BLACK), sides, strict=True):
        for symbol in pieces:
            piece_type = chess.PIECE_SYMBOLS.index(symbol.lower())
            while True:
                square = int(rng.randint(64))
                if square in occupied or (piece_type == chess.PAWN and square // 8 in (0, 7)):
                    continue
                break
            occupied.add(square)
            board.set_piece_at(square, chess.Piece(piece_type, colour))
    board.turn = bool(rng.randint(2))
    return board if board.turn == chess.WHITE else board.mirror()


def _encode(chess, board) -> np.ndarray:
    planes = np.zeros(INPUT_SHAPE, dtype=np.float32)
    for square, piece in board.piece_map().items():
        plane = piece.piece_type - 1 + (0 if piece.color == chess.WHITE else 6)
        planes[plane, square // 8, square % 8] = 1.0
    return planes


def _split_of(seed: int, key: str, counts: tuple[int, int, int]) -> int:
    digest = hashlib.sha256(f"{NAME}:{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64 * sum(counts)
    return 0 if u < counts[0] else 1 if u < counts[0] + counts[1] else 2


def make_chesseract_wdl(seed: int, size: str = "default",
                        table_dir: str | Path | None = None) -> TaskData:
    """The task's splits, exactly class balanced and disjoint up to board symmetry."""
    counts = split_sizes(SIZES, size)
    chess = _import_chess()
    directory = Path(table_dir) if table_dir else default_table_dir()
    tables = _tables(directory)
    source = SourceDigest()
    for path in tables:
        source.add_file(path.name, path)
    rng = np.random.RandomState(seed)
    kept: list[list[list[np.ndarray]]] = [[[] for _ in range(N_CLASSES)] for _ in SPLITS]
    seen: set[str] = set()
    need = N_CLASSES * sum(counts)
    drawn = 0
    with chess.syzygy.open_tablebase(str(directory)) as tablebase:
        while need:
            drawn += 1
            board = _random_board(chess, rng)
            if not board.is_valid() or board.is_checkmate() or board.is_stalemate():
                continue
            key = _canonical_key(chess, board)
            split = _split_of(seed, key, counts)
            if key in seen:
                continue
            wdl = tablebase.probe_wdl(board)
            label = 0 if wdl == -2 else 2 if wdl == 2 else 1
            if len(kept[split][label]) >= counts[split]:
                continue
            seen.add(key)
            kept[split][label].append(_encode(chess, board))
            need -= 1
    splits = {}
    for index, name in enumerate(SPLITS):
        x = np.stack([p for label in kept[index] for p in label])
        y = np.repeat(np.arange(N_CLASSES, dtype=np.int64), counts[index])
        order = np.random.RandomState([seed, index]).permutation(len(y))
        splits[name] = Split(x[order], y[order])
    metadata = {"codename": NAME, "task_type": CLASSIFICATION, "n_classes": N_CLASSES,
                "source_sha256": source.hexdigest(), "chess_version": chess.__version__,
                "signatures": list(SIGNATURES), "positions_drawn": drawn,
                "classes": ["loss", "draw", "win"]}
    return TaskData(NAME, INPUT_SHAPE, CLASSIFICATION, splits, N_CLASSES, None, metadata)


SPEC = TaskSpec(
    name=NAME,
    description=("Chess endgame win/draw/loss for the side to move: random legal <=4-piece "
                 "positions labelled exactly by the Syzygy tables, 12 one-hot piece planes (side "
                 "to move always white), balanced classes; splits disjoint up to board symmetry."),
    mirrors="Unseen NAS Chesseract (Geada et al., CVPR 2024)",
    input_shape=INPUT_SHAPE,
    task_type=CLASSIFICATION,
    metric="accuracy",
    source=f"chess {CHESS_VERSION} sdist (python-chess + bundled Syzygy 3-4 piece WDL tables)",
    install=f"{INSTALL} && {FETCH}",
    version="1",
    generator=make_chesseract_wdl,
    num_classes=N_CLASSES,
)
register_task(SPEC)
