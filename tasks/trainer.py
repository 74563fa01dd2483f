"""Train one candidate on a task with a :class:`~einspace.tasks.recipe.Recipe` and score it.

    result = train(lambda: einspace.build(d, data.input_shape, num_classes=data.num_classes),
                   data, Recipe(), callback=report)
    ranked = sorted(results, reverse=True)        # best first; failed runs always last

What happens, in order (the differences from the reference trainer are deliberate):

* **Inputs** are normalised per channel (axis 0 of a ``(C, H, W)`` sample, the last axis of any
  other sample shape) with the mean and population std of the *train split only*, computed in
  chunks in float64 so a memory-mapped array is never loaded whole; a constant channel keeps std
  1.  Statistics are cached per array object.  Batches are cast to float32 when they are used.
* **Targets**: class ids (int64) and cross-entropy for classification; float32 and mean squared
  error for regression.  An output whose shape is not ``(B, num_classes)`` resp. the target's
  shape fails the candidate instead of broadcasting silently.
* **Training**: shuffled with a seeded ``torch.Generator``; the last partial batch is dropped
  (the reference's ``drop_last``; a split smaller than one batch is one batch);
  ``set_training_progress(model, steps_done / total_steps)`` before every step and once more after
  each epoch, so the buffer is exactly 1 after the last step.  The learning-rate schedule is
  described in :mod:`einspace.tasks.recipe` (cosine per step).
* **Techniques** (``Recipe.techniques``, :mod:`einspace.tasks.techniques`) attach to the model
  before the optimiser is made, then act on the batch, the loss and the gradient of every step;
  with none enabled a step is exactly the plain one.  ``train_loss`` includes their terms.
* **Scoring**: the eval split is scored after every epoch (never on the untrained model); the
  candidate's ``score`` is the *last* epoch's score (as in the reference).  Higher is better:
  accuracy in [0, 1] for classification, minus the MSE for regression (``Recipe.metric``
  chooses minus relative L2 instead).
* **Failures**: a non-finite training loss or eval output, an exception from building, forward
  or backward, and running out of memory (CUDA or CPU) end the run with ``status="failed"``,
  ``score=-inf`` and a ``reason``; they never raise.  Errors that are not the candidate's fault
  (a missing split, a withheld label, a bad recipe) raise :class:`~einspace.errors.ConfigError`,
  and an exception raised by the callback propagates.
* **Stopping**: the callback receives ``(epoch, metrics)`` after each epoch (``epoch`` counts from
  1); returning ``False`` or :data:`STOP` ends the run with ``status="stopped"`` and the score so
  far.  With ``Recipe.max_seconds``, the run ends after the epoch in which the budget is
  exceeded with ``status="ok"`` and a ``reason`` saying so.
* **Device**: ``Recipe.device="auto"`` takes CUDA when present: the splits are copied to the GPU
  once (cached per array) when they fit in half its free memory, else batches stream from pinned
  host memory with asynchronous copies; forward passes run under bf16 autocast
  (``Recipe.precision``; loss and scores in float32), and 4-D inputs and the model use
  channels-last.  A step never waits for the device: each epoch's batch indices go to the device
  at once and the loss is summed there, read once per epoch.  ``Recipe.compile`` compiles the
  training forward (:mod:`einspace.tasks.compilation`; ``TrainResult.compile`` records its time,
  fallback and CUDA graphs), and ``TrainResult.gpu`` the peak memory and utilisation
  (:mod:`einspace.tasks.gpu_monitor`).  On CPU everything is float32 and two runs
  with the same seed give bit-identical histories.  The global torch RNG is seeded with
  ``Recipe.seed`` inside ``torch.random.fork_rng``, so the caller's RNG state is untouched; a
  builder (a callable returning the model) is called after seeding, so its initial weights are
  repeatable too.
"""

from __future__ import annotations

import contextlib
import math
import time
import weakref
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from einspace.blocks.progress import set_training_progress
from einspace.errors import ConfigError

from .compilation import CompiledTraining, CompileRecord
from .data import CLASSIFICATION, REGRESSION, Split, TaskData
from .gpu_monitor import GpuMonitor, GpuStats
from .recipe import Recipe
from .status import Status
from .techniques import TrainingTechniques

OUT_OF_MEMORY = "out of memory"


