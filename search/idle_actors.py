"""Keeping every idle trial actor of a Tune session alive until the next trial needs it.

With ``reuse_actors=True`` Tune hands a finished trial's actor (its worker process, with torch,
einspace and the task already loaded) to the next trial, but while no trial is waiting to start
it keeps only *one* idle actor and stops the others.  Deterministic ordering often leaves a slot
without a trial for a moment (proposal ``n`` waits for the outcome of trial ``n - lag``), so a
second worker lost its process at every such wait and the next trial paid a fresh process's
start-up: seconds quietly, tens of seconds on a loaded machine, most of the workers' time
outside training.  Every trial of a search asks for the same resources and at most ``workers``
run at once, so keeping up to ``workers`` idle actors holds nothing another trial could use.

Tune builds its actor cache from ``ray.tune.execution.tune_controller._ObjectCache``;
:func:`keep_idle_actors` swaps in a subclass for the length of one ``Tuner.fit``.  On a Ray
whose controller has no such name the search runs with Tune's own policy (slower, never wrong).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def keep_idle_actors(workers: int) -> Iterator[None]:
    """Within the block, Tune sessions keep up to ``workers`` idle trial actors (not one)."""
    from ray.tune.execution import tune_controller

    original = getattr(tune_controller, "_ObjectCache", None)
    if original is None:
        yield
        return
    tune_controller._ObjectCache = _idle_cache_class(original, workers)
    try:
        yield
    finally:
        tune_controller._ObjectCache = original


def _idle_cache_class(base: type, workers: int) -> type:
    """Tune's object cache, but one that may hold up to ``workers`` objects (instead of one)
    while no trial is waiting for any: what it yields on a flush, Tune stops."""

    class IdleActorCache(base):
        def _may_keep_more(self) -> bool:
            return (self._may_keep_one and self._num_cached_objects < workers
                    and not any(self._max_num_objects.values()))

        def cache_object(self, key, obj) -> bool:
            if len(self._cached_objects[key]) < self._max_num_objects[key] \
                    or not self._may_keep_more():
                return super().cache_object(key, obj)
            self._cached_objects[key].append(obj)
            self._num_cached_objects += 1
            return True

        def flush_cached_objects(self, force_all: bool = False):
            if not force_all and self._may_keep_one and self._num_cached_objects <= workers \
                    and not any(self._max_num_objects.values()):
                return
            yield from super().flush_cached_objects(force_all=force_all)

    return IdleActorCache
