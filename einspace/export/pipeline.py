"""One export: build the candidate's network (behind the trainer's input transformation unless it
is bare), write each requested format, check every written file in an einspace-free process at
batch sizes 1 and 3, and write the card listing the formats that passed.

The check feeds a run's export the task's raw rows (test split, else valid) and compares with the
network fed the trainer's own normalisation of them, so a transformation missing from the export
cannot pass; a bare export is checked on seeded random inputs.  A format that cannot be exported
or fails its check does not stop the others: its error is returned (and its files removed), the
rest are written and carded.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .card import CARD, make_card, write_card
from .errors import ExportError
from .formats import FORMATS
from .preprocess import wrap
from .source import Candidate
from .to_onnx import FILE as ONNX_FILE
from .to_onnx import export_onnx
from .to_pt2 import FILE as PT2_FILE
from .to_pt2 import export_pt2
from .to_pytorch import SOURCE, WEIGHTS, export_pytorch
from .to_torchscript import FILE as TORCHSCRIPT_FILE
from .to_torchscript import export_torchscript
from .verify import ABS_TOL, REL_TOL, check_exports

SAMPLE, SAMPLE_SEED, BATCHES = "sample.pt", 0, (1, 3)
OWN_FILES = (CARD, SAMPLE, PT2_FILE, TORCHSCRIPT_FILE, ONNX_FILE, SOURCE, WEIGHTS)


@dataclass
class Exported:
    """What an export wrote (``card`` None when no format succeeded) and what failed."""

    out_dir: Path
    card: dict | None
    failures: list[ExportError]


def sample_batches(candidate: Candidate, network: nn.Module) -> list[dict[str, Tensor]]:
    """Inputs of ``BATCHES`` sizes as the export takes them (a run's raw task rows, else seeded
    random tensors) and the original network's outputs for them."""
    pre = candidate.preprocessing
    if pre is None:
        generator = torch.Generator().manual_seed(SAMPLE_SEED)
        x = torch.randn((max(BATCHES), *candidate.input_shape), generator=generator)
    else:
        x = pre.batch(max(BATCHES))
    batches = []
    for size in BATCHES:
        raw = x[:size]
        net_in = raw if pre is None else pre.network_input(raw, len(candidate.input_shape))
        with torch.no_grad():
            batches.append({"input": raw, "output": network(net_in)})
    return batches


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
    network, places = candidate.network()
    batches = sample_batches(candidate, network)
    model = network
    if candidate.preprocessing is not None:
        model, places = wrap(network, places, candidate.preprocessing,
                             len(candidate.input_shape))
    x = batches[-1]["input"]  # the largest batch: the example the exporters trace
    writers = {
        "pt2": lambda: export_pt2(model, x, out, places),
        "torchscript": lambda: export_torchscript(model, x, out, places),
        "onnx": lambda: export_onnx(model, x, out, places),
        "pytorch": lambda: export_pytorch(model, out, places, model_doc(candidate)),
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
    fixed = {fmt: entry["batch"] for fmt, entry in entries.items()
             if isinstance(entry.get("batch"), int)}
    torch.save({"batches": batches, "fixed_batch": fixed}, out / SAMPLE)
    if verify:
        jobs = [(out, SAMPLE, {fmt: entry["files"][0] for fmt, entry in entries.items()})]
        for check in check_exports(jobs):
            if check.ok:
                entries[check.format]["max_abs_error"] = check.max_abs_error
                entries[check.format]["verified_batches"] = list(check.batches)
                entries[check.format]["verified"] = True
            else:
                failures.append(ExportError(check.problem(), fmt=check.format))
                for file in entries.pop(check.format)["files"]:
                    (out / file).unlink(missing_ok=True)
    if not entries:
        (out / SAMPLE).unlink(missing_ok=True)
        return Exported(out, None, failures)
    pre = candidate.preprocessing
    sample = {"file": SAMPLE, "batches": list(BATCHES),
              "inputs": f"the first {max(BATCHES)} raw rows of the task's {pre.samples_split} "
                        f"inputs, as stored" if pre is not None
              else f"seeded random float32 tensors (seed {SAMPLE_SEED})",
              "reference": "the original network fed the trainer's own normalisation of the "
                           "raw rows" if pre is not None else "the original network",
              "tolerance": f"max |exported - original| <= {ABS_TOL} + {REL_TOL} x max |original|",
              "checked_in": "a separate Python process that cannot import einspace"
              if verify else "not checked"}
    card = make_card(candidate, tuple(batches[-1]["output"].shape[1:]), entries, sample)
    write_card(out, card)
    return Exported(out, card, failures)


def model_doc(candidate: Candidate) -> str:
    """The docstring of the generated ``model.py``: what goes in and out, where the rest is."""
    shape = " x ".join(map(str, candidate.input_shape))
    pre = candidate.preprocessing
    if pre is not None:
        shape = (f"raw {pre.input_dtype} {' x '.join(map(str, pre.raw_shape))} task arrays "
                 f"(normalised inside, as in training)")
    if candidate.num_classes:
        output = f"{candidate.num_classes} class logits"
    elif candidate.output_shape:
        output = " x ".join(map(str, candidate.output_shape)) + " dense predictions"
    else:
        output = "the backbone's features"
    weights = candidate.weights.get("note") or candidate.weights.get("file", "")
    text = (f"einspace architecture {candidate.derivation.hash} in plain PyTorch (torch only):"
            f" ``load()(x)`` maps a batch of {shape} to {output}; ``load`` reads state_dict.pt "
            f"({weights}).  Comments name derivation nodes; card.json has the rest.")
    return textwrap.fill(text, 96)