class _Stop:
    def __repr__(self) -> str:
        return "STOP"


STOP = _Stop()
"""Return this (or ``False``) from a training callback to stop the run early."""

Callback = Callable[[int, dict], object]


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch: mean training loss, the eval score after it, its wall seconds and
    the learning rate of its last step."""

    epoch: int
    train_loss: float
    score: float
    seconds: float
    lr: float


@dataclass(eq=False)
class TrainResult:
    """The outcome of training one candidate.

    Results order by quality: ``sorted(results)`` is worst first, every failed result below every
    ``ok``/``stopped`` one (whose order is by ``score``).  ``==`` is identity."""

    status: Status
    score: float
    history: tuple[EpochRecord, ...] = ()
    reason: str = ""
    epochs_run: int = 0
    seconds: float = 0.0
    device: str = "cpu"
    model: nn.Module | None = field(default=None, repr=False)
    compile: CompileRecord = field(default_factory=CompileRecord)
    gpu: GpuStats = field(default_factory=GpuStats)

    @property
    def ok(self) -> bool:
        """Whether the run trained to its end (its epochs or its time limit), so its score is a
        full-budget score; a run stopped early has a score but is not ok."""
        return self.status == Status.OK

    @property
    def scored(self) -> bool:
        """Whether the run has a score at all (ok or stopped early; a failed run has none)."""
        return self.status != Status.FAILED

    @property
    def sort_key(self) -> tuple[int, float]:
        return (1, self.score) if self.scored else (0, -math.inf)

    def __lt__(self, other: TrainResult) -> bool:
        return self.sort_key < other.sort_key

    def __le__(self, other: TrainResult) -> bool:
        return self.sort_key <= other.sort_key

    def __gt__(self, other: TrainResult) -> bool:
        return self.sort_key > other.sort_key

    def __ge__(self, other: TrainResult) -> bool:
        return self.sort_key >= other.sort_key

    def to_dict(self) -> dict:
        """JSON-friendly summary (no model)."""
        return {"status": str(self.status), "score": self.score, "reason": self.reason,
                "epochs_run": self.epochs_run, "seconds": self.seconds, "device": self.device,
                "history": [asdict(r) for r in self.history], "compile": self.compile.to_dict(),
                "gpu": self.gpu.to_dict()}


# ---------------------------------------------------------------------------------------------
# normalisation


@dataclass(frozen=True)
class Normalizer:
    """Per-channel ``(x - mean) / std``; ``channel_axis`` is the axis within one sample."""

    mean: np.ndarray
    std: np.ndarray
    channel_axis: int

    @classmethod
    def fit(cls, x: np.ndarray, chunk_elements: int = 1 << 22) -> Normalizer:
        """Mean and population std per channel of ``x`` (N, *sample_shape), read in chunks of
        about ``chunk_elements`` values (Chan's parallel update in float64)."""
        sample_shape = x.shape[1:]
        if not sample_shape:
            raise ConfigError("cannot normalise scalar samples; give samples a feature axis")
        axis = channel_axis(sample_shape)
        channels = sample_shape[axis]
        per_sample = max(1, int(np.prod(sample_shape)))
        rows = max(1, chunk_elements // per_sample)
        count, mean, m2 = 0, np.zeros(channels), np.zeros(channels)
        for start in range(0, len(x), rows):
            chunk = np.asarray(x[start:start + rows], dtype=np.float64)
            chunk = np.moveaxis(chunk, axis + 1 if axis >= 0 else -1, -1).reshape(-1, channels)
            k = chunk.shape[0]
            chunk_mean = chunk.mean(0)
            chunk_m2 = ((chunk - chunk_mean) ** 2).sum(0)
            delta = chunk_mean - mean
            total = count + k
            mean = mean + delta * (k / total)
            m2 = m2 + chunk_m2 + delta ** 2 * (count * k / total)
            count = total
        if count == 0:
            raise ConfigError("cannot compute normalisation statistics of an empty split")
        std = np.sqrt(m2 / count)
        std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
        return cls(mean, std, axis)

    def tensors(self, sample_ndim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std shaped to broadcast against a batch (B, *sample_shape)."""
        shape = ((-1,) + (1,) * (sample_ndim - 1)) if self.channel_axis == 0 else (-1,)
        mean = torch.as_tensor(self.mean, dtype=torch.float32).reshape(shape).to(device)
        std = torch.as_tensor(self.std, dtype=torch.float32).reshape(shape).to(device)
        return mean, std


def channel_axis(sample_shape: tuple[int, ...]) -> int:
    """0 for an image ``(C, H, W)``, the last axis (features) otherwise."""
    return 0 if len(sample_shape) == 3 else -1


class _ArrayCache:
    """Values derived from NumPy arrays, keyed by array identity and dropped with the array."""

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[weakref.ref, object]] = {}

    def get(self, array: np.ndarray, tag, make: Callable[[], object]):
        key = (id(array), tag)
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is array:
            return entry[1]
        value = make()
        try:
            ref = weakref.ref(array, lambda _, k=key: self._entries.pop(k, None))
        except TypeError:  # not weak-referenceable: do not cache
            return value
        self._entries[key] = (ref, value)
        return value

    def clear(self) -> None:
        self._entries.clear()


_CACHE = _ArrayCache()


def fit_normalizer(data: TaskData, split: str = "train") -> Normalizer:
    """The normaliser of ``data`` from the statistics of ``split`` (cached per array)."""
    x = _split(data, split, need_targets=False).x
    return _CACHE.get(x, "normalizer", lambda: Normalizer.fit(x))


# ---------------------------------------------------------------------------------------------
# data feeding


def _split(data: TaskData, name: str, need_targets: bool = True) -> Split:
    if name not in data.splits:
        raise ConfigError(f"task {data.name!r} has no split {name!r}; its splits: "
                          f"{', '.join(sorted(data.splits))}")
    split = data.splits[name]
    if need_targets and split.y is None:
        raise ConfigError(f"split {name!r} of task {data.name!r} has no targets to train or "
                          f"score on")
    if len(split) == 0:
        raise ConfigError(f"split {name!r} of task {data.name!r} is empty")
    return split


_TORCH_DTYPES = {np.dtype(t) for t in ("uint8", "int8", "int16", "int32", "int64", "float16",
                                       "float32", "bool")}


def _to_device(array: np.ndarray, device: torch.device, dtype=None) -> torch.Tensor:
    """Copy ``array`` to ``device`` in chunks (never the whole array on the host at once)."""
    if dtype is None:
        dtype = array.dtype if array.dtype in _TORCH_DTYPES else np.dtype("float32")
    torch_dtype = torch.from_numpy(np.zeros(0, dtype=dtype)).dtype
    out = torch.empty(array.shape, dtype=torch_dtype, device=device)
    per_sample = max(1, int(np.prod(array.shape[1:])))
    rows = max(1, (1 << 24) // per_sample)
    for start in range(0, len(array), rows):
        chunk = np.ascontiguousarray(array[start:start + rows], dtype=dtype)
        out[start:start + rows].copy_(torch.from_numpy(chunk))
    return out


def _fits_on_device(split: Split, device: torch.device) -> bool:
    """Whether the split (as the device would hold it) takes at most half the free memory."""
    if device.type != "cuda":
        return True
    try:
        free, _ = torch.cuda.mem_get_info(device)
    except Exception:  # an allocator that cannot tell: try to copy
        return True
    x_item = split.x.dtype.itemsize if split.x.dtype in _TORCH_DTYPES else 4
    return split.x.size * x_item + 8 * len(split) <= free // 2


class _Feeder:
    """Batches of one split as (float32 normalised inputs, targets) on the training device.

    ``resident`` (default: any device but the CPU, when the split fits) copies the split to
    ``device`` once and indexes it there; otherwise each batch is read from the NumPy array and,
    on an accelerator, copied from pinned memory without waiting."""

    def __init__(self, split: Split, task_type: str, normalizer: Normalizer | None,
                 device: torch.device, resident: bool | None = None):
        self.device = device
        if resident is None:
            resident = device.type != "cpu" and _fits_on_device(split, device)
        self.on_device = resident
        self.index_device = device if resident else torch.device("cpu")
        self.pin = device.type == "cuda" and not resident
        self.classification = task_type == CLASSIFICATION
        self.y_dtype = np.dtype("int64") if self.classification else np.dtype("float32")
        self.n = len(split)
        self.sample_ndim = split.x.ndim - 1
        if self.on_device:
            tag = ("x", str(device))
            self.x = _CACHE.get(split.x, tag, lambda: _to_device(split.x, device))
            self.y = _CACHE.get(split.y, ("y", str(device), self.y_dtype.name),
                                lambda: _to_device(split.y, device, self.y_dtype))
        else:
            self.x, self.y = split.x, split.y
        self.norm = normalizer.tensors(self.sample_ndim, device) if normalizer else None
        self.channels_last = device.type != "cpu" and self.sample_ndim == 3

    def indices(self, index: torch.Tensor) -> torch.Tensor:
        """Sample ids (CPU) moved to where :meth:`batch` reads them, in one copy."""
        return index.to(self.index_device)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``index``: sample ids from :meth:`indices` (sorted within a batch for memory-map
        locality)."""
        if self.on_device:
            x, y = self.x[index].float(), self.y[index]
        else:
            rows = index.numpy()
            x = torch.from_numpy(np.asarray(self.x[rows], dtype=np.float32))
            y = torch.from_numpy(np.asarray(self.y[rows], dtype=self.y_dtype))
            if self.pin:
                x = x.pin_memory().to(self.device, non_blocking=True)
                y = y.pin_memory().to(self.device, non_blocking=True)
        if self.norm is not None:
            x = (x - self.norm[0]) / self.norm[1]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y


# ---------------------------------------------------------------------------------------------
# losses and scores


class _Failed(Exception):
    """The candidate failed; ``args[0]`` is the reason."""


def _check_output(out: torch.Tensor, y: torch.Tensor, classification: bool,
                  num_classes: int | None) -> None:
    if classification:
        ok = out.dim() == 2 and out.shape[0] == y.shape[0] and (
            num_classes is None or out.shape[1] == num_classes)
        expected = f"({y.shape[0]}, {num_classes if num_classes is not None else 'classes'})"
    else:
        ok = out.shape == y.shape
        expected = str(tuple(y.shape))
    if not ok:
        raise _Failed(f"output shape {tuple(out.shape)} does not match the targets' "
                      f"{expected}")


def resolve_metric(metric: str, task_type: str) -> str:
    if task_type not in (CLASSIFICATION, REGRESSION):
        raise ConfigError(f"unknown task type {task_type!r}; expected {CLASSIFICATION} or "
                          f"{REGRESSION}")
    if metric == "auto":
        return "accuracy" if task_type == CLASSIFICATION else "neg_mse"
    if (metric == "accuracy") != (task_type == CLASSIFICATION):
        raise ConfigError(f"metric {metric!r} does not fit a {task_type} task")
    return metric


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"recipe.device is {name!r} but CUDA is not available")
    return device


def _autocast(device: torch.device, precision: str = "auto"):
    """bf16 autocast on CUDA under ``"auto"``, on any device under ``"bf16"``; none for fp32."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def _score(model: nn.Module, feed: _Feeder, metric: str, batch_size: int,
           num_classes: int | None, precision: str = "auto") -> float:
    """The metric over the whole split; ``nan`` when any output is non-finite."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=feed.device)
    finite = torch.ones((), dtype=torch.bool, device=feed.device)
    count = 0
    for start in range(0, feed.n, batch_size):
        x, y = feed.batch(torch.arange(start, min(start + batch_size, feed.n),
                                       device=feed.index_device))
        with _autocast(feed.device, precision):
            out = model(x)
        out = out.float()
        _check_output(out, y, feed.classification, num_classes)
        finite &= torch.isfinite(out).all()
        if metric == "accuracy":
            total += (out.argmax(1) == y).sum()
            count += y.shape[0]
        elif metric == "neg_mse":
            total += ((out - y) ** 2).sum(dtype=torch.float64)
            count += y.numel()
        else:
            diff = (out - y).flatten(1).norm(dim=1)
            total += (diff / y.flatten(1).norm(dim=1).clamp_min(1e-12)).sum(dtype=torch.float64)
            count += y.shape[0]
    if not bool(finite):
        return math.nan
    value = total.item() / count
    return value if metric == "accuracy" else -value


def evaluate(model: nn.Module, data: TaskData, split: str = "valid", *,
             recipe: Recipe | None = None, normalizer: Normalizer | None = None,
             normalize_from: str = "train") -> float:
    """Score a trained ``model`` on ``split`` (higher is better; ``-inf`` for non-finite
    outputs), normalising with ``normalizer`` or the statistics of ``normalize_from``.
    Exceptions from the model propagate (``train`` is the one that turns them into failures)."""
    recipe = recipe or Recipe()
    device = resolve_device(recipe.device)
    metric = resolve_metric(recipe.metric, data.task_type)
    if normalizer is None and recipe.normalize:
        normalizer = fit_normalizer(data, normalize_from)
    feed = _Feeder(_split(data, split), data.task_type, normalizer, device)
    model.to(device)
    score = _score(model, feed, metric, recipe.batch_size, data.num_classes, recipe.precision)
    return -math.inf if math.isnan(score) else score


# ---------------------------------------------------------------------------------------------
# training


def _describe(error: BaseException) -> str:
    if isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)):
        return OUT_OF_MEMORY
    message = str(error).strip()
    lowered = message.lower()
    if isinstance(error, RuntimeError) and ("out of memory" in lowered
                                            or "can't allocate memory" in lowered
                                            or "not enough memory" in lowered):
        return OUT_OF_MEMORY
    first = message.splitlines()[0] if message else ""
    return f"{type(error).__name__}: {first[:500]}" if first else type(error).__name__


