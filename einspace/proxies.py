"""Zero-cost proxies: how promising an untrained network looks, from one batch at initialisation.

Screening uses them to rank candidates before any is trained (issue 12), so each must cost a few
forward/backward passes and none may see the task's labels: the functions here take input arrays
only, so a proxy *cannot* read a target.  Where the published proxy needs a loss, a label-free
objective stands in for it:

* ``naswot`` (Mellor et al., 2021): log-determinant of the kernel ``K[i, j] = units on which
  samples i and j agree`` over the binary on/off pattern of every rectifier's input (the
  backbone's output features when the network has no rectifier).  Distinct patterns for distinct
  inputs mean the network separates them before it is trained.
* ``synflow`` (Tanaka et al., 2020): data-independent.  With every parameter replaced by its
  absolute value, the sum of outputs for an all-ones input, back-propagated: ``log(1 + sum |θ ·
  ∂R/∂θ|)``, in float64 and with BatchNorm in eval mode (one input, no batch statistics).  The
  logarithm keeps values of very deep networks comparable.
* ``grad_norm`` (Abdelfattah et al., 2021): L2 norm of the gradient of every parameter for the
  objective ``mean_i <f(x_i), R_i>``, where ``R`` is a fixed Gaussian tensor shaped like the
  output and drawn from the seed: the label-free counterpart of the random labels Qin et al.
  used for the einspace space.
* ``jacob_cov`` (Mellor et al., 2020): ``-Σ log(λ + k) + 1/(λ + k)`` over the eigenvalues λ of
  the correlation matrix of the input Jacobians ``∂(Σ f(x_i)) / ∂x_i`` (k = 1e-5); inputs that the
  network treats alike give correlated Jacobians and a low score.

Higher is better for all four.  Scores are deterministic given the seed (it fixes the
initialisation and ``R``; the global torch RNG is left as it was), and robust: a network that
does not build, raises, or produces a non-finite value gets a failed :class:`ProxyValue` with the
reason, never an exception.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from .compiler import build
from .derivation import Derivation
from .errors import ConfigError

RECTIFIERS = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.PReLU)
JACOB_COV_K = 1e-5


@dataclass(frozen=True)
class ProxyValue:
    """One proxy of one network: its value, or None with the reason it could not be computed."""

    value: float | None
    seconds: float
    failure: str = ""

    @property
    def ok(self) -> bool:
        return self.value is not None


@dataclass(frozen=True)
class ProxyScores:
    """Every requested proxy of one network, and what building it cost."""

    values: dict[str, ProxyValue] = field(default_factory=dict)
    build_seconds: float = 0.0
    failure: str = ""
    """Why the network could not be built (then every value failed with this reason)."""

    @property
    def seconds(self) -> float:
        return self.build_seconds + sum(v.seconds for v in self.values.values())

    @property
    def ok(self) -> bool:
        """Whether any proxy was computed: a network none can score is a failed candidate."""
        return any(v.ok for v in self.values.values())

    @property
    def reason(self) -> str:
        """The first failure, for a candidate that is ranked last."""
        return self.failure or next((f"{name}: {v.failure}" for name, v in self.values.items()
                                     if not v.ok), "")


class _NonFinite(Exception):
    """A proxy whose value is NaN or infinite: the network's numbers blew up at init."""


def _naswot(network: nn.Module, batch: Tensor, seed: int) -> float:
    codes: list[Tensor] = []

    def on_input(module, inputs, output):
        codes.append(_on_off(inputs[0]))

    def on_output(module, inputs, output):
        codes.append(_on_off(output))

    rectifiers = [m for m in network.modules() if isinstance(m, RECTIFIERS)]
    handles = ([m.register_forward_hook(on_input) for m in rectifiers] if rectifiers
               else [network.backbone.register_forward_hook(on_output)])
    try:
        with torch.no_grad():
            network(batch)
    finally:
        for handle in handles:
            handle.remove()
    kernel = torch.zeros(len(batch), len(batch), dtype=torch.float64)
    for c in codes:
        kernel += c @ c.T + (1 - c) @ (1 - c).T
    sign, logdet = torch.linalg.slogdet(kernel)
    if sign <= 0:
        raise _NonFinite("activation patterns are not distinct across the batch")
    return float(logdet)


def _on_off(x: Tensor) -> Tensor:
    """The on/off code of each sample; NaN would read as "off", so it is refused instead."""
    x = x.detach()
    if not torch.isfinite(x).all():
        raise _NonFinite("activations are not finite at initialisation")
    return (x > 0).flatten(1).to(torch.float64)


