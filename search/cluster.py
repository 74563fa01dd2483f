"""Connecting the driver to Ray: local by default, a cluster with ``--address``, fast failures.

``ray.init()`` without an address silently joins any cluster that ``ray start`` registered on
this host, and with an unreachable address it retries for many minutes.  A search must instead
be local unless told otherwise, and a wrong address must fail at once with one line naming it,
before anything is written.
"""

from __future__ import annotations

import logging
import os
import socket

from einspace.errors import ConfigError

LOCAL = "local"
PROBE_SECONDS = 10.0
TOKEN_HINT = ("if the cluster uses token authentication (Ray 2.60 enables it when the head "
              "finds ~/.ray/auth_token), export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<the "
              "head's ~/.ray/auth_token> before running einspace (see the README's cluster "
              "section)")


def check_address(address: str | None) -> None:
    """Refuse what cannot work before anything is written: Ray Client addresses (the driver
    keeps the trial database, so it must be a real driver) and addresses nobody answers at."""
    if address in (None, LOCAL):
        return
    if address.startswith("ray://"):
        raise ConfigError(f"--address {address}: Ray Client (ray://) addresses are not "
                          f"supported; give the head's GCS address host:port (default port "
                          f"6379) and run einspace where it can reach it")
    if address == "auto":
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r}: expected host:port (e.g. 10.0.0.1:6379), "
                          f"'local' or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_SECONDS).close()
    except OSError as e:
        raise ConfigError(f"cannot reach the Ray cluster at {address}: {e.strerror or e} "
                          f"(is `ray start --head --port={port}` running there?)") from None


def start_ray(address: str | None) -> bool:
    """Connect to ``address`` or start a local Ray; returns whether this call started it (an
    already initialised Ray, e.g. a test's, is used as it is)."""
    import ray

    # Driver-side Tune settings, also for an already initialised Ray: the trial database is the
    # record, so Tune's CSV/JSON/TensorBoard result files would only duplicate it (and
    # TensorBoard warns about the -inf score of every failed candidate).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False, "log_to_driver": False,
              "logging_level": logging.ERROR}
    target = address or LOCAL
    try:
        ray.init(address=target, **kwargs)
    except ray.exceptions.AuthenticationError as e:
        raise ConfigError(f"the Ray cluster at {target!r} refused this driver's token "
                          f"({str(e).splitlines()[0]}); {TOKEN_HINT}") from None
    except ConnectionError as e:
        raise ConfigError(f"cannot connect to the Ray cluster at {target!r} "
                          f"({str(e).splitlines()[0]}); {TOKEN_HINT}") from None
    return True
