"""Search configurations shared by the test files that run real searches on local Ray."""

import sys

EINSPACE = [sys.executable, "-m", "einspace"]
"""The CLI, run as its own process (as a user runs it)."""

FAULTS_CONFIG = {
    # three one-epoch random trials on the small language task: a fault case in seconds
    "task": {"name": "language_lite", "size": "small"},
    "seed": 3,
    "search": {"strategy": "random", "trials": 3, "workers": 1, "retries": 1},
    "training": {"epochs": 1, "batch_size": 64},
    "budget": {"max_params": 200_000, "max_flops": 20_000_000, "max_activations": 200_000},
    "final": {"top_k": 0},
}

SEARCH_CONFIG = {
    # a 14-trial two-worker evolution from samples: long enough to kill and resume at every point
    "task": {"name": "language_lite", "size": "small"},
    "seed": 3,
    "search": {"strategy": "evolution", "trials": 14, "workers": 2, "retries": 1},
    "evolution": {"population_size": 6, "tournament_size": 3, "seeds": []},
    "training": {"epochs": 1, "batch_size": 64},
    "budget": {"max_params": 200_000, "max_flops": 20_000_000, "max_activations": 200_000},
    "final": {"top_k": 1, "epochs": 1},
}
