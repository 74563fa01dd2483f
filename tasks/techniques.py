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

What each option does, and the choices made where a paper leaves room:

* ``grad_noise`` (Neelakantan et al.): after backward, every gradient gets Gaussian noise of
  variance ``eta / (1 + t)^gamma`` at step ``t`` (0-based), before weight decay and momentum.
  ``eta`` 0.01 is the smallest of the paper's tuned values {0.01, 0.3, 1}; gamma 0.55.
* ``tract`` (Petersen et al.): the first ``nn.Linear`` or ``nn.Conv2d`` to run in a training
  forward (after whatever parameter-free routing precedes it, e.g. the linear after an im2col)
  gets the weight gradient ``∇W (AᵀA/n + lam I)^-1``, A the n rows of its input (im2col patches
  for a convolution); bias and input gradients are unchanged.  A grouped, dilated or
  non-zero-padded convolution there is left alone.  ``lam`` 0.1 is the reference default.
* ``guidance`` (Subramaniam et al.): a frozen guide network (a shipped seed by name, or
  architecture text), randomly initialised from the recipe seed (the paper's untrained guide;
  there are no pretrained weights to load), runs in eval mode on each batch; the loss gains
  ``alpha * sum(1 - CKA_linear)`` over matched layers.  Layers are the backbone's main path: the
  top-level modules of its sequential chain that hold parameters.  With L_t target and L_g guide
  layers, ``min(L_t, L_g)`` pairs are taken evenly spaced in both (first with first, last with
  last): the paper's map ``i -> round(i (L_t - 1) / (L_g - 1))`` when the guide is the shallower
  one.  ``alpha`` 1 as in the paper.
* ``proj_head`` (Xue et al.): the classification loss is taken on a training-only MLP head g on
  the pooled features h = f(x) (Linear D->D, BatchNorm, ReLU, Linear D->classes, SimCLR's
  ``mlp2`` with the class logits as its output), and g is discarded for scoring.  Scoring uses
  the model's own final classifier, trained meanwhile as an online linear probe on h with the
  gradient stopped at h, so the backbone learns only through g and the score is the probe's
  accuracy on f(x), the paper's evaluation protocol.  Classification tasks only.
* ``layernorm_scaling`` (Sun et al.): the l-th LayerNorm of the grammar's ``norm`` terminal, in
  the order the compiled network holds them (its forward order), outputs ``LN(x) / sqrt(l)``.
  The paper's l counts transformer layers (attention and FFN pre-norms share one); a sampled
  network has no such layers, so each norm counts as one.  Norms inside terminal modules (QK
  norms, macro blocks) and BatchNorm (the ``norm`` of image mode) are not scaled.  The scaled
  norms stay in the trained model, as part of its function.
* ``mask_augmentation`` (Ning et al., AiT): each training input has ``ceil(ratio * P)`` of its P
  patches set to 0 (the train mean when inputs are normalised), drawn without replacement per sample
  as AiT's ``MaskGenerator``; patches of ``patch`` positions tile H and W of an image, the token
  axis of (N, D) samples and the feature axis of (D,) samples.  Targets stay whole.  AiT's
  defaults (ratio 0.5, 16-pixel patches) were set for 480-pixel depth maps; small images want a
  smaller ``patch``.
* ``ordered_dropout`` (Horváth et al., Maestro): for networks with ``lowrank_linear`` /
  ``lowrank_conv`` terminals, each step adds a second forward in which one uniformly drawn
  (layer, k) pair keeps only the first k rank components, its loss against the full pass's
  detached predictions (soft labels, as the reference), and ``group_lasso`` times the layers'
  hierarchical group lasso (5e-3, the reference option default).  Without such layers it is a
  no-op.
* ``prototype_losses`` (Li et al.): for networks with ``prototype_layer`` terminals, R1 (mean
  over prototypes of the smallest squared distance to a token of the batch) and R2 (mean over
  tokens of the smallest distance to a prototype), weighted ``r1`` and ``r2``.  The paper weighs
  cross-entropy 20 and each of R1, R2 1; with cross-entropy at 1 that ratio is 0.05.  Without
  such layers it is a no-op.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, ContextManager

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from einspace.blocks.codebooks import PrototypeModule
from einspace.blocks.low_rank import LowRankConvModule, LowRankLinearModule
from einspace.compiler import build
from einspace.derivation import Derivation
from einspace.errors import ConfigError, EinspaceError
from einspace.modules import Branching, Network, Residual
from einspace.seeds import load_seed, seed_names
from einspace.text import parse

