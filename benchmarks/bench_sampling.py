"""Sampling and mutation throughput on one CPU core, against the reference's measurements.

Run as ``python -m benchmarks.bench_sampling [--seconds 10] [--shapes 3x28x28 3x64x64]``.

Per input shape it reports

* valid samples per second: ``Sampler.sample`` in a loop for a fixed wall-clock budget (the timed
  region does nothing else; sampling is symbolic and creates no tensors, so torch threads do not
  matter there, but ``torch.set_num_threads(1)`` is set for the validity checks and for parity
  with the reference's one-thread measurement);
* the validity rate of a subset, checked outside the timed region: build with a 10-class head,
  compare the parameter count with ``einspace.count``, forward a batch of 2 and check the output
  is (2, 10);
* node counts (``Derivation.size``: productions and terminal leaves, a repeated inner module once)
  and depths of the samples: median / p90 / max;
* milliseconds per mutation of random samples and of the ResNet-18 seed (``mutate`` alone, and
  for the seed also ``mutate`` + ``build``, since the reference's mutation compiled the child and
  ran a batch-256 forward to check it).

Reference numbers (``shared/research/einspace-reference.md`` §8, one CPU thread): 0.070 completed
architectures/s at 3x28x28 and 0.074/s at 3x64x64; one mutation of the ResNet-18 seed took
1.1-2.9 s at 28x28 and 7.1-12.6 s at 64x64.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

import einspace
from benchmarks.quantiles import quantile
from einspace.analysis import parse_input_shape
from einspace.errors import EinspaceError
from einspace.mutation import mutate

REFERENCE_SAMPLES_PER_S = {(3, 28, 28): 0.070, (3, 64, 64): 0.074}
REFERENCE_SEED_MUTATION_S = {(3, 28, 28): (1.1, 2.9), (3, 64, 64): (7.1, 12.6)}
NUM_CLASSES = 10


def stats(values) -> str:
    return (f"median {statistics.median_low(values):,} / p90 {quantile(values, 0.9):,} / "
            f"max {max(values):,}")


def ms_stats(seconds) -> str:
    ms = [1000 * s for s in seconds]
    return (f"mean {statistics.mean(ms):.2f} / median {statistics.median(ms):.2f} / "
            f"p90 {quantile(ms, 0.9):.2f} / max {max(ms):.2f} ms")


def check(derivation, shape) -> str:
    """'' when the derivation builds, its parameter count matches ``count`` and a batch-2 forward
    gives (2, NUM_CLASSES); else what went wrong."""
    try:
        net = einspace.build(derivation, shape, num_classes=NUM_CLASSES)
        params = sum(p.numel() for p in net.parameters())
        predicted = einspace.count(derivation, shape, num_classes=NUM_CLASSES).params
        if params != predicted:
            return f"params {params} != predicted {predicted}"
        with torch.no_grad():
            out = net(torch.randn(2, *shape))
        if tuple(out.shape) != (2, NUM_CLASSES):
            return f"output {tuple(out.shape)}"
        if not torch.isfinite(out).all():
            return "non-finite output"
        return ""
    except Exception as e:  # noqa: BLE001 - report any failure as invalid
        return f"{type(e).__name__}: {e}"[:200]


def validate(derivations, shape, limit: int, seconds: float) -> tuple[int, int, list[str]]:
    """(checked, valid, first failures) over at most ``limit`` derivations and ``seconds``."""
    checked = valid = 0
    failures: list[str] = []
    start = time.perf_counter()
    for d in derivations[:limit]:
        if time.perf_counter() - start > seconds:
            break
        error = check(d, shape)
        checked += 1
        if error:
            failures.append(f"{d.hash}: {error}")
        else:
            valid += 1
    return checked, valid, failures


def bench_shape(shape, args, sampler: einspace.Sampler) -> None:
    print(f"\n=== input {'x'.join(map(str, shape))} ===")
    rng = random.Random(args.seed)
    samples, times, errors = [], [], 0
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        t0 = time.perf_counter()
        try:
            d = sampler.sample(shape, rng).derivation
        except EinspaceError:
            errors += 1
            continue
        times.append(time.perf_counter() - t0)
        samples.append(d)
    elapsed = time.perf_counter() - start
    rate = len(samples) / elapsed
    print(f"sampling: {len(samples)} samples in {elapsed:.1f} s = {rate:.1f} samples/s "
          f"({errors} SamplingErrors)")
    print(f"  time per sample: {ms_stats(times)}")
    print(f"  nodes per tree:  {stats([d.size for d in samples])}")
    print(f"  depth:           {stats([d.depth for d in samples])}")
    params = [einspace.count(d, shape, num_classes=NUM_CLASSES).params for d in samples]
    over = sum(p > sampler.budget.max_params for p in params)
    print(f"  params (10-class head): {stats(params)}; {over} samples exceed max_params "
          f"with the head (the budget covers the backbone only)")

    checked, valid, failures = validate(samples, shape, args.validate, args.validate_seconds)
    valid_rate = valid / checked if checked else float("nan")
    print(f"  validity (build + count + batch-2 forward), first {checked} samples: "
          f"{valid}/{checked} = {100 * valid_rate:.1f} %")
    for f in failures[:5]:
        print(f"    INVALID {f}")
    reference = REFERENCE_SAMPLES_PER_S.get(shape)
    if reference:
        valid_per_s = rate * valid_rate
        print(f"  vs reference {reference} completed archs/s: {valid_per_s / reference:,.0f}x "
              f"(valid samples/s: {valid_per_s:.1f})")

    # -- mutation of random samples (the parents are drawn outside the timed region) --------
    mrng = random.Random(args.seed + 1)
    parents = samples[: args.mutations]
    children, mtimes, merrors = [], [], 0
    for parent in parents:
        t0 = time.perf_counter()
        try:
            child = mutate(parent, shape, mrng, sampler)
        except EinspaceError:
            merrors += 1
            continue
        mtimes.append(time.perf_counter() - t0)
        children.append(child)
    print(f"mutation of {len(parents)} random samples: {ms_stats(mtimes)} "
          f"({merrors} SamplingErrors)")
    checked, valid, failures = validate(children, shape, args.validate, args.validate_seconds)
    print(f"  children valid: {valid}/{checked}")
    for f in failures[:5]:
        print(f"    INVALID {f}")

    # -- mutation of the ResNet-18 seed ---------------------------------------------------
    seed = einspace.load_seed("resnet18")
    srng = random.Random(args.seed + 2)
    stimes, btimes, seed_children = [], [], []
    for _ in range(args.seed_mutations):
        t0 = time.perf_counter()
        child = mutate(seed, shape, srng, sampler)
        t1 = time.perf_counter()
        einspace.build(child, shape, num_classes=NUM_CLASSES)
        t2 = time.perf_counter()
        stimes.append(t1 - t0)
        btimes.append(t2 - t0)
        seed_children.append(child)
    print(f"mutation of the resnet18 seed ({seed.size} nodes), {len(stimes)} mutations:")
    print(f"  mutate:         {ms_stats(stimes)}")
    print(f"  mutate + build: {ms_stats(btimes)}")
    checked, valid, failures = validate(seed_children, shape, args.validate,
                                        args.validate_seconds)
    print(f"  children valid: {valid}/{checked}")
    for f in failures[:5]:
        print(f"    INVALID {f}")
    ref = REFERENCE_SEED_MUTATION_S.get(shape)
    if ref:
        mean = statistics.mean(stimes)
        mean_b = statistics.mean(btimes)
        print(f"  vs reference {ref[0]}-{ref[1]} s per mutation: mutate alone "
              f"{ref[0] / mean:,.0f}x-{ref[1] / mean:,.0f}x faster; mutate + build "
              f"{ref[0] / mean_b:,.0f}x-{ref[1] / mean_b:,.0f}x faster")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="wall-clock sampling budget per shape (default 10)")
    parser.add_argument("--shapes", nargs="+", default=["3x28x28", "3x64x64"],
                        help="input shapes CxHxW (default 3x28x28 3x64x64)")
    parser.add_argument("--validate", type=int, default=200,
                        help="samples/children checked by build + forward (default 200)")
    parser.add_argument("--validate-seconds", type=float, default=60.0,
                        help="time cap per validity check (default 60)")
    parser.add_argument("--mutations", type=int, default=500,
                        help="random samples mutated once each (default 500)")
    parser.add_argument("--seed-mutations", type=int, default=50,
                        help="mutations of the resnet18 seed (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    print(f"einspace sampling benchmark: torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch thread; sampling itself creates no tensors")
    sampler = einspace.Sampler()
    print(f"budget: {sampler.budget}")
    for text in args.shapes:
        bench_shape(parse_input_shape(text), args, sampler)


if __name__ == "__main__":
    main()
