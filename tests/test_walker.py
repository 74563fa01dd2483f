"""The walker base and the production registry: one file is enough for a new pass over
derivations.

The toy walker below is the whole of such a pass: a class with one method per production it
treats specially (here none: ``default`` counts every node by its production) and it runs on the
derivations a real ``einspace search`` recorded.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter

import pytest

import einspace
from einspace.derivation import Derivation
from einspace.errors import EinspaceError, NoRuleError, ParseError
from einspace.productions import MODULE, child_slots, names, production
from einspace.search.store import open_run_store
from einspace.walker import Walker


class ProductionCounter(Walker):
    """Nodes per production in a tree; a computation node's terminal is not a node."""

    def default(self, label: str, node: Derivation) -> Counter:
        counts = Counter({label: 1})
        for child in node.children:
            if isinstance(child, Derivation):
                counts += self.walk(child)
        return counts


def expected_counts(derivation: Derivation) -> Counter:
    return Counter(node.label for _, node in derivation.walk() if isinstance(node, Derivation))


def test_toy_walker_counts_nodes_of_sampled_derivations():
    sampler = einspace.Sampler()
    for seed in range(20):
        sampled = sampler.sample((3, 16, 16), random.Random(seed))
        counts = ProductionCounter().walk(sampled.derivation)
        assert counts == expected_counts(sampled.derivation)
        assert set(counts) <= set(names())


def test_walker_rules_per_production_override_the_default():
    class Leaves(ProductionCounter):
        def computation(self, node: Derivation) -> Counter:
            return Counter({node.children[0]: 1})

    d = einspace.parse("(sequential (computation norm) (routing identity (computation linear16) "
                       "identity))")
    assert Leaves().walk(d) == Counter({"sequential": 1, "routing": 1, "norm": 1, "linear16": 1})


def test_walker_errors_are_clear():
    with pytest.raises(NoRuleError, match="Walker has no rule for the 'sequential' production"):
        Walker().walk(einspace.parse("(sequential (computation norm) (computation norm))"))
    with pytest.raises(ParseError, match="unknown production 'residual'; expected one of"):
        Walker().walk(Derivation("residual", ("norm",)))
    assert issubclass(NoRuleError, EinspaceError)


def test_productions_declare_their_slots():
    assert names() == ("sequential", "branching", "routing", "computation")
    two_way = einspace.parse("(branching clone_tensor2 (computation norm) (computation norm) "
                             "add_tensors)")
    assert child_slots(two_way) == (production("branching").first, MODULE, MODULE,
                                    production("branching").slots("clone_tensor2")[-1])
    assert len(production("branching").slots("clone_tensor4")) == 3


def test_sampler_returns_the_annotation_of_its_sample():
    sampled = einspace.Sampler().sample((3, 16, 16), random.Random(0))
    assert sampled.annotation.derivation == sampled.derivation
    assert sampled.annotation is sampled.annotation  # made once, then kept
    assert sampled.annotation.cost == einspace.annotate(sampled.derivation, (3, 16, 16)).cost


@pytest.mark.slow
def test_toy_walker_runs_on_the_derivations_of_a_search(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "einspace", "search", "--config", "quickstart",
                           "--budget", "2", "--epochs", "1", "--no-final", "--quiet",
                           "--out", str(run)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    trials = open_run_store(run).trials()
    assert len({t.index for t in trials}) == 2
    for trial in trials:
        assert ProductionCounter().walk(trial.derivation) == expected_counts(trial.derivation)
