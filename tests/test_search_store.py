"""TrialStore on Optuna's SQLite storage, the run outputs derived from it, and WeightKeeper."""

from __future__ import annotations

import csv
import json
import math
import random

import pytest
from optuna.trial import TrialState

from einspace import Budget, Sampler
from einspace.errors import ConfigError
from einspace.search.loop import LoopTrial, SearchLoop
from einspace.search.outputs import best_curve, ranked, write_outputs
from einspace.search.store import StoreError, TrialStore, default_url, open_run_store
from einspace.search.strategies import Proposal
from einspace.search.strategies.random_search import RandomSearch
from einspace.search.weights import WeightKeeper
from einspace.tasks.status import Status

SHAPE = (1, 8, 8)
SAMPLER = Sampler(budget=Budget(max_params=20_000, max_nodes=30, max_depth=8))


def derivations(n: int, seed: int = 0):
    """``n`` distinct sampled derivations."""
    out, seen, k = [], set(), 0
    while len(out) < n:
        d = SAMPLER.sample(SHAPE, random.Random(f"{seed}/{k}")).derivation
        k += 1
        if d.hash not in seen:
            seen.add(d.hash)
            out.append(d)
    return out


MEMORY = "sqlite:///:memory:"


@pytest.fixture
def store():
    """An in-memory store (SQLite files fsync every write: slow on a busy machine); the tests
    about files and reopening use ``default_url(tmp_path)``."""
    return TrialStore(MEMORY)


def by_number(store: TrialStore, number: int):
    return next(t for t in store.study.get_trials(deepcopy=False) if t.number == number)


# -- TrialStore ----------------------------------------------------------------------------------

def test_start_epoch_finish_round_trip(store):
    a, b, c = derivations(3)
    p = Proposal(a, "mutation", (4, 7), {"draws": [0.25, 0.5]})
    n0 = store.start(0, p, {"params": 123, "attempt": 1})
    n1 = store.start(1, Proposal(b, "sample"), {})
    n2 = store.start(2, Proposal(c, "crossover", (0, 1)), {})
    assert [t.status for t in store.trials()] == [None, None, None]
    store.epoch(n0, 0, 0.25)
    store.epoch(n0, 1, 0.5)
    store.epoch(n0, 2, math.nan)  # not a number: not recorded
    store.finish(n0, Status.OK, 0.5, "", {"seconds": 1.5, "epochs_run": 2}, 0)
    store.finish(n1, Status.FAILED, -math.inf, "out of memory", {}, 1)
    store.finish(n2, Status.STOPPED, 0.1, "stopped by asha", {"epochs_run": 1}, 2)

    assert by_number(store, n0).state == TrialState.COMPLETE
    assert by_number(store, n0).value == 0.5
    assert by_number(store, n0).intermediate_values == {0: 0.25, 1: 0.5}
    assert by_number(store, n1).state == TrialState.FAIL
    assert by_number(store, n2).state == TrialState.PRUNED

    first, second, third = store.trials()
    assert (first.index, first.status, first.score, first.tell_seq) == (0, Status.OK, 0.5, 0)
    assert first.derivation == a and first.hash == a.hash and first.origin == "mutation"
    assert first.proposal["params"] == 123 and first.proposal["attempt"] == 1
    assert first.result == {"seconds": 1.5, "epochs_run": 2}
    assert first.started is not None and first.finished >= first.started
    assert first.as_proposal() == p
    o = first.as_outcome()
    assert (o.index, o.derivation, o.score, o.status, o.choices) == \
        (0, a, 0.5, Status.OK, {"draws": [0.25, 0.5]})
    assert (second.status, second.score, second.reason) == (Status.FAILED, None, "out of memory")
    assert second.as_outcome().score == -math.inf and not second.as_outcome().usable
    assert (third.status, third.score, third.tell_seq) == (Status.STOPPED, 0.1, 2)
    assert third.as_proposal().parents == (0, 1)


def test_ok_without_a_finite_score_is_stored_as_failed(store):
    (d,) = derivations(1)
    n = store.start(0, Proposal(d, "sample"), {})
    store.finish(n, Status.OK, math.nan, "", {}, 0)
    assert by_number(store, n).state == TrialState.FAIL
    assert store.trials()[0].score is None


def test_run_directory_store_is_shared_by_a_resumed_driver(tmp_path):
    """A resumed driver opens the run's trials.db and finishes attempts the first one started
    (trial ids looked up by number)."""
    store = TrialStore(default_url(tmp_path))
    assert (tmp_path / "trials.db").is_file()
    (d,) = derivations(1)
    n = store.start(0, Proposal(d, "sample", (), {"draws": [0.125]}), {"params": 7})
    store.set_run("lag", 2)
    other = open_run_store(tmp_path)
    assert other.run("lag") == 2 and other.run("missing", "x") == "x"
    other.epoch(n, 0, 0.3)
    other.finish(n, Status.OK, 0.3, "", {"seconds": 2.0}, 0)
    assert by_number(store, n).intermediate_values == {0: 0.3}
    (stored,) = store.trials()
    assert (stored.status, stored.score, stored.derivation) == (Status.OK, 0.3, d)
    assert stored.proposal["params"] == 7 and stored.as_outcome().choices == {"draws": [0.125]}


