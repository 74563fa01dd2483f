"""Do every seed and many sampled architectures export with a dynamic batch, and how long is the
generated ``model.py``?

Run as ``python -m benchmarks.bench_export [--samples 200] [--formats pt2,onnx,pytorch]``.  The
seeds (at 3x16x16) and ``--samples`` small sampled architectures (half from the einspace
terminals, half from the seed-paper set; input shapes 3x16x16, 1x24x24 and 16x32 in turn) are
exported with random weights and all checked in one einspace-free process at batch sizes 1 and
3.  It prints per format how many exported, with a dynamic batch, passed the check and were
written by a fallback exporter (ONNX: ``dynamo=False``), the seconds per export, and
``model.py`` lines per derivation node (goal: at most 3), also for the architectures holding a
``clone_tensor8`` and for those of at least 20 nodes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

import einspace
from einspace import Budget, Sampler
from einspace.export import check_exports, export, from_spec
from einspace.export.pipeline import SAMPLE

SHAPES = [(3, 16, 16), (1, 24, 24), (16, 32)]
BUDGET = Budget(max_params=200_000, max_flops=20_000_000, max_nodes=80, max_depth=16)


def architectures(samples: int) -> list[tuple[str, tuple[int, ...], einspace.Derivation]]:
    cases = [(f"seed-{name}", (3, 16, 16), einspace.load_seed(name))
             for name in einspace.seed_names()]
    for terminal_set, count in (("einspace", samples - samples // 2),
                                ("seed-papers", samples // 2)):
        sampler = Sampler(einspace.load_grammar(terminal_set=terminal_set), BUDGET)
        for seed in range(count):
            shape = SHAPES[seed % len(SHAPES)]
            cases.append((f"{terminal_set}-{seed}", shape,
                          sampler.sample(shape, random.Random(seed)).derivation))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--formats", default="pt2,onnx,pytorch")
    args = parser.parse_args()
    formats = args.formats.split(",")
    torch.set_num_threads(1)
    cases = architectures(args.samples)
    seconds, failures, fallbacks = defaultdict(list), Counter(), Counter()
    batches, lines = Counter(), {"all": [], "clone_tensor8": [], ">= 20 nodes": []}
    with tempfile.TemporaryDirectory() as root:
        jobs = []
        for name, shape, derivation in cases:
            for fmt in formats:  # one format at a time: the seconds are per format
                out = Path(root) / name / fmt
                began = time.perf_counter()
                done = export(from_spec(derivation.text, shape, num_classes=5), [fmt], out,
                              verify=False)
                seconds[fmt].append(time.perf_counter() - began)
                for error in done.failures:
                    failures[fmt] += 1
                    print(f"  {name} {fmt}: {error}")
                if done.card is None:
                    continue
                entry = done.card["formats"][fmt]
                batches[fmt, entry.get("batch", "dynamic")] += 1
                if "exporter_reason" in entry:  # ONNX written by the fallback exporter
                    fallbacks[fmt] += 1
                jobs.append((out, SAMPLE, {fmt: entry["files"][0]}))
                if fmt == "pytorch":
                    ratio = len((out / "model.py").read_text().splitlines()) / derivation.size
                    lines["all"].append(ratio)
                    if "clone_tensor8" in derivation.text:
                        lines["clone_tensor8"].append(ratio)
                    if derivation.size >= 20:  # the fixed ~20 lines weigh less
                        lines[">= 20 nodes"].append(ratio)
        checks = check_exports(jobs, timeout=3600)
    passed = Counter(c.format for c in checks if c.ok and c.batches == (1, 3))
    print(f"{len(cases)} architectures ({len(einspace.seed_names())} seeds, {args.samples} "
          f"sampled), checked at batch sizes 1 and 3 without einspace:")
    for fmt in formats:
        fixed = sum(n for (f, b), n in batches.items() if f == fmt and b != "dynamic")
        print(f"  {fmt:8s} exported {len(cases) - failures[fmt]}, dynamic batch "
              f"{batches[fmt, 'dynamic']}, fixed {fixed}, passed {passed[fmt]}, by a fallback "
              f"exporter {fallbacks[fmt]}; median {statistics.median(seconds[fmt]):.2f} s per "
              f"export")
    for group, ratios in lines.items():
        if ratios:
            print(f"  model.py lines per derivation node ({group}, {len(ratios)}): median "
                  f"{statistics.median(ratios):.2f}, max {max(ratios):.2f}, "
                  f"{sum(r < 3 for r in ratios)} under 3")


if __name__ == "__main__":
    main()
