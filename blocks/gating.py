"""Gating and hyper-kernel primitives from the seed papers.

HyperZ·Z·W / Terminator (Zhang 2024), family ``hyper-kernel``.  A *slow net* (:class:`MAGNet`, a
multiplicative Gabor coordinate MLP) generates kernels from a fixed grid of coordinates in
[-1, 1]; the *fast net* applies them to the activations:

* ``hyper_channel_gate`` (compute, im/col): an SE-style gate whose channel weights come from a
  MAGNet over channel coordinates: ``y = x * sigmoid(w * GAP(x) * GAP(x))``;
* ``hyperzzw_local{3,5,7}`` (compute, im): a depth-wise k x k convolution with a context-dependent
  hyper-kernel, a 1x1 channel mixer, batch standardisation and GELU;
* ``hyperzzw_global`` (aggregate2, im, square maps): ``y[b, c] = (x[b, c] * W_g[c]) @ v[b, c]``
  for the two branch outputs ``(x, v)``, with ``W_g`` an S x S hyper-kernel per channel generated
  for the current map size S;
* ``rgu`` (compute, im/col): the recursive gated unit
  ``W_y(GELU(IN(W_k x * W_q(W_v x))) + b_p)``.

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

Make Deep Networks Shallow Again (Bermeitinger et al. 2023), family ``residual``:

* ``parallel_sum{2,4}`` (compute, im/col): ``y = x + sum_{j=1..k} LeakyReLU(F_j(x))`` with F_j a
  3x3 convolution C -> C (same padding) on images, a linear D -> D on tokens; k separately
  weighted layers run as one C -> kC layer.  A macro: it equals the grammar expression
  ``(branching clone_tensor2 (branching clone_tensor{k} (sequential F (computation leakyrelu))
  add_tensors) (computation identity) add_tensors)`` with F = ``(routing im2col3k1s1p
  (computation linear{C}) col2im)`` or ``(computation linear{D})`` (tested), which the grammar
  can already sample; the terminal works for any width and gives the "shallow-wide" form one
  grammar option.  An aggregation could not express it: it never sees the branching input.
  LeakyReLU (einspace's activation) stands for the paper's unnamed activation.

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

from .registry import Context, Kind, Shape, Terminal, mode_of, register_all

HYPERZZW = ("Zhang, HyperZ·Z·W Operator Connects Slow-Fast Networks for Full Context "
            "Interaction, 2024")
HYPERZZW_CODE = ("hyperevolnet/Terminator models/modules/{magnet.py, slow_net.py, hyperzzw.py, "
                 "local_conv.py, hyper_interact.py, rgu.py, fast_multi_branch.py}")
SAB = "Khoshsirat & Kambhamettu, Sentence Attention Blocks for Answer Grounding, 2023"
FIRST = ("Jain et al., FiRST: Finetuning Router-Selective Transformers for Input-Adaptive "
         "Latency Reduction, 2024")

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

def _pool(x: Tensor, image: bool) -> Tensor:
    """(B, C) channel means of an image, or (B, D) token means."""
    if image:
        return x.mean(dim=[2, 3])
    return x.mean(dim=1)


def _channels(x: Shape) -> int:
    return x[0] if len(x) == 3 else x[1]


def _positions(x: Shape) -> int:
    return x[1] * x[2] if len(x) == 3 else x[0]


class HyperChannelGateModule(nn.Module):
    """HyperChannelInteract: ``x * sigmoid(w * y * y)`` with y the channel means and w from a
    MAGNet over C channel coordinates (``hyper_interact.py``, ``HyperZZW_2E``)."""

    def __init__(self, channels: int, image: bool, hidden: int, layers: int):
        super().__init__()
        self.image = image
        self.slow = MAGNet((channels,), hidden, layers, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = _pool(x, self.image)
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
        return magnet_params(1, _channels(x), self.hidden, self.layers, 1)

    def shared_flops(self, x: Shape, ctx: Context) -> int:
        return magnet_flops(1, _channels(x), self.hidden, self.layers, 1)

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return HyperChannelGateModule(_channels(x), mode_of(x) == "im", self.hidden, self.layers)

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
        return x if _positions(x) >= 2 else None

    def refusal(self, x: Shape, ctx: Context) -> str:
        return "instance normalisation needs at least 2 positions"

    def params(self, x: Shape, ctx: Context) -> int:
        c = _channels(x)
        return 4 * (c * c + c) + _positions(x)

    def flops(self, x: Shape, ctx: Context) -> int:
        c = _channels(x)
        return 4 * 2 * _positions(x) * c * c

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return RGUModule(_channels(x), _positions(x), mode_of(x) == "im")


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


# -- Make Deep Networks Shallow Again: parallel sum -----------------------------------------

class ParallelSumModule(nn.Module):
    """``x + sum_j LeakyReLU(F_j(x))``; the k layers F_j are one layer with k times the outputs
    (output j * C + c is channel c of F_j)."""

    def __init__(self, features: int, branches: int, image: bool):
        super().__init__()
        self.branches = branches
        self.image = image
        if image:
            self.layer = nn.Conv2d(features, branches * features, 3, padding=1)
        else:
            self.layer = nn.Linear(features, branches * features)

    def forward(self, x: Tensor) -> Tensor:
        if self.image:
            y = F.leaky_relu(self.layer(x))
            return x + y.unflatten(1, (self.branches, x.size(1))).sum(dim=1)
        y = F.leaky_relu(self.layer(x))
        return x + y.unflatten(-1, (self.branches, x.size(-1))).sum(dim=-2)


class ParallelSum(Terminal):
    kind = Kind.COMPUTATION
    modes = frozenset({"im", "col"})
    family = "residual"
    paper = "Bermeitinger, Hrycej & Handschuh, Make Deep Networks Shallow Again, 2023"
    seed_papers = (58,)
    category = "compute"

    def __init__(self, branches: int):
        self.branches = branches
        self.name = f"parallel_sum{branches}"
        self.description = (f"x + sum of {branches} parallel LeakyReLU(3x3 conv) layers (images) "
                            f"or LeakyReLU(linear) layers (tokens), widths kept")

    def infer(self, x: Shape, ctx: Context) -> Shape:
        return x

    def params(self, x: Shape, ctx: Context) -> int:
        c = _channels(x)
        window = 9 if len(x) == 3 else 1
        return self.branches * (c * c * window + c)

    def flops(self, x: Shape, ctx: Context) -> int:
        c = _channels(x)
        window = 9 if len(x) == 3 else 1
        return 2 * _positions(x) * self.branches * c * c * window

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return ParallelSumModule(_channels(x), self.branches, mode_of(x) == "im")

    def hyperparameters(self) -> dict:
        return {"branches": self.branches, "layer": "conv3x3 (im) / linear (col)",
                "activation": "leakyrelu"}


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
        p = torch.sigmoid(self.router_out(torch.relu(self.router_in(_pool(x, self.image)))))
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
        return max(_channels(x) // 4, 1)

    def infer(self, xs: tuple[Shape, ...], ctx: Context) -> Shape | None:
        if len(xs) != 2 or xs[0] != xs[1]:
            return None
        return xs[0]

    def params(self, xs: tuple[Shape, ...], ctx: Context) -> int:
        d, h = _channels(xs[1]), self.hidden(xs[1])
        return d * h + h + h + 1

    def flops(self, xs: tuple[Shape, ...], ctx: Context) -> int:
        d, h = _channels(xs[1]), self.hidden(xs[1])
        return 2 * d * h + 2 * h

    def build(self, xs: tuple[Shape, ...], ctx: Context) -> nn.Module:
        x = xs[1]
        return RoutedSkipModule(_channels(x), self.hidden(x), mode_of(x) == "im")

    def hyperparameters(self) -> dict:
        return {"router_hidden": "features // 4", "threshold": 0.5}


register_all([HyperChannelGate(), HyperZZWLocal(3), HyperZZWLocal(5), HyperZZWLocal(7), RGU(),
              HyperZZWGlobal(), CondChannelGate(16, "cond_channel_gate"),
              RoutedSkip(), ParallelSum(2), ParallelSum(4)])
