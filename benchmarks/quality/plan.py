"""What the search-quality benchmark runs: strategies as variations of the CPU protocol, and
the (task, strategy, search seed) cells they make.

Every strategy is the shipped ``cpu`` config with a few keys changed, so all of them get the same
wall-clock budget, workers, epochs and final retraining; only what the strategy is about differs.
An ablation flips one piece of the protocol: ``cpu-no-X`` switches off a piece the protocol
uses, ``cpu-with-X`` switches on one it leaves off (weight inheritance: measured to mislead the
selection when the winner is retrained from scratch, see ``search/configs/cpu.yaml``; the
fidelity ladder: 4 epochs, then 16, the final retraining's length, for the best third).  A piece
whose config key is not on this branch yet, or that the protocol leaves off and that has no "on"
setting here, has no ablation to run: the plan lists it as waiting rather than running a cell
identical to the full protocol under another name.  Random search never screens: it is the
unguided reference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from einspace.search.config import default_config, load_config

PROTOCOL = "cpu"
"""The shipped config every strategy varies."""
MISSING = object()
"""A config key that is not on this branch."""
QUALITY_DIR = Path("results") / "quality"
"""Where each cell's run directory goes (``<task>-<strategy>-s<seed>``)."""

ALL_TASKS = ("mnist1d", "chesseract_wdl", "addnist_lite", "multnist_lite", "fashiontile",
             "language_lite", "gutenberg_lite", "era_pianoroll", "darcy_lite")
ABLATION_TASKS = ("mnist1d", "chesseract_wdl", "language_lite")
"""The issue asks for plain evolution and the ablations on at least 3 tasks: a 1-D signal, a
board game and a text grid, three kinds of input the small seeds meet."""
SEARCH_SEEDS = (0, 1)


@dataclass(frozen=True)
class Piece:
    """One part of the CPU protocol that an ablation flips, by its config key: to ``off`` where
    the protocol uses it, to ``on`` (when given) where the protocol leaves it off."""

    name: str
    path: tuple[str, ...]
    off: object
    on: object = MISSING

    def value(self, config: dict) -> object:
        """The key's value in a resolved config, or :data:`MISSING` before its feature lands."""
        node = config
        for key in self.path:
            if not isinstance(node, dict) or key not in node:
                return MISSING
            node = node[key]
        return node

    def off_in_protocol(self) -> bool:
        return self.value(load_config(PROTOCOL).raw) == self.off

    def waiting_for(self) -> str | None:
        """Why its ablation cannot run yet: the key is not on this branch, or the CPU protocol
        leaves the piece off and there is no setting to switch it on; None when it can."""
        key = ".".join(self.path)
        if self.value(default_config()) is MISSING:
            return f"{key} (not on this branch)"
        if self.off_in_protocol() and self.on is MISSING:
            return f"{key} on in {PROTOCOL}.yaml"
        return None

    def flips_on(self) -> bool:
        """Whether the ablation switches the piece on (the protocol leaves it off)."""
        return self.off_in_protocol() and self.on is not MISSING

    def strategy(self) -> Strategy:
        """This piece's ablation as a benchmark column (waiting, with no keys, until it can
        run)."""
        word = "with" if self.flips_on() else "no"
        waiting = self.waiting_for()
        return Strategy(f"cpu-{word}-{self.name}", f"CPU, {word} {self.name}", ABLATION_TASKS,
                        self.override() if waiting is None else {}, waiting)

    def override(self) -> dict:
        """The config keys of this piece's ablation (the piece flipped)."""
        return self.setting(self.on if self.off_in_protocol() else self.off)

    def switched_off(self) -> dict:
        return self.setting(self.off)

    def setting(self, value: object) -> dict:
        """The nested config keys that set this piece to ``value``."""
        data: dict = {}
        node = data
        for key in self.path[:-1]:
            node = node.setdefault(key, {})
        node[self.path[-1]] = value
        return data


PIECES = (
    Piece("inherit", ("evolution", "inherit_weights"), False, True),
    Piece("screen", ("screening", "candidates"), 1, 4),
    Piece("fidelity", ("fidelity", "rungs"), [], [[1.0, 4], [1.0, 16]]),
    Piece("size", ("search", "time_per_trial"), "off"),
    Piece("growth", ("evolution", "growth_rate"), 0.0),
)
"""The protocol's pieces (issue 12 items 1-4, and growth mutations), how each is switched off
and, for those the protocol leaves off, on."""


@dataclass(frozen=True)
class Strategy:
    """A benchmark column: the CPU protocol with ``overrides``, or the seeds trained alone."""

    name: str
    label: str
    tasks: tuple[str, ...]
    overrides: dict = field(default_factory=dict, hash=False)
    waiting_for: str | None = None
    """The config key this strategy needs that is not on this branch yet."""

    @property
    def is_seed_alone(self) -> bool:
        return self.name == "seed"


def _merged(*parts: dict) -> dict:
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict):
                out[key] = _merged(out.get(key, {}), value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def strategies() -> list[Strategy]:
    """Every strategy of the benchmark, in table order."""
    landed = [p for p in PIECES if p.value(default_config()) is not MISSING]
    screen = next(p for p in PIECES if p.name == "screen")
    random = _merged({"search": {"strategy": "random"}},
                     screen.switched_off() if screen in landed else {})
    found = [
        Strategy("seed", "seed alone", ALL_TASKS),
        Strategy("random", "random search", ALL_TASKS, random),
        Strategy("cpu", "CPU protocol", ALL_TASKS),
        Strategy("evolution", "plain evolution", ABLATION_TASKS,
                 _merged(*(p.switched_off() for p in landed))),
    ]
    return found + [piece.strategy() for piece in PIECES]


@dataclass(frozen=True)
class Cell:
    """One resumable run of the benchmark."""

    task: str
    strategy: Strategy
    seed: int

    @property
    def name(self) -> str:
        return f"{self.task}-{self.strategy.name}-s{self.seed}"

    def run_dir(self, root: Path = QUALITY_DIR) -> Path:
        return root / self.name

    def key(self, minutes: float) -> tuple:
        """What makes a results line this cell's: the seeds alone do not depend on the
        search's budget, every other cell does."""
        return (self.task, self.strategy.name, self.seed,
                None if self.strategy.is_seed_alone else float(minutes))


def plan(tasks: list[str] | None = None, names: list[str] | None = None,
         seeds: list[int] | None = None) -> list[Cell]:
    """The cells to run, task by task (seeds alone first, as every search row carries the
    seed-alone score), filtered by the given tasks, strategy names and seeds."""
    known = strategies()
    chosen = [s for s in known if names is None or s.name in names]
    cells = []
    for task in tasks or ALL_TASKS:
        for seed in seeds if seeds is not None else SEARCH_SEEDS:
            for strategy in chosen:
                if tasks is not None or task in strategy.tasks:
                    cells.append(Cell(task, strategy, seed))
    return cells


def strategy_names() -> list[str]:
    return [s.name for s in strategies()]
