"""Gates from the seed papers, family ``gating``: each mixes or scales one branch output by a
gate computed from the branches.

Sentence Attention Blocks (Khoshsirat & Kambhamettu 2023), family ``gating``:

* ``cond_channel_gate`` (aggregate2, r = 16): branch outputs ``(x, s)`` with ``x`` an image
  (C,H,W) and ``s`` tokens (N',D'); ``y = x * sigmoid(W_2 ReLU(W_1 [GAP(x) ; mean_n s_n]))``
  per channel of x (hidden width (C + D') // 16, at least 1).  The token mean is the sentence
  embedding; a (1, D') token is a plain vector.  Other pairs are refused.

FiRST (Jain et al. 2024), family ``gating``:

* ``routed_skip`` (aggregate2): branch outputs ``(F(x), x)`` of a ``clone_tensor2`` branching
  (first inner module: the wrapped layer F; second: usually ``identity``), equal shapes.
  ``p = sigmoid(r(mean over positions of x))``; training: ``y = p F(x) + (1 - p) x``;
  evaluation: ``y = F(x) if p > 0.5 else x`` per sample.
"""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn

from .registry import (
    Context,
    Kind,
    Shape,
    Terminal,
    features_of,
    mean_over_positions,
    mode_of,
    register_all,
)

SAB = "Khoshsirat & Kambhamettu, Sentence Attention Blocks for Answer Grounding, 2023"
FIRST = ("Jain et al., FiRST: Finetuning Router-Selective Transformers for Input-Adaptive "
         "Latency Reduction, 2024")


# -- Sentence Attention Block: conditional channel gate --------------------------------------

class CondChannelGateModule(nn.Module):
    """``x * sigmoid(W_2 ReLU(W_1 [GAP(x) ; mean_tokens(s)]))`` per channel of the image x."""

    def __init__(self, channels: int, condition: int, hidden: int):
        super().__init__()
        self.squeeze = nn.Linear(channels + condition, hidden)
        self.excite = nn.Linear(hidden, channels)

    def forward(self, xs: List[Tensor]) -> Tensor:
        x, s = xs[0], xs[1]
        z = torch.cat([x.mean(dim=[2, 3]), s.mean(dim=1)], dim=1)
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(z))))
        return x * gate.unsqueeze(-1).unsqueeze(-1)


class CondChannelGate(Terminal):
    """Sentence Attention Block gate.  Accepted pair: branch 0 an image (C,H,W) (the feature
    maps), branch 1 tokens (N',D') (the sentence: its token mean is the sentence embedding; a
    (1, D') token is a plain vector).  Other pairs are refused: accepting any pair would make
    this the fallback for every 2-way branch whose outputs do not match, in ~45 % of samples."""

    kind = Kind.AGGREGATION
    modes = frozenset({"im"})
    family = "gating"
    paper = SAB
    seed_papers = (41,)
    category = "aggregate2"
    examples = (((8, 4, 4), (5, 6)), ((16, 2, 2), (1, 24)), ((3, 5, 7), (16, 4)))

    def __init__(self, reduction: int, name: str):
        self.reduction = reduction
        self.name = name
        self.description = (f"SE gate on the channels of an image branch from [GAP(image); mean "
                            f"of a token branch] (r = {reduction})")

    def hidden(self, xs: tuple[Shape, ...]) -> int:
        return max((xs[0][0] + xs[1][1]) // self.reduction, 1)

    def infer(self, xs: tuple[Shape, ...], ctx: Context) -> Shape | None:
        if len(xs) != 2 or len(xs[0]) != 3 or len(xs[1]) != 2:
            return None
        return xs[0]

    def refusal(self, xs, ctx: Context) -> str:
        return "needs an image (C,H,W) and a token (N,D) branch output, in this order"

    def params(self, xs: tuple[Shape, ...], ctx: Context) -> int:
        c, d, h = xs[0][0], xs[1][1], self.hidden(xs)
        return (c + d) * h + h + h * c + c

    def flops(self, xs: tuple[Shape, ...], ctx: Context) -> int:
        c, d, h = xs[0][0], xs[1][1], self.hidden(xs)
        return 2 * (c + d) * h + 2 * h * c

    def build(self, xs: tuple[Shape, ...], ctx: Context) -> nn.Module:
        return CondChannelGateModule(xs[0][0], xs[1][1], self.hidden(xs))

    def hyperparameters(self) -> dict:
        return {"reduction": self.reduction}



# -- FiRST: routed skip ---------------------------------------------------------------------

class RoutedSkipModule(nn.Module):
    """``p = sigmoid(r(mean x))``; training ``p F(x) + (1 - p) x``, evaluation ``F(x)`` where
    ``p > 0.5`` else ``x``.  ``xs = [F(x), x]``; r is Linear(D, D // 4) - ReLU - Linear(., 1)."""

    def __init__(self, features: int, hidden: int, image: bool):
        super().__init__()
        self.image = image
        self.router_in = nn.Linear(features, hidden)
        self.router_out = nn.Linear(hidden, 1)

    def forward(self, xs: List[Tensor]) -> Tensor:
        fx, x = xs[0], xs[1]
        hidden = torch.relu(self.router_in(mean_over_positions(x, self.image)))
        p = torch.sigmoid(self.router_out(hidden))
        p = p.unsqueeze(-1)  # (B, 1, 1) for tokens, (B, 1, 1, 1) for images
        if self.image:
            p = p.unsqueeze(-1)
        if self.training:
            return p * fx + (1.0 - p) * x
        return torch.where(p > 0.5, fx, x)


class RoutedSkip(Terminal):
    kind = Kind.AGGREGATION
    name = "routed_skip"
    modes = frozenset({"im", "col"})
    family = "gating"
    paper = FIRST
    seed_papers = (17,)
    category = "aggregate2"
    description = ("branch outputs (F(x), x): a router on the mean of x mixes p F(x) + (1-p) x "
                   "in training and picks F(x) if p > 0.5 else x in evaluation")

    def hidden(self, x: Shape) -> int:
        return max(features_of(x) // 4, 1)

    def infer(self, xs: tuple[Shape, ...], ctx: Context) -> Shape | None:
        if len(xs) != 2 or xs[0] != xs[1]:
            return None
        return xs[0]

    def params(self, xs: tuple[Shape, ...], ctx: Context) -> int:
        d, h = features_of(xs[1]), self.hidden(xs[1])
        return d * h + h + h + 1

    def flops(self, xs: tuple[Shape, ...], ctx: Context) -> int:
        d, h = features_of(xs[1]), self.hidden(xs[1])
        return 2 * d * h + 2 * h

    def build(self, xs: tuple[Shape, ...], ctx: Context) -> nn.Module:
        x = xs[1]
        return RoutedSkipModule(features_of(x), self.hidden(x), mode_of(x) == "im")

    def hyperparameters(self) -> dict:
        return {"router_hidden": "features // 4", "threshold": 0.5}


register_all([CondChannelGate(16, "cond_channel_gate"), RoutedSkip()])