from .data import CLASSIFICATION, TaskData

# ---------------------------------------------------------------------------------------------
# options (immutable, validated)


def _where(technique: str, key: str) -> str:
    return f"recipe.techniques.{technique}.{key}"


def _check_number(technique: str, key: str, value: Any, minimum: float, strict: bool = False,
                  below: float | None = None) -> None:
    where = _where(technique, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        relation = "greater than" if strict else "at least"
        raise ConfigError(f"{where} must be {relation} {minimum:g}, got {value!r}")
    if below is not None and value >= below:
        raise ConfigError(f"{where} must be less than {below:g}, got {value!r}")


@dataclass(frozen=True)
class GradNoise:
    """Gaussian gradient noise of variance ``eta / (1 + t)^gamma`` at step t."""

    eta: float = 0.01
    gamma: float = 0.55

    def __post_init__(self) -> None:
        _check_number("grad_noise", "eta", self.eta, 0.0, strict=True)
        _check_number("grad_noise", "gamma", self.gamma, 0.0)


@dataclass(frozen=True)
class TrAct:
    """First-layer weight gradient times ``(AᵀA/n + lam I)^-1``."""

    lam: float = 0.1

    def __post_init__(self) -> None:
        _check_number("tract", "lam", self.lam, 0.0, strict=True)


@dataclass(frozen=True)
class Guidance:
    """``alpha * sum(1 - linear CKA)`` to a frozen, randomly initialised ``guide`` network
    (a shipped seed's name or architecture text)."""

    guide: str = "resnet18"
    alpha: float = 1.0

    def __post_init__(self) -> None:
        guide_derivation(self.guide)
        _check_number("guidance", "alpha", self.alpha, 0.0, strict=True)


@dataclass(frozen=True)
class ProjectionHead:
    """Loss through a training-only MLP head; scored by an online linear probe."""


@dataclass(frozen=True)
class LayerNormScaling:
    """The l-th grammar LayerNorm outputs ``LN(x) / sqrt(l)``."""


@dataclass(frozen=True)
class MaskAugmentation:
    """Zero ``ceil(ratio * P)`` of the P patches (``patch`` positions a side) of each input."""

    ratio: float = 0.5
    patch: int = 16

    def __post_init__(self) -> None:
        _check_number("mask_augmentation", "ratio", self.ratio, 0.0, strict=True, below=1.0)
        if isinstance(self.patch, bool) or not isinstance(self.patch, int) or self.patch < 1:
            raise ConfigError(f"{_where('mask_augmentation', 'patch')} must be a positive "
                              f"integer, got {self.patch!r}")


@dataclass(frozen=True)
class OrderedDropout:
    """Maestro's extra pass through one truncated low-rank layer, plus group lasso."""

    group_lasso: float = 5e-3

    def __post_init__(self) -> None:
        _check_number("ordered_dropout", "group_lasso", self.group_lasso, 0.0)


@dataclass(frozen=True)
class PrototypeLosses:
    """The prototype paper's R1 and R2 interpretability losses."""

    r1: float = 0.05
    r2: float = 0.05

    def __post_init__(self) -> None:
        _check_number("prototype_losses", "r1", self.r1, 0.0)
        _check_number("prototype_losses", "r2", self.r2, 0.0)


OPTIONS: dict[str, type] = {
    "grad_noise": GradNoise, "tract": TrAct, "guidance": Guidance, "proj_head": ProjectionHead,
    "layernorm_scaling": LayerNormScaling, "mask_augmentation": MaskAugmentation,
    "ordered_dropout": OrderedDropout, "prototype_losses": PrototypeLosses,
}
"""Technique name (the YAML key) -> its options class."""


@dataclass(frozen=True)
class Techniques:
    """Which techniques a recipe enables (None = off) and with which options."""

    grad_noise: GradNoise | None = None
    tract: TrAct | None = None
    guidance: Guidance | None = None
    proj_head: ProjectionHead | None = None
    layernorm_scaling: LayerNormScaling | None = None
    mask_augmentation: MaskAugmentation | None = None
    ordered_dropout: OrderedDropout | None = None
    prototype_losses: PrototypeLosses | None = None

    def __post_init__(self) -> None:
        for name, kind in OPTIONS.items():
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise ConfigError(f"recipe.techniques.{name} must be {kind.__name__} options "
                                  f"or None, got {value!r}")

    @classmethod
    def from_dict(cls, data: dict | None) -> Techniques:
        """The techniques of a parsed YAML mapping ``{name: true | false | null | {options}}``."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError(f"recipe.techniques must be a mapping of technique names to "
                              f"options, got {type(data).__name__}")
        for name in data:
            if name not in OPTIONS:
                raise ConfigError(f"unknown training technique {name!r} in recipe.techniques; "
                                  f"valid: {', '.join(OPTIONS)}")
        return cls(**{name: _options(name, value) for name, value in data.items()})

    @property
    def enabled(self) -> tuple[str, ...]:
        return tuple(name for name in OPTIONS if getattr(self, name) is not None)

    def to_dict(self) -> dict:
        """The enabled techniques as ``{name: {option: value}}`` (``from_dict`` reads it)."""
        return {name: asdict(getattr(self, name)) for name in self.enabled}


def _options(name: str, value: Any):
    kind = OPTIONS[name]
    if value is None or value is False:
        return None
    if value is True:
        return kind()
    if not isinstance(value, dict):
        raise ConfigError(f"recipe.techniques.{name} must be true, false or a mapping of "
                          f"options, got {value!r}")
    defaults = {f.name: f.default for f in fields(kind)}
    for key in value:
        if key not in defaults:
            valid = ", ".join(defaults) or "none"
            raise ConfigError(f"unknown key {key!r} in recipe.techniques.{name}; valid keys: "
                              f"{valid}")
    coerced = {}
    for key, item in value.items():
        if isinstance(defaults[key], float) and isinstance(item, str):
            try:
                item = float(item)  # YAML 1.1 reads 5e-3 as a string
            except ValueError:
                raise ConfigError(f"{_where(name, key)} must be a number, got {item!r}") from None
        coerced[key] = item
    return kind(**coerced)


def guide_derivation(guide: Any) -> Derivation:
    """The guide architecture: a shipped seed's name, or derivation text ``"(...)"``."""
    where = _where("guidance", "guide")
    if not isinstance(guide, str):
        raise ConfigError(f"{where} must be a seed name or architecture text, got {guide!r}")
    if guide.lstrip().startswith("("):
        try:
            return parse(guide)
        except EinspaceError as error:
            raise ConfigError(f"{where} is not a valid architecture: {error}") from None
    if guide not in seed_names():
        raise ConfigError(f"{where} {guide!r} is not a shipped seed; seeds: "
                          f"{', '.join(seed_names())}")
    return load_seed(guide)


# ---------------------------------------------------------------------------------------------
# the maths, separately testable


def grad_noise_std(options: GradNoise, step: int) -> float:
    """The noise standard deviation at (0-based) step ``step``: sqrt(eta / (1 + t)^gamma)."""
    return math.sqrt(options.eta / (1 + step) ** options.gamma)


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


def linear_cka(x: Tensor, y: Tensor, eps: float = 1e-12) -> Tensor:
    """Linear CKA of two batches of representations (each flattened per sample):
    <HKH, HLH> / (|HKH| |HLH|) with K = XXᵀ, L = YYᵀ over the batch.  Each side is centred and
    scaled to unit norm first (CKA ignores scale), which keeps float32 sums in range; a constant
    representation gives 0 with zero gradient instead of nan."""
    grams = []
    for r in (x, y):
        r = r.float().flatten(1)
        r = r - r.mean(0, keepdim=True)
        r = r * torch.rsqrt((r * r).sum().clamp_min(eps))
        grams.append(r @ r.T)
    kx, ky = grams
    return (kx * ky).sum() * torch.rsqrt(((kx * kx).sum() * (ky * ky).sum()).clamp_min(eps))


def representation_points(model: nn.Module) -> list[nn.Module]:
    """The layers guidance compares: the top-level modules of the backbone's sequential chain
    (``model.backbone`` of a compiled network, else the model) that hold parameters; the
    backbone itself when there are none."""
    backbone = getattr(model, "backbone", model)
    chain = list(backbone) if isinstance(backbone, nn.Sequential) else [backbone]
    points = [m for m in chain if next(m.parameters(), None) is not None]
    return points or [backbone]


def matched_layers(target: int, guide: int) -> list[tuple[int, int]]:
    """``min(target, guide)`` (target index, guide index) pairs evenly spaced in both, first
    with first and last with last (a single pair matches the last layers)."""
    pairs = min(target, guide)
    if pairs == 1:
        return [(target - 1, guide - 1)]

    def spaced(count: int) -> list[int]:
        return [math.floor(j * (count - 1) / (pairs - 1) + 0.5) for j in range(pairs)]

    return list(zip(spaced(target), spaced(guide), strict=True))


def build_guide(options: Guidance, input_shape: tuple[int, ...], seed: int) -> nn.Module:
    """The frozen guide: built without a head (only its backbone is compared), its weights drawn
    from ``seed`` without touching the caller's RNG; eval mode, no gradients."""
    derivation = guide_derivation(options.guide)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_derived_seed(seed, "guidance"))
        try:
            guide = build(derivation, input_shape)
        except EinspaceError as error:
            raise ConfigError(f"{_where('guidance', 'guide')} {options.guide!r} does not fit the "
                              f"task's input shape {tuple(input_shape)}: {error}") from None
    return guide.eval().requires_grad_(False)


