"""Test-wide settings: one torch thread (the networks under test are small, so threads cost more
than they save on a 2-core CI machine, and results stay bit-for-bit repeatable)."""

import torch

torch.set_num_threads(1)