def _guarded(fn, *args):
    """Run candidate code; any exception becomes a :class:`_Failed` with a short reason."""
    try:
        return fn(*args)
    except _Failed:
        raise
    except Exception as error:  # every candidate error is a failure
        reason = _describe(error)
    raise _Failed(reason)


class _Run:
    def __init__(self, data: TaskData, recipe: Recipe, device: torch.device, train_feed: _Feeder,
                 eval_feed: _Feeder, metric: str, eval_split: str):
        self.data, self.recipe, self.device = data, recipe, device
        self.train_feed, self.eval_feed = train_feed, eval_feed
        self.metric, self.eval_split = metric, eval_split
        self.batch_size = min(recipe.batch_size, train_feed.n)
        self.steps_per_epoch = max(1, train_feed.n // self.batch_size)
        self.total_steps = self.steps_per_epoch * recipe.epochs
        self.step = 0
        self.generator = torch.Generator().manual_seed(recipe.seed)
        self.techniques = TrainingTechniques(recipe.techniques, data, device, recipe.seed,
                                             lambda: _autocast(device, recipe.precision))
        self.model: nn.Module | None = None
        self.compiled: CompiledTraining | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    def setup(self, model_or_builder) -> None:
        model = model_or_builder if isinstance(model_or_builder, nn.Module) else model_or_builder()
        if not isinstance(model, nn.Module):
            raise TypeError(f"the builder returned {type(model).__name__}, not an nn.Module")
        model.to(self.device)
        if self.train_feed.channels_last:
            model.to(memory_format=torch.channels_last)
        r = self.recipe
        extra = self.techniques.attach(model)
        params = [p for p in model.parameters() if p.requires_grad] + extra
        if r.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=r.lr, momentum=r.momentum,
                                             weight_decay=r.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=r.lr, weight_decay=r.weight_decay)
        self.model = model
        self.compiled = CompiledTraining(model, r.compile, self.device)

    def lr(self, step: int) -> float:
        if self.recipe.schedule == "constant":
            return self.recipe.lr
        return self.recipe.lr * 0.5 * (1.0 + math.cos(math.pi * step / self.total_steps))

    def train_epoch(self) -> tuple[float, float]:
        model, optimizer, feed = self.model, self.optimizer, self.train_feed
        model.train()
        order = torch.randperm(feed.n, generator=self.generator)
        used = self.steps_per_epoch * self.batch_size
        batches = order[:used].view(self.steps_per_epoch, self.batch_size).sort(dim=1).values
        batches = feed.indices(batches)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        lr = self.recipe.lr
        for b in range(self.steps_per_epoch):
            set_training_progress(model, self.step / self.total_steps)
            lr = self.lr(self.step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = feed.batch(batches[b])
            x = self.techniques.augment(x)
            loss = self.compiled.step(lambda forward, x=x, y=y: self._forward_backward(
                forward, x, y))
            self.techniques.before_step(optimizer, self.step)
            optimizer.step()
            total += loss.detach()
            self.step += 1
        set_training_progress(model, self.step / self.total_steps)
        return total.item() / self.steps_per_epoch, lr

    def _forward_backward(self, forward, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One step's loss, its gradients computed; ``forward`` is the model or its compiled
        version."""
        feed = self.train_feed
        with _autocast(self.device, self.recipe.precision):
            out = forward(x)
        out = out.float()
        _check_output(out, y, feed.classification, self.data.num_classes)
        loss = F.cross_entropy(out, y) if feed.classification else F.mse_loss(out, y)
        loss = self.techniques.loss(self.model, x, y, out, loss, feed.classification)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    def evaluate(self) -> float:
        return _score(self.model, self.eval_feed, self.metric, self.recipe.batch_size,
                      self.data.num_classes, self.recipe.precision)


def train(model_or_builder: nn.Module | Callable[[], nn.Module], data: TaskData,
          recipe: Recipe | None = None, *, train_split: str = "train", eval_split: str = "valid",
          callback: Callback | None = None, keep_model: bool = False) -> TrainResult:
    """Train a model (or a zero-argument builder of one) on ``train_split`` and score it on
    ``eval_split`` after every epoch; see the module docstring for the exact behaviour.

    ``callback(epoch, metrics)`` gets ``metrics`` = ``{"epoch", "train_loss", "score",
    "seconds", "lr", "elapsed"}``.  With ``keep_model`` the trained model (in eval mode, on the
    training device) is returned in ``TrainResult.model`` unless the run failed."""
    start = time.perf_counter()
    recipe = recipe or Recipe()
    device = resolve_device(recipe.device)
    metric = resolve_metric(recipe.metric, data.task_type)
    with GpuMonitor(device) as monitor:
        result = _train(model_or_builder, data, recipe, device, metric, start, train_split,
                        eval_split, callback, keep_model)
    result.gpu = monitor.stats()
    return result


def _train(model_or_builder, data: TaskData, recipe: Recipe, device: torch.device, metric: str,
           start: float, train_split: str, eval_split: str, callback: Callback | None,
           keep_model: bool) -> TrainResult:
    train_part = _split(data, train_split)
    eval_part = _split(data, eval_split)
    normalizer = fit_normalizer(data, train_split) if recipe.normalize else None
    train_feed = _Feeder(train_part, data.task_type, normalizer, device)
    eval_feed = _Feeder(eval_part, data.task_type, normalizer, device)
    run = _Run(data, recipe, device, train_feed, eval_feed, metric, eval_split)

    history: list[EpochRecord] = []
    status, reason = Status.OK, ""
    cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(recipe.seed)
        try:
            _guarded(run.setup, model_or_builder)
            for epoch in range(1, recipe.epochs + 1):
                began = time.perf_counter()
                loss, lr = _guarded(run.train_epoch)
                if not math.isfinite(loss):
                    raise _Failed(f"non-finite training loss in epoch {epoch}")
                score = _guarded(run.evaluate)
                if not math.isfinite(score):
                    raise _Failed(f"non-finite output on split {eval_split!r} after epoch "
                                  f"{epoch}")
                now = time.perf_counter()
                record = EpochRecord(epoch, loss, score, now - began, lr)
                history.append(record)
                if callback is not None:
                    decision = callback(epoch, {**asdict(record), "elapsed": now - start})
                    if decision is False or decision is STOP:
                        status = Status.STOPPED
                        reason = f"stopped by the callback after epoch {epoch}"
                        break
                elapsed = time.perf_counter() - start
                if (recipe.max_seconds is not None and elapsed >= recipe.max_seconds
                        and epoch < recipe.epochs):
                    reason = (f"time budget of {recipe.max_seconds:g} s reached after epoch "
                              f"{epoch} of {recipe.epochs}")
                    break
        except _Failed as failure:
            status, reason = Status.FAILED, failure.args[0]
        finally:
            run.techniques.detach()
    model = run.model
    compiled = run.compiled.record if run.compiled else CompileRecord(mode=recipe.compile)
    run.model = run.optimizer = run.compiled = None
    if status == Status.FAILED:
        model = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
    elif model is not None:
        model.eval()
    return TrainResult(status=status,
                       score=history[-1].score if status != Status.FAILED else -math.inf,
                       history=tuple(history), reason=reason, epochs_run=len(history),
                       seconds=time.perf_counter() - start, device=str(device),
                       model=model if keep_model else None, compile=compiled)