def patch_mask(shape: tuple[int, ...], ratio: float, patch: int,
               generator: torch.Generator) -> Tensor:
    """A float mask broadcasting against a batch of ``shape``: 0 on ``ceil(ratio * P)`` of each
    sample's P patches (chosen without replacement), 1 elsewhere.  Patches of ``patch``
    positions a side tile H and W of images (B, C, H, W), else axis 1 (tokens or features);
    the last patch along an axis may be cut short."""
    batch = shape[0]
    sizes = tuple(shape[2:]) if len(shape) == 4 else (shape[1],)
    grid = [math.ceil(size / patch) for size in sizes]
    count = math.prod(grid)
    order = torch.rand(batch, count, generator=generator).argsort(1)
    keep = torch.ones(batch, count).scatter_(1, order[:, :math.ceil(ratio * count)], 0.0)
    keep = keep.reshape(batch, *grid)
    for axis, size in enumerate(sizes, start=1):
        keep = keep.repeat_interleave(patch, dim=axis).narrow(axis, 0, size)
    if len(shape) == 4:
        return keep.unsqueeze(1)
    return keep.reshape(batch, shape[1], *([1] * (len(shape) - 2)))


class DepthScaledLayerNorm(nn.LayerNorm):
    """``LN(x) / sqrt(depth)`` (LayerNorm scaling), sharing the parameters of the LayerNorm it
    replaces, so the state dict keeps its keys."""

    def __init__(self, norm: nn.LayerNorm, depth: int):
        super().__init__(norm.normalized_shape, norm.eps, norm.elementwise_affine,
                         bias=norm.bias is not None)
        self.weight, self.bias = norm.weight, norm.bias
        self.depth = depth
        self.scale = 1.0 / math.sqrt(depth)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) * self.scale


