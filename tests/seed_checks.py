"""The check every block family's seed network passes: what is built is what is counted."""

import torch

import einspace


def checked_params(derivation: einspace.Derivation, shape, num_classes: int = 10) -> int:
    """Build ``derivation`` (torch seed 0), assert that ``einspace.count`` predicts its parameter
    count and that a batch of two gives ``num_classes`` logits; the count, for the test's range."""
    torch.manual_seed(0)
    net = einspace.build(derivation, shape, num_classes=num_classes)
    params = sum(p.numel() for p in net.parameters())
    assert einspace.count(derivation, shape, num_classes=num_classes).params == params
    with torch.no_grad():
        assert net(torch.randn(2, *shape)).shape == (2, num_classes)
    return params
