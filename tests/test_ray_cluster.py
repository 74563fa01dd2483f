"""A search on a real two-node Ray cluster, both nodes on this machine.

The test starts a head (``ray start --head``) and a second node (``ray start --address``), each
with one CPU so that two concurrent one-CPU trials must go one to each node, runs
``einspace search --address 127.0.0.1:PORT --workers 2`` against it as a separate process, and
checks in the trial database that every trial finished and that the trials ran on both nodes.

Pitfalls this handles, each of which a real cluster meets too:

* **Token authentication** (Ray 2.60): ``ray start --head`` turns it on by itself when a token
  file ``~/.ray/auth_token`` exists (any earlier local ``ray.init()`` writes one), but neither
  ``ray start --address`` nor a driver connecting to an explicit address does, so they are
  refused (``AuthenticationError: InvalidAuthToken``).  Every process here gets
  ``RAY_AUTH_MODE=token`` and one fresh ``RAY_AUTH_TOKEN``.
* The cluster gets its own ``--temp-dir``, so the ``ray_current_cluster`` file that ``ray start``
  writes does not make a concurrent plain ``ray.init()`` on this machine join it, and each node
  gets free ports where Ray's defaults are fixed (dashboard agent 52365, Ray Client 10001).
* Ray maps 127.0.0.1 to the machine's own address, so "loopback" here means one host.

Teardown stops only this cluster's processes (those whose command line names its temp dir, and
their descendants), SIGTERM then SIGKILL.  ``ray stop --force`` would also do, but it stops
**every Ray process on the machine** (other searches, other users' clusters), which is fine in CI
and harmful on a shared machine.  Both tests share one cluster (start and stop take about
20 s); the raylet-killing test comes last.
"""

import importlib.util
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from einspace.search.store import open_run_store

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).with_name("ray")
TRIALS = 6
CONFIG = {
    "task": {"name": "language_lite", "size": "small"},
    "seed": 5,
    "search": {"strategy": "evolution", "trials": TRIALS, "retries": 0},
    "evolution": {"population_size": 4, "tournament_size": 2, "seeds": []},
    "training": {"epochs": 1, "batch_size": 64},
    "budget": {"max_params": 200_000, "max_flops": 20_000_000},
    "final": {"top_k": 0},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_args() -> list[str]:
    """Per-node flags: one CPU, and a free port where Ray's default is a fixed one."""
    return ["--num-cpus=1", "--num-gpus=0", f"--dashboard-agent-listen-port={free_port()}",
            "--disable-usage-stats"]


def client_port_args() -> list[str]:
    """A free Ray Client port for the head where ray[client] is installed (its default, 10001,
    may be taken by another head on this machine); the flag is refused without ray[client]."""
    return [] if importlib.util.find_spec("grpc") is None else \
        [f"--ray-client-server-port={free_port()}"]


def processes_under(marker: str) -> list[int]:
    """Processes whose command line contains ``marker``, and all their descendants."""
    return with_descendants(lambda pid, cmdline: marker in cmdline)


def with_descendants(chosen) -> list[int]:
    """Processes for which ``chosen(pid, cmdline)`` holds, and all their descendants."""
    parent: dict[int, int] = {}
    matched: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        parent[int(entry.name)] = int(fields[1])
        if chosen(int(entry.name), cmdline):
            matched.add(int(entry.name))
    found = set(matched)
    while True:
        more = {pid for pid, ppid in parent.items() if ppid in found} - found
        if not more:
            return sorted(found - {os.getpid()})
        found |= more


def raylets(temp_dir: str) -> list[int]:
    """The raylet processes of the cluster that lives in ``temp_dir``."""
    found = []
    for pid in processes_under(temp_dir):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                found.append(pid)
        except OSError:
            continue
    return found


def stop_cluster(temp_dir: str, grace: float = 5.0) -> None:
    pids = processes_under(temp_dir)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline and processes_under(temp_dir):
            time.sleep(0.5)
        pids = processes_under(temp_dir)
        if not pids:
            return


@pytest.fixture(scope="module")
def cluster():
    """The address and environment of a two-node cluster on this machine, shared by the
    module's tests; the test that kills the second node's raylet is the last of them."""
    if not RAY.is_file():
        pytest.skip(f"no ray executable next to {sys.executable}")
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ert-", dir="/tmp")  # short: socket paths are limited
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)

    def ray(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(RAY), *args], capture_output=True, text=True, timeout=120,
                              env=env)

    began = time.perf_counter()
    try:
        head = ray("start", "--head", f"--port={port}", "--include-dashboard=false",
                   *client_port_args(), f"--temp-dir={temp_dir}", *node_args())
        assert head.returncode == 0, f"ray start --head failed:\n{head.stdout}\n{head.stderr}"
        head_raylets = raylets(temp_dir)
        worker = ray("start", f"--address={address}", *node_args())
        assert worker.returncode == 0, \
            f"ray start --address failed:\n{worker.stdout}\n{worker.stderr}"
        print(f"two-node cluster up in {time.perf_counter() - began:.0f} s")
        yield address, env, sorted(set(raylets(temp_dir)) - set(head_raylets))

    finally:
        began = time.perf_counter()
        stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        print(f"cluster stopped in {time.perf_counter() - began:.0f} s")


