"""Test-wide settings.

* One torch thread: the networks under test are small, so threads cost more than they save on a
  2-core CI machine, and results stay bit-for-bit repeatable.
* Under pytest-xdist (the README's ``-n auto --dist loadfile``) each worker builds the built-in
  tasks into a cache of its own: two workers may need the same task at once, and a task
  directory is written file by file, so one worker could read what the other is still writing.
"""

import os
from pathlib import Path

import torch

torch.set_num_threads(1)

WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER and "EINSPACE_CACHE" not in os.environ:
    os.environ["EINSPACE_CACHE"] = str(Path.home() / ".cache" / "einspace" / f"xdist-{WORKER}")
