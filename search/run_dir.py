"""The run directory of a search: the one place that knows its layout.

    RUN/config.yaml              the resolved config (written before the first trial)
    RUN/trials.db                the trial database (unless search.storage names another)
    RUN/weights/trial-<i>.pt     kept search-trained weights; weights/index.json: index -> score
    RUN/weights/pool/trial-<i>.pt  weights of trials that may still be parents (inheritance)
    RUN/final/trial-<i>.pt       weights retrained by the final evaluation
    RUN/final/results.json       the final evaluation's results
    RUN/best.arch, summary.json, leaderboard.csv, progress.png   outputs derived from trials.db
    RUN/report/                  ``einspace report``'s default output directory
    RUN/tune/session-<n>/        Ray Tune's own storage, one folder per Tune session
    RUN/.lock                    held by the driver that runs the search

Everything that reads or writes a run (the engine, the final evaluation, the outputs, the report,
export) goes through :class:`RunDir`.  This module imports neither Ray nor Optuna, so reading a
run's config or files costs no more than reading the files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import yaml

from einspace.errors import ConfigError, EinspaceError

from .config import SearchConfig, resolve

WEIGHTS_INDEX = "index.json"
"""The weight keeper's index inside a weights folder (trial index -> score)."""
POOL = "pool"
"""The weights folder's subfolder of possible parents' weights (weight inheritance)."""


class RunFileError(EinspaceError):
    """A file of a run directory that exists but cannot be read."""


def trial_weights_file(folder: Path, index: int) -> Path:
    """Where trial ``index``'s weights lie in a weights folder (``weights/`` or ``final/``)."""
    return folder / f"trial-{index}.pt"


def trial_weights_files(folder: Path) -> dict[int, Path]:
    """Trial index -> weights file, for every trial's weights in ``folder``."""
    found = {}
    for file in folder.glob("trial-*.pt"):
        index = file.stem.removeprefix("trial-")
        if index.isdigit():
            found[int(index)] = file
    return found


