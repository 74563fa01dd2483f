"""The Tune actor cache of a search session keeps one idle actor per worker, not one in all."""

from ray.tune.execution import tune_controller

from einspace.search.idle_actors import keep_idle_actors

SLOT = "the one resource request every trial of a search makes"


def test_idle_actors_of_every_worker_are_kept_while_no_trial_waits():
    original = tune_controller._ObjectCache
    with keep_idle_actors(2):
        cache = tune_controller._ObjectCache(may_keep_one=True)
        assert cache.cache_object(SLOT, "actor a") and cache.cache_object(SLOT, "actor b")
        assert not cache.cache_object(SLOT, "actor c")  # more than the workers: stopped
        assert list(cache.flush_cached_objects()) == []
        assert cache.num_cached_objects == 2
    assert tune_controller._ObjectCache is original


def test_tunes_own_policy_still_decides_once_trials_wait_or_the_search_ends():
    with keep_idle_actors(2):
        cache = tune_controller._ObjectCache(may_keep_one=True)
    cache.cache_object(SLOT, "actor a")
    cache.cache_object(SLOT, "actor b")
    cache.increase_max("another resource request")  # a trial waits for other resources
    assert list(cache.flush_cached_objects()) == ["actor a", "actor b"]
    cache.decrease_max("another resource request")
    cache.cache_object(SLOT, "actor c")
    cache.cache_object(SLOT, "actor d")
    assert list(cache.flush_cached_objects(force_all=True)) == ["actor c", "actor d"]
    assert cache.pop_cached_object(SLOT) is None


def test_a_trial_waiting_for_the_slot_takes_a_kept_actor():
    with keep_idle_actors(2):
        cache = tune_controller._ObjectCache(may_keep_one=True)
    cache.cache_object(SLOT, "actor a")
    cache.cache_object(SLOT, "actor b")
    cache.increase_max(SLOT)
    assert cache.pop_cached_object(SLOT) == "actor a"
    assert list(cache.flush_cached_objects()) == []  # one waiting trial, one kept actor
