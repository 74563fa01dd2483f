"""The accelerator-ready training path, run for real on the CPU: torch.compile of a candidate
(its time recorded, a failure falling back to eager), the precision and compile recipe keys, and
the GPU fields of a result (None on the CPU)."""

import math

import pytest
import torch
from test_trainer import FAST, Raises, classification_task, mlp, trace
from torch import nn

from einspace.errors import ConfigError
from einspace.tasks.compilation import CompiledTraining
from einspace.tasks.gpu_monitor import GpuMonitor, read_utilization
from einspace.tasks.recipe import Recipe
from einspace.tasks.trainer import train


@torch.library.custom_op("einspace_tests::double_without_fake", mutates_args=())
def double_without_fake(x: torch.Tensor) -> torch.Tensor:
    """Runs eagerly, but dynamo cannot trace it: it has no fake (meta) implementation."""
    return x * 2


class Uncompilable(nn.Module):
    """A working classifier that torch.compile rejects."""

    def __init__(self):
        super().__init__()
        self.net = mlp()

    def forward(self, x):
        return self.net(double_without_fake(x))


@pytest.mark.slow
def test_compiled_training_records_its_time_and_matches_eager():
    data = classification_task()
    recipe = FAST.with_overrides(epochs=2)
    compiled = train(mlp, data, recipe.with_overrides(compile="default"))
    eager = train(mlp, data, recipe)
    assert compiled.status == "ok" and compiled.score > 0.8
    record = compiled.compile
    assert record.mode == "default" and record.fallback == "" and not record.cuda_graphs
    assert 0 < record.seconds < compiled.seconds
    for c, e in zip(compiled.history, eager.history, strict=True):
        assert c.lr == e.lr and c.score == e.score
        assert c.train_loss == pytest.approx(e.train_loss, rel=1e-4)
    assert eager.compile.mode == "off" and eager.compile.seconds is None


def test_a_candidate_that_does_not_compile_falls_back_to_eager_and_says_why():
    data = classification_task()
    fallen = train(Uncompilable, data, FAST.with_overrides(epochs=2, compile="default"))
    eager = train(Uncompilable, data, FAST.with_overrides(epochs=2))
    assert fallen.status == "ok" and fallen.reason == ""
    assert "fake" in fallen.compile.fallback and fallen.compile.seconds is None
    assert trace(fallen) == trace(eager)     # it failed while tracing: nothing ran compiled
    assert fallen.to_dict()["compile"]["fallback"] == fallen.compile.fallback


def test_a_candidate_error_under_compile_is_the_candidates_failure():
    result = train(Raises(ValueError("bad shapes here")), classification_task(),
                   FAST.with_overrides(compile="default"))
    assert result.status == "failed" and result.score == -math.inf
    assert result.reason == "ValueError: bad shapes here"


def test_compiled_training_steps_eagerly_when_off():
    model = mlp()
    steps = CompiledTraining(model, "off", torch.device("cpu"))
    seen = []
    assert steps.step(lambda forward: seen.append(forward) or 7) == 7
    assert seen == [model] and steps.record.seconds is None
    with pytest.raises(ValueError, match="unknown compile mode"):
        CompiledTraining(model, "fastest", torch.device("cpu"))


def test_precision_and_compile_recipe_keys():
    r = Recipe()
    assert (r.precision, r.compile) == ("auto", "off")
    assert Recipe.from_dict({"compile": True}).compile == "default"
    assert Recipe.from_dict({"compile": False}).compile == "off"
    assert Recipe.from_dict({"compile": "reduce-overhead", "precision": "bf16"}) == \
        Recipe(compile="reduce-overhead", precision="bf16")
    for bad in ({"compile": "fast"}, {"compile": 1}, {"precision": "fp16"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Recipe.from_dict(bad)


def test_bf16_autocast_on_cpu_trains_and_changes_the_numbers():
    data = classification_task()
    bf16 = train(mlp, data, FAST.with_overrides(epochs=2, precision="bf16"))
    fp32 = train(mlp, data, FAST.with_overrides(epochs=2, precision="fp32"))
    auto = train(mlp, data, FAST.with_overrides(epochs=2))
    assert bf16.status == "ok" and bf16.score > 0.8
    assert trace(fp32) == trace(auto)                      # auto is fp32 on the CPU
    assert [r.train_loss for r in bf16.history] != [r.train_loss for r in fp32.history]


def test_gpu_fields_are_none_on_the_cpu():
    result = train(mlp, classification_task(), FAST.with_overrides(epochs=1))
    summary = result.to_dict()["gpu"]
    assert summary == {"peak_memory_bytes": None, "utilization_percent": None,
                       "utilization_samples": 0}
    cpu = torch.device("cpu")
    assert read_utilization(cpu) is None
    with GpuMonitor(cpu, interval=0.01) as monitor:
        pass
    assert monitor.stats().peak_memory_bytes is None
