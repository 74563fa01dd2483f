"""Screening before training (issue 12): zero-cost proxies that never read labels, deterministic
per seed and robust to broken candidates; a surrogate that learns a monotone relation; a ranking
that trains the candidate the surrogate scores best and puts failing candidates last."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from einspace.errors import ConfigError
from einspace.proxies import PROXIES, score_proxies
from einspace.search.screening import Screener, ScreeningOptions, screen, screening_batch
from einspace.search.screening.features import FeatureSpace
from einspace.search.screening.surrogate import SURROGATES, Surrogate
from einspace.tasks.data import CLASSIFICATION, Split, TaskData
from einspace.text import parse

SHAPE = (1, 8, 8)
CONV = "(routing im2col3k1s1p (computation linear{w}) col2im)"
CONV_RELU = f"(sequential {CONV} (computation leakyrelu))"
PATCHES = "(routing im2col4k4s0p (computation linear{w}) col2im)"
NOT_FITTING = parse("(routing permute21 (computation linear16) permute21)")  # col mode only


class LabelTrap(Split):
    """A split whose labels fail the test the moment anything reads them."""

    def __getattribute__(self, name):
        if name == "y":
            raise AssertionError("screening read the task's labels")
        return super().__getattribute__(name)


def images(n: int = 40, seed: int = 0) -> np.ndarray:
    return 2.0 + np.random.default_rng(seed).standard_normal((n,) + SHAPE).astype(np.float32)


def task(split_type=Split, y="trap") -> TaskData:
    labels = None if y is None else np.zeros(40, dtype=np.int64)
    splits = {name: split_type(images(seed=i), labels) for i, name in enumerate(("train", "valid"))}
    return TaskData("unlabelled", SHAPE, CLASSIFICATION, splits, num_classes=3)


def batch(size: int = 8) -> np.ndarray:
    return screening_batch(task(), size, seed=0)


@pytest.mark.parametrize("split_type, labels", [(LabelTrap, "trap"), (Split, None)],
                         ids=["labels-raise-on-access", "labels-absent"])
def test_proxies_compute_without_touching_labels(split_type, labels):
    data = task(split_type, labels)
    inputs = screening_batch(data, 8, seed=0)
    assert inputs.shape == (8,) + SHAPE
    assert abs(float(inputs.mean())) < 0.5  # normalised with the train statistics
    scores = score_proxies(parse(CONV_RELU.format(w=16)), inputs, seed=0, num_classes=3)
    assert scores.ok and scores.failure == ""
    assert set(scores.values) == set(PROXIES)
    assert all(v.ok and math.isfinite(v.value) and v.seconds >= 0 for v in scores.values.values())


def test_proxies_are_deterministic_per_seed_and_leave_the_global_rng_alone():
    derivation = parse(CONV_RELU.format(w=16))
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first = score_proxies(derivation, batch(), seed=7, num_classes=3)
    assert torch.equal(torch.rand(3), expected_draw)
    again = score_proxies(derivation, batch(), seed=7, num_classes=3)
    other = score_proxies(derivation, batch(), seed=8, num_classes=3)
    assert {n: v.value for n, v in first.values.items()} == \
        {n: v.value for n, v in again.values.items()}
    assert first.values["grad_norm"].value != other.values["grad_norm"].value
    assert screening_batch(task(), 8, seed=1).tobytes() == screening_batch(task(), 8, 1).tobytes()


def test_proxy_values_follow_their_definitions():
    """NASWOT's kernel has N_A on its diagonal, so log det <= N log N_A; a wider layer of
    rectifiers separates samples at least as well; synflow grows with the parameters."""
    narrow = score_proxies(parse(CONV_RELU.format(w=16)), batch(), seed=0, num_classes=3)
    wide = score_proxies(parse(CONV_RELU.format(w=64)), batch(), seed=0, num_classes=3)
    units = 64 * 8 * 8
    assert wide.values["naswot"].value <= 8 * math.log(units) + 1e-9
    assert wide.values["naswot"].value >= narrow.values["naswot"].value
    assert wide.values["synflow"].value > narrow.values["synflow"].value


def test_a_broken_candidate_gets_failed_values_with_reasons_not_an_exception():
    unbuildable = score_proxies(NOT_FITTING, batch(), seed=0, num_classes=3)
    assert not unbuildable.ok
    assert "permute21" in unbuildable.failure and "col mode" in unbuildable.failure
    assert all(not v.ok and v.failure == unbuildable.failure
               for v in unbuildable.values.values())
    poisoned = np.full((8,) + SHAPE, np.nan, dtype=np.float32)
    scores = score_proxies(parse(CONV_RELU.format(w=16)), poisoned, seed=0, num_classes=3)
    for name in ("naswot", "grad_norm", "jacob_cov"):
        assert not scores.values[name].ok
        assert scores.values[name].failure.startswith("non-finite")
    assert scores.values["synflow"].ok  # data-independent: it never sees the inputs


def test_unknown_proxies_and_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown proxies snip"):
        score_proxies(parse(CONV.format(w=16)), batch(), ["naswot", "snip"])
    with pytest.raises(ConfigError, match="unknown screening keys k"):
        ScreeningOptions.from_dict({"k": 4})
    with pytest.raises(ConfigError, match="candidates must be a positive integer"):
        ScreeningOptions.from_dict({"candidates": 0})
    with pytest.raises(ConfigError, match="surrogate must be one of"):
        ScreeningOptions.from_dict({"surrogate": "svm"})
    assert not ScreeningOptions.from_dict(None).enabled
    options = ScreeningOptions.from_dict({"candidates": 4, "proxies": ["naswot"]})
    assert options.enabled and options.proxies == ("naswot",)


def test_features_are_fixed_width_counts_sizes_and_proxies():
    space = FeatureSpace(SHAPE, ("naswot", "synflow"))
    derivation = parse(CONV_RELU.format(w=16))
    scores = score_proxies(derivation, batch(), ("naswot", "synflow"), num_classes=3)
    row = dict(zip(space.names, space.vector(derivation, scores), strict=True))
    assert len(row) == space.width
    assert row["production:sequential"] == 1 and row["production:routing"] == 1
    assert row["production:computation"] == 2
    assert row["prerouting:im2col3k1s1p"] == 1 and row["postrouting:col2im"] == 1
    assert row["computation:linear16"] == 1 and row["computation:leakyrelu"] == 1
    assert row["computation:linear32"] == 0
    assert row["log_params"] == pytest.approx(math.log1p(16 * (9 + 1)))
    assert row["proxy:naswot"] == scores.values["naswot"].value
    assert row["proxy_failed:naswot"] == 0 and row["proxy_failed:synflow"] == 0


@pytest.mark.parametrize("kind", sorted(SURROGATES))
def test_surrogate_recovers_a_monotone_relation(kind):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (200, 6))
    score = np.exp(2 * x[:, 0]) + 0.05 * rng.standard_normal(200)  # x0 alone matters
    surrogate = Surrogate(kind, seed=0)
    for row, value in zip(x, score, strict=True):
        assert surrogate.observe(row, value)
    assert not surrogate.observe(x[0], -math.inf) and surrogate.count == 200
    grid = np.tile(rng.uniform(0, 1, 6), (11, 1))
    grid[:, 0] = np.linspace(0.05, 0.95, 11)
    predicted = surrogate.predict(grid)
    assert spearmanr(predicted, grid[:, 0]).statistic > 0.9
    assert predicted[-1] - predicted[0] > 0.7 * (math.exp(1.9) - math.exp(0.1))
    held_out = rng.uniform(0, 1, (50, 6))
    assert spearmanr(surrogate.predict(held_out), held_out[:, 0]).statistic > 0.9
    twin = Surrogate(kind, seed=0)
    for row, value in zip(x, score, strict=True):
        twin.observe(row, value)
    assert np.array_equal(twin.predict(grid), predicted)  # deterministic per seed


def screener(min_trials: int = 3, **options) -> Screener:
    return Screener(ScreeningOptions(candidates=4, min_trials=min_trials, batch_size=8,
                                     **options), batch(), num_classes=3, seed=0)


def test_screening_trains_the_candidate_the_surrogate_scores_best():
    s = screener()
    widths = (16, 32, 64, 128, 256)
    for w in widths:  # the score grows with the width: the surrogate should learn that
        s.observe(parse(PATCHES.format(w=w)), w / 256)
    assert s.surrogate.count == len(widths)
    candidates = [parse(PATCHES.format(w=w)) for w in (32, 256, 64, 16)]
    screening = s.screen(candidates)
    assert screening.method == "surrogate"
    vectors = np.stack([s.features.vector(c, score_proxies(c, s.batch, s.options.proxies,
                                                           seed=s.seed, num_classes=3))
                        for c in candidates])
    predicted = s.surrogate.predict(vectors)
    assert screening.best == candidates[int(np.argmax(predicted))]
    assert [r.value for r in screening.ranking] == sorted(predicted.tolist(), reverse=True)
    assert screening.best == parse(PATCHES.format(w=256))
    assert screening.seconds > 0 and screening.seconds_per_candidate <= screening.seconds


def test_before_enough_trials_the_mean_proxy_rank_decides():
    s = screener(min_trials=10)
    candidates = [parse(CONV_RELU.format(w=w)) for w in (16, 64)]
    screening = s.screen(candidates)
    assert screening.method == "proxies"
    assert all(0.0 <= r.value <= 1.0 for r in screening.ranking)
    assert screening.ranking[0].value >= screening.ranking[1].value
    assert screening.seconds_per_candidate == pytest.approx(screening.seconds / 2)


def test_failing_candidates_are_ranked_last_with_their_reason(monkeypatch):
    def raising(self, x):
        raise RuntimeError("activation exploded")

    monkeypatch.setattr(nn.LeakyReLU, "forward", raising)
    s = screener(min_trials=1)
    s.observe(parse(CONV.format(w=32)), 0.5)
    candidates = [NOT_FITTING, parse(CONV_RELU.format(w=16)), parse(CONV.format(w=16)),
                  parse(CONV.format(w=64))]
    screening = s.screen(candidates)
    assert {r.derivation for r in screening.ranking[:2]} == set(candidates[2:])
    last = {r.derivation: r for r in screening.ranking[2:]}
    assert set(last) == set(candidates[:2])
    assert all(r.value is None for r in last.values())
    assert "permute21" in last[NOT_FITTING].failure
    assert "RuntimeError: activation exploded" in last[candidates[1]].failure


def test_observing_reuses_the_screened_features_and_skips_failed_trials(monkeypatch):
    calls = []

    def counted(derivation, *args, **kwargs):
        calls.append(derivation)
        return score_proxies(derivation, *args, **kwargs)

    monkeypatch.setattr(screen, "score_proxies", counted)
    s = screener(min_trials=1)
    s.observe(parse(CONV.format(w=32)), None)
    s.observe(parse(CONV.format(w=32)), -math.inf)
    assert s.surrogate.count == 0 and not calls  # a failed trial costs nothing
    screening = s.screen([parse(CONV.format(w=16)), parse(CONV.format(w=64))])
    assert len(calls) == 2
    s.observe(screening.best, 0.25)
    assert s.surrogate.count == 1 and len(calls) == 2  # the screened features were kept
    s.observe(parse(CONV.format(w=32)), 0.5)  # never screened (a seed): computed now
    assert s.surrogate.count == 2 and len(calls) == 3
    assert s.seconds >= screening.seconds