def test_interrupt_unfinished_and_latest(store):
    a, b, c = derivations(3)
    n0 = store.start(0, Proposal(a, "sample"), {})
    n1 = store.start(1, Proposal(b, "sample"), {})
    n2 = store.start(2, Proposal(c, "sample"), {})
    store.finish(n0, Status.OK, 0.7, "", {}, 0)

    # the driver dies; the next one marks what was left running
    resumed = store
    assert sorted(resumed.interrupt_unfinished()) == [n1, n2]
    assert resumed.interrupt_unfinished() == []
    statuses = {t.number: t.status for t in resumed.trials()}
    assert statuses == {n0: Status.OK, n1: Status.INTERRUPTED, n2: Status.INTERRUPTED}
    assert by_number(resumed, n1).state == TrialState.FAIL
    assert not resumed.trials()[1].done and resumed.trials()[1].as_outcome() is None

    # re-runs are new attempts with the same index
    r1 = resumed.start(1, Proposal(b, "sample"), {"attempt": 2})
    r2 = resumed.start(2, Proposal(c, "sample"), {"attempt": 2})
    resumed.finish(r1, Status.FAILED, -math.inf, "bad", {}, 1)
    latest = resumed.latest()
    assert [t.index for t in latest] == [0, 1, 2]
    assert [t.number for t in latest] == [n0, r1, r2]
    assert [t.status for t in latest] == [Status.OK, Status.FAILED, None]
    # a finished attempt wins over a later interrupted one
    resumed.interrupt_unfinished()
    assert resumed.latest()[2].number == r2 and resumed.latest()[2].status == Status.INTERRUPTED
    r3 = resumed.start(2, Proposal(c, "sample"), {"attempt": 3})
    resumed.finish(r3, Status.OK, 0.2, "", {}, 2)
    extra = resumed.start(2, Proposal(c, "sample"), {"attempt": 4})
    resumed.finish(extra, Status.INTERRUPTED, -math.inf, "again", {}, None)
    assert resumed.latest()[2].number == r3
    assert [t.number for t in resumed.trials()] == sorted(t.number for t in resumed.trials())


def test_stored_trials_restore_a_loop(store):
    """The engine's path: latest() -> LoopTrial -> SearchLoop.restore."""
    loop = SearchLoop(RandomSearch(SAMPLER, SHAPE), seed=3, max_trials=6, lag=4)
    numbers = {}
    for _ in range(4):
        trial = loop.next()
        numbers[trial.index] = store.start(trial.index, trial.proposal, {})
    store.finish(numbers[0], Status.OK, 0.4, "", {}, None)
    store.finish(numbers[2], Status.FAILED, -math.inf, "nan loss", {}, None)
    store.interrupt_unfinished()
    fresh = SearchLoop(RandomSearch(SAMPLER, SHAPE), seed=3, max_trials=6, lag=4)
    reruns = fresh.restore([LoopTrial(t.index, t.as_proposal(), t.as_outcome(), t.tell_seq)
                            for t in store.latest()])
    assert reruns == [1, 3]
    assert [t.hash for t in fresh.trials] == [t.hash for t in loop.trials]
    assert fresh.trials[2].outcome.status == Status.FAILED


def test_corrupted_database_is_a_store_error(tmp_path):
    (tmp_path / "trials.db").write_bytes(b"this is not a database\x00\xff" * 200)
    with pytest.raises(StoreError, match="cannot open the trial database"):
        TrialStore(default_url(tmp_path))
    with pytest.raises(StoreError, match="trials.db"):
        open_run_store(tmp_path)


def test_database_without_a_run_is_a_store_error(tmp_path):
    (tmp_path / "trials.db").write_bytes(b"")  # an empty SQLite file: no study in it
    with pytest.raises(StoreError, match="no einspace run"):
        open_run_store(tmp_path)


def test_open_run_store_needs_trials_db(tmp_path):
    with pytest.raises(ConfigError, match="no trial database"):
        open_run_store(tmp_path)
    assert not (tmp_path / "trials.db").exists()


# -- outputs --------------------------------------------------------------------------------------

