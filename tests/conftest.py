"""Test-wide settings.

* One torch thread: the networks under test are small, so threads cost more than they save on a
  2-core CI machine, and results stay bit-for-bit repeatable.
* Under pytest-xdist (the README's ``-n auto --dist loadfile``) each worker builds the built-in
  tasks into a cache of its own: two workers may need the same task at once, and a task
  directory is written file by file, so one worker could read what the other is still writing.
* ``one_torch_thread``: modules that build many small networks hold one thread even after a
  search test in the same process has set another count.
* ``local_ray``: one local Ray for the in-process searches of a module.  ``run_search`` uses an
  initialised Ray as it is, so each search skips starting and stopping its own (about 8 s of
  CPU each); ``no_ray`` clears it for a test that starts Ray with settings of its own, and
  whatever is left stops with the module.
"""

import logging
import os
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER and "EINSPACE_CACHE" not in os.environ:
    os.environ["EINSPACE_CACHE"] = str(Path.home() / ".cache" / "einspace" / f"xdist-{WORKER}")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a whole module, the previous count restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)



@pytest.fixture
def local_ray():
    """A local Ray that stays up for the rest of the module (started as ``einspace search``
    starts one), so the module's in-process searches share it."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)


@pytest.fixture
def no_ray():
    """No Ray running when the test starts: for a test that starts Ray with settings of its own
    (environment variables read at start-up, fake GPUs)."""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()


@pytest.fixture(scope="module", autouse=True)
def stop_ray_after_module():
    """Whatever Ray a module's tests left running stops with the module."""
    yield
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()
