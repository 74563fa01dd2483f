"""``einspace export``: the command-line face of :mod:`einspace.export`.

    einspace export results/addnist-re --out exported/              # the run's best, model.pt2
    einspace export results/addnist-re --format all --out exported/ # every format
    einspace export results/addnist-re --rank 2 --format onnx --out rank2/
    einspace export results/addnist-re --trial 17 --format pytorch --out t17/
    einspace export resnet18 --input-shape 3,32,32 --num-classes 10 --weights rn18.pt \\
        --format torchscript --out rn18/
    einspace export my_net.txt --task addnist_lite --weights w.pt --out w/  # raw task arrays

A run directory gives the task's shapes and the trial's trained weights, and its export takes the
task's raw arrays (the trainer's normalisation is its first operation; ``--bare`` exports the
network alone); an architecture (text, a file, a seed name) needs ``--input-shape`` and exports
random initial weights unless ``--weights`` is given; with ``--task`` the task gives its shapes
and the export takes its raw arrays, like a run's.  Formats that fail are reported with the
node and the reason (exit 2) after the others are written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from einspace.errors import EinspaceError

from .formats import DEFAULT_FORMAT, FORMATS

FLAGS_OF_ARCHITECTURES = ("input_shape", "num_classes", "output_shape", "weights")


def cmd_export(args) -> None:
    from .pipeline import export
    from .source import from_run, from_spec, from_task

    if not args.source.lstrip().startswith("(") and Path(args.source).is_dir():
        given = [f"--{f.replace('_', '-')}" for f in FLAGS_OF_ARCHITECTURES
                 if getattr(args, f) is not None]
        if given:
            raise EinspaceError(f"{', '.join(given)} cannot be used with a run directory (it "
                                f"knows its task's shapes and its trials' weights)")
        candidate = from_run(args.source, rank=args.rank, trial=args.trial,
                             allow_untrained=args.allow_untrained, bare=args.bare)
    else:
        if args.rank is not None or args.trial is not None:
            raise EinspaceError(f"--rank and --trial choose a trial of a run directory, and "
                                f"{args.source!r} is not a directory")
        if args.task is not None:
            given = [f"--{f.replace('_', '-')}" for f in FLAGS_OF_ARCHITECTURES[:3]
                     if getattr(args, f) is not None]
            if given:
                raise EinspaceError(f"{', '.join(given)} cannot be used with --task (the task "
                                    f"gives the shapes)")
            candidate = from_task(args.source, args.task, args.weights, size=args.task_size,
                                  seed=args.task_seed, bare=args.bare)
        elif args.bare:
            raise EinspaceError("--bare applies to a run directory or --task (an architecture "
                                "alone is always exported bare)")
        else:
            candidate = from_spec(args.source, args.input_shape, args.num_classes,
                                  args.output_shape, args.weights)
    formats = FORMATS if args.format == "all" else (args.format,)
    done = export(candidate, formats, args.out, force=args.force)
    if done.card is not None:
        if args.json:
            print(json.dumps(done.card))
        else:
            _report(done)
    if done.failures:
        raise EinspaceError("; ".join(str(e) for e in done.failures))


def _report(done) -> None:
    card = done.card
    source = card["source"]
    what = (f"trial {source['trial']} of {source['run_dir']}" if source["kind"] == "run"
            else source.get("spec") or "the architecture")
    print(f"exported {what} ({card['hash']}, {card['parameters']:,} parameters) to "
          f"{done.out_dir}, each file checked in a Python process without einspace:")
    for fmt, entry in card["formats"].items():
        how = {"pt2": f"torch.export, batch {entry.get('batch')}",
               "torchscript": entry.get("method"),
               "onnx": f"opset {entry.get('opset')}, batch {entry.get('batch')}",
               "pytorch": "generated code"}[fmt]
        print(f"  {fmt:12s} {', '.join(entry['files']):26s} {how}, max |error| "
              f"{entry['max_abs_error']:.2g}")
        if "note" in entry:
            print(f"  {'':12s} note: {entry['note']}")
    weights = card["weights"]
    print(f"  {'input':12s} {_input_line(card['input'])}")
    print(f"  {'card':12s} card.json")
    print(f"  {'weights':12s} {weights.get('note') or weights.get('file') or weights['kind']}")


def _input_line(entry: dict) -> str:
    if not entry["applied_inside_export"]:
        return "float32 tensors (bare network, no preprocessing inside)"
    shape = ", ".join(map(str, entry["input_shape"]))
    return (f"raw {entry['input_dtype']} arrays ({shape}); inside: "
            f"{', '.join(entry['steps'])} ({entry['statistics_of']} statistics)")


def add_export_command(sub, input_shape, positive_int) -> None:
    """Register ``export`` on the main parser's subcommands (``input_shape`` and
    ``positive_int`` are the CLI's argument types)."""
    p = sub.add_parser("export", help="export an architecture to torch.export (.pt2), ONNX, "
                       "plain PyTorch or TorchScript",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=__doc__.split("\n\n")[1])
    p.add_argument("source", help="a search run directory, derivation text, a file holding it, "
                   "or a seed name")
    p.add_argument("--format", choices=[*FORMATS, "all"], default=DEFAULT_FORMAT,
                   help=f"what to write (default {DEFAULT_FORMAT}: model.pt2)")
    p.add_argument("--out", required=True, help="directory to write into (new or empty)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--rank", type=positive_int, help="the K-th best successful trial of a run")
    which.add_argument("--trial", type=int, help="a run's trial by its index")
    p.add_argument("--allow-untrained", action="store_true",
                   help="export a run's trial without weights (random initial weights)")
    p.add_argument("--bare", action="store_true", help="export a run's (or --task's) network "
                   "without the trainer's input normalisation (it then takes normalised float32 "
                   "tensors)")
    p.add_argument("--task", help="the task an architecture's --weights were trained on (a "
                   "built-in name or unseen:/path): gives the shapes and the input normalisation")
    p.add_argument("--task-size", default="default", help="the built-in task's size")
    p.add_argument("--task-seed", type=int, default=0, help="the built-in task's seed")
    p.add_argument("--input-shape", type=input_shape, help="C,H,W or N,D (architectures only)")
    p.add_argument("--num-classes", type=positive_int, help="a classification head")
    p.add_argument("--output-shape", type=input_shape, help="a dense head: C,H,W or H,W")
    p.add_argument("--weights", help="a state_dict file of the architecture (default: random "
                   "initial weights)")
    p.add_argument("--force", action="store_true", help="replace an earlier export in --out")
    p.add_argument("--json", action="store_true", help="print the card as one JSON object")
    p.set_defaults(run=cmd_export)