def _finite(out: Tensor) -> Tensor:
    """``out``, or _NonFinite: a gradient can be finite where the output it scores is not."""
    if not torch.isfinite(out).all():
        raise _NonFinite("outputs are not finite at initialisation")
    return out


def _synflow(network: nn.Module, batch: Tensor, seed: int) -> float:
    network = network.double().eval()
    with torch.no_grad():
        for p in network.parameters():
            p.abs_()
    ones = torch.ones((1,) + tuple(batch.shape[1:]), dtype=torch.float64)
    network(ones).sum().backward()
    total = sum(float((p.detach() * p.grad).abs().sum()) for p in network.parameters()
                if p.grad is not None)
    return math.log1p(total)


def _grad_norm(network: nn.Module, batch: Tensor, seed: int) -> float:
    out = _finite(network(batch))
    target = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed),
                         dtype=out.dtype)
    ((out * target).flatten(1).sum(1).mean()).backward()
    squares = sum(float(p.grad.double().pow(2).sum()) for p in network.parameters()
                  if p.grad is not None)
    return math.sqrt(squares)


def _jacob_cov(network: nn.Module, batch: Tensor, seed: int) -> float:
    x = batch.clone().requires_grad_(True)
    _finite(network(x)).sum().backward()
    jacobians = x.grad.flatten(1).double().numpy()
    with np.errstate(all="ignore"):
        correlation = np.corrcoef(jacobians)
    if not np.all(np.isfinite(correlation)):
        raise _NonFinite("the output does not depend on some inputs (constant Jacobian)")
    eigenvalues = np.linalg.eigvalsh(correlation)
    return float(-np.sum(np.log(eigenvalues + JACOB_COV_K) + 1.0 / (eigenvalues + JACOB_COV_K)))


_PROXIES: dict[str, Callable[[nn.Module, Tensor, int], float]] = {
    "naswot": _naswot, "synflow": _synflow, "grad_norm": _grad_norm, "jacob_cov": _jacob_cov}
PROXIES: tuple[str, ...] = tuple(_PROXIES)


def check_proxies(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple, or ConfigError naming the unknown ones and the known ones."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ConfigError(f"proxies must be a list of names from {', '.join(PROXIES)}, "
                          f"got {names!r}")
    unknown = [n for n in names if n not in _PROXIES]
    if unknown:
        raise ConfigError(f"unknown proxies {', '.join(map(str, unknown))}; known: "
                          f"{', '.join(PROXIES)}")
    if not names:
        raise ConfigError(f"proxies must name at least one of {', '.join(PROXIES)}")
    return tuple(names)


def score_proxies(derivation: Derivation, batch: np.ndarray | Tensor,
                  names: Sequence[str] = PROXIES, *, seed: int = 0,
                  num_classes: int | None = None, output_shape=None) -> ProxyScores:
    """The proxies ``names`` of ``derivation`` with its task head, on ``batch`` (N >= 2 inputs
    of one shape, normalised as training would; no labels).  Each proxy starts from the same
    seeded initialisation; the global torch RNG is restored afterwards."""
    names = check_proxies(names)
    inputs = torch.as_tensor(np.asarray(batch), dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        start = time.perf_counter()
        try:
            network = build(derivation, tuple(inputs.shape[1:]), num_classes, output_shape)
        except Exception as e:  # a candidate that cannot be built is a failed candidate
            reason = _describe(e)
            built = time.perf_counter() - start
            return ProxyScores({n: ProxyValue(None, 0.0, reason) for n in names}, built,
                               reason)
        built = time.perf_counter() - start
        values = {name: _measure(_PROXIES[name], network, inputs, seed) for name in names}
    return ProxyScores(values, built)


def _measure(proxy, network: nn.Module, batch: Tensor, seed: int) -> ProxyValue:
    start = time.perf_counter()
    try:
        value = proxy(copy.deepcopy(network).train(), batch, seed)
        if not math.isfinite(value):
            raise _NonFinite(f"value is {value}")
    except _NonFinite as e:
        return ProxyValue(None, time.perf_counter() - start, f"non-finite: {e}")
    except Exception as e:  # noqa: BLE001  a raising candidate is recorded, never fatal
        return ProxyValue(None, time.perf_counter() - start, _describe(e))
    return ProxyValue(value, time.perf_counter() - start)


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
