"""Compile a derivation into a ``torch.nn.Module``.

The walker annotates shapes first (so a tree that does not fit fails with the node's path before
any module is built), then builds modules bottom-up.  Lowerings replace known patterns with fast
kernels and keep parameter counts identical:

* ``routing(im2col k s p, computation linearN, col2im)`` becomes ``nn.Conv2d(C, N, k, s, p)``;
* the attention pattern ``softmax(Q Kᵀ · s) V`` (clone / linear / (scaled) dot product / softmax)
  becomes ``scaled_dot_product_attention``, and k such heads with linear projections that are
  repeated by ``clone_tensor{k}`` and concatenated on the feature dim become one multi-head call
  with fused projections;
* ``branching(clone_tensor2, body, identity, add_tensors)`` becomes a residual ``x + body(x)``;
* nested sequentials and routing modules flatten into one ``nn.Sequential`` without identities.
"""

from __future__ import annotations

import math

from torch import nn

from einspace.blocks.aggregation import Concat
from einspace.blocks.branching import Clone
from einspace.blocks.computation import Linear
from einspace.blocks.registry import Kind, get
from einspace.blocks.routing import Im2Col

from .analysis import Annotation, annotate
from .derivation import Derivation
from .heads import check_target, make_head
from .modules import Attention, Branching, MultiHeadAttention, Network, Residual
from .walker import Walker

TRANSPOSE_LAST_TWO = {"permute21": 2, "permute132": 3}


def build(derivation: Derivation, input_shape, num_classes: int | None = None,
          output_shape=None, lower: bool = True) -> Network:
    """The network for ``input_shape`` (no batch dim), with a classification head for
    ``num_classes`` or a dense head for ``output_shape``, or no head when both are None."""
    return build_traced(derivation, input_shape, num_classes, output_shape, lower)[0]


def build_traced(derivation: Derivation, input_shape, num_classes: int | None = None,
                 output_shape=None, lower: bool = True
                 ) -> tuple[Network, dict[str, tuple[int, ...]]]:
    """``build``, plus where each backbone module came from: its qualified name (as in
    ``named_modules``) -> the path of the derivation node it was compiled from.

    Flattening and lowering mean module names do not follow derivation paths, so tools that
    attribute trained weights to nodes need this map.  A lowered or fused module maps to the
    production it replaces; the head maps to nothing (it is not part of the derivation)."""
    target = check_target(num_classes, output_shape)
    annotation = annotate(derivation, input_shape)
    compiler = Compiler(annotation, lower)
    backbone = compiler.module(derivation, ())
    head = make_head(annotation.output_shape, num_classes, target)
    network = Network(backbone, head, derivation.text)
    origins = {name: compiler.origins[id(module)][1]
               for name, module in network.named_modules() if id(module) in compiler.origins}
    return network, origins


