"""Weight inheritance: epochs a child needs to reach its parent's score, inherited vs from scratch.

Run as ``python -m benchmarks.bench_inheritance [--task mnist1d] [--epochs 6] [--threads 1]``.

A small CNN parent (three convolutions with BatchNorm and leaky ReLU) is trained on a built-in
task with the task's recipe for ``--epochs`` epochs.  Its child differs in one node: the middle
convolution's 1x1 window becomes 3x3 (the only parameters the child cannot inherit).  The child
is then trained for the same number of epochs three times: from the parent's weights with the
recipe and schedule every trial gets (see :mod:`einspace.inheritance`), from the parent's weights
with a tenth of the learning rate (the fine-tuning alternative), and from scratch.  Printed: the
parent's validation score after every epoch; for each child run its scores and the first epoch
that reaches the parent's final score; the ratio of those epochs (from scratch / inherited at the
recipe's rate; ``>N`` when a run never reaches it); and the seconds inheritance took beside the
seconds of one training epoch.  The same ``--seed`` gives the same figures.
"""

from __future__ import annotations

import argparse
import time

import torch

from einspace import build, parse
from einspace.inheritance import Parent, inherit
from einspace.tasks import builtin  # noqa: F401  (registers the built-in tasks)
from einspace.tasks.registry import load_task, task_recipe
from einspace.tasks.trainer import train

CHANGED = (1, 1, 0, 0)  # the middle convolution's window
LOW_LR = 0.1  # the variant that fine-tunes the inherited child at a tenth of the recipe's rate


def conv(window: str, width: int) -> str:
    return f"(routing {window} (computation linear{width}) col2im)"


def parent_derivation():
    stage = "(sequential (computation norm) (computation leakyrelu))"
    return parse(f"(sequential {conv('im2col3k1s1p', 32)} (sequential {stage} (sequential "
                 f"{conv('im2col1k1s0p', 32)} (sequential {stage} (sequential "
                 f"{conv('im2col3k1s1p', 64)} {stage})))))")


def reached(history, target: float) -> int | None:
    """The first epoch whose score is at least ``target`` (None if none is)."""
    return next((r.epoch for r in history if r.score >= target), None)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist1d")
    parser.add_argument("--size", default="default", choices=("default", "small"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = load_task(args.task, size=args.size)
    recipe = task_recipe(args.task, {"epochs": args.epochs, "seed": args.seed, "device": "cpu"})
    head = ({"num_classes": data.num_classes} if data.num_classes is not None
            else {"output_shape": data.target_shape})
    parent = parent_derivation()
    child = parent.replace(CHANGED, "im2col3k1s1p")
    # A one-leaf mutation's origin map: every node not at or above the leaf keeps its path.
    origins = {path: (0, path) for path, _ in child.walk()
               if path[:len(CHANGED)] != CHANGED and path != CHANGED[:len(path)]}

    trained = train(lambda: build(parent, data.input_shape, **head), data, recipe,
                    keep_model=True)
    target = trained.score
    state = {k: v.detach().cpu() for k, v in trained.model.state_dict().items()}
    parents = [Parent(parent, data.input_shape, state)]

    timing = {}

    def inherited_child():
        began = time.perf_counter()
        made = inherit(child, data.input_shape, parents, origins, **head)
        timing["seconds"], timing["record"] = time.perf_counter() - began, made.record
        return made.network

    gentle = recipe.with_overrides(lr=recipe.lr * LOW_LR)
    runs = {"inherited": train(inherited_child, data, recipe),
            f"inherited, lr x{LOW_LR:g}": train(inherited_child, data, gentle),
            "scratch": train(lambda: build(child, data.input_shape, **head), data, recipe)}

    epoch_seconds = sum(r.seconds for r in trained.history) / len(trained.history)
    record = timing["record"]
    print(f"task {args.task} ({args.size}), {args.epochs} epochs, recipe lr {recipe.lr:g} "
          f"{recipe.schedule}, seed {args.seed}")
    parent_scores = " ".join(f"{r.score:.4f}" for r in trained.history)
    print(f"parent: score {target:.4f} after {args.epochs} epochs; scores {parent_scores}")
    print(f"child: {record.inherited:,} parameters inherited, {record.fresh:,} fresh "
          f"(the middle convolution, 1x1 -> 3x3)")
    epochs = {}
    for name, run in runs.items():
        epochs[name] = reached(run.history, target)
        scores = " ".join(f"{r.score:.4f}" for r in run.history)
        shown = epochs[name] if epochs[name] is not None else f">{args.epochs}"
        print(f"  {name:20s} reaches the parent's score at epoch {shown}; scores {scores}")
    if epochs["inherited"] is not None:
        scratch = epochs["scratch"] if epochs["scratch"] is not None else args.epochs + 1
        bound = "" if epochs["scratch"] is not None else ">="
        print(f"epochs to the parent's score, from scratch / inherited: "
              f"{bound}{scratch / epochs['inherited']:.2f}")
    else:
        print("the inherited child did not reach the parent's score")
    print(f"inheritance took {timing['seconds']:.3f} s, {timing['seconds'] / epoch_seconds:.1%} "
          f"of one training epoch ({epoch_seconds:.2f} s)")


if __name__ == "__main__":
    main()
