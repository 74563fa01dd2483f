"""Does the ``seed-papers`` terminal set reach every paper primitive, and how fast does it sample?

Run as ``python -m benchmarks.bench_coverage [--samples 10000]``.  For each input shape (3x28x28
for image-mode primitives, 1x24x24 as the smaller one) it draws the samples on one thread, prints
the samples per second, and counts how many samples use each paper's terminals; it ends with the
papers whose primitives appeared in none of the samples of any shape.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter

import einspace
from einspace.blocks import terminals
from einspace.blocks.seed_papers import PRIMITIVE_PAPERS

SHAPES = [(3, 28, 28), (1, 24, 24)]


def leaves(d) -> set[str]:
    return {node for _, node in d.walk() if isinstance(node, str)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    sampler = einspace.Sampler(einspace.load_grammar(terminal_set="seed-papers"))
    names_by_paper: dict[int, set[str]] = {number: set() for number in PRIMITIVE_PAPERS}
    for t in terminals():
        for number in t.seed_papers:
            names_by_paper.setdefault(number, set()).add(t.name)
    seen = {number: Counter() for number in names_by_paper}
    for shape in SHAPES:
        rng = random.Random(args.seed)
        start = time.perf_counter()
        drawn = [sampler.sample(shape, rng).derivation for _ in range(args.samples)]
        elapsed = time.perf_counter() - start
        print(f"{'x'.join(map(str, shape))}: {args.samples} samples in {elapsed:.1f} s = "
              f"{args.samples / elapsed:,.0f} samples/s (seed-papers terminal set)")
        for d in drawn:
            used = leaves(d)
            for number, names in names_by_paper.items():
                if used & names:
                    seen[number][shape] += 1
    print(f"\nsamples using each paper's primitives, out of {args.samples} per shape:")
    for number in sorted(names_by_paper):
        counts = "  ".join(f"{'x'.join(map(str, s))}: {seen[number][s]:6d}" for s in SHAPES)
        title = PRIMITIVE_PAPERS.get(number, "")
        print(f"  #{number:<3d} {title[:44]:44s} {counts}  "
              f"({', '.join(sorted(names_by_paper[number])) or 'no terminal'})")
    missing = [n for n in PRIMITIVE_PAPERS if not sum(seen[n].values())]
    print(f"\n{len(PRIMITIVE_PAPERS) - len(missing)} of {len(PRIMITIVE_PAPERS)} primitive papers "
          f"reached" + (f"; never sampled: {', '.join(f'#{n}' for n in missing)}"
                        if missing else ""))


if __name__ == "__main__":
    main()
