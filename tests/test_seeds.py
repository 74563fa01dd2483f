"""The shipped seeds against hand-written plain-torch versions (``benchmarks/handwritten.py``).

For every seed and input shape: the compiled network has exactly the hand-written network's
parameter count (and ``einspace.count`` predicts it), it runs on a batch of 2, and its text
round-trips.  For ResNet-18 and WRN-16-4 the hand-written weights are copied into the compiled
network and the outputs must agree in eval mode.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

import einspace
from benchmarks.handwritten import (
    HANDWRITTEN,
    MLP,
    WRN16_4,
    MLPMixer,
    ResNet18,
    SmallCNN,
    SmallFCN,
    SmallViT,
    ViT,
)
from einspace.errors import ShapeError
from einspace.tasks.registry import list_tasks

SEEDS = ["mlp", "mlp_mixer", "resnet18", "small_cnn", "small_fcn", "small_vit", "vit", "wrn16_4"]
SMALL_SEEDS = ["mlp", "small_cnn", "small_fcn", "small_vit"]
SHAPES = [(3, 28, 28), (1, 24, 24), (12, 8, 8), (3, 64, 64), (1, 27, 18), (1, 64, 128)]
NUM_CLASSES = 10


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_seed_names_lists_every_twinned_seed():
    assert set(SEEDS) <= set(einspace.seed_names())
    assert einspace.seed_names() == sorted(einspace.seed_names())


def test_handwritten_registry():
    assert HANDWRITTEN == {"resnet18": ResNet18, "wrn16_4": WRN16_4, "vit": ViT,
                           "mlp_mixer": MLPMixer, "mlp": MLP, "small_cnn": SmallCNN,
                           "small_vit": SmallViT, "small_fcn": SmallFCN}


@pytest.mark.parametrize("name", SEEDS)
def test_text_round_trips(name):
    d = einspace.load_seed(name)
    assert einspace.parse(str(d)) == d
    assert einspace.parse(d.pretty()) == d


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", SEEDS)
def test_seed_matches_handwritten(name, shape):
    torch.manual_seed(0)
    d = einspace.load_seed(name)
    net = einspace.build(d, shape, num_classes=NUM_CLASSES)
    reference = HANDWRITTEN[name](shape, NUM_CLASSES)
    expected = n_params(reference)
    assert n_params(net) == expected
    assert einspace.count(d, shape, num_classes=NUM_CLASSES).params == expected
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert net(x).shape == (2, NUM_CLASSES)
        if shape[1] * shape[2] <= 32 * 32:  # the baseline runs too (skip the slow big inputs)
            assert reference(x).shape == (2, NUM_CLASSES)


def test_resnet18_is_lowered_to_conv2d():
    net = einspace.build(einspace.load_seed("resnet18"), (3, 28, 28), num_classes=NUM_CLASSES)
    kinds = Counter(type(m) for m in net.modules())
    assert kinds[nn.Conv2d] == 21  # stem, stride-2 stand-in, 16 in blocks, 3 projections
    assert kinds[nn.BatchNorm2d] == 20
    assert kinds[nn.Unfold] == 0
    assert not any(type(m).__name__ in ("Im2ColModule", "Col2ImModule") for m in net.modules())


def _layer_signature(module: nn.Module) -> dict[str, list]:
    sig: dict[str, list] = {"Conv2d": [], "BatchNorm2d": [], "Linear": []}
    for m in module.modules():
        name = type(m).__name__
        if name in sig:
            sig[name].append(tuple(m.weight.shape))
    return {k: sorted(v) for k, v in sig.items()}


@pytest.mark.parametrize("name", ["resnet18", "wrn16_4"])
def test_same_layers_as_handwritten(name):
    shape = (3, 28, 28)
    net = einspace.build(einspace.load_seed(name), shape, num_classes=NUM_CLASSES)
    assert _layer_signature(net) == _layer_signature(HANDWRITTEN[name](shape, NUM_CLASSES))


def _copy_state(src: nn.Module, dst: nn.Module) -> None:
    """Copy ``src``'s parameters and buffers into ``dst`` in registration order; both modules
    register their layers in forward order, so the i-th entries correspond."""
    src_items = list(src.state_dict().items())
    dst_items = list(dst.state_dict().items())
    assert len(src_items) == len(dst_items)
    state = {}
    for (src_key, value), (dst_key, target) in zip(src_items, dst_items, strict=True):
        assert value.shape == target.shape, (src_key, dst_key)
        state[dst_key] = value.clone()
    dst.load_state_dict(state)


@pytest.mark.parametrize("name", ["resnet18", "wrn16_4"])
def test_outputs_match_handwritten_with_copied_weights(name):
    torch.manual_seed(0)
    shape = (3, 28, 28)
    reference = HANDWRITTEN[name](shape, NUM_CLASSES)
    # non-trivial BatchNorm statistics and affine parameters, so a misplaced norm shows up
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    net = einspace.build(einspace.load_seed(name), shape, num_classes=NUM_CLASSES)
    _copy_state(reference, net)
    net.eval()
    reference.eval()
    x = torch.randn(4, *shape)
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("task", list_tasks(), ids=lambda t: t.name)
@pytest.mark.parametrize("name", SMALL_SEEDS)
def test_small_seeds_fit_every_builtin_task_or_say_why(name, task):
    """A small seed either builds for the task's input and target, or the shape error names the
    terminal that cannot take the input (the 4x4 patches of small_vit on mnist1d's 1x40)."""
    target = ({"num_classes": task.num_classes} if task.num_classes
              else {"output_shape": task.target_shape})
    d = einspace.load_seed(name)
    try:
        net = einspace.build(d, task.input_shape, **target)
    except ShapeError as error:
        assert "does not accept input" in str(error)
        return
    with torch.no_grad():
        out = net(torch.randn(2, *task.input_shape))
    expected = (task.num_classes,) if task.num_classes else tuple(task.target_shape)
    assert tuple(out.shape[1:]) == expected