class Compiler(Walker):
    """Builds modules for one annotated derivation; ``lower=False`` keeps the literal ops."""

    def __init__(self, annotation: Annotation, lower: bool = True):
        self.annotation = annotation
        self.lower = lower
        #: id(module) -> (module, derivation path) of every module built; holding the module keeps
        #: its id from being reused.  The first record wins: a module passed up unchanged (a
        #: one-element chain) keeps the deepest node it came from.
        self.origins: dict[int, tuple[nn.Module, tuple[int, ...]]] = {}

    def _record(self, module: nn.Module, path: tuple[int, ...]) -> nn.Module:
        self.origins.setdefault(id(module), (module, path))
        return module

    def terminal(self, kind: Kind, path: tuple[int, ...]) -> nn.Module:
        info = self.annotation[path]
        return self._record(get(kind, info.node).build(info.input, info.context), path)

    def module(self, node: Derivation, path: tuple[int, ...]) -> nn.Module:
        return self._record(self._module(node, path), path)

    def _module(self, node: Derivation, path: tuple[int, ...]) -> nn.Module:
        if self.lower:
            for rule in (self._conv, self._multihead, self._attention, self._residual):
                lowered = rule(node, path)
                if lowered is not None:
                    return lowered
        return self.walk(node, path)

    # -- one rule per production ------------------------------------------------------

    def computation(self, node: Derivation, path: tuple[int, ...]) -> nn.Module:
        return self.terminal(Kind.COMPUTATION, path + (0,))

    def sequential(self, node: Derivation, path: tuple[int, ...]) -> nn.Module:
        return _chain([self.module(node.children[0], path + (0,)),
                       self.module(node.children[1], path + (1,))])

    def routing(self, node: Derivation, path: tuple[int, ...]) -> nn.Module:
        return _chain([self.terminal(Kind.PREROUTING, path + (0,)),
                       self.module(node.children[1], path + (1,)),
                       self.terminal(Kind.POSTROUTING, path + (2,))])

    def branching(self, node: Derivation, path: tuple[int, ...]) -> nn.Module:
        children = node.children
        splitter = get(Kind.BRANCHING, children[0])
        inner_nodes = children[1:-1]
        copies = splitter.branches // len(inner_nodes)
        inners = [self.module(inner, path + (i,))
                  for i, inner in enumerate(inner_nodes, start=1) for _ in range(copies)]
        return Branching(self.terminal(Kind.BRANCHING, path + (0,)), inners,
                         self.terminal(Kind.AGGREGATION, path + (len(children) - 1,)))

    # -- lowerings: each returns None when its pattern does not match -------------------

    def _conv(self, node: Derivation, path) -> nn.Module | None:
        if node.label != "routing" or node.children[2] != "col2im":
            return None
        inner = node.children[1]
        if inner.label != "computation":
            return None
        window = get(Kind.PREROUTING, node.children[0])
        linear = get(Kind.COMPUTATION, inner.children[0])
        if not isinstance(window, Im2Col) or not isinstance(linear, Linear):
            return None
        channels = self.annotation[path].input[0]
        tokens = self.annotation[path + (1, 0)].input
        return nn.Conv2d(channels, linear.out_features(tokens), window.kernel, window.stride,
                         window.padding)

    def _attention_parts(self, node: Derivation, path):
        """((query, key, value) as (node, path) pairs, scale) if ``node`` is
        ``softmax(Q Kᵀ · s) V`` written with clones and dot products, else None."""
        if not _is_branch(node, "clone_tensor2", "dot_product"):
            return None
        scores, value = node.children[1], node.children[2]
        if scores.label != "sequential" or scores.children[1].text != "(computation softmax)":
            return None
        logits = scores.children[0]
        if not (_is_branch(logits, "clone_tensor2", "scaled_dot_product")
                or _is_branch(logits, "clone_tensor2", "dot_product")):
            return None
        query, key_route = logits.children[1], logits.children[2]
        if key_route.label != "routing" or key_route.children[0] != "identity":
            return None
        rank = TRANSPOSE_LAST_TWO.get(key_route.children[2])
        if rank is None or len(self.annotation[path].input) != rank:
            return None
        logits_path = path + (1, 0)
        q_shape = self.annotation[logits_path + (1,)].output
        scale = 1.0 / math.sqrt(q_shape[-1]) if logits.children[3] == "scaled_dot_product" else 1.0
        parts = ((query, logits_path + (1,)), (key_route.children[1], logits_path + (2, 1)),
                 (value, path + (2,)))
        return parts, scale

    def _attention(self, node: Derivation, path) -> nn.Module | None:
        found = self._attention_parts(node, path)
        if found is None:
            return None
        parts, scale = found
        return Attention(*(self.module(n, p) for n, p in parts), scale)

    def _multihead(self, node: Derivation, path) -> nn.Module | None:
        """k repeated attention heads with linear q/k/v, concatenated on the feature dim, become
        one fused projection per q/k/v and a single batched attention call."""
        if node.label != "branching" or len(node.children) != 3:
            return None
        splitter = get(Kind.BRANCHING, node.children[0])
        merge = get(Kind.AGGREGATION, node.children[2])
        rank = len(self.annotation[path].input)
        if not (isinstance(splitter, Clone) and isinstance(merge, Concat)
                and merge.dim == rank and merge.count == splitter.branches):
            return None
        found = self._attention_parts(node.children[1], path + (1,))
        if found is None:
            return None
        parts, scale = found
        linears = []
        for part, part_path in parts:
            if part.label != "computation" or not isinstance(
                    get(Kind.COMPUTATION, part.children[0]), Linear):
                return None
            info = self.annotation[part_path + (0,)]
            linears.append(nn.Linear(info.input[-1], info.output[-1] * splitter.branches))
        return MultiHeadAttention(*linears, splitter.branches, scale)

    def _residual(self, node: Derivation, path) -> nn.Module | None:
        if not _is_branch(node, "clone_tensor2", "add_tensors"):
            return None
        first, second = node.children[1], node.children[2]
        identity = "(computation identity)"
        if second.text == identity:
            return Residual(self.module(first, path + (1,)), identity_first=False)
        if first.text == identity:
            return Residual(self.module(second, path + (2,)), identity_first=True)
        return None


def _is_branch(node, splitter: str, merge: str) -> bool:
    return (isinstance(node, Derivation) and node.label == "branching"
            and node.children[0] == splitter and node.children[-1] == merge
            and len(node.children) == 4)


def _chain(modules: list[nn.Module]) -> nn.Module:
    flat: list[nn.Module] = []
    for m in modules:
        if isinstance(m, nn.Sequential):
            flat.extend(m)
        elif not isinstance(m, nn.Identity):
            flat.append(m)
    if not flat:
        return nn.Identity()
    return flat[0] if len(flat) == 1 else nn.Sequential(*flat)
