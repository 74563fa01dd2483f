"""Training-step time of the compiled seeds divided by their hand-written plain-torch versions.

Run as ``python -m benchmarks.bench_training_step [--batch 256] [--threads 1] [--rounds 5]``.

A step is forward + cross-entropy + backward + SGD (momentum 0.9) on a fixed random batch of
3x28x28 images with 10 classes.  Both networks of a pair live in the same process and get the same
data; after warm-up steps the two are timed in interleaved rounds (order alternating A B / B A so
neither always runs first), and the medians are compared.  The goal for the grammar ResNet-18 is a
ratio of at most 1.10.  The hand-written networks are in ``benchmarks/handwritten.py`` and have
exactly the seeds' parameter counts.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

import einspace
from benchmarks.handwritten import HANDWRITTEN
from einspace.analysis import parse_input_shape

GOAL = 1.10
NUM_CLASSES = 10


def make_step(net, x, y):
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step() -> float:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    return step


def compare(name: str, shape, batch: int, warmup: int, rounds: int, steps: int) -> float:
    torch.manual_seed(0)
    grammar = einspace.build(einspace.load_seed(name), shape, num_classes=NUM_CLASSES)
    handwritten = HANDWRITTEN[name](shape, NUM_CLASSES)
    params = sum(p.numel() for p in grammar.parameters())
    assert params == sum(p.numel() for p in handwritten.parameters())
    x = torch.randn(batch, *shape)
    y = torch.randint(0, NUM_CLASSES, (batch,))
    grammar.train()
    handwritten.train()
    runs = {"grammar": make_step(grammar, x, y), "handwritten": make_step(handwritten, x, y)}
    for _ in range(warmup):
        for step in runs.values():
            step()
    times: dict[str, list[float]] = {k: [] for k in runs}
    order = list(runs)
    for r in range(rounds):
        for key in (order if r % 2 == 0 else order[::-1]):
            for _ in range(steps):
                times[key].append(runs[key]())
    g = statistics.median(times["grammar"])
    h = statistics.median(times["handwritten"])
    ratio = g / h
    verdict = ""
    if name == "resnet18":
        verdict = "  (goal <= %.2f: %s)" % (GOAL, "met" if ratio <= GOAL else "NOT met")
    print(f"{name:10s} {params / 1e6:6.2f} M params  grammar {g:7.3f} s  handwritten {h:7.3f} s"
          f"  ratio {ratio:.3f}{verdict}")
    print(f"{'':10s} per-step s: grammar {', '.join(f'{t:.2f}' for t in times['grammar'])}; "
          f"handwritten {', '.join(f'{t:.2f}' for t in times['handwritten'])}", flush=True)
    return ratio


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--shape", default="3x28x28", help="input CxHxW (default 3x28x28)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up steps per network")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved timing rounds for ResNet-18 (default 5)")
    parser.add_argument("--other-rounds", type=int, default=3,
                        help="interleaved timing rounds for the other seeds (default 3)")
    parser.add_argument("--steps", type=int, default=1, help="steps per network per round")
    parser.add_argument("--models", nargs="+", default=["resnet18", "wrn16_4", "vit", "mlp_mixer"],
                        choices=sorted(HANDWRITTEN))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    shape = parse_input_shape(args.shape)
    print(f"training step (forward + backward + SGD), batch {args.batch}, input {args.shape}, "
          f"{NUM_CLASSES} classes, torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"median over interleaved rounds")
    ratios = {}
    for name in args.models:
        rounds = args.rounds if name == "resnet18" else args.other_rounds
        ratios[name] = compare(name, shape, args.batch, args.warmup, rounds, args.steps)
    print("ratios (grammar / handwritten): "
          + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
