"""HyperZ·Z·W / Terminator's hyper-kernel primitives (Zhang 2024), family ``hyper-kernel``.

A *slow net* (:class:`MAGNet`, a multiplicative Gabor coordinate MLP) generates kernels from a
fixed grid of coordinates in [-1, 1]; the *fast net* applies them to the activations:

* ``hyper_channel_gate`` (compute, im/col): an SE-style gate whose channel weights come from a
  MAGNet over channel coordinates: ``y = x * sigmoid(w * GAP(x) * GAP(x))``;
* ``hyperzzw_local{3,5,7}`` (compute, im): a depth-wise k x k convolution with a context-dependent
  hyper-kernel, a 1x1 channel mixer, batch standardisation and GELU;
* ``hyperzzw_global`` (aggregate2, im, square maps): ``y[b, c] = (x[b, c] * W_g[c]) @ v[b, c]``
  for the two branch outputs ``(x, v)``, with ``W_g`` an S x S hyper-kernel per channel generated
  for the current map size S;
* ``rgu`` (compute, im/col): the recursive gated unit
  ``W_y(GELU(IN(W_k x * W_q(W_v x))) + b_p)``.

Deviations from the reference code (hyperevolnet/Terminator, read at the commits the digest names):

* MAGNet_L averages its context over the batch (one kernel shared by all samples, so outputs
  depend on the batch's composition); here the context, and so the local hyper-kernel, is per
  sample (the depth-wise convolution runs as one grouped convolution over batch x channels).
  Batch-mean context is the per-sample context averaged, since the first context map is linear.
* The S-renormalisation's alpha (init 1) and beta (init 0.1) were unregistered Python lists moved
  with ``.cuda()``; here they are registered parameters (per layer and hidden unit) and follow the
  module's device and dtype.  The detached copy in ``alpha * detach(h) + beta * normalize(h)`` is
  kept as in the reference.
* The local branch's batch standardisation (BatchNorm2d without affine) uses batch statistics in
  training and running statistics in evaluation (the reference used batch statistics in both).
* The global hyper-kernel size is the current map size (the reference fixed 32); the RGU's
  positional bias is a learned map over the current H x W (or N tokens) shared by channels.
* The slow nets' first-layer frequency scale omega_0 is not in the reference config that was
  read; 1.0 is used (frequencies 2 pi omega_0 gamma W with gamma ~ Gamma(6 / (i + 1), 1)).
* Chang initialisation (output weights times sqrt(1 / #kernel points)) happens at construction
  rather than on the first forward.
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .registry import (
    Context,
    Kind,
    Shape,
    Terminal,
    features_of,
    mean_over_positions,
    mode_of,
    positions_of,
    register_all,
)

HYPERZZW = ("Zhang, HyperZ·Z·W Operator Connects Slow-Fast Networks for Full Context "
            "Interaction, 2024")
HYPERZZW_CODE = ("hyperevolnet/Terminator models/modules/{magnet.py, slow_net.py, hyperzzw.py, "
                 "local_conv.py, hyper_interact.py, rgu.py, fast_multi_branch.py}")


OMEGA_0 = 1.0
GAMMA_ALPHA = 6.0
GAMMA_BETA = 1.0
NORM_EPS = 1e-5


# -- the slow net ---------------------------------------------------------------------------

def coordinate_grid(grid: tuple[int, ...]) -> Tensor:
    """(prod(grid), len(grid)) coordinates in [-1, 1], row-major (the last axis fastest)."""
    axes = [torch.linspace(-1.0, 1.0, n) for n in grid]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=1)


class MAGNet(nn.Module):
    """Multiplicative anisotropic Gabor network over a fixed coordinate grid (Terminator's slow
    net; MAGNet_G / MAGNet_GC of ``models/modules/magnet.py``).

    ``h_0 = sin(F_0 c)``; ``h_i = sin(F_i c) * (A_i h_{i-1} + a_i) + b_p`` for i = 1..L;
    output ``A_out h_L + a_out``, one row per grid point: (K, out).  ``F_i`` are linear maps of
    the coordinates whose weights are scaled by ``2 pi omega_0 gamma`` (gamma ~
    Gamma(6 / (i + 1), 1) per hidden unit and coordinate), bias 0; ``A_i`` Kaiming-uniform
    (linear gain), bias 1; ``b_p`` a learned map over the K grid points (shared by the hidden
    units), init 0; ``A_out`` Kaiming-uniform times sqrt(1 / K), bias 0.  The coordinates are a
    non-persistent buffer, so they follow the module's device and dtype.
    """

    def __init__(self, grid: tuple[int, ...], hidden: int, layers: int, out: int,
                 omega_0: float = OMEGA_0):
        super().__init__()
        dim, points = len(grid), math.prod(grid)
        self.layers = layers
        self.register_buffer("coords", coordinate_grid(grid), persistent=False)
        bound = 1.0 / math.sqrt(dim)
        weight = torch.empty(layers + 1, hidden, dim).uniform_(-bound, bound)
        for i in range(layers + 1):
            gamma = torch.distributions.Gamma(GAMMA_ALPHA / (i + 1), GAMMA_BETA)
            weight[i] *= 2 * math.pi * omega_0 * gamma.sample((hidden, dim))
        self.filter_weight = nn.Parameter(weight)
        self.filter_bias = nn.Parameter(torch.zeros(layers + 1, hidden))
        self.hidden_weight = nn.Parameter(_kaiming_linear(layers, hidden, hidden))
        self.hidden_bias = nn.Parameter(torch.ones(layers, hidden))
        self.out_weight = nn.Parameter(_kaiming_linear(1, out, hidden)[0] / math.sqrt(points))
        self.out_bias = nn.Parameter(torch.zeros(out))
        self.bias_p = nn.Parameter(torch.zeros(points, 1))

    def layer(self, i: int, h: Tensor) -> Tensor:
        gate = torch.sin(F.linear(self.coords, self.filter_weight[i + 1], self.filter_bias[i + 1]))
        return gate * F.linear(h, self.hidden_weight[i], self.hidden_bias[i]) + self.bias_p

    def first(self) -> Tensor:
        return torch.sin(F.linear(self.coords, self.filter_weight[0], self.filter_bias[0]))

    def forward(self) -> Tensor:
        h = self.first()
        for i in range(self.layers):
            h = self.layer(i, h)
        return F.linear(h, self.out_weight, self.out_bias)


class ConditionedMAGNet(MAGNet):
    """MAGNet_L: after each hidden layer, S-renormalisation ``alpha * detach(h) + beta *
    normalize(h)`` (L2 over the grid points, per hidden unit) and a multiplication by
    ``(C_i g + c_i)`` for a per-sample context ``g`` of shape (B, K, hidden); output (B, K, out).
    ``C_i`` Kaiming-uniform (linear gain), bias 1; alpha init 1, beta init 0.1."""

    def __init__(self, grid: tuple[int, ...], hidden: int, layers: int, out: int,
                 omega_0: float = OMEGA_0):
        super().__init__(grid, hidden, layers, out, omega_0)
        self.context_weight = nn.Parameter(_kaiming_linear(layers, hidden, hidden))
        self.context_bias = nn.Parameter(torch.ones(layers, hidden))
        self.alpha = nn.Parameter(torch.ones(layers, hidden))
        self.beta = nn.Parameter(torch.full((layers, hidden), 0.1))

    def forward(self, context: Optional[Tensor] = None) -> Tensor:
        assert context is not None
        h = self.first()
        for i in range(self.layers):
            h = self.layer(i, h)
            h = self.alpha[i] * h.detach() + self.beta[i] * F.normalize(h, dim=-2)
            h = h * F.linear(context, self.context_weight[i], self.context_bias[i])
        return F.linear(h, self.out_weight, self.out_bias)


def _kaiming_linear(count: int, fan_out: int, fan_in: int) -> Tensor:
    """``count`` weight matrices, Kaiming-uniform with linear gain: U(-sqrt(3/fan_in), ...)."""
    bound = math.sqrt(3.0 / fan_in)
    return torch.empty(count, fan_out, fan_in).uniform_(-bound, bound)


def magnet_params(dim: int, points: int, hidden: int, layers: int, out: int,
                  conditioned: bool = False) -> int:
    count = ((layers + 1) * (dim * hidden + hidden) + layers * (hidden * hidden + hidden)
             + hidden * out + out + points)
    if conditioned:
        count += layers * (hidden * hidden + hidden) + 2 * layers * hidden
    return count


def magnet_shared_flops(dim: int, points: int, hidden: int, layers: int) -> int:
    """The coordinate-only part: every sin(F_i c) and, before any context, A_1 h_0."""
    return (layers + 1) * 2 * points * dim * hidden + min(layers, 1) * 2 * points * hidden ** 2


def magnet_flops(dim: int, points: int, hidden: int, layers: int, out: int) -> int:
    """A plain MAGNet's whole work (done once per batch: it only sees coordinates)."""
    return (magnet_shared_flops(dim, points, hidden, layers)
            + max(layers - 1, 0) * 2 * points * hidden ** 2 + 2 * points * hidden * out)


