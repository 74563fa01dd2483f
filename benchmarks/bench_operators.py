"""Crossover and distance figures: success rate, validity and time per call, distances per second.

Run as ``python -m benchmarks.bench_operators [--pairs 100] [--shape 3x28x28]``.

Crossover (``einspace.recombine``, default sampler and budget) on three sets of parents:

* ``random``: pairs of independent grammar samples (seeds i and 1000 + i);
* ``resnet18 x random``: the ResNet-18 seed with sample 1000 + i;
* ``seeds``: every ordered pair of distinct shipped seeds.

For each: how many calls gave a child, how many children are valid (checked outside the timed
region: annotate, build with a 10-class head, forward a batch of 2, logits (2, 10) and features
of the annotated shape), the median / p90 / max milliseconds of the call itself (wall clock, and
CPU time, which is steadier on a shared machine), and how the children were made (swap, graft,
reshaped graft; adapters used).  Distances: ``einspace.distance`` on pairs of random samples, each
pair once with a cold canonical-form cache, and from ResNet-18 to every seed.  One thread; on a
shared machine the times vary with load.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import time

import torch

import einspace
from benchmarks.quantiles import quantile
from einspace.canonical_form import clear_cache
from einspace.cli import input_shape

NUM_CLASSES = 10


def valid(child: einspace.Derivation, shape) -> bool:
    """Annotates, builds with a head, and a batch of 2 gives the annotated shapes."""
    try:
        annotation = einspace.annotate(child, shape)
        net = einspace.build(child, shape, num_classes=NUM_CLASSES)
        with torch.inference_mode():
            features = net.backbone(torch.randn(2, *shape))
            logits = net.head(features)
    except Exception as error:  # a benchmark counts every failure, whatever raised it
        print(f"  invalid child ({type(error).__name__}: {error})")
        return False
    return (tuple(features.shape) == (2, *annotation.output_shape)
            and tuple(logits.shape) == (2, NUM_CLASSES))


def crossover_row(name: str, pairs, shape, sampler) -> None:
    seconds, cpu, children, methods = [], [], [], {}
    for i, (a, b) in enumerate(pairs):
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            result = einspace.recombine(a, b, shape, seed=i, sampler=sampler)
        except einspace.SamplingError:
            result = None
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
        if result is not None:
            children.append(result.child)
            how = result.method + (f"+{len(result.adapters)}ad" if result.adapters else "")
            methods[how] = methods.get(how, 0) + 1
    good = sum(valid(child, shape) for child in children)
    ms = [1000 * s for s in seconds]
    made = ", ".join(f"{k} {v}" for k, v in sorted(methods.items()))
    print(f"{name:20s} children {len(children)}/{len(pairs)} "
          f"({100 * len(children) / len(pairs):.0f} %)  valid {good}/{len(children)}  "
          f"ms median {statistics.median(ms):.1f} / p90 {quantile(ms, 0.9):.1f} / "
          f"max {max(ms):.1f}  (CPU median {1000 * statistics.median(cpu):.1f} / max "
          f"{1000 * max(cpu):.1f})  [{made}]")


def distance_rate(samples) -> None:
    """Each pair once, the canonical-form cache emptied first, so every tree is canonicalised
    inside the timed region."""
    pairs = list(zip(samples[0::2], samples[1::2], strict=True))
    clear_cache()
    start, cpu = time.perf_counter(), time.process_time()
    for a, b in pairs:
        einspace.distance(a, b)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    sizes = sorted(d.size for d in samples)
    print(f"distances per second, {len(pairs)} fresh random sample pairs: "
          f"{len(pairs) / elapsed:,.0f} wall, {len(pairs) / cpu:,.0f} per CPU second "
          f"(canonicalisation included; nodes median {sizes[len(sizes) // 2]}, max {sizes[-1]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--shape", type=input_shape, default=(3, 28, 28))
    parser.add_argument("--distances", type=int, default=2000, help="random pairs timed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shape, n = args.shape, args.pairs
    sampler = einspace.Sampler()
    first = [sampler.sample(shape, random.Random(i)).derivation for i in range(n)]
    second = [sampler.sample(shape, random.Random(1000 + i)).derivation for i in range(n)]
    resnet = einspace.load_seed("resnet18")
    seeds = {name: einspace.load_seed(name) for name in einspace.seed_names()}
    print(f"input {shape}, {n} pairs, default budget")
    crossover_row("random", list(zip(first, second, strict=True)), shape, sampler)
    crossover_row("resnet18 x random", [(resnet, b) for b in second], shape, sampler)
    crossover_row("seeds (ordered)", list(itertools.permutations(seeds.values(), 2)), shape,
                  sampler)
    distance_rate([sampler.sample(shape, random.Random(10_000 + i)).derivation
                   for i in range(2 * args.distances)])
    for name, seed in seeds.items():
        start = time.perf_counter()
        d = einspace.distance(resnet, seed)
        ms = 1000 * (time.perf_counter() - start)
        print(f"distance resnet18 -> {name:16s} {d:7.0f}   ({seed.size} nodes, {ms:.1f} ms)")


if __name__ == "__main__":
    main()
