"""How good is the time model?  Predicted vs measured epoch seconds over a small random search.

The candidates are what a random search over the default space proposes for the task; each is
predicted by the time screen as the search would predict it (probe calibration, then the online
fit over the trials before it) and then trained for one epoch in this process with the search's
recipe.  A ratio above 1 over-estimates (the screen is conservative), below 1 under-estimates.

    python -m benchmarks.bench_time_model [--trials 20] [--task addnist_lite] [--size small]
        [--max-flops 10000000]
"""

from __future__ import annotations

import argparse
import random
import statistics

import torch

from einspace import build
from einspace.search.config import resolve
from einspace.search.engine import make_strategy
from einspace.search.search_task import load_search_task, search_recipe
from einspace.search.time_budget import ONLINE_POINTS, TimeScreen, probe
from einspace.tasks.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--task", default="addnist_lite")
    parser.add_argument("--size", default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-flops", type=int, default=10_000_000,
                        help="the sampler's FLOPs budget per sample (keeps the run short)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a worker with cpus_per_trial: 1
    config = resolve({"task": {"name": args.task, "size": args.size},
                      "search": {"strategy": "random"}, "training": {"epochs": 1},
                      "budget": {"max_flops": args.max_flops}})
    data = load_search_task(config)
    recipe = search_recipe(config)
    probe(data, recipe)  # the first probe pays torch's one-time start-up; the search's too
    screen = TimeScreen(data, recipe, None, probe(data, recipe))
    strategy = make_strategy(config, data.input_shape)
    rows = []
    print(f"{'trial':>5} {'GFLOP/epoch':>12} {'Mact/epoch':>11} {'predicted':>10} "
          f"{'measured':>9} {'ratio':>6}")
    for index in range(args.trials):
        proposal = strategy.ask(index, random.Random(f"{args.seed}/{index}"))
        predicted = screen.epoch_estimate(proposal)
        model = build(proposal.derivation, data.input_shape, num_classes=data.num_classes,
                      output_shape=data.target_shape)
        result = train(model, data, recipe.with_overrides(seed=index))
        if not result.history:
            print(f"{index:>5} failed: {result.reason}")
            continue
        measured = result.history[0].seconds
        screen.observe(index, proposal, {"history": [{"seconds": measured}]})
        rows.append((index, predicted / measured))
        flops, activations = screen.work(proposal)
        print(f"{index:>5} {flops / 1e9:>12.3f} {activations / 1e6:>11.1f} {predicted:>9.3f}s "
              f"{measured:>8.3f}s {predicted / measured:>6.2f}")
    for label, ratios in (("all trials", [r for _, r in rows]),
                          ("online fit", [r for i, r in rows if i >= ONLINE_POINTS])):
        if len(ratios) >= 2:
            q1, _, q3 = statistics.quantiles(ratios, n=4)
            print(f"predicted / measured epoch seconds, {label} ({len(ratios)}): median "
                  f"{statistics.median(ratios):.2f}, quartiles {q1:.2f}-{q3:.2f}, range "
                  f"{min(ratios):.2f}-{max(ratios):.2f}")


if __name__ == "__main__":
    main()
