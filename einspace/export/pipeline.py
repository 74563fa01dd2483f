"""One export: build the candidate's network, write each requested format, check every written
file in an einspace-free process, and write the card listing the formats that passed.

A format that cannot be exported or fails its check does not stop the others: its error is
returned (and its files removed), the rest are written and carded.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .card import CARD, make_card, write_card
from .errors import ExportError
from .formats import FORMATS
from .source import Candidate
from .to_onnx import FILE as ONNX_FILE
from .to_onnx import export_onnx
from .to_pytorch import SOURCE, WEIGHTS, export_pytorch
from .to_torchscript import FILE as TORCHSCRIPT_FILE
from .to_torchscript import export_torchscript
from .verify import ABS_TOL, REL_TOL, check_exports

SAMPLE, SAMPLE_SEED, BATCH = "sample.pt", 0, 2
OWN_FILES = (CARD, SAMPLE, TORCHSCRIPT_FILE, ONNX_FILE, SOURCE, WEIGHTS)


@dataclass
class Exported:
    """What an export wrote (``card`` None when no format succeeded) and what failed."""

    out_dir: Path
    card: dict | None
    failures: list[ExportError]


def sample_batch(network: torch.nn.Module, input_shape) -> tuple[Tensor, Tensor]:
    """A seeded random batch of ``BATCH`` inputs and the network's outputs for it."""
    generator = torch.Generator().manual_seed(SAMPLE_SEED)
    x = torch.randn((BATCH, *input_shape), generator=generator)
    with torch.no_grad():
        return x, network(x)


def prepare(out_dir: str | Path, force: bool) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ExportError(f"--out {out} is not empty; choose another directory or pass "
                              f"--force to replace an earlier export there")
        for name in OWN_FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def export(candidate: Candidate, formats, out_dir: str | Path, *, force: bool = False,
           verify: bool = True) -> Exported:
    """Export ``candidate`` to ``formats`` (names from ``FORMATS``) in ``out_dir``.  With
    ``verify=False`` the files are written unchecked (for checking many exports in one process
    with :func:`check_exports`); the card then records no verification."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown format(s) {', '.join(unknown)}; choose from "
                          f"{', '.join(FORMATS)}")
    network, places = candidate.network()  # weights that do not fit fail before --out is made
    out = prepare(out_dir, force)
    x, reference = sample_batch(network, candidate.input_shape)
    writers = {
        "torchscript": lambda: export_torchscript(network, x, out, places),
        "onnx": lambda: export_onnx(network, x, out, places),
        "pytorch": lambda: export_pytorch(network, out, places, model_doc(candidate)),
    }
    entries: dict[str, dict] = {}
    failures: list[ExportError] = []
    for fmt in formats:
        try:
            entries[fmt] = writers[fmt]()
        except ExportError as e:
            failures.append(e)
    if not entries:
        return Exported(out, None, failures)
    torch.save({"input": x, "output": reference}, out / SAMPLE)
    if verify:
        jobs = [(out, SAMPLE, {fmt: entry["files"][0] for fmt, entry in entries.items()})]
        for check in check_exports(jobs):
            if check.ok:
                entries[check.format]["max_abs_error"] = check.max_abs_error
                entries[check.format]["verified"] = True
            else:
                failures.append(ExportError(check.problem(), fmt=check.format))
                for file in entries.pop(check.format)["files"]:
                    (out / file).unlink(missing_ok=True)
    if not entries:
        (out / SAMPLE).unlink(missing_ok=True)
        return Exported(out, None, failures)
    sample = {"file": SAMPLE, "batch": BATCH, "seed": SAMPLE_SEED,
              "tolerance": f"max |exported - original| <= {ABS_TOL} + {REL_TOL} x max |original|",
              "checked_in": "a separate Python process that cannot import einspace"
              if verify else "not checked"}
    card = make_card(candidate, tuple(reference.shape[1:]), entries, sample)
    write_card(out, card)
    return Exported(out, card, failures)


def model_doc(candidate: Candidate) -> str:
    """The docstring of the generated ``model.py``."""
    shape = " x ".join(map(str, candidate.input_shape))
    if candidate.num_classes:
        output = f"{candidate.num_classes} class logits"
    elif candidate.output_shape:
        output = " x ".join(map(str, candidate.output_shape)) + " dense predictions"
    else:
        output = "the backbone's features"
    weights = candidate.weights.get("note") or candidate.weights.get("file", "")
    paragraphs = [
        f"einspace architecture {candidate.derivation.hash} as plain PyTorch: generated code "
        f"that needs torch only.",
        f"Input: a batch of {shape} tensors; output: {output} per sample.  Weights "
        f"(state_dict.pt): {weights}.  The derivation, its costs, task and scores are in "
        f"card.json.",
        "forward is the network's evaluation-mode computation; the comments name the "
        "derivation node (path and terminal) each part of the code comes from.",
    ]
    usage = ("    from model import load\n\n    model = load()  # reads state_dict.pt beside "
             "this file\n    y = model(x)")
    text = [textwrap.fill(p, 96) for p in paragraphs]
    return "\n\n".join(text[:2] + [usage] + text[2:])