_CONTAINERS = (nn.Sequential, nn.ModuleList, Residual, Branching, Network)


def grammar_layernorms(model: nn.Module) -> list[tuple[nn.Module, str, nn.LayerNorm]]:
    """(parent, name, norm) of each plain LayerNorm reached through the compiler's containers
    only (the grammar's ``norm`` terminals, not the norms inside terminal modules), in module
    order."""
    found = []

    def walk(module: nn.Module) -> None:
        for name, child in module.named_children():
            if type(child) is nn.LayerNorm:
                found.append((module, name, child))
            elif isinstance(child, _CONTAINERS):
                walk(child)

    walk(model)
    return found


def _derived_seed(seed: int, name: str) -> int:
    """A seed per technique, so their random streams differ from each other and the shuffle."""
    return zlib.crc32(f"{name}:{seed}".encode())


# ---------------------------------------------------------------------------------------------
# what each technique does during a run


@dataclass(frozen=True)
class _Context:
    data: TaskData
    device: torch.device
    seed: int
    autocast: Callable[[], ContextManager]


@dataclass(frozen=True)
class _Batch:
    model: nn.Module
    x: Tensor
    y: Tensor
    out: Tensor
    classification: bool


class _Recorder:
    """The latest output of each of some modules (forward hooks), until cleared; with
    ``training_only``, outputs of eval-mode forwards (the scoring) are not kept."""

    def __init__(self, training_only: bool):
        self.outputs: dict[int, Tensor] = {}
        self.training_only = training_only

    def keep(self, index: int, module: nn.Module, inputs, output) -> None:
        if module.training or not self.training_only:
            self.outputs[index] = output


