"""Test-wide settings.

* One torch thread: the networks under test are small, so threads cost more than they save on a
  2-core CI machine, and results stay bit-for-bit repeatable.
* Under pytest-xdist (the README's ``-n auto --dist loadfile``) each worker builds the built-in
  tasks into a cache of its own: two workers may need the same task at once, and a task
  directory is written file by file, so one worker could read what the other is still writing.
* ``one_torch_thread``: modules that build many small networks hold one thread even after a
  search test in the same process has set another count.
"""

import os
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
