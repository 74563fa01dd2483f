"""Task heads: classification pools the right axis; dense heads give the target grid; the counts
``einspace.count`` predicts equal the built network's."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import einspace

IMAGE_ARCH = "(routing im2col3k2s1p (computation linear16) col2im)"  # -> (16, H/2, W/2)
TOKEN_ARCH = "(routing im2col4k4s0p (computation linear32) identity)"  # -> (HW/16, 32)


def measured(net, shape):
    with FlopCounterMode(display=False) as counter:
        out = net(torch.randn(1, *shape))
    return out, sum(p.numel() for p in net.parameters()), counter.get_total_flops()


@pytest.mark.parametrize("arch", [IMAGE_ARCH, TOKEN_ARCH])
@pytest.mark.parametrize("target", [{"num_classes": 7}, {"output_shape": (8, 8)},
                                    {"output_shape": (3, 16, 16)}, {"output_shape": (2, 5, 9)}])
def test_head_output_and_counts(arch, target):
    d = einspace.parse(arch)
    shape = (3, 16, 16)
    net = einspace.build(d, shape, **target)
    out, params, flops = measured(net, shape)
    expected = (7,) if "num_classes" in target else (
        target["output_shape"] if len(target["output_shape"]) == 3
        else (1,) + target["output_shape"])
    assert tuple(out.shape[1:]) == expected
    cost = einspace.count(d, shape, **target)
    assert cost.params == params and cost.flops == flops


def test_classifier_averages_tokens_not_features():
    """The reference averaged the feature axis of token outputs; we pool over tokens."""
    d = einspace.parse(TOKEN_ARCH)
    net = einspace.build(d, (3, 16, 16), num_classes=4).eval()
    x = torch.randn(2, 3, 16, 16)
    tokens = net.backbone(x)
    assert tokens.shape == (2, 16, 32)
    expected = net.head.fc(tokens.mean(1))
    assert torch.allclose(net(x), expected)


def test_network_remembers_its_architecture_and_scripts():
    d = einspace.load_seed("resnet18")
    net = einspace.build(d, (3, 16, 16), num_classes=3).eval()
    assert einspace.parse(net.derivation) == d
    scripted = torch.jit.script(net)
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(scripted(x), net(x), atol=1e-5)