class _Technique:
    """Hooks into a training step; each default does nothing."""

    def __init__(self, options, ctx: _Context):
        self.options, self.ctx = options, ctx
        self.handles: list = []
        self.recorders: list[_Recorder] = []

    def record(self, modules: list[nn.Module], training_only: bool = True) -> _Recorder:
        """A recorder of the outputs of ``modules``, emptied by :meth:`forget`."""
        recorder = _Recorder(training_only)
        self.handles.extend(m.register_forward_hook(functools.partial(recorder.keep, i))
                            for i, m in enumerate(modules))
        self.recorders.append(recorder)
        return recorder

    def attach(self, model: nn.Module) -> list[nn.Parameter]:
        """Prepare ``model`` before the optimiser is made; returns extra trainable parameters."""
        return []

    def augment(self, x: Tensor) -> Tensor:
        return x

    def loss(self, loss: Tensor, batch: _Batch) -> Tensor:
        return loss

    def before_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """After backward, before the optimiser step."""

    def forget(self) -> None:
        """Drop what this step recorded."""
        for recorder in self.recorders:
            recorder.outputs.clear()

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.forget()


class _GradNoise(_Technique):
    def __init__(self, options: GradNoise, ctx: _Context):
        super().__init__(options, ctx)
        self.generator = torch.Generator(device=ctx.device)
        self.generator.manual_seed(_derived_seed(ctx.seed, "grad_noise"))

    def before_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        std = grad_noise_std(self.options, step)
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    noise = torch.randn(p.grad.shape, generator=self.generator,
                                        device=p.grad.device, dtype=p.grad.dtype)
                    p.grad.add_(noise, alpha=std)


class _TrAct(_Technique):
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


class _Guidance(_Technique):
    def __init__(self, options: Guidance, ctx: _Context):
        super().__init__(options, ctx)
        self.guide = build_guide(options, ctx.data.input_shape, ctx.seed).to(ctx.device)

    def attach(self, model: nn.Module) -> list[nn.Parameter]:
        target, guide = representation_points(model), representation_points(self.guide)
        pairs = matched_layers(len(target), len(guide))
        self.target = self.record([target[t] for t, _ in pairs])
        self.reference = self.record([guide[g] for _, g in pairs], training_only=False)
        self.pairs = len(pairs)
        return []

    def loss(self, loss: Tensor, batch: _Batch) -> Tensor:
        with torch.no_grad(), self.ctx.autocast():
            self.guide(batch.x)
        misalignment = sum(1.0 - linear_cka(self.target.outputs[i], self.reference.outputs[i])
                           for i in range(self.pairs))
        return loss + self.options.alpha * misalignment


def final_classifier(model: nn.Module, classes: int | None) -> nn.Linear:
    """The last ``nn.Linear`` of ``model`` with ``classes`` outputs (a compiled network's
    ``head.fc``)."""
    found = [m for m in model.modules() if isinstance(m, nn.Linear)
             and (classes is None or m.out_features == classes)]
    if not found:
        raise ValueError(f"proj_head needs a final linear classifier with {classes} outputs")
    return found[-1]


class _ProjectionHead(_Technique):
    def __init__(self, options: ProjectionHead, ctx: _Context):
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

    def loss(self, loss: Tensor, batch: _Batch) -> Tensor:
        probe = F.linear(self.features.detach().float(), self.classifier.weight,
                         self.classifier.bias)
        return loss + F.cross_entropy(probe, batch.y)

    def forget(self) -> None:
        super().forget()
        self.features = None


class _LayerNormScaling(_Technique):
    def attach(self, model: nn.Module) -> list[nn.Parameter]:
        for depth, (parent, name, norm) in enumerate(grammar_layernorms(model), start=1):
            setattr(parent, name, DepthScaledLayerNorm(norm, depth))
        return []


class _MaskAugmentation(_Technique):
    def __init__(self, options: MaskAugmentation, ctx: _Context):
        super().__init__(options, ctx)
        self.generator = torch.Generator().manual_seed(_derived_seed(ctx.seed, "mask"))

    def augment(self, x: Tensor) -> Tensor:
        mask = patch_mask(tuple(x.shape), self.options.ratio, self.options.patch, self.generator)
        return x * mask.to(device=x.device, dtype=x.dtype)


