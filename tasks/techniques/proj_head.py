"""Projection head (seed paper 8): options and run-time hooks.

``proj_head`` (Xue et al.): the classification loss is taken on a training-only MLP head g on
the pooled features h = f(x) (Linear D->D, BatchNorm, ReLU, Linear D->classes, SimCLR's
``mlp2`` with the class logits as its output), and g is discarded for scoring.  Scoring uses
the model's own final classifier, trained meanwhile as an online linear probe on h with the
gradient stopped at h, so the backbone learns only through g and the score is the probe's
accuracy on f(x), the paper's evaluation protocol.  Classification tasks only.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torch.nn import functional as F

from einspace.errors import ConfigError

from ..data import CLASSIFICATION
from .base import Batch, Context, Technique, register


@dataclass(frozen=True)
class ProjectionHead:
    """Loss through a training-only MLP head; scored by an online linear probe."""


def final_classifier(model: nn.Module, classes: int | None) -> nn.Linear:
    """The last ``nn.Linear`` of ``model`` with ``classes`` outputs (a compiled network's
    ``head.fc``)."""
    found = [m for m in model.modules() if isinstance(m, nn.Linear)
             and (classes is None or m.out_features == classes)]
    if not found:
        raise ValueError(f"proj_head needs a final linear classifier with {classes} outputs")
    return found[-1]


@register
class ProjectionHeadTechnique(Technique):
    name = "proj_head"
    options_class = ProjectionHead

    def __init__(self, options: ProjectionHead, ctx: Context):
        super().__init__(options, ctx)
        if ctx.data.task_type != CLASSIFICATION:
            raise ConfigError("recipe.techniques.proj_head needs a classification task; task "
                              f"{ctx.data.name!r} is {ctx.data.task_type}")
        self.features: Tensor | None = None

    def attach(self, model: nn.Module) -> list[nn.Parameter]:
        self.classifier = final_classifier(model, self.ctx.data.num_classes)
        width, classes = self.classifier.in_features, self.classifier.out_features
        self.head = nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(),
                                  nn.Linear(width, classes)).to(self.ctx.device)
        self.handles.append(self.classifier.register_forward_hook(self._project))
        return list(self.head.parameters())

    def _project(self, module: nn.Module, inputs, output) -> Tensor | None:
        """In training, the network's output becomes the projection head's logits."""
        if not module.training:
            return None
        features = inputs[0]
        if features.dim() != 2:
            raise ValueError(f"proj_head needs (batch, features) classifier inputs, got shape "
                             f"{tuple(features.shape)}")
        self.features = features
        return self.head(features)

    def loss(self, loss: Tensor, batch: Batch) -> Tensor:
        probe = F.linear(self.features.detach().float(), self.classifier.weight,
                         self.classifier.bias)
        return loss + F.cross_entropy(probe, batch.y)

    def forget(self) -> None:
        super().forget()
        self.features = None
