"""Plain-torch, hand-written versions of the shipped seeds (``blocks/seeds/*.arch``).

Why this exists: it is the independent baseline for the seeds.  ``tests/test_seeds.py`` checks that
``einspace.build(load_seed(name), shape, num_classes)`` has exactly the parameter count of the
network a person would write here (so the grammar text, the shape annotation and the compiler's
lowerings all agree with the intended architecture), and ``benchmarks/bench_training_step.py``
times a training step of each compiled seed against these modules to measure what the grammar
compiler costs at run time.

The networks follow the seeds exactly, including the seeds' choices that differ from the usual
textbook versions:

* every convolution has a bias (the grammar's convolution is im2col + ``linearN`` with bias), also
  the ones followed by BatchNorm;
* all activations are ``LeakyReLU(0.01)``;
* ResNet-18 has no max-pool: a stride-2 3x3 convolution (no norm/activation after it) replaces it;
* WRN-16-4 puts BatchNorm + LeakyReLU after each residual sum and has a plain 1x1 convolution
  (no norm) as the projection shortcut of each stage's first block;
* the ViT is post-norm, with 4 heads of width 64 (256 in total) projected back to 512 and a
  512-512-512 feed-forward network; the patch embedding is a 4x4 stride-4 convolution left in
  token mode, followed by a learnable positional encoding of shape (1, N, 512);
* the MLP-Mixer layer is ``x + channel_mlp(token_mlp(LayerNorm(x)))`` with one residual per layer,
  a token MLP N -> 4N -> N and a channel MLP 512 -> 256 -> 512, and no final norm;
* the MLP treats each input channel as one token of H*W values with a learned offset, so its
  hidden layers are shared by the channels and the head averages the channel tokens;
* the small CNN, small ViT and small FCN are the CPU-budget seeds: the ViT is the same post-norm
  layer at width 64 (4 heads of 16, a 64-128-64 MLP, 2 layers); the FCN keeps the resolution and
  adds a learnable positional encoding of shape (1, 32, H, W) after its first convolution.

The classification head is the package's: mean over (H, W) for images or over tokens for token
sequences, then ``Linear(features, num_classes)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["ResNet18", "WRN16_4", "ViT", "MLPMixer", "MLP", "SmallCNN", "SmallViT", "SmallFCN",
           "HANDWRITTEN"]


def _grid(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


# -- ResNet-18 (no max-pool) ----------------------------------------------------------------


class BasicBlock(nn.Module):
    """conv3x3-BN-LReLU-conv3x3-BN, plus identity or strided 1x1 conv + BN shortcut, then LReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride),
                                          nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Identity()
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, input_shape, num_classes: int = 10):
        super().__init__()
        channels = input_shape[0]
        self.conv1 = nn.Conv2d(channels, 64, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(64)
        self.act = nn.LeakyReLU(0.01)
        self.downsample = nn.Conv2d(64, 64, 3, 2, 1)  # in place of the max-pool
        blocks = []
        in_channels = 64
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks.append(BasicBlock(in_channels, width, stride))
            blocks.append(BasicBlock(width, width, 1))
            in_channels = width
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(self.act(self.bn1(self.conv1(x))))
        x = self.layers(x)
        return self.fc(x.mean((2, 3)))


# -- Wide ResNet-16-4 -----------------------------------------------------------------------


class WideBlock(nn.Module):
    """conv3x3-BN-LReLU-conv3x3, plus identity or 1x1 conv shortcut, then BN-LReLU on the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride)
        else:
            self.shortcut = nn.Identity()
        self.bn_out = nn.BatchNorm2d(out_channels)
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.act(self.bn1(self.conv1(x))))
        return self.act(self.bn_out(out + self.shortcut(x)))


class WRN16_4(nn.Module):
    def __init__(self, input_shape, num_classes: int = 10):
        super().__init__()
        channels = input_shape[0]
        self.conv1 = nn.Conv2d(channels, 16, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(16)
        self.act = nn.LeakyReLU(0.01)
        blocks = []
        in_channels = 16
        for width, stride in ((64, 1), (128, 2), (256, 2)):
            blocks.append(WideBlock(in_channels, width, stride))
            blocks.append(WideBlock(width, width, 1))
            in_channels = width
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(self.act(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


# -- patch embedding shared by the ViT and the MLP-Mixer ------------------------------------


class PatchEmbedding(nn.Module):
    """4x4 stride-4 convolution to ``dim`` channels, flattened to (B, N, dim) tokens, plus a
    learnable positional encoding."""

    def __init__(self, input_shape, dim: int = 512, patch: int = 4):
        super().__init__()
        channels, height, width = input_shape
        self.tokens = _grid(height, patch, patch) * _grid(width, patch, patch)
        self.proj = nn.Conv2d(channels, dim, patch, patch)
        self.pos = nn.Parameter(torch.zeros(1, self.tokens, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        # contiguous: otherwise the (B, dim, N) memory layout of the conv output propagates
        # through the residual stream and every later Linear copies its input first
        return self.proj(x).flatten(2).transpose(1, 2).contiguous() + self.pos


# -- Vision Transformer (4 layers, post-norm) -----------------------------------------------


class MultiHeadSelfAttention(nn.Module):
    """4 heads of width 64 from one fused qkv projection, softmax(q k^T / 8) v, then 256 -> 512."""

    def __init__(self, dim: int = 512, heads: int = 4, head_dim: int = 64):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.qkv = nn.Linear(dim, 3 * heads * head_dim)
        self.out = nn.Linear(heads * head_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.out(y.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class TransformerLayer(nn.Module):
    def __init__(self, dim: int = 512, hidden: int = 512, head_dim: int = 64):
        super().__init__()
        self.attn = MultiHeadSelfAttention(dim, head_dim=head_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(0.01),
                                 nn.Linear(hidden, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class ViT(nn.Module):
    def __init__(self, input_shape, num_classes: int = 10, depth: int = 4, dim: int = 512,
                 hidden: int = 512, head_dim: int = 64):
        super().__init__()
        self.embed = PatchEmbedding(input_shape, dim)
        self.layers = nn.Sequential(*[TransformerLayer(dim, hidden, head_dim)
                                      for _ in range(depth)])
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.layers(self.embed(x)).mean(1))


# -- MLP-Mixer (8 layers) -------------------------------------------------------------------


class MixerLayer(nn.Module):
    def __init__(self, tokens: int, dim: int = 512, channel_hidden: int = 256):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, 4 * tokens), nn.LeakyReLU(0.01),
                                       nn.Linear(4 * tokens, tokens))
        self.channel_mlp = nn.Sequential(nn.Linear(dim, channel_hidden), nn.LeakyReLU(0.01),
                                         nn.Linear(channel_hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        y = self.token_mlp(self.norm(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(y)


class MLPMixer(nn.Module):
    def __init__(self, input_shape, num_classes: int = 10, depth: int = 8, dim: int = 512):
        super().__init__()
        self.embed = PatchEmbedding(input_shape, dim)
        self.layers = nn.Sequential(*[MixerLayer(self.embed.tokens, dim) for _ in range(depth)])
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.layers(self.embed(x)).mean(1))


# -- MLP ------------------------------------------------------------------------------------


class MLP(nn.Module):
    """Each channel's H*W values as one token plus a learned offset, then 512 -> 256 LeakyReLU."""

    def __init__(self, input_shape, num_classes: int = 10):
        super().__init__()
        channels, height, width = input_shape
        self.pos = nn.Parameter(torch.zeros(1, channels, height * width))
        self.hidden = nn.Sequential(nn.Linear(height * width, 512), nn.LeakyReLU(0.01),
                                    nn.Linear(512, 256), nn.LeakyReLU(0.01))
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.hidden(x.flatten(2) + self.pos).mean(1))


