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


def test_dense_head_of_a_shrinking_backbone_can_draw_a_field():
    """A 2x2 map stretched to 8x8 is flat on each quarter; the field decoder is not."""
    d = einspace.parse("(routing im2col4k4s0p (computation linear16) col2im)")  # 8x8 -> 2x2
    net = einspace.build(d, (1, 8, 8), output_shape=(8, 8)).eval()
    assert net.head.field is not None
    torch.nn.init.normal_(net.head.field.weight)
    with torch.no_grad():
        field = net(torch.randn(1, 1, 8, 8))[0, 0]
    quarter = field[:4, :4]
    assert not torch.allclose(quarter, quarter[0, 0].expand_as(quarter))


def test_dense_head_of_a_full_resolution_backbone_is_per_pixel():
    d = einspace.parse(IMAGE_ARCH.replace("im2col3k2s1p", "im2col3k1s1p"))  # keeps 16x16
    net = einspace.build(d, (3, 16, 16), output_shape=(16, 16))
    assert net.head.field is None
    assert sum(p.numel() for p in net.head.parameters()) == 16 + 1
