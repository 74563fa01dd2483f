"""TrAct (seed paper 38): options and run-time hooks.

``tract`` (Petersen et al.): the first ``nn.Linear`` or ``nn.Conv2d`` to run in a training
forward (after whatever parameter-free routing precedes it, e.g. the linear after an im2col)
gets the weight gradient ``∇W (AᵀA/n + lam I)^-1``, A the n rows of its input (im2col patches
for a convolution); bias and input gradients are unchanged.  A grouped, dilated or
non-zero-padded convolution there is left alone.  ``lam`` 0.1 is the reference default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .base import Technique, check_number, register


@dataclass(frozen=True)
class TrAct:
    """First-layer weight gradient times ``(AᵀA/n + lam I)^-1``."""

    lam: float = 0.1

    def __post_init__(self) -> None:
        check_number("tract", "lam", self.lam, 0.0, strict=True)


def tract_gradient(grad: Tensor, rows: Tensor, lam: float) -> Tensor:
    """``∇W (AᵀA/n + lam I)^-1``: the weight gradient ``grad`` (out, *fan_in) of a layer whose
    n input rows are ``rows`` (n, d = fan_in), computed in float32."""
    a = rows.float()
    n, d = a.shape
    gram = a.T @ a / n + lam * torch.eye(d, device=a.device)
    flat = grad.reshape(grad.shape[0], d).float()
    # the Gram matrix is symmetric, so G M^-1 = (M^-1 Gᵀ)ᵀ
    return torch.linalg.solve(gram, flat.T).T.reshape(grad.shape).to(grad.dtype)


def layer_input_rows(layer: nn.Module, x: Tensor) -> Tensor:
    """The rows A whose products with the flattened weight give the layer's outputs: the
    input's last-dim vectors for a linear layer, the im2col patches for a convolution."""
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    cols = F.unfold(x, layer.kernel_size, padding=layer.padding, stride=layer.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _tract_supported(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Linear):
        return layer.weight.requires_grad
    return (layer.groups == 1 and tuple(layer.dilation) == (1, 1)
            and layer.padding_mode == "zeros" and not isinstance(layer.padding, str)
            and layer.weight.requires_grad)


@register
class TrActTechnique(Technique):
    name = "tract"
    options_class = TrAct

    def attach(self, model: nn.Module) -> list[nn.Parameter]:
        self.layer: nn.Module | None = None
        self.supported = False
        self.rows: Tensor | None = None
        self.handles.extend(m.register_forward_pre_hook(self._see) for m in model.modules()
                            if isinstance(m, (nn.Linear, nn.Conv2d)))
        return []

    def _see(self, module: nn.Module, args) -> None:
        if not module.training:
            return
        if self.layer is None:  # the first linear/conv layer to run is the first layer
            self.layer, self.supported = module, _tract_supported(module)
            if self.supported:
                self.handles.append(module.weight.register_hook(self._precondition))
        if module is self.layer and self.supported:
            self.rows = layer_input_rows(module, args[0].detach())

    def _precondition(self, grad: Tensor) -> Tensor:
        return tract_gradient(grad, self.rows, self.options.lam)

    def detach(self) -> None:
        super().detach()
        self.rows = None  # kept between the forward and the backward, so not forgotten