class RunDir:
    """The files of one search run, by name; nothing is touched until a method is called."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def database(self) -> Path:
        return self.path / "trials.db"

    @property
    def weights_dir(self) -> Path:
        return self.path / "weights"

    @property
    def weights_index(self) -> Path:
        return self.weights_dir / WEIGHTS_INDEX

    @property
    def final_dir(self) -> Path:
        return self.path / "final"

    @property
    def final_results_file(self) -> Path:
        return self.final_dir / "results.json"

    @property
    def best_arch(self) -> Path:
        return self.path / "best.arch"

    @property
    def summary_file(self) -> Path:
        return self.path / "summary.json"

    @property
    def leaderboard(self) -> Path:
        return self.path / "leaderboard.csv"

    @property
    def progress_picture(self) -> Path:
        return self.path / "progress.png"

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    @property
    def tune_dir(self) -> Path:
        return self.path / "tune"

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    def weights_path(self, index: int) -> Path:
        return trial_weights_file(self.weights_dir, index)

    def final_weights_path(self, index: int) -> Path:
        return trial_weights_file(self.final_dir, index)

    def store_url(self, storage: str | None = None) -> str:
        """The trial database's SQLAlchemy URL: ``storage`` (the config's search.storage) when
        given, else the run's own SQLite file."""
        return storage or f"sqlite:///{self.database.resolve()}"

    # -- the config -----------------------------------------------------------------------

    def config(self) -> SearchConfig:
        """The run's resolved config; a one-line ConfigError when this is not a run directory
        or its config cannot be read."""
        file = self.config_file
        if not self.path.exists():
            raise ConfigError(f"{self} is not a search run directory: it does not exist (no "
                              f"search was started there; start one with `einspace search "
                              f"--config ... --out {self}`)")
        if not file.is_file():
            if self.path.is_dir() and not any(p != self.lock_file
                                              for p in self.path.iterdir()):
                raise ConfigError(f"{self} is not a search run directory yet (no "
                                  f"{file.name}): if its search was stopped before it started, "
                                  f"nothing was lost; run the original `einspace search` "
                                  f"command again with --out {self}")
            raise ConfigError(f"{self} is not a search run directory (no {file.name})")
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{file}: not valid YAML: {str(e).splitlines()[0]}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{file}: not valid UTF-8 text ({e.reason} at byte {e.start})") \
                from None
        if not data:  # resolving nothing would silently give the defaults' task and budget
            raise ConfigError(f"{file} is empty; it should hold the run's resolved config")
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: the resolved config must be a mapping of sections")
        return resolve(data)

    def is_run(self) -> bool:
        """Whether a search was started here (its config is written before anything else)."""
        return self.config_file.is_file()

    # -- starting a run -------------------------------------------------------------------

    def make(self) -> None:
        """Create the directory (and its parents); a one-line error when that is refused."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot make the run directory {self}: {e.strerror} (--out "
                              f"chooses another)") from None

    def prepare(self, config: SearchConfig) -> None:
        """A fresh run directory holding the resolved config.  A directory whose search never
        got to its first trial (killed or refused during start-up) is reused; one holding
        trials is refused."""
        if self.config_file.exists():
            if self.recorded_trials():
                raise ConfigError(f"{self} already holds a search; continue it with "
                                  f"`einspace search --resume {self}` or choose another --out")
            self.database.unlink(missing_ok=True)
            shutil.rmtree(self.tune_dir, ignore_errors=True)
        self.make()
        _write_atomic(self.config_file, yaml.safe_dump(config.to_dict(), sort_keys=False))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the run: two drivers on one run would corrupt it.  The
        operating system releases the lock when the holder dies, even by SIGKILL."""
        handle = self.lock_file.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ConfigError(f"{self} is in use by another running search") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    # -- what a run holds -----------------------------------------------------------------

    def recorded_trials(self) -> int:
        """How many attempts the run's SQLite database records (0 when there is none yet)."""
        if not self.database.is_file():
            return 0
        try:
            with contextlib.closing(sqlite3.connect(self.database, timeout=30)) as connection:
                return connection.execute("select count(*) from trials").fetchone()[0]
        except sqlite3.Error:
            return 1  # unreadable: never overwrite it

    def has_outputs(self) -> bool:
        """Whether files exist that only a run with trials writes (its database may be gone)."""
        return any(p.exists() for p in (self.leaderboard, self.summary_file, self.weights_dir,
                                        self.best_arch))

    def next_tune_session(self) -> str:
        """The folder name under ``tune/`` of the next Tune session: each session (a new one
        starts after Tune aborts, see :mod:`einspace.search.tune_session`) keeps its own."""
        started = len(list(self.tune_dir.glob("session-*"))) if self.tune_dir.is_dir() else 0
        return f"session-{started}"

    @staticmethod
    def tune_trial_folder(index: int) -> str:
        """The folder name Tune gives trial ``index`` inside its session's folder."""
        return f"trial-{index}"

    def write_best_arch(self, text: str) -> None:
        self.best_arch.write_text(text + "\n")

    def kept_weights(self) -> dict[int, Path]:
        """Trial index -> kept search-trained weights file."""
        return trial_weights_files(self.weights_dir)

    def listed_weights(self) -> list[int]:
        """The trials the weight keeper's index lists (their files may be gone); [] without an
        index, a RunFileError for one that cannot be read."""
        if not self.weights_index.is_file():
            return []
        try:
            return [int(k) for k in json.loads(self.weights_index.read_text())]
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise RunFileError(f"{self.weights_index} is unreadable: {e}") from None

    def trained_weights_path(self, index: int) -> Path | None:
        """Trial ``index``'s best weights file: retrained by the final evaluation, else kept
        from the search, else None."""
        for path in (self.final_weights_path(index), self.weights_path(index)):
            if path.is_file():
                return path
        return None

    def final_results(self) -> list[dict]:
        """The final evaluation's entries (one per retrained trial); [] when there was none, a
        RunFileError when its file cannot be read."""
        file = self.final_results_file
        if not file.is_file():
            return []
        try:
            results = json.loads(file.read_text())
            return [r for r in results if isinstance(r, dict) and "index" in r]
        except (OSError, ValueError, TypeError) as e:
            raise RunFileError(f"{file} is unreadable: {e}") from None

    def write_final_results(self, results: list[dict]) -> None:
        self.final_results_file.write_text(json.dumps(results, indent=1))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
