"""Codebook and learned-memory terminals (seed papers #15, #35 and #53), family ``bottleneck``.

All three compare each input vector with a small learned (or data-initialised) set of vectors:

* ``kv_bottleneck`` / ``kv_bottleneck_soft`` -- discrete key-value bottleneck (Traeuble et al.):
  per token, C random projections of the input, nearest frozen key in each codebook, its learnable
  value; (N, D) -> (N, C * d_v).
* ``prototype_layer{m}`` -- prototype layer (Li et al.): squared L2 distance of each token to m
  learnable prototypes; (N, D) -> (N, m).
* ``soft_codebook{K}`` -- AiT soft token (Ning et al.): softmax over K logits of each token /
  pixel, output the probability-weighted sum of K learnable codewords; shape preserving.

Costs follow ``torch.utils.flop_counter`` (matrix products only).  The key-value bottleneck's
one-off key initialisation and its EMA key refinement are done without autograd using
``cdist``/``scatter_add`` bookkeeping that the counter does not count; ``flops`` is the
steady-state cost of a forward pass.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .progress import PROGRESS_BUFFER, progress_buffer
from .registry import Context, Kind, Shape, Terminal, mode_of, register_all

# ---------------------------------------------------------------------------------------------
# Discrete key-value bottleneck (#15)
# ---------------------------------------------------------------------------------------------


class KeyValueBottleneckModule(nn.Module):
    """Discrete key-value bottleneck on the last dim of (B, N, D) tokens.

    Forward (per token x in R^D; Traeuble et al. 2023, reference
    ``ftraeuble/discrete_key_value_bottleneck`` ``key_value_bottleneck/core.py`` and
    ``splitters.py``):

    * splitter: z_c = x P_c in R^{d_k} for c = 1..C, with P_c in R^{D x d_k} a fixed Gaussian
      random projection whose columns are L2-normalised over D (the reference's
      ``RandomDownProjection``; a buffer, stored here flattened as ``proj`` of shape (D, C d_k));
    * lookup: j*_c = argmin_j ||z_c - k_{c,j}||^2 over the M keys of codebook c (buffer ``keys``,
      (C, M, d_k); never trained by gradients);
    * output: the values v_{c, j*_c} in R^{d_v} (parameter ``values``, (C, M, d_v), N(0, 1) init)
      concatenated over codebooks, (B, N, C d_v).

    ``soft=True`` is the gradient-passing variant (not in the paper): the one-hot choice becomes
    softmax(-||z_c - k_{c,j}||^2 / temperature) over j and the output is the weighted sum of the
    values.  The hard lookup passes **no gradient to its input**: everything before a hard
    ``kv_bottleneck`` is only trained through other paths (as in the paper, which puts it right
    after a frozen pretrained encoder).

    Key initialisation (the paper's data-driven init phase, in two steps):

    * the first forward in training mode (buffer ``initted`` == 0) sets the keys by 10 Lloyd
      (k-means) iterations on that batch's projected tokens (at most ``max_init_vectors`` of them,
      evenly spaced), seeded deterministically with evenly spaced tokens; in eval mode before that
      the keys stay at their N(0, 1) initialisation (the reference's "random" init mode);
    * afterwards, while training and 0 < ``training_progress`` < ``init_fraction``, the keys are
      refined by exponential moving averages of their assigned tokens (decay 0.95, Laplace
      smoothing eps 1e-5, as in the reference).  Progress is 0 until a trainer reports it with
      ``blocks.progress.set_training_progress``; without one the keys are frozen right after the
      first-batch k-means.  From ``init_fraction`` on the keys are frozen.
    """

    def __init__(self, dim: int, codebooks: int, pairs: int, dim_keys: int, dim_values: int,
                 soft: bool, temperature: float, decay: float = 0.95, eps: float = 1e-5,
                 init_fraction: float = 0.1, kmeans_iters: int = 10,
                 max_init_vectors: int = 4096):
        super().__init__()
        self.codebooks = codebooks
        self.pairs = pairs
        self.dim_keys = dim_keys
        self.dim_values = dim_values
        self.soft = soft
        self.temperature = temperature
        self.decay = decay
        self.eps = eps
        self.init_fraction = init_fraction
        self.kmeans_iters = kmeans_iters
        self.max_init_vectors = max_init_vectors
        proj = F.normalize(torch.randn(codebooks, dim, dim_keys), p=2.0, dim=1)
        self.register_buffer("proj", proj.permute(1, 0, 2).reshape(dim, codebooks * dim_keys)
                             .contiguous())
        self.register_buffer("keys", torch.randn(codebooks, pairs, dim_keys))
        self.register_buffer("keys_avg", torch.zeros(codebooks, pairs, dim_keys))
        self.register_buffer("cluster_size", torch.zeros(codebooks, pairs))
        self.register_buffer("initted", torch.zeros(()))
        self.register_buffer(PROGRESS_BUFFER, progress_buffer())
        self.register_buffer("offsets", torch.arange(codebooks).view(1, codebooks, 1) * pairs)
        self.values = nn.Parameter(torch.randn(codebooks, pairs, dim_values))

    def _assign_stats(self, data: Tensor, assign: Tensor):
        """Per-key token counts (C, M) and sums (C, M, d_k) of an assignment (no FLOPs)."""
        c, n, k = data.shape
        counts = torch.zeros(c, self.pairs, dtype=data.dtype, device=data.device)
        counts.scatter_add_(1, assign, torch.ones(c, n, dtype=data.dtype, device=data.device))
        sums = torch.zeros(c, self.pairs, k, dtype=data.dtype, device=data.device)
        sums.scatter_add_(1, assign.unsqueeze(-1).expand(c, n, k), data)
        return counts, sums

    def _kmeans_init(self, z: Tensor):
        """Keys from k-means on the projected tokens z (B, C, N, d_k) of one batch."""
        c, k = self.codebooks, self.dim_keys
        data = z.detach().transpose(0, 1).reshape(c, -1, k)
        n = data.shape[1]
        if n > self.max_init_vectors:
            pick = torch.arange(self.max_init_vectors, device=data.device) * n \
                // self.max_init_vectors
            data = data.index_select(1, pick)
            n = self.max_init_vectors
        seeds = torch.arange(self.pairs, device=data.device) * n // self.pairs
        keys = data.index_select(1, seeds)
        counts = torch.zeros(c, self.pairs, dtype=data.dtype, device=data.device)
        for _ in range(self.kmeans_iters):
            distance = torch.cdist(data, keys, compute_mode="donot_use_mm_for_euclid_dist")
            counts, sums = self._assign_stats(data, distance.argmin(-1))
            means = sums / counts.clamp_min(1.0).unsqueeze(-1)
            keys = torch.where(counts.unsqueeze(-1) > 0, means, keys)
        self.keys.copy_(keys)
        self.cluster_size.copy_(counts)
        self.keys_avg.copy_(keys * counts.unsqueeze(-1))
        self.initted.fill_(1.0)

    def _ema_update(self, z: Tensor, index: Tensor):
        """EMA of the keys towards the mean of the tokens assigned to them (reference rule)."""
        c, k = self.codebooks, self.dim_keys
        data = z.detach().transpose(0, 1).reshape(c, -1, k)
        counts, sums = self._assign_stats(data, index.transpose(0, 1).reshape(c, -1))
        size = self.cluster_size * self.decay + counts * (1.0 - self.decay)
        avg = self.keys_avg * self.decay + sums * (1.0 - self.decay)
        total = size.sum(-1, keepdim=True)
        smoothed = (size + self.eps) / (total + self.pairs * self.eps) * total
        self.cluster_size.copy_(size)
        self.keys_avg.copy_(avg)
        self.keys.copy_(avg / smoothed.unsqueeze(-1))

    def forward(self, x: Tensor) -> Tensor:
        b, n = x.shape[0], x.shape[1]
        c, k = self.codebooks, self.dim_keys
        z = torch.matmul(x, self.proj).reshape(b, n, c, k).transpose(1, 2)  # (B, C, N, d_k)
        if self.training and bool(self.initted == 0):
            self._kmeans_init(z)
        keys = self.keys
        # -||z - key||^2 up to the per-token constant ||z||^2 (which neither argmax nor softmax
        # over keys sees)
        score = 2.0 * torch.matmul(z, keys.transpose(1, 2)) - (keys * keys).sum(-1).unsqueeze(1)
        index = score.argmax(-1)  # (B, C, N)
        if self.soft:
            weights = torch.softmax(score / self.temperature, dim=-1)
            out = torch.matmul(weights, self.values)  # (B, C, N, d_v)
        else:
            table = self.values.reshape(c * self.pairs, self.dim_values)
            out = F.embedding(index + self.offsets, table)  # (B, C, N, d_v)
        progress = self.training_progress
        if self.training and bool(progress > 0.0) and bool(progress < self.init_fraction):
            self._ema_update(z, index)
        return out.transpose(1, 2).reshape(b, n, c * self.dim_values)


class KeyValueBottleneck(Terminal):
    """Discrete key-value bottleneck (``kv_bottleneck``, hard) and its gradient-passing variant
    (``kv_bottleneck_soft``); see :class:`KeyValueBottleneckModule`.

    Placement: the hard variant sends no gradient upstream (only its values train), so in a
    searched network it suits a position right after a frozen or otherwise-trained stem; the soft
    variant is the one to use anywhere.
    """

    kind = Kind.COMPUTATION
    modes = frozenset({"col"})
    family = "bottleneck"
    seed_papers = (15,)
    paper = "Traeuble et al., Discrete Key-Value Bottleneck (ICML 2023; arXiv 2022)"
    reference = ("ftraeuble/discrete_key_value_bottleneck key_value_bottleneck/core.py "
                 "(KeyValueBottleneck), key_value_bottleneck/splitters.py (RandomDownProjection)")
    category = "compute"

    def __init__(self, name: str, soft: bool, codebooks: int = 16, pairs: int = 64,
                 dim_keys: int = 8, dim_values: int = 16, temperature: float = 1.0):
        self.name, self.soft = name, soft
        self.codebooks, self.pairs = codebooks, pairs
        self.dim_keys, self.dim_values = dim_keys, dim_values
        self.temperature = temperature
        how = (f"softmax(-distance / {temperature:g}) over the keys (passes gradients)" if soft
               else "argmin over frozen keys (no gradient to its input)")
        self.description = (f"{codebooks} codebooks x {pairs} keys: random projections of each "
                            f"token to {dim_keys}-d, {how}, learned {dim_values}-d values "
                            f"concatenated")

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        if mode_of(x) != "col":
            return None
        return (x[0], self.codebooks * self.dim_values)

    def params(self, x: Shape, ctx: Context) -> int:
        return self.codebooks * self.pairs * self.dim_values

    def flops(self, x: Shape, ctx: Context) -> int:
        n, d = x
        split = 2 * n * d * self.codebooks * self.dim_keys
        lookup = 2 * n * self.codebooks * self.pairs * self.dim_keys
        mix = 2 * n * self.codebooks * self.pairs * self.dim_values if self.soft else 0
        return split + lookup + mix

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return KeyValueBottleneckModule(x[-1], self.codebooks, self.pairs, self.dim_keys,
                                        self.dim_values, self.soft, self.temperature)

    def hyperparameters(self) -> dict:
        out = {"codebooks": self.codebooks, "pairs": self.pairs, "dim_keys": self.dim_keys,
               "dim_values": self.dim_values, "splitter": "random_projection",
               "key_init": "k-means x10 on the first training batch",
               "ema_decay": 0.95, "laplace_eps": 1e-5, "ema_until_progress": 0.1}
        if self.soft:
            out["temperature"] = self.temperature
        return out


# ---------------------------------------------------------------------------------------------
# Prototype layer (#35)
# ---------------------------------------------------------------------------------------------


class PrototypeModule(nn.Module):
    """Squared L2 distance of each token (last dim D) to m learnable prototypes.

    d_j(x) = ||x - p_j||^2, j = 1..m, computed as ||x||^2 - 2 x p_j + ||p_j||^2 (the reference's
    ``list_of_distances`` in ``OscarcarLi/PrototypeDL`` ``autoencoder_helpers.py``) and clamped at
    0 against rounding; prototypes are initialised U[0, 1) as in the reference.
    """

    def __init__(self, dim: int, prototypes: int):
        super().__init__()
        self.prototypes = nn.Parameter(torch.rand(prototypes, dim))

    def forward(self, x: Tensor) -> Tensor:
        p = self.prototypes
        cross = torch.matmul(x, p.t())
        distance = (x * x).sum(-1, keepdim=True) - 2.0 * cross + (p * p).sum(-1)
        return distance.clamp_min(0.0)


class PrototypeLayer(Terminal):
    kind = Kind.COMPUTATION
    modes = frozenset({"col"})
    family = "bottleneck"
    seed_papers = (35,)
    paper = ("Li, Liu, Chen & Rudin, Deep Learning for Case-Based Reasoning through Prototypes: "
             "A Neural Network that Explains Its Predictions (AAAI 2018; arXiv 2017)")
    reference = "OscarcarLi/PrototypeDL CAE_MNIST.py, autoencoder_helpers.py (list_of_distances)"
    category = "compute"

    def __init__(self, prototypes: int):
        self.prototypes = prototypes
        self.name = f"prototype_layer{prototypes}"
        self.description = (f"squared L2 distance of each token to {prototypes} learned "
                            f"prototypes (D -> {prototypes})")

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        if mode_of(x) != "col":
            return None
        return (x[0], self.prototypes)

    def params(self, x: Shape, ctx: Context) -> int:
        return self.prototypes * x[-1]

    def flops(self, x: Shape, ctx: Context) -> int:
        return 2 * x[0] * x[1] * self.prototypes

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        return PrototypeModule(x[-1], self.prototypes)

    def hyperparameters(self) -> dict:
        return {"prototypes": self.prototypes, "init": "U[0, 1)"}


# ---------------------------------------------------------------------------------------------
# AiT soft codebook (#53)
# ---------------------------------------------------------------------------------------------


class SoftCodebookModule(nn.Module):
    """p = softmax(tau * (W x + b)) over K codewords, y = sum_j p_j c_j (codebook (K, D)).

    As AiT's ``VQVAE.decode_soft`` (``SwinTransformer/AiT`` ``ait/code/model/vqvae.py``): tau
    **multiplies** the logits (0.8 in the depth configs).  AiT predicts the logits with its
    transformer head and keeps the VQ-VAE codebook frozen; here the logit map W: D -> K and the
    codebook are both learnable.  The codebook is N(0, 1) initialised like AiT's EMA VQ-VAE.
    In col mode it acts on the last dim of (B, N, D); in im mode on the channels of every pixel.
    """

    def __init__(self, dim: int, codewords: int, tau: float, image: bool):
        super().__init__()
        self.tau = tau
        self.image = image
        self.logits = nn.Linear(dim, codewords)
        self.codebook = nn.Parameter(torch.randn(codewords, dim))

    def forward(self, x: Tensor) -> Tensor:
        if self.image:
            x = x.permute(0, 2, 3, 1)
        weights = torch.softmax(self.logits(x) * self.tau, dim=-1)
        out = torch.matmul(weights, self.codebook)
        if self.image:
            out = out.permute(0, 3, 1, 2)
        return out


class SoftCodebook(Terminal):
    kind = Kind.COMPUTATION
    modes = frozenset({"im", "col"})
    family = "bottleneck"
    seed_papers = (53,)
    paper = ("Ning et al., All in Tokens: Unifying Output Space of Visual Tasks via Soft Token "
             "(ICCV 2023)")
    reference = ("SwinTransformer/AiT ait/code/model/vqvae.py (VQVAE.decode_soft), "
                 "ait/configs/swinv2b_480reso_depthonly.py (tau 0.8)")
    category = "compute"

    def __init__(self, name: str, codewords: int, tau: float = 0.8):
        self.name, self.codewords, self.tau = name, codewords, tau
        self.description = (f"softmax({tau:g} x logits) over {codewords} learned codewords, "
                            f"output their weighted sum (per token / per pixel, same width)")

    def infer(self, x: Shape, ctx: Context) -> Shape | None:
        return x

    def params(self, x: Shape, ctx: Context) -> int:
        d = x[0] if mode_of(x) == "im" else x[-1]
        return (d + 1) * self.codewords + self.codewords * d

    def flops(self, x: Shape, ctx: Context) -> int:
        if mode_of(x) == "im":
            d, positions = x[0], x[1] * x[2]
        else:
            positions, d = x
        return 4 * positions * d * self.codewords

    def build(self, x: Shape, ctx: Context) -> nn.Module:
        image = mode_of(x) == "im"
        return SoftCodebookModule(x[0] if image else x[-1], self.codewords, self.tau, image)

    def hyperparameters(self) -> dict:
        return {"codewords": self.codewords, "tau": self.tau, "tau_multiplies_logits": True}


register_all([KeyValueBottleneck("kv_bottleneck", soft=False),
              KeyValueBottleneck("kv_bottleneck_soft", soft=True)])
register_all(PrototypeLayer(m) for m in (15, 64))
register_all([SoftCodebook("soft_codebook", 128), SoftCodebook("soft_codebook32", 32)])

__all__ = ["KeyValueBottleneckModule", "PrototypeModule", "SoftCodebookModule"]