def test_write_outputs(tmp_path, store):
    ds = derivations(7)
    plan = [(Status.OK, 0.4, ""), (Status.FAILED, -math.inf, "out of memory"),
            (Status.OK, 0.9, ""), (Status.STOPPED, 0.2, "stopped by asha"), (Status.OK, 0.4, ""),
            (Status.FAILED, -math.inf, "nan loss"), (Status.FAILED, -math.inf, "out of memory")]
    for index, (status, score, reason) in enumerate(plan):
        n = store.start(index, Proposal(ds[index], "sample", (), {}), {"params": 10 * index})
        store.finish(n, status, score, reason, {"seconds": 0.5, "epochs_run": 1}, index)
    store.start(7, Proposal(derivations(8)[7], "sample"), {})  # still running

    summary = write_outputs(tmp_path, store)
    with (tmp_path / "leaderboard.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == [2, 0, 4, 3, 1, 5, 6]
    assert [r["rank"] for r in rows] == [str(k) for k in range(1, 8)]
    assert [r["status"] for r in rows] == [Status.OK, Status.OK, Status.OK, Status.STOPPED,
                                           Status.FAILED, Status.FAILED, Status.FAILED]
    assert float(rows[0]["score"]) == 0.9 and rows[0]["params"] == "20"
    assert rows[0]["derivation"] == ds[2].text and rows[4]["reason"] == "out of memory"

    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["trials"] == 8 and on_disk["finished"] == 7
    assert (on_disk["ok"], on_disk["failed"], on_disk["stopped"]) == (3, 3, 1)
    assert on_disk["failures"] == {"out of memory": 2, "nan loss": 1}
    assert on_disk["best"]["index"] == 2 and on_disk["best"]["score"] == 0.9
    assert on_disk["best"]["hash"] == ds[2].hash
    assert summary["best"]["derivation"] == ds[2].text
    assert (tmp_path / "best.arch").read_text() == ds[2].text + "\n"
    assert (tmp_path / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_outputs_with_only_failures_name_no_best(tmp_path, store):
    (d,) = derivations(1)
    n = store.start(0, Proposal(d, "sample"), {})
    store.finish(n, Status.FAILED, -math.inf, "shape error", {}, 0)
    summary = write_outputs(tmp_path, store)
    assert summary["best"] is None and summary["failed"] == 1
    assert not (tmp_path / "best.arch").exists()


def test_best_curve_is_the_running_maximum(store):
    ds = derivations(4)
    for index, score in enumerate([0.3, 0.1, 0.5, 0.4]):
        n = store.start(index, Proposal(ds[index], "sample"), {})
        store.finish(n, Status.OK, score, "", {}, index)
    xs, best = best_curve(store.latest(), "index")
    assert xs == [0.0, 1.0, 2.0, 3.0] and best == [0.3, 0.3, 0.5, 0.5]
    _, by_time = best_curve(store.latest(), "time")
    assert by_time[-1] == 0.5 and by_time == sorted(by_time)
    assert [t.index for t in ranked(store.latest())] == [2, 3, 0, 1]


# -- WeightKeeper ----------------------------------------------------------------------------------

def files(directory) -> set[str]:
    return {p.name for p in directory.glob("trial-*.pt")}


def test_weight_keeper_keeps_the_top_k(tmp_path):
    keeper = WeightKeeper(str(tmp_path / "weights"), keep=2)
    weights = tmp_path / "weights"
    assert keeper.put(0, 0.5, b"w0")
    assert keeper.put(1, 0.7, b"w1")
    assert files(weights) == {"trial-0.pt", "trial-1.pt"}
    assert keeper.put(2, 0.6, b"w2")  # pushes trial 0 out
    assert files(weights) == {"trial-1.pt", "trial-2.pt"}
    assert not keeper.wants(3, 0.1) and not keeper.put(3, 0.1, b"w3")
    assert not keeper.wants(4, 0.6)  # a tie goes to the lower index (2)
    assert not keeper.wants(5, math.nan) and not keeper.wants(5, -math.inf)
    assert keeper.put(0, 0.65, b"w0-again")  # 0 < 2 and a better score
    assert files(weights) == {"trial-0.pt", "trial-1.pt"}
    assert (weights / "trial-0.pt").read_bytes() == b"w0-again"
    assert json.loads((weights / "index.json").read_text()) == {"1": 0.7, "0": 0.65}
    assert not list(weights.glob("*.tmp"))

    restored = WeightKeeper(str(weights), keep=2)
    assert restored.scores == {1: 0.7, 0: 0.65}
    assert not restored.wants(6, 0.6) and restored.wants(6, 0.8)


def test_weight_keeper_restore_skips_missing_files(tmp_path):
    keeper = WeightKeeper(str(tmp_path), keep=3)
    for index, score in enumerate([0.1, 0.2, 0.3]):
        keeper.put(index, score, b"x")
    (tmp_path / "trial-2.pt").unlink()
    restored = WeightKeeper(str(tmp_path), keep=3)
    assert restored.scores == {0: 0.1, 1: 0.2}
    assert WeightKeeper(str(tmp_path / "none"), keep=0).wants(0, 1.0) is False
