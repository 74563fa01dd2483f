#!/usr/bin/env bash
# Set up einspace in ./.venv: CPU torch pinned (GPU users: install your CUDA torch first and
# skip the pin with EINSPACE_TORCH=skip), the package in editable mode, the test tools and the
# packages the built-in tasks generate their data from.  As root (or with passwordless sudo) it
# also installs Debian packages with apt-get: fortunes and dataset-fashion-mnist (the data of
# gutenberg_lite and fashiontile) and graphviz (the layout of data-flow pictures); skip that
# with EINSPACE_APT=skip.
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
.venv/bin/python -m pip install --quiet -e ".[test,tasks,export,pictures]"
# The Debian packages the gutenberg_lite and fashiontile tasks read (their tests skip without
# them) and Graphviz for the pictures: installed as root or with passwordless sudo unless
# EINSPACE_APT=skip; `apt-get update` only if a first try fails.
APT_PACKAGES="fortunes dataset-fashion-mnist graphviz"
AS_ROOT=""
[ "$(id -u)" = 0 ] || AS_ROOT="sudo -n"
apt_install() {
    # shellcheck disable=SC2086  # the package list is meant to split into words
    $AS_ROOT env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        $APT_PACKAGES
}
if [ "${EINSPACE_APT:-install}" = "skip" ]; then
    echo "EINSPACE_APT=skip: not installing $APT_PACKAGES; without them the gutenberg_lite and" \
        "fashiontile tasks are unavailable and pictures use the built-in layout"
elif command -v apt-get >/dev/null && { [ -z "$AS_ROOT" ] || sudo -n true 2>/dev/null; }; then
    apt_install || { $AS_ROOT apt-get update -q && apt_install; } \
        || echo "warning: could not install $APT_PACKAGES (apt-get failed)"
else
    echo "warning: $APT_PACKAGES not installed (needs apt-get and root or passwordless sudo);" \
        "the gutenberg_lite and fashiontile tasks are unavailable, pictures use the built-in" \
        "layout"
fi
# The chess endgame tables ship only in python-chess's source distribution; the chess task (and
# its tests, which skip without them) read them from ~/.cache/einspace/syzygy.
.venv/bin/python -m einspace.tasks.fetch_syzygy --fetch \
    || echo "warning: could not fetch the chess endgame tables; the chess task is unavailable"
.venv/bin/python -c "import nltk, torch, einspace; print('einspace ready: torch', torch.__version__)"