def test_search_runs_trials_on_both_nodes(cluster, tmp_path):
    address, env, _ = cluster
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    run = tmp_path / "run"
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "einspace", "search", "--config", str(config), "--out", str(run),
         "--address", address, "--workers", "2", "--quiet"],
        capture_output=True, text=True, timeout=300, env=env)
    print(f"{TRIALS}-trial search on the two-node cluster: {time.perf_counter() - began:.0f} s")
    assert done.returncode == 0, done.stderr

    trials = open_run_store(run).latest()
    assert [t.index for t in trials] == list(range(TRIALS))
    assert all(t.done and t.status == "ok" for t in trials), \
        [(t.index, t.status, t.reason) for t in trials]
    nodes = {t.result["node"] for t in trials}
    assert len(nodes) == 2, f"all trials ran on one node: {nodes}"
    assert all(t.result["epochs_run"] == 1 for t in trials)
    # The best trial's weights came back to the driver's run directory through the keeper actor.
    best = max(trials, key=lambda t: (t.score, -t.index))
    assert (run / "weights" / f"trial-{best.index}.pt").is_file()


def running_attempts(run: Path) -> int:
    db = run / "trials.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=60) as connection:
            return connection.execute("select count(*) from trials where state = 'RUNNING'"
                                      ).fetchone()[0]
    except sqlite3.Error:
        return 0


def training_under(raylet: int) -> bool:
    """Whether a worker process of this raylet is executing a trial: Ray titles a worker
    process ``ray::<actor>.<method>`` while it runs a method, and a Tune trial runs ``train``."""
    for pid in with_descendants(lambda pid, _: pid == raylet):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if cmdline.startswith("ray::") and ".train" in cmdline:
            return True
    return False


def test_a_dead_raylet_costs_attempts_that_are_recorded_and_retried(cluster, tmp_path):
    """SIGKILL of the second node's raylet and its workers while both nodes train: the search
    finishes on the head, and the attempt lost with the node keeps its own record (node,
    seconds, reason)."""
    address, env, worker_raylets = cluster
    assert len(worker_raylets) == 1, worker_raylets
    config = tmp_path / "search.yaml"
    # Trials reuse their worker processes, so one-epoch trials can all end within the wait
    # below: four epochs keep both nodes training when the raylet dies.
    config.write_text(yaml.safe_dump({**CONFIG, "search": {**CONFIG["search"], "retries": 2},
                                      "training": {**CONFIG["training"], "epochs": 4}}))
    run = tmp_path / "run"
    search = subprocess.Popen(
        [sys.executable, "-m", "einspace", "search", "--config", str(config), "--out", str(run),
         "--address", address, "--workers", "2", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    # Two running attempts are not enough: both may sit on the head while the second node
    # idles, and then the kill loses nothing. Wait until a trial executes on the second node.
    while running_attempts(run) < 2 or not training_under(worker_raylets[0]):
        assert search.poll() is None and time.time() < deadline, \
            "never two trials at once with one on the second node"
        time.sleep(0.2)
    # A lost machine takes its worker processes with it; killing only the raylet would leave
    # the trial's worker running long enough to finish and report a result under load.
    for pid in with_descendants(lambda pid, _: pid == worker_raylets[0]):
        os.kill(pid, signal.SIGKILL)
    _, stderr = search.communicate(timeout=600)
    assert search.returncode == 0, stderr
    assert "Traceback" not in stderr

    attempts = open_run_store(run).trials()
    assert sorted(t.index for t in attempts if t.done) == list(range(TRIALS))
    lost = [t for t in attempts if t.status == "lost"]
    assert lost, [(t.index, t.status, t.reason) for t in attempts]
    for t in lost:
        assert t.reason.startswith("attempt lost, retried: ")
        # the node is None when the attempt died before its worker reported in
        assert "node" in t.result and t.result["seconds"] > 0
        retry = [a for a in attempts if a.index == t.index and a.number > t.number]
        assert retry and retry[-1].result.get("node") != t.result["node"]
