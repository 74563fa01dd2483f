"""One file is enough for a new search strategy: this module declares one (a hill climber with a
typed config section), registers it, and it passes the conformance suite, is a checked config
section, and runs end to end through ``einspace search`` on local Ray."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
import yaml
from test_strategy_conformance import (
    check_deterministic_per_seed,
    check_replayed_tells_continue_the_search,
    check_unusable_results_are_handled,
    check_valid_proposals,
)

from einspace.cli import main
from einspace.errors import ConfigError, SamplingError
from einspace.mutation import mutate
from einspace.search.checks import check_integer
from einspace.search.config import default_config, resolve
from einspace.search.store import open_run_store
from einspace.search.strategies import (
    Outcome,
    Proposal,
    Strategy,
    StrategyContext,
    StrategySettings,
    register,
    registry,
    strategy_names,
)

# -- the toy strategy: everything it needs is here -----------------------------------------------


@dataclass
class ClimbSettings(StrategySettings):
    """The ``toy:`` config section."""

    restart_every: int = 4
    """Every this many proposals, a fresh sample instead of a mutation of the best."""

    def check(self, section: str) -> None:
        check_integer(f"{section}.restart_every", self.restart_every, 1)


class HillClimb(Strategy):
    """Mutates the best full-budget result so far; samples until there is one, and at every
    ``restart_every``-th proposal."""

    name = "toy"
    Settings = ClimbSettings

    def __init__(self, sampler, input_shape: tuple[int, ...], restart_every: int = 4):
        self.sampler = sampler
        self.input_shape = tuple(input_shape)
        self.restart_every = restart_every
        self.best: Outcome | None = None

    @classmethod
    def create(cls, settings: ClimbSettings, context: StrategyContext) -> HillClimb:
        return cls(context.sampler, context.input_shape, settings.restart_every)

    def ask(self, index: int, rng: random.Random) -> Proposal:
        if self.best is not None and index % self.restart_every:
            try:
                child = mutate(self.best.derivation, self.input_shape, rng, self.sampler)
            except SamplingError:
                pass
            else:
                return Proposal(child, "mutation", (self.best.index,))
        return Proposal(self.sampler.sample(self.input_shape, rng).derivation, "sample")

    def tell(self, outcome: Outcome) -> None:
        if outcome.usable and (self.best is None or outcome.score > self.best.score):
            self.best = outcome

    def state(self) -> dict:
        return {"best": None if self.best is None else self.best.index}


@pytest.fixture
def toy(monkeypatch):
    """The toy registered for one test (the registry is restored afterwards, so the shipped
    strategies' suite never sees it)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register(HillClimb)
    return HillClimb.name


# -- what registering it gives -------------------------------------------------------------------

def test_the_toy_passes_the_conformance_suite(toy):
    check_valid_proposals(toy)
    check_deterministic_per_seed(toy)
    for lag in (1, 3, None):
        check_replayed_tells_continue_the_search(toy, lag)
    check_unusable_results_are_handled(toy)


def test_the_toy_is_a_config_choice_with_a_checked_section(toy):
    assert toy in strategy_names()
    assert default_config()["toy"] == {"restart_every": 4}
    config = resolve({"search": {"strategy": "toy"}, "toy": {"restart_every": 2}})
    assert config.settings == ClimbSettings(restart_every=2)
    with pytest.raises(ConfigError, match="toy.restart_every must be an integer >= 1"):
        resolve({"search": {"strategy": "toy"}, "toy": {"restart_every": 0}})
    with pytest.raises(ConfigError, match="unknown config key 'toy.restart'"):
        resolve({"toy": {"restart": 2}})


def test_the_toy_is_unknown_once_unregistered():
    assert "toy" not in strategy_names()
    with pytest.raises(ConfigError, match="search.strategy must be one of"):
        resolve({"search": {"strategy": "toy"}})


@pytest.mark.slow
def test_the_toy_runs_end_to_end_through_einspace_search(toy, tmp_path, capsys):
    run = tmp_path / "toy-run"
    code = main(["search", "--config", "quickstart", "--strategy", toy, "--trials", "2",
                 "--epochs", "1", "--no-final", "--quiet", "--out", str(run)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "trials: 2 (" in out
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert stored["search"]["strategy"] == "toy" and stored["toy"] == {"restart_every": 4}
    trials = open_run_store(run).latest()
    assert [t.index for t in trials] == [0, 1]
    assert all(t.done and t.origin == "sample" for t in trials)