# -- HyperZ·Z·W terminals -------------------------------------------------------------------


class HyperChannelGateModule(nn.Module):
    """HyperChannelInteract: ``x * sigmoid(w * y * y)`` with y the channel means and w from a
    MAGNet over C channel coordinates (``hyper_interact.py``, ``HyperZZW_2E``)."""

    def __init__(self, channels: int, image: bool, hidden: int, layers: int):
        super().__init__()
        self.image = image
        self.slow = MAGNet((channels,), hidden, layers, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = mean_over_positions(x, self.image)
        w = self.slow().reshape(1, -1)
        s = torch.sigmoid(y * w * y)
        if self.image:
            return x * s.unsqueeze(-1).unsqueeze(-1)
        return x * s.unsqueeze(1)


class HyperChannelGate(Terminal):
    kind = Kind.COMPUTATION
    name = "hyper_channel_gate"
    modes = frozenset({"im", "col"})
    family = "hyper-kernel"
    paper = HYPERZZW
    seed_papers = (2,)
    reference = HYPERZZW_CODE
    category = "compute"
    description = ("SE-style channel gate sigmoid(w * GAP(x)^2) with w generated by a MAGNet slow "
                   "net over channel coordinates (HyperZZW_2E)")

    def __init__(self, hidden: int = 32, layers: int = 2):
        self.hidden, self.layers = hidden, layers

    def infer(self, x: Shape, ctx: Context) -> Shape:
        return x

    def params(self, x: Shape, ctx: Context) -> int:
        return magnet_params(1, features_of(x), self.hidden, self.layers, 1)

    def shared_flops(self, x: Shape, ctx: Context) -> int:
        return magnet_flops(1, features_of(x), self.hidden, self.layers, 1)

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return HyperChannelGateModule(features_of(x), mode_of(x) == "im", self.hidden, self.layers)

    def hyperparameters(self) -> dict:
        return {"hidden": self.hidden, "layers": self.layers, "omega_0": OMEGA_0}


def _exporting_to_onnx() -> bool:
    """True while ``torch.onnx.export`` traces the module (never in TorchScript)."""
    return torch.onnx.is_in_onnx_export()


def _per_sample_depthwise(x: Tensor, kernels: Tensor, k: int) -> Tensor:
    """The per-sample depth-wise convolution of :class:`HyperZZWLocalModule` as patches times
    kernels, for ONNX: its convolution groups ``B * C`` channels, and an ONNX ``Conv`` needs a
    constant group count, so a dynamic batch could not be exported (it failed with "unsupported
    operand type(s) for %: 'NoneType' and 'int'").  Equal to the grouped convolution up to the
    order of the k*k additions; training keeps the convolution, so its numerics are unchanged."""
    b, c, h, w = x.shape
    patches = F.unfold(x, k, padding=(k - 1) // 2).reshape(b, c, k * k, h * w)
    return (patches * kernels.reshape(b, c, k * k, 1)).sum(2).reshape(b, c, h, w)


class HyperZZWLocalModule(nn.Module):
    """Local HyperZ·Z·W (``HyperZZW_L`` + ``LocalConv`` + ``MAGNet_L``), per-sample context:

    ``g = GELU(P_2 P_1 AdaptiveAvgPool_k(x))`` (B, k*k, hidden); ``K = MAGNet_L(c; g)`` (B, C,
    k, k); ``y = GELU(BN(M DWConv(x; K))) + b``.
    """

    def __init__(self, channels: int, kernel: int, hidden: int, layers: int):
        super().__init__()
        self.kernel = kernel
        self.slow = ConditionedMAGNet((kernel, kernel), hidden, layers, channels)
        self.reduce = nn.Linear(channels, hidden)
        self.context = nn.Linear(hidden, hidden)
        mixer = torch.empty(channels, channels, 1, 1)
        nn.init.kaiming_normal_(mixer)
        self.mixer_weight = nn.Parameter(mixer)
        self.mixer_bias = nn.Parameter(torch.zeros(channels))
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        k = self.kernel
        g = F.adaptive_avg_pool2d(x, [k, k]).flatten(2).transpose(1, 2)
        g = F.gelu(self.context(self.reduce(g)))
        kernels = self.slow(g).transpose(1, 2).reshape(b * c, 1, k, k)
        grouped = True
        if not torch.jit.is_scripting():  # TorchScript does not compile this branch
            grouped = not _exporting_to_onnx()
        if grouped:
            z = F.conv2d(x.reshape(1, b * c, h, w), kernels, None, 1, (k - 1) // 2, 1, b * c)
        else:
            z = _per_sample_depthwise(x, kernels, k)
        z = F.conv2d(z.reshape(b, c, h, w), self.mixer_weight, self.mixer_bias)
        return F.gelu(self.norm(z)) + self.bias


class HyperZZWLocal(Terminal):
    kind = Kind.COMPUTATION
    modes = frozenset({"im"})
    family = "hyper-kernel"
    paper = HYPERZZW
    seed_papers = (2,)
    reference = HYPERZZW_CODE
    category = "compute"

    def __init__(self, kernel: int, hidden: int = 32, layers: int = 2):
        self.kernel, self.hidden, self.layers = kernel, hidden, layers
        self.name = f"hyperzzw_local{kernel}"
        self.description = (f"depth-wise {kernel}x{kernel} convolution with a per-sample "
                            f"hyper-kernel from a context-conditioned MAGNet, 1x1 channel mixer, "
                            f"BatchNorm (no affine), GELU")

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        return x if len(x) == 3 else None

    def params(self, x: Shape, ctx: Context) -> int:
        c, h, k = x[0], self.hidden, self.kernel
        return (magnet_params(2, k * k, h, self.layers, c, conditioned=True)
                + (c * h + h) + (h * h + h) + (c * c + c) + 1)

    def shared_flops(self, x: Shape, ctx: Context) -> int:
        return magnet_shared_flops(2, self.kernel ** 2, self.hidden, self.layers)

    def flops(self, x: Shape, ctx: Context) -> int:
        c, hw = x[0], x[1] * x[2]
        points, h, layers = self.kernel ** 2, self.hidden, self.layers
        context = 2 * points * c * h + 2 * points * h * h
        slow = (layers * 2 * points * h * h + max(layers - 1, 0) * 2 * points * h * h
                + 2 * points * h * c)
        return context + slow + 2 * c * hw * points + 2 * c * c * hw

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return HyperZZWLocalModule(x[0], self.kernel, self.hidden, self.layers)

    def hyperparameters(self) -> dict:
        return {"kernel": self.kernel, "hidden": self.hidden, "layers": self.layers,
                "omega_0": OMEGA_0}


class HyperZZWGlobalModule(nn.Module):
    """Global HyperZ·Z·W (``HyperZZW_G``): ``(x * W_g) @ v`` with W_g = MAGNet_G over the S x S
    grid, (1, C, S, S); the matrix product is over the last two dims per sample and channel."""

    def __init__(self, channels: int, size: int, hidden: int, layers: int):
        super().__init__()
        self.channels = channels
        self.size = size
        self.slow = MAGNet((size, size), hidden, layers, channels)

    def forward(self, xs: List[Tensor]) -> Tensor:
        kernel = self.slow().transpose(0, 1).reshape(1, self.channels, self.size, self.size)
        return torch.matmul(xs[0] * kernel, xs[1])


class HyperZZWGlobal(Terminal):
    kind = Kind.AGGREGATION
    name = "hyperzzw_global"
    modes = frozenset({"im"})
    family = "hyper-kernel"
    paper = HYPERZZW
    seed_papers = (2,)
    reference = HYPERZZW_CODE
    category = "aggregate2"
    description = ("(x * W_g) @ v for branch outputs (x, v) of equal square shape (C,S,S); W_g is "
                   "a per-channel S x S hyper-kernel from a MAGNet slow net")

    def __init__(self, hidden: int = 64, layers: int = 2):
        self.hidden, self.layers = hidden, layers

    def infer(self, xs: tuple[Shape, ...], ctx: Context) -> Shape | None:
        if len(xs) != 2 or xs[0] != xs[1] or len(xs[0]) != 3 or xs[0][1] != xs[0][2]:
            return None
        return xs[0]

    def refusal(self, xs, ctx: Context) -> str:
        return "needs two branch outputs of the same square image shape (C,S,S)"

    def params(self, xs: tuple[Shape, ...], ctx: Context) -> int:
        c, s = xs[0][0], xs[0][1]
        return magnet_params(2, s * s, self.hidden, self.layers, c)

    def shared_flops(self, xs: tuple[Shape, ...], ctx: Context) -> int:
        c, s = xs[0][0], xs[0][1]
        return magnet_flops(2, s * s, self.hidden, self.layers, c)

    def flops(self, xs: tuple[Shape, ...], ctx: Context) -> int:
        c, s = xs[0][0], xs[0][1]
        return 2 * c * s ** 3

    def build(self, xs: tuple[Shape, ...], ctx: Context) -> nn.Module:
        return HyperZZWGlobalModule(xs[0][0], xs[0][1], self.hidden, self.layers)

    def hyperparameters(self) -> dict:
        return {"hidden": self.hidden, "layers": self.layers, "omega_0": OMEGA_0}


class RGUModule(nn.Module):
    """Recursive gated unit (``rgu.py``) on (B, N, C) positions x channels (images are
    flattened to H*W positions): ``W_y(GELU(IN(W_k x * W_q(W_v x))) + b_p)``; IN normalises each
    channel over the positions of one sample (no affine); b_p is a learned per-position bias."""

    def __init__(self, channels: int, positions: int, image: bool):
        super().__init__()
        self.image = image
        self.key = nn.Linear(channels, channels)
        self.value = nn.Linear(channels, channels)
        self.query = nn.Linear(channels, channels)
        self.out = nn.Linear(channels, channels)
        for linear in (self.key, self.value, self.query, self.out):
            nn.init.kaiming_uniform_(linear.weight, nonlinearity="linear")
            nn.init.zeros_(linear.bias)
        self.bias_p = nn.Parameter(torch.zeros(positions, 1))
        self.eps = NORM_EPS

    def forward(self, x: Tensor) -> Tensor:
        t = x.flatten(2).transpose(1, 2) if self.image else x
        a = self.key(t) * self.query(self.value(t))
        var, mean = torch.var_mean(a, dim=[1], unbiased=False, keepdim=True)
        a = F.gelu((a - mean) / torch.sqrt(var + self.eps)) + self.bias_p
        y = self.out(a)
        if self.image:
            return y.transpose(1, 2).reshape(x.shape)
        return y


class RGU(Terminal):
    kind = Kind.COMPUTATION
    name = "rgu"
    modes = frozenset({"im", "col"})
    family = "hyper-kernel"
    paper = HYPERZZW
    seed_papers = (2,)
    reference = "hyperevolnet/Terminator models/modules/rgu.py"
    category = "compute"
    description = ("recursive gated unit W_y(GELU(InstanceNorm(W_k x * W_q W_v x)) + b_p) with "
                   "channel-wise linears and a learned per-position bias")

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        return x if positions_of(x) >= 2 else None

    def refusal(self, x: Shape, ctx: Context) -> str:
        return "instance normalisation needs at least 2 positions"

    def params(self, x: Shape, ctx: Context) -> int:
        c = features_of(x)
        return 4 * (c * c + c) + positions_of(x)

    def flops(self, x: Shape, ctx: Context) -> int:
        c = features_of(x)
        return 4 * 2 * positions_of(x) * c * c

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return RGUModule(features_of(x), positions_of(x), mode_of(x) == "im")


register_all([HyperChannelGate(), HyperZZWLocal(3), HyperZZWLocal(5), HyperZZWLocal(7), RGU(),
              HyperZZWGlobal()])
