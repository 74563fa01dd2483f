"""The JSON card written beside every export: what was exported, from where, and how it checks.

``card.json`` holds the derivation text and its hash, the input shape (without the batch), what
the export takes as input (``input``: the raw arrays' dtype, shape and range, and the trainer's
normalisation statistics applied inside the export, or a note that the export is bare), the
head (classes or dense target) and the output shape, parameters and FLOPs as einspace counts them
(for the whole network, train-only parts included), the task, the scores, where the architecture
and its weights came from, and per format its files, how it was made and the verification result.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from einspace import count

from .source import Candidate

CARD = "card.json"
VERSION = 2


def make_card(candidate: Candidate, output_shape: tuple[int, ...], formats: dict,
              sample: dict) -> dict:
    cost = count(candidate.derivation, candidate.input_shape, num_classes=candidate.num_classes,
                 output_shape=candidate.output_shape)
    head = ("classification" if candidate.num_classes else
            "dense" if candidate.output_shape else "none (backbone features)")
    return {
        "card_version": VERSION,
        "hash": candidate.derivation.hash,
        "derivation": candidate.derivation.text,
        "input_shape": list(candidate.input_shape),
        "input": input_entry(candidate),
        "head": head,
        "num_classes": candidate.num_classes,
        "target_shape": list(candidate.output_shape) if candidate.output_shape else None,
        "output_shape": list(output_shape),
        "parameters": cost.params,
        "flops": cost.flops,
        "task": candidate.task,
        "scores": candidate.scores,
        "source": candidate.source,
        "weights": dict(candidate.weights),
        "formats": formats,
        "sample": sample,
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def input_entry(candidate: Candidate) -> dict:
    """What the exported artefact takes: the task's raw arrays, or the bare network's input."""
    if candidate.preprocessing is not None:
        return candidate.preprocessing.card()
    return {"applied_inside_export": False, "input_dtype": "float32",
            "input_shape": ["batch", *candidate.input_shape],
            "note": "the bare network: feed it inputs transformed as in training (a run's "
                    "export without --bare applies the trainer's normalisation itself)"}


def write_card(out_dir: Path, card: dict) -> Path:
    path = out_dir / CARD
    path.write_text(json.dumps(card, indent=1) + "\n")
    return path