# -- small seeds for CPU budgets ------------------------------------------------------------


def _conv_bn_act(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1),
                         nn.BatchNorm2d(out_channels), nn.LeakyReLU(0.01))


class SmallCNN(nn.Module):
    """Three 3x3 convolutions (32, 64 stride 2, 128 stride 2), each with BatchNorm + LeakyReLU."""

    def __init__(self, input_shape, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(_conv_bn_act(input_shape[0], 32, 1),
                                      _conv_bn_act(32, 64, 2), _conv_bn_act(64, 128, 2))
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).mean((2, 3)))


class SmallViT(ViT):
    """The ViT at width 64: 2 post-norm layers, 4 heads of 16, a 64-128-64 MLP."""

    def __init__(self, input_shape, num_classes: int = 10):
        super().__init__(input_shape, num_classes, depth=2, dim=64, hidden=128, head_dim=16)


class Residual(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class SmallFCN(nn.Module):
    """3x3 conv to 32 + LeakyReLU, a (1, 32, H, W) positional encoding, 3 residual conv blocks,
    all at the input's resolution."""

    def __init__(self, input_shape, num_classes: int = 10):
        super().__init__()
        channels, height, width = input_shape
        self.stem = nn.Sequential(nn.Conv2d(channels, 32, 3, 1, 1), nn.LeakyReLU(0.01))
        self.pos = nn.Parameter(torch.zeros(1, 32, height, width))
        self.blocks = nn.Sequential(*[Residual(_conv_bn_act(32, 32, 1)) for _ in range(3)])
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.blocks(self.stem(x) + self.pos).mean((2, 3)))


HANDWRITTEN = {"resnet18": ResNet18, "wrn16_4": WRN16_4, "vit": ViT, "mlp_mixer": MLPMixer,
               "mlp": MLP, "small_cnn": SmallCNN, "small_vit": SmallViT, "small_fcn": SmallFCN}
