"""Test helper: measure a built module's FLOPs with ``torch.utils.flop_counter``, the convention
the symbolic counts follow, to check those counts against.

``FlopCounterMode`` has no formula for the fused CPU attention kernel
(``_scaled_dot_product_flash_attention_for_cpu``) and silently counts it as zero; we give it the
same formula it uses for the other attention kernels.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _cpu_flash_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def flop_counter() -> FlopCounterMode:
    """A ``FlopCounterMode`` (used as a context manager) that also counts CPU fused attention."""
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention}
    return FlopCounterMode(display=False, custom_mapping=mapping)


def measured_flops(module: nn.Module, x) -> int:
    """FLOPs of ``module(x)`` as torch counts them (2 x multiply-adds), batch included."""
    with flop_counter() as counter:
        module(x)
    return counter.get_total_flops()
