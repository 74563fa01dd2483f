#!/usr/bin/env bash
# Set up einspace in ./.venv: CPU torch pinned (GPU users: install your CUDA torch first and
# skip the pin with EINSPACE_TORCH=skip), the package in editable mode, the test tools and the
# packages the built-in tasks generate their data from.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "${EINSPACE_TORCH:-cpu}" != "skip" ]; then
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
.venv/bin/python -m pip install --quiet -e ".[test,tasks]"
# The chess endgame tables ship only in python-chess's source distribution; the chess task (and
# its tests, which skip without them) read them from ~/.cache/einspace/syzygy.
.venv/bin/python -m einspace.tasks.chess_wdl --fetch \
    || echo "warning: could not fetch the chess endgame tables; the chess task is unavailable"
.venv/bin/python -c "import nltk, torch, einspace; print('einspace ready: torch', torch.__version__)"
