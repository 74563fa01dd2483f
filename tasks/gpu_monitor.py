"""Peak GPU memory and GPU utilisation while one trial trains, for the trial's result.

Packing several trials on one GPU needs to know what a trial really uses.  Peak memory is the
process's own (``torch.cuda.max_memory_allocated`` after a reset, so it includes the task tensors
resident on the device); utilisation is the device's, whoever runs on it (NVML's percentage of
time a kernel was running, read through ``torch.cuda.utilization``, which needs the optional
``nvidia-ml-py`` package), sampled by a background thread and averaged.  Both are ``None`` on the
CPU, and utilisation is ``None`` wherever it cannot be read.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class GpuStats:
    """Peak bytes allocated by this process and the mean device utilisation in percent."""

    peak_memory_bytes: int | None = None
    utilization_percent: float | None = None
    utilization_samples: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def read_utilization(device: torch.device) -> int | None:
    """The device's utilisation in percent now, or None where NVML cannot tell."""
    if device.type != "cuda":
        return None
    try:
        return int(torch.cuda.utilization(device))
    except Exception:  # no nvidia-ml-py, no NVML driver, a device NVML does not list
        return None


class GpuMonitor:
    """``with GpuMonitor(device) as monitor: ...``; then ``monitor.stats()``."""

    def __init__(self, device: torch.device, interval: float = 0.5):
        self.device = device
        self.interval = interval
        self._samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak: int | None = None

    def __enter__(self) -> GpuMonitor:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            if read_utilization(self.device) is not None:
                self._thread = threading.Thread(target=self._sample, daemon=True,
                                                name="einspace-gpu-monitor")
                self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            value = read_utilization(self.device)
            if value is not None:
                self._samples.append(value)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.device.type == "cuda":
            self._peak = int(torch.cuda.max_memory_allocated(self.device))

    def stats(self) -> GpuStats:
        samples = list(self._samples)
        mean = sum(samples) / len(samples) if samples else None
        return GpuStats(self._peak, mean, len(samples))
