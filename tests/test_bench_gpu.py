"""The GPU benchmark's dry run (CPU, tiny sizes) completes and names every figure the GPU run
prints, so the one run on a lent GPU does not find a broken script."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKED = [f"{k} packed" for k in (1, 2, 4, 8)]
FIGURES = [
    "device",
    *(f"epoch seconds, ResNet-18 {who}, {p}, eager"
      for who in ("grammar", "hand-written") for p in ("bf16", "fp32")),
    "grammar / hand-written ResNet-18 epoch ratio, bf16",
    "grammar / hand-written ResNet-18 epoch ratio, fp32",
    "peak memory, ResNet-18 trial, bf16",
    *(f"{what}, {level}" for level in PACKED
      for what in ("candidates per hour", "GPU utilisation", "peak memory per trial",
                   "share of wall time outside training")),
    "epoch seconds, mlp seed, bf16, torch.compile default",
    "epoch seconds, mlp seed, fp32, torch.compile default",
    "compile seconds, mlp seed, fp32, torch.compile default",
    "epoch seconds, mlp seed, bf16, torch.compile reduce-overhead",
]


@pytest.mark.slow
def test_dry_run_prints_every_figure(tmp_path):
    out = tmp_path / "figures.json"
    run = subprocess.run([sys.executable, "-m", "benchmarks.bench_gpu", "--dry-run",
                          "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    printed = {line.split(": ", 1)[0] for line in run.stdout.splitlines()}
    figures = json.loads(out.read_text())
    for name in FIGURES:
        assert name in printed and name in figures, name
    assert figures["device"] == "cpu"
    for level in PACKED:                                   # measured, not skipped
        assert figures[f"candidates per hour, {level}"] > 0
        assert 0 <= figures[f"share of wall time outside training, {level}"] < 1
        assert figures[f"GPU utilisation, {level}"] == "n/a"
    ratio = figures["grammar / hand-written ResNet-18 epoch ratio, fp32"]
    assert ratio == pytest.approx(figures["epoch seconds, ResNet-18 grammar, fp32, eager"]
                                  / figures["epoch seconds, ResNet-18 hand-written, fp32, eager"])
    assert figures["compile seconds, mlp seed, fp32, torch.compile default"] > 0
