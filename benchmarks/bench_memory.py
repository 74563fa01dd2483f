"""How good is the training-memory estimate?  Estimate vs measured peak, on a spread of samples.

Each candidate trains a few SGD steps at the search's batch size in a fresh process (so the peak
is its own) and reports the process's peak resident memory; the estimate
(:func:`einspace.memory.training_memory`, what the search screens candidates with) is divided by
it.  A ratio above 1 over-estimates (safe: the candidate would have fitted), below 1
under-estimates.

    python -m benchmarks.bench_memory [--samples 24] [--batch 256] [--shape 12,8,8]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics

import einspace
from einspace.analysis import parse_input_shape
from einspace.memory import format_bytes, training_memory


def _peak_rss(text: str, shape: tuple[int, ...], classes: int, batch: int, steps: int,
              queue) -> None:
    import torch

    torch.set_num_threads(1)
    net = einspace.build(einspace.parse(text), shape, num_classes=classes)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, *shape)
    y = torch.randint(0, classes, (batch,))
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    queue.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def measure(text: str, shape: tuple[int, ...], classes: int, batch: int, steps: int = 2) -> int:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_rss, args=(text, shape, classes, batch, steps, queue))
    proc.start()
    peak = queue.get(timeout=600)
    proc.join()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--shape", default="12,8,8")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--max-gb", type=float, default=6.0,
                        help="skip samples whose estimate exceeds this (the machine's limit)")
    args = parser.parse_args()
    shape = parse_input_shape(args.shape)
    candidates = [(name, einspace.load_seed(name)) for name in ("mlp", "resnet18")
                  if name in einspace.seed_names()]
    seed = 0
    while len(candidates) < args.samples + 2:
        d = einspace.sample(shape, seed=seed)
        seed += 1
        if einspace.count(d, shape, args.classes).activations > 1000:
            candidates.append((f"sample{seed - 1}", d))
    ratios = []
    print(f"{'candidate':>12} {'params':>10} {'act/sample':>11} {'estimate':>10} "
          f"{'measured':>10} {'ratio':>6}")
    for name, d in candidates:
        cost = einspace.count(d, shape, args.classes)
        estimate = training_memory(cost, batch_size=args.batch).total
        if estimate > args.max_gb * 2**30:
            print(f"{name:>12} skipped: estimate {format_bytes(estimate)} over --max-gb")
            continue
        peak = measure(d.text, shape, args.classes, args.batch)
        ratios.append(estimate / peak)
        print(f"{name:>12} {cost.params:>10,} {cost.activations:>11,} "
              f"{format_bytes(estimate):>10} {format_bytes(peak):>10} {ratios[-1]:>6.2f}")
    print(f"estimate / measured peak over {len(ratios)} candidates at {args.shape}, batch "
          f"{args.batch}: median {statistics.median(ratios):.2f}, min {min(ratios):.2f}, "
          f"max {max(ratios):.2f}; under-estimates: {sum(r < 1 for r in ratios)}")


if __name__ == "__main__":
    main()
