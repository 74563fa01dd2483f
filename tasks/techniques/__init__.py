"""Training techniques of the seed papers (verdict B in ``shared/research/seed-primitives.md``)
as options of the training recipe.

Every option is off by default, carries its paper's defaults, and is set under the recipe's
``techniques`` key; ``true`` (or ``{}``) takes the defaults, ``false`` / ``null`` leaves it off,
a mapping overrides some values.  Unknown techniques, unknown keys and bad values raise
:class:`~einspace.errors.ConfigError` naming the key::

    training:
      techniques:
        grad_noise: {eta: 0.01, gamma: 0.55}  # g += N(0, eta / (1 + t)^gamma)
        tract: {lam: 0.1}                     # first-layer gradient x (AᵀA/n + lam I)^-1
        guidance: {guide: resnet18, alpha: 1.0}
        proj_head: true                       # loss through an MLP head, scored by a probe
        layernorm_scaling: true               # the l-th LayerNorm's output / sqrt(l)
        mask_augmentation: {ratio: 0.5, patch: 16}
        ordered_dropout: {group_lasso: 5.0e-3}
        prototype_losses: {r1: 0.05, r2: 0.05}

Randomness (gradient noise, masks, sampled ranks, the guide's weights) comes from generators
seeded from ``Recipe.seed``, so two CPU runs stay bit-identical; a run with no technique takes
exactly the trainer's plain code path.

=== ====================================== ===============================================
 #  Paper (seed list)                       Status
=== ====================================== ===============================================
 1  Locally regularized neural DEs          not applicable: the grammar has no ODE blocks,
                                            so there is no adaptive solver step to regularise
 6  Adding gradient noise                   ``grad_noise``
 7  Wide attention                          not applicable: a prior over architectures (one
                                            wide attention layer rather than a stack) is a
                                            matter of grammar weights, not of training
 8  Projection head                         ``proj_head``
10  2D Matryoshka sentence embeddings       not applicable: a loss for fine-tuning pretrained
                                            embedding models (contrastive / CoSENT on pooled
                                            per-layer sentence embeddings); a candidate here
                                            trains from scratch with one task head
16  Training the untrainable (guidance)     ``guidance``
22  PixPro                                  not applicable: self-supervised pre-training (two
                                            augmented views, momentum encoder, LARS) is a
                                            separate phase before supervised training; its
                                            module is the ``pixel_propagation`` terminal
24  Curse of depth (LayerNorm scaling)      ``layernorm_scaling`` (no grammar terminal knows
                                            its depth, so the recipe scales the norms)
27  Maestro (ordered dropout)               ``ordered_dropout``; progressive shrinking is not
                                            included (it changes parameter shapes mid-run)
28  Starbucks                               not applicable: like 10, an embedding-model
                                            fine-tuning loss (and SMAE, masked-LM
                                            pre-training) for pretrained transformers
35  Prototypes (case-based reasoning)       ``prototype_losses`` (R1, R2); the autoencoder
                                            term is left out: its decoder only serves to
                                            visualise prototypes
38  TrAct                                   ``tract``
39  EchoAtt                                 not applicable: its KD part distils a pretrained
                                            unshared teacher whose weights the student
                                            inherits; a candidate has no pretrained teacher
43  Frozen visual Unicode embeddings        not applicable: the frozen table is rendered from
                                            the glyphs of a token vocabulary; the tasks feed
                                            images, one-hot letter grids or feature vectors,
                                            with no embedding table to freeze
53  All in tokens (mask augmentation)       ``mask_augmentation``
=== ====================================== ===============================================

One module per technique holds its options (a frozen dataclass with the paper's defaults), the
maths it needs and its run-time hooks, and says what it does and which choices it makes where
its paper leaves room.  ``base`` has the hooks every technique shares and the registry;
``selection`` makes :class:`Techniques` (the recipe's field) from the registry; ``runtime`` runs
the enabled ones in ``APPLICATION_ORDER``.  A new technique is one module here, named in
``RECIPE_ORDER`` and ``APPLICATION_ORDER``.
"""

from __future__ import annotations

from .base import registered
from .grad_noise import GradNoise, grad_noise_std
from .guidance import (
    Guidance,
    build_guide,
    guide_derivation,
    linear_cka,
    matched_layers,
    representation_points,
)
from .layernorm_scaling import DepthScaledLayerNorm, LayerNormScaling, grammar_layernorms
from .mask_augmentation import MaskAugmentation, patch_mask
from .ordered_dropout import OrderedDropout
from .proj_head import ProjectionHead, final_classifier
from .prototype_losses import PrototypeLosses
from .runtime import APPLICATION_ORDER, TrainingTechniques
from .selection import techniques_class
from .tract import TrAct, layer_input_rows, tract_gradient

#: The techniques in the order a recipe lists them (``enabled``, ``to_dict``, error messages).
RECIPE_ORDER = ("grad_noise", "tract", "guidance", "proj_head", "layernorm_scaling",
                "mask_augmentation", "ordered_dropout", "prototype_losses")

Techniques = techniques_class({name: registered()[name] for name in RECIPE_ORDER}, __name__)

OPTIONS: dict[str, type] = Techniques.options_classes()
"""Technique name (the YAML key) -> its options class."""

__all__ = [
    "APPLICATION_ORDER", "OPTIONS", "RECIPE_ORDER", "DepthScaledLayerNorm", "GradNoise",
    "Guidance", "LayerNormScaling", "MaskAugmentation", "OrderedDropout", "ProjectionHead",
    "PrototypeLosses", "Techniques", "TrAct", "TrainingTechniques", "build_guide",
    "final_classifier", "grad_noise_std", "grammar_layernorms", "guide_derivation",
    "layer_input_rows", "linear_cka", "matched_layers", "patch_mask", "representation_points",
    "tract_gradient",
]
