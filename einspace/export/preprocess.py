"""The trainer's input transformation, built into the exported network as its first operation.

A network trained by einspace never saw the task's arrays: the trainer casts a batch to float32
and normalises it per channel with the statistics of its training split
(:func:`einspace.tasks.trainer.fit_normalizer`; the final evaluation's train + valid when the
weights were retrained).  An export without that step scores at chance on the raw arrays, so by
default every artefact takes the task's raw arrays (their dtype, their sample shape: an
Unseen-NAS image array stored as (N, H, W) gets its channel axis inside the export too) and
applies the same float32 arithmetic as the trainer, ``(x - mean) / std``.  ``--bare`` exports the
network alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .locate import Place

PREPROCESS = "preprocess"
PLACE = Place(None, "input preprocessing (the trainer's cast and normalisation)")
# NumPy dtypes a torch tensor can hold: an export takes these as they are, other arrays as float32
TORCH_DTYPES = ("uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64",
                "bool")


class RawInputs(nn.Module):
    """``(float32(x) - mean) / std`` per channel, after adding a missing channel axis."""

    def __init__(self, mean: Tensor, std: Tensor, add_channel_axis: bool):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.add_channel_axis = add_channel_axis

    def forward(self, x: Tensor) -> Tensor:
        if self.add_channel_axis:
            x = x.unsqueeze(1)
        return (x.to(torch.float32) - self.mean) / self.std


class Preprocessed(nn.Module):
    """The network behind its input transformation: what every default export holds."""

    def __init__(self, preprocess: RawInputs, network: nn.Module):
        super().__init__()
        self.preprocess = preprocess
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        return self.network(self.preprocess(x))


@dataclass(frozen=True)
class Preprocessing:
    """What the trainer did to the inputs of the exported weights, and what the export takes.

    ``normalizer`` is the trainer's :class:`~einspace.tasks.trainer.Normalizer` (None when the
    recipe trained without normalisation); ``samples`` are the raw rows the export is verified
    on (test split, else valid), exactly as stored."""

    normalizer: object | None
    statistics_of: str
    input_dtype: str
    raw_shape: tuple[int, ...]
    value_range: tuple[float, float]
    samples: np.ndarray
    samples_split: str
    add_channel_axis: bool = False

    def module(self, sample_ndim: int) -> RawInputs:
        """The transformation as a module for batches of ``sample_ndim``-dim (network) inputs."""
        if self.normalizer is None:
            mean, std = torch.zeros(()), torch.ones(())  # x - 0 and x / 1 are exact
        else:
            mean, std = self.normalizer.tensors(sample_ndim, torch.device("cpu"))
        return RawInputs(mean, std, self.add_channel_axis)

    def batch(self, rows: int) -> Tensor:
        """The first ``rows`` raw samples as the export takes them."""
        return torch.from_numpy(np.array(self.samples[:rows], dtype=self.input_dtype))

    def network_input(self, raw: Tensor, sample_ndim: int) -> Tensor:
        """The trainer's own computation on a raw batch (the verification's reference)."""
        x = torch.from_numpy(np.asarray(raw.numpy(), dtype=np.float32))
        if self.add_channel_axis:
            x = x[:, None]
        if self.normalizer is None:
            return x
        mean, std = self.normalizer.tensors(sample_ndim, torch.device("cpu"))
        return (x - mean) / std

    def card(self) -> dict:
        norm = self.normalizer
        return {
            "applied_inside_export": True,
            "input_dtype": self.input_dtype,
            "input_shape": ["batch", *self.raw_shape],
            "input_range": list(self.value_range),
            "steps": ([] if not self.add_channel_axis else ["add a channel axis (dim 1)"])
            + ["cast to float32"]
            + ([] if norm is None else ["(x - mean) / std per channel"]),
            "channel_axis": None if norm is None else
            ("1 (images: C, H, W)" if norm.channel_axis == 0 else "-1 (features)"),
            "mean": None if norm is None else [float(v) for v in norm.mean],
            "std": None if norm is None else [float(v) for v in norm.std],
            "statistics_of": self.statistics_of,
        }


def wrap(network: nn.Module, places: dict[str, Place], preprocessing: Preprocessing,
         sample_ndim: int) -> tuple[nn.Module, dict[str, Place]]:
    """``network`` behind ``preprocessing``, with its module places renamed to match."""
    model = Preprocessed(preprocessing.module(sample_ndim), network).eval()
    renamed = {f"network.{name}": place for name, place in places.items()}
    return model, {PREPROCESS: PLACE, **renamed}


def input_dtype(array_dtype: np.dtype) -> str:
    """The dtype the export takes for arrays of ``array_dtype``."""
    name = np.dtype(array_dtype).name
    return name if name in TORCH_DTYPES else "float32"


def value_range(x: np.ndarray, chunk_rows: int = 4096) -> tuple[float, float]:
    """(min, max) of an array read in chunks (memory-mapped arrays stay on disk)."""
    low, high = np.inf, -np.inf
    for start in range(0, len(x), chunk_rows):
        chunk = np.asarray(x[start:start + chunk_rows])
        if chunk.size:
            low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    return low, high
