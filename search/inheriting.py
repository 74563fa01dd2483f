"""Weight inheritance in a search: which parents' weights a trial starts from, fetched on its
worker, and what it took from them.

The driver turns a child's proposal (``choices["origins"]`` and ``choices["inherit_from"]``, see
:mod:`einspace.search.strategies.evolution`) into an :class:`InheritancePlan` that travels in
the trial's config; the worker fetches each parent's ``state_dict`` from the weight keeper (it
may run on another node, without a shared file system) and builds the child with
:func:`einspace.inheritance.inherit`.  A parent whose weights cannot be had (it was never
pooled, or the keeper cannot be reached) is left out and named in the record, so the child
trains fresh where it would have inherited from it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from einspace.derivation import Derivation
from einspace.inheritance import InheritanceError, Parent, inherit, origins_from_regions
from einspace.tasks.data import TaskData
from einspace.text import parse

from .weights import KeeperSpec


@dataclass(frozen=True)
class InheritancePlan:
    """The parents a trial inherits from, as (trial index, derivation text), and its copied
    regions as ``[child path, parent trial index, path in that parent]``."""

    parents: tuple[tuple[int, str], ...]
    regions: tuple[tuple[tuple[int, ...], int, tuple[int, ...]], ...]

    def to_config(self) -> dict:
        return {"parents": [list(p) for p in self.parents],
                "regions": [[list(c), k, list(s)] for c, k, s in self.regions]}

    @classmethod
    def from_config(cls, config: dict) -> InheritancePlan:
        return cls(tuple((int(i), text) for i, text in config["parents"]),
                   tuple((tuple(c), int(k), tuple(s)) for c, k, s in config["regions"]))


def plan_for(choices: dict, derivation_of: Callable[[int], Derivation]) -> InheritancePlan | None:
    """The plan of a proposal whose strategy asked for inheritance (``inherit_from`` in its
    choices, empty for a child of parents not trained yet: it records that it took nothing);
    None for any other proposal."""
    parents = choices.get("inherit_from")
    if parents is None:
        return None
    wanted = set(parents)
    regions = tuple((tuple(c), k, tuple(s)) for c, k, s in choices.get("origins", ())
                    if k in wanted)
    return InheritancePlan(tuple((i, derivation_of(i).text) for i in sorted(wanted)), regions)


class InheritedBuilder:
    """The trainer's builder for a child that inherits: each call builds the child afresh (from
    the trainer's seeded RNG, as :func:`einspace.build` would) and copies in its parents'
    tensors; :attr:`record` says what the last build took."""

    def __init__(self, derivation: Derivation, data: TaskData, plan: InheritancePlan,
                 states: dict[int, dict[str, torch.Tensor]], missing: list[int]):
        self.derivation, self.data = derivation, data
        present = [i for i, _ in plan.parents if i in states]
        position = {index: k for k, index in enumerate(present)}
        texts = dict(plan.parents)
        self.trial_of = present
        self.parents = [Parent(parse(texts[i]), tuple(data.input_shape), states[i])
                        for i in present]
        self.origins = origins_from_regions(derivation, [
            (c, position[k], s) for c, k, s in plan.regions if k in position])
        self.missing = missing
        self.record: dict = {}

    def __call__(self) -> nn.Module:
        data = self.data
        try:
            made = inherit(self.derivation, data.input_shape, self.parents, self.origins,
                           num_classes=data.num_classes, output_shape=data.target_shape)
        except InheritanceError as e:
            # Weights that do not fit their architecture: the child trains fresh, and says why.
            self.missing = self.missing + self.trial_of
            self.trial_of, self.parents, self.origins = [], [], {}
            self.record = {"inherit_error": str(e)}
            return self()
        counts = dict(zip(self.trial_of, made.record.per_parent, strict=True))
        self.record = {**self.record, "inherited_params": made.record.inherited,
                       "fresh_params": made.record.fresh,
                       # pairs, not a mapping: Tune flattens a nested dict of a result
                       "inherited_from": [[i, n] for i, n in counts.items()],
                       **({"inherit_missing": sorted(self.missing)} if self.missing else {})}
        return made.network


def fetch_states(keeper: KeeperSpec | None, plan: InheritancePlan
                 ) -> tuple[dict[int, dict[str, torch.Tensor]], list[int]]:
    """The parents' ``state_dict``s the keeper holds, and the parents it could not give."""
    import ray

    states, missing = {}, []
    for index, _ in plan.parents:
        try:
            blob = ray.get(keeper.handle().get.remote(index)) if keeper is not None else None
        except ray.exceptions.RayError:
            blob = None
        if blob is None:
            missing.append(index)
        else:
            states[index] = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    return states, missing
