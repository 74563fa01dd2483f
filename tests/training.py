"""One epoch of plain training, shared by the tests that check a network learns without NaN."""

import torch
from torch import nn
from torch.nn import functional as F

from einspace.blocks.progress import set_training_progress


def random_task(shape, classes: int = 10, seed: int = 0, colour_cast: bool = False):
    """256 fixed random images with labels from a fixed random linear map of their channel
    means (with ``colour_cast``, each image gets a random per-channel offset first so the
    means carry signal) — learnable in one epoch, identical on every run."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(256, *shape, generator=gen)
    if colour_cast:
        images = 0.5 * images + torch.randn(256, shape[0], 1, 1, generator=gen)
    labels = (images.mean((2, 3)) @ torch.randn(shape[0], classes, generator=gen)).argmax(1)
    return images, labels


def train_one_epoch(net: nn.Module, images, labels, batch: int = 32, lr: float = 0.01):
    """SGD with momentum 0.9 over the data once, telling step-aware modules how far training
    is; returns the batch losses."""
    optimiser = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    net.train()
    steps = len(images) // batch
    losses = []
    for step in range(steps):
        set_training_progress(net, step / steps)
        rows = slice(batch * step, batch * (step + 1))
        loss = F.cross_entropy(net(images[rows]), labels[rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses
