"""Torch containers the compiler emits for productions, and the fused modules of its lowerings.

No lambdas or closures anywhere, so every compiled network can be scripted with TorchScript and
exported to ONNX.
"""

from __future__ import annotations

from typing import List

from torch import Tensor, nn
from torch.nn import functional as F


class Branching(nn.Module):
    """``merge([inner_i(part_i) for part_i in split(x)])``."""

    def __init__(self, split: nn.Module, inners: List[nn.Module], merge: nn.Module):
        super().__init__()
        self.split = split
        self.inners = nn.ModuleList(inners)
        self.merge = merge

    def forward(self, x: Tensor) -> Tensor:
        parts = self.split(x)
        outs: List[Tensor] = []
        for i, inner in enumerate(self.inners):
            outs.append(inner(parts[i]))
        return self.merge(outs)


class Residual(nn.Module):
    """``x + body(x)``: the clone/identity/add branch, without building a list of tensors."""

    def __init__(self, body: nn.Module, identity_first: bool):
        super().__init__()
        self.body = body
        self.identity_first = identity_first

    def forward(self, x: Tensor) -> Tensor:
        if self.identity_first:
            return x + self.body(x)
        return self.body(x) + x


class Attention(nn.Module):
    """``softmax(q(x) k(x)^T * scale) v(x)`` through ``scaled_dot_product_attention``."""

    def __init__(self, query: nn.Module, key: nn.Module, value: nn.Module, scale: float):
        super().__init__()
        self.query = query
        self.key = key
        self.value = value
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(self.query(x), self.key(x), self.value(x),
                                              scale=self.scale)


class MultiHeadAttention(nn.Module):
    """k attention heads in one call: fused q/k/v projections (head h owns output features
    [h n, (h + 1) n)), outputs concatenated in head order, as the unfused branches would."""

    def __init__(self, query: nn.Linear, key: nn.Linear, value: nn.Linear, heads: int,
                 scale: float):
        super().__init__()
        self.query = query
        self.key = key
        self.value = value
        self.heads = heads
        self.scale = scale

    def _split(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, x.size(-1) // self.heads)).transpose(-3, -2)

    def forward(self, x: Tensor) -> Tensor:
        out = F.scaled_dot_product_attention(self._split(self.query(x)), self._split(self.key(x)),
                                             self._split(self.value(x)), scale=self.scale)
        return out.transpose(-3, -2).flatten(-2)


class Network(nn.Module):
    """A compiled backbone with its task head; ``derivation`` keeps the architecture's text."""

    def __init__(self, backbone: nn.Module, head: nn.Module | None, derivation: str):
        super().__init__()
        self.backbone = backbone
        self.head = head if head is not None else nn.Identity()
        self.derivation = derivation

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))
