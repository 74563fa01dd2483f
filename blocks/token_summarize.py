"""MULTI-LANE's patch summarisation (De Min et al. 2024, seed paper #30), family ``token-mixing``.

``token_summarize{S}``: S learnable selector tokens attend over the tokens (no projections);
(N, D) -> (S, D).  This is also the grammar's "learned latent token source": the token count
after it is S whatever N was.  Its cost follows ``torch.utils.flop_counter`` (matrix products
only).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .registry import Context, Kind, Shape, Terminal, mode_of, register_all


class TokenSummarizeModule(nn.Module):
    """Z = softmax(Sigma X^T / sqrt(D)) X with S learnable selector tokens Sigma (S, D).

    The patch-extraction step of ``PreT_Attention`` in ``tdemin16/multi-lane``
    ``multi_lane/blocks.py``: no query/key/value projections, scale D^-1/2 (``token_scale``),
    selectors N(0, 1) initialised (the reference's default before its optional orthogonal or
    uniform re-init).  The reference detaches X (its backbone is frozen); here gradients flow.
    """

    def __init__(self, dim: int, selectors: int):
        super().__init__()
        self.scale = dim ** -0.5
        self.selectors = nn.Parameter(torch.randn(selectors, dim))

    def forward(self, x: Tensor) -> Tensor:
        attention = torch.softmax(torch.matmul(self.selectors, x.transpose(1, 2)) * self.scale,
                                  dim=-1)
        return torch.matmul(attention, x)


class TokenSummarize(Terminal):
    kind = Kind.COMPUTATION
    modes = frozenset({"col"})
    family = "token-mixing"
    seed_papers = (30,)
    paper = ("De Min et al., Less is more: Summarizing Patch Tokens for efficient Multi-Label "
             "Class-Incremental Learning (MULTI-LANE, 2024)")
    reference = "tdemin16/multi-lane multi_lane/blocks.py (PreT_Attention, patch extraction)"
    category = "compute"

    def __init__(self, selectors: int):
        self.selectors = selectors
        self.name = f"token_summarize{selectors}"
        self.description = (f"{selectors} learned selector tokens attend over the tokens "
                            f"(N, D) -> ({selectors}, D); a learned latent token source")

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        if mode_of(x) != "col":
            return None
        return (self.selectors, x[1])

    def params(self, x: Shape, ctx: Context) -> int:
        return self.selectors * x[1]

    def flops(self, x: Shape, ctx: Context) -> int:
        return 4 * self.selectors * x[0] * x[1]

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return TokenSummarizeModule(x[1], self.selectors)

    def hyperparameters(self) -> dict:
        return {"selectors": self.selectors, "scale": "1/sqrt(D)", "projections": "none"}


register_all(TokenSummarize(s) for s in (1, 4, 16))