class _OrderedDropout(_Technique):
    def __init__(self, options: OrderedDropout, ctx: _Context):
        super().__init__(options, ctx)
        self.generator = torch.Generator().manual_seed(_derived_seed(ctx.seed, "ordered"))
        self.kept: tuple[nn.Module, int] | None = None

    def attach(self, model: nn.Module) -> list[nn.Parameter]:
        self.layers = [m for m in model.modules() if isinstance(m, LowRankLinearModule)]
        # every (layer, kept rank) pair, drawn uniformly (Maestro's single-layer sampler)
        self.choices = [(layer.down, k) for layer in self.layers
                        for k in range(1, layer.down.weight.shape[0] + 1)]
        self.handles.extend(layer.down.register_forward_hook(self._truncate)
                            for layer in self.layers)
        self.convolutional = {layer.down for layer in self.layers
                              if isinstance(layer, LowRankConvModule)}
        return []

    def _truncate(self, module: nn.Module, inputs, output: Tensor) -> Tensor | None:
        if self.kept is None or self.kept[0] is not module:
            return None
        keep = (torch.arange(module.weight.shape[0], device=output.device) < self.kept[1])
        keep = keep.to(output.dtype)
        return output * (keep.reshape(-1, 1, 1) if module in self.convolutional else keep)

    def loss(self, loss: Tensor, batch: _Batch) -> Tensor:
        if not self.choices:
            return loss
        pick = int(torch.randint(len(self.choices), (1,), generator=self.generator))
        self.kept = self.choices[pick]
        try:
            with self.ctx.autocast():
                partial = batch.model(batch.x)
        finally:
            self.kept = None
        partial, full = partial.float(), batch.out.detach()
        distil = (F.cross_entropy(partial, full.softmax(1)) if batch.classification
                  else F.mse_loss(partial, full))
        lasso = sum(layer.group_lasso() for layer in self.layers)
        return loss + distil + self.options.group_lasso * lasso


class _PrototypeLosses(_Technique):
    def attach(self, model: nn.Module) -> list[nn.Parameter]:
        layers = [m for m in model.modules() if isinstance(m, PrototypeModule)]
        self.recorder = self.record(layers)
        return []

    def loss(self, loss: Tensor, batch: _Batch) -> Tensor:
        for distances in self.recorder.outputs.values():
            d = distances.float().reshape(-1, distances.shape[-1])  # (tokens, prototypes)
            r1 = d.min(0).values.mean()      # every prototype near some token
            r2 = d.min(1).values.mean()      # every token near some prototype
            loss = loss + self.options.r1 * r1 + self.options.r2 * r2
        return loss


# The order the trainer applies them: the losses that read the main forward's recordings
# before ordered dropout's extra forward overwrites them; noise last, on the final gradient.
_RUNTIME: dict[str, type[_Technique]] = {
    "layernorm_scaling": _LayerNormScaling, "tract": _TrAct,
    "mask_augmentation": _MaskAugmentation, "proj_head": _ProjectionHead,
    "guidance": _Guidance, "prototype_losses": _PrototypeLosses,
    "ordered_dropout": _OrderedDropout, "grad_noise": _GradNoise,
}


class TrainingTechniques:
    """The enabled techniques of one training run, at the points of a step where the trainer
    calls them: :meth:`attach` (before the optimiser is made), :meth:`augment` (the batch),
    :meth:`loss` (after the forward), :meth:`before_step` (after backward) and :meth:`detach`
    (after training: hooks go, the scaled norms stay).  Task mismatches and guides that do not
    fit raise :class:`ConfigError` here, before training starts."""

    def __init__(self, techniques: Techniques, data: TaskData, device: torch.device, seed: int,
                 autocast: Callable[[], ContextManager]):
        ctx = _Context(data, device, seed, autocast)
        self.active = [kind(getattr(techniques, name), ctx) for name, kind in _RUNTIME.items()
                       if getattr(techniques, name) is not None]

    def attach(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for technique in self.active for p in technique.attach(model)]

    def augment(self, x: Tensor) -> Tensor:
        for technique in self.active:
            x = technique.augment(x)
        return x

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, out: Tensor, loss: Tensor,
             classification: bool) -> Tensor:
        """The training loss with every technique's terms added to the task ``loss``."""
        batch = _Batch(model, x, y, out, classification)
        try:
            for technique in self.active:
                loss = technique.loss(loss, batch)
        finally:
            for technique in self.active:
                technique.forget()
        return loss

    def before_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        for technique in self.active:
            technique.before_step(optimizer, step)

    def detach(self) -> None:
        for technique in self.active:
            technique.detach()
