"""Trained weights per derivation node: what ``einspace inspect --weights`` shows.

A search keeps the best candidates' ``state_dict`` files (``RUN/weights/trial-<index>.pt``,
``RUN/final/trial-<index>.pt``).  Their keys name compiled modules, which do not follow the
derivation (sequences flatten, patterns lower to fused modules), so the weights are attributed
through the compiler's module -> derivation-path map (:func:`einspace.compiler.build_traced`).
Every node then gets the trained parameters of its subtree and their L2 norm, over all copies
of a module repeated by a 4- or 8-way branch (each copy has its own weights); a node whose
subtree has no module of its own (fused into an ancestor's lowered module, or removed like an
identity) gets none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .compiler import build_traced
from .derivation import Derivation
from .errors import EinspaceError, format_path
from .inspect import human
from .state_dict import read_state_dict

HEAD = "head."
SHOWN_KEYS = 5


@dataclass(frozen=True)
class NodeWeights:
    """Trained parameters of one subtree: how many, and the L2 norm over all of them."""

    params: int
    l2: float


@dataclass(frozen=True)
class TrainedWeights:
    """Per-node weights of one trained network (``nodes`` holds only nodes with modules)."""

    file: Path
    nodes: dict[tuple[int, ...], NodeWeights]
    head: NodeWeights
    tensors: int

    @property
    def params(self) -> int:
        return self.nodes[()].params + self.head.params

    def columns(self, derivation: Derivation) -> dict[str, dict[tuple[int, ...], str]]:
        """Columns for :func:`einspace.inspect.render_tree`: trained parameters and L2 norm per
        node, ``—`` for a node without a module of its own."""
        paths = [path for path, _ in derivation.walk()]
        return {
            "trained": {p: human(self.nodes[p].params) if p in self.nodes else "—"
                        for p in paths},
            "L2": {p: f"{self.nodes[p].l2:.4g}" if p in self.nodes else "—" for p in paths}}

    def to_json(self) -> dict:
        return {"file": str(self.file), "params": self.params, "head_params": self.head.params,
                "head_l2": self.head.l2,
                "nodes": {format_path(p): {"params": w.params, "l2": w.l2}
                          for p, w in sorted(self.nodes.items())}}

    def footer(self) -> str:
        return (f"weights {self.file}: {self.params:,} trained parameters in {self.tensors} "
                f"tensors ({self.nodes[()].params:,} in the derivation; the head "
                f"{self.head.params:,}, L2 {self.head.l2:.4g}).\n"
                f"trained/L2 cover every copy of a repeated (×k) module; — marks a node without "
                f"a module of its own (fused into a lowered ancestor, or an identity)")


def trained_weights(derivation: Derivation, input_shape, file: str | Path,
                    num_classes: int | None = None) -> TrainedWeights:
    """Attribute the weights in ``file`` to the nodes of ``derivation`` built for
    ``input_shape``.  Without ``num_classes`` the file's ``head.*`` tensors are taken as they
    are (the head is not part of the derivation); with it, they are checked too."""
    state = read_state_dict(file)
    network, origins = build_traced(derivation, input_shape, num_classes=num_classes)
    expected = network.state_dict()
    given = state if num_classes else {k: v for k, v in state.items() if not k.startswith(HEAD)}
    _check_keys(Path(file), expected, given)
    own: dict[tuple[int, ...], list[float]] = {}
    head = [0, 0.0]
    for name, _ in network.named_parameters():
        tensor = state[name].double()
        count, square = tensor.numel(), float(tensor.square().sum())
        if name.startswith(HEAD):
            head[0] += count
            head[1] += square
            continue
        entry = own.setdefault(_origin(name, origins), [0, 0.0])
        entry[0] += count
        entry[1] += square
    if not num_classes:
        for name, tensor in state.items():
            if name.startswith(HEAD):
                head[0] += tensor.numel()
                head[1] += float(tensor.double().square().sum())
    return TrainedWeights(Path(file), _subtrees(own, origins.values()),
                          NodeWeights(head[0], math.sqrt(head[1])), len(state))


def _check_keys(file: Path, expected: dict, given: dict) -> None:
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_few(unexpected)}")
    wrong = [f"{k} {tuple(given[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in given and given[k].shape != v.shape]
    if wrong:
        problems.append(f"shape mismatch in {_few(wrong)}")
    if problems:
        raise EinspaceError(f"weights file {file} does not fit this architecture and input shape: "
                            f"{'; '.join(problems)}")


def _few(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN_KEYS])
    return shown + (f" (and {len(items) - SHOWN_KEYS} more)" if len(items) > SHOWN_KEYS else "")


def _origin(parameter: str, origins: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    """The derivation path of the nearest recorded module holding ``parameter`` (a fused
    module's inner layers, such as a multi-head projection, were not compiled from a node)."""
    module = parameter.rpartition(".")[0]
    while module not in origins:
        module = module.rpartition(".")[0]
    return origins[module]


def _subtrees(own: dict[tuple[int, ...], list[float]], paths) -> dict[tuple[int, ...], NodeWeights]:
    """Sum each node's own weights into every ancestor; nodes with a module somewhere in their
    subtree get an entry (zero when it has no parameters)."""
    totals: dict[tuple[int, ...], list[float]] = {}
    for path in paths:
        for i in range(len(path) + 1):
            totals.setdefault(path[:i], [0, 0.0])
    for path, (count, square) in own.items():
        for i in range(len(path) + 1):
            totals[path[:i]][0] += count
            totals[path[:i]][1] += square
    return {path: NodeWeights(int(count), math.sqrt(square))
            for path, (count, square) in totals.items()}
