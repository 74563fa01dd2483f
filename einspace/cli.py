"""The ``einspace`` command: sample, inspect, distance, seeds, terminals, tasks, grammar, search,
evaluate, export, report.

Every input error (bad architecture text, impossible shape, unknown seed, bad config, bad
arguments) ends with a one-line ``einspace: error: ...`` on stderr and exit status 2.

Each command imports what it needs when it runs (the terminals import torch, the grammar nltk,
the search Ray and Optuna), so ``einspace --help`` and ``einspace COMMAND --help`` answer at once.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import EinspaceError

if TYPE_CHECKING:
    from .analysis import Annotation

BASELINE_RESULTS = "results/baselines.jsonl"
"""Where ``tasks baseline`` appends its records unless ``--out`` says otherwise (the default of
:func:`einspace.tasks.baseline.append_record`, written out here so ``--help`` needs no torch)."""


class UsageError(EinspaceError):
    """Bad command-line arguments."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def input_shape(text: str) -> tuple[int, ...]:
    """An argparse type: ``einspace.analysis.parse_input_shape``, its error as a usage error."""
    from .analysis import parse_input_shape
    from .errors import ShapeError

    try:
        return parse_input_shape(text)
    except ShapeError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def cmd_sample(args) -> None:
    from .config import load_space_config
    from .inspect import human, shape_str

    space = load_space_config(args.config)
    sampler = space.sampler()
    for i in range(args.n):
        seed = args.seed + i
        sampled = sampler.sample(args.input_shape, random.Random(seed))
        info = _describe(sampled.annotation, args.num_classes)
        info["seed"] = seed
        if args.json:
            print(json.dumps(info))
        else:
            print(f"# seed {seed}  hash {info['hash']}  params {human(info['params'])}  "
                  f"FLOPs {human(info['flops'])}  output {shape_str(tuple(info['output_shape']))}"
                  f"  nodes {info['nodes']}  depth {info['depth']}")
            print(info["arch"])


def _describe(annotation, num_classes: int | None) -> dict:
    from .heads import head_cost
    from .inspect import summary

    info = summary(annotation)
    if num_classes:
        head = head_cost(annotation.output_shape, num_classes, None)
        info.update(params=info["params"] + head.params, flops=info["flops"] + head.flops,
                    num_classes=num_classes)
    return info


def _write_picture(write: Callable[[Annotation, str], object], annotation: Annotation,
                   path: str, what: str) -> str:
    """Write one picture of ``annotation`` and return its path for the report; a path the system
    refuses becomes a one-line error that says which of the pictures failed."""
    try:
        write(annotation, path)
    except OSError as e:
        raise EinspaceError(f"cannot write {what} {path}: {e.strerror}") from None
    return str(path)


def cmd_inspect(args) -> None:
    from .analysis import annotate
    from .architecture_source import resolve_architecture
    from .dataflow_picture import write_dataflow
    from .inspect import render_tree, shape_str

    derivation = resolve_architecture(args.arch)
    annotation = annotate(derivation, args.input_shape)
    info = _describe(annotation, args.num_classes)
    if args.graph:
        info["graph"] = _write_picture(write_dataflow, annotation, args.graph, "graph")
    if args.tree:
        from .tree_picture import write_tree
        info["tree"] = _write_picture(write_tree, annotation, args.tree, "tree")
    trained = None
    if args.weights:
        from .trained import trained_weights
        trained = trained_weights(derivation, args.input_shape, args.weights, args.num_classes)
        info["weights"] = trained.to_json()
    if args.json:
        print(json.dumps(info))
        return
    print(render_tree(annotation, trained.columns(derivation) if trained else None))
    print(f"\nhash {info['hash']}  params {info['params']:,}  FLOPs {info['flops']:,}  "
          f"activations {info['activations']:,}  nodes {info['nodes']}  depth {info['depth']}"
          f"  output {shape_str(annotation.output_shape)} ({info['output_mode']})")
    if trained:
        print(trained.footer())
    if args.graph:
        print(f"data-flow graph written to {args.graph}")
    if args.tree:
        print(f"derivation tree written to {args.tree}")


def cmd_distance(args) -> None:
    from .architecture_source import resolve_architecture
    from .canonical_form import canonical_hash
    from .tree_distance import EditWeights, tree_distance

    a, b = resolve_architecture(args.a), resolve_architecture(args.b)
    weights = EditWeights(args.relabel_terminal, args.relabel_production, args.indel_node)
    d = tree_distance(a, b, weights)
    same = canonical_hash(a) == canonical_hash(b)
    if args.json:
        print(json.dumps({"distance": d, "same_network": same, "a_hash": a.hash,
                          "b_hash": b.hash, "a_canonical_hash": canonical_hash(a),
                          "b_canonical_hash": canonical_hash(b)}))
        return
    print(f"{d:g}" + ("  (the same network)" if same else ""))


def cmd_report(args) -> None:
    from einspace.search.report import write_report

    print(write_report(args.run_dir, args.out, top_k=args.top_k, graphs=args.graphs).text)


def cmd_seeds(args) -> None:
    from .seeds import load_seed, seed_names

    for name in seed_names():
        derivation = load_seed(name)
        if args.json:
            print(json.dumps({"name": name, "hash": derivation.hash, "nodes": derivation.size,
                              "arch": derivation.text}))
        else:
            print(f"{name:12s} {derivation.hash}  {derivation.size} nodes")


def cmd_terminals(args) -> None:
    from einspace.blocks.registry import terminals

    rows = [{"name": t.name, "kind": t.kind.value, "modes": sorted(t.modes),
             "family": t.family, "paper": t.paper, "seed_papers": list(t.seed_papers),
             "category": t.category,
             "parameters": t.hyperparameters(), "description": t.description,
             "reference": t.reference} for t in terminals()]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    if args.papers:
        print(papers_table(rows))
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["parameters"].items())
        print(f"{r['kind']:12s} {r['name']:{width}s}  {'/'.join(r['modes']):7s} "
              f"{r['family']:14s} {params:28s} {r['paper']}")


def papers_table(rows: list[dict]) -> str:
    """Markdown table: seed paper -> its terminals with kind and modes (the README's table)."""
    from einspace.blocks.seed_papers import PRIMITIVE_PAPERS

    by_paper: dict[int, list[dict]] = {number: [] for number in PRIMITIVE_PAPERS}
    for r in rows:
        for number in r["seed_papers"]:
            by_paper.setdefault(number, []).append(r)
    lines = ["| # | paper | terminals | kind | modes | family |", "|---|---|---|---|---|---|"]
    for number, items in sorted(by_paper.items()):
        names = ", ".join(f"`{r['name']}`" for r in items) or "—"
        kinds = ", ".join(sorted({r["kind"] for r in items}))
        modes = ", ".join(sorted({m for r in items for m in r["modes"]}))
        families = ", ".join(sorted({r["family"] for r in items}))
        title = PRIMITIVE_PAPERS.get(number, items[0]["paper"] if items else "")
        lines.append(f"| {number} | {title} | {names} | {kinds} | {modes} | {families} |")
    return "\n".join(lines)


def cmd_tasks(args) -> None:
    from einspace.tasks.handle import resolve_task
    from einspace.tasks.registry import build_task, list_tasks

    def dims(shape: tuple[int, ...]) -> str:  # flat task shapes: einspace.inspect imports torch
        return "×".join(map(str, shape))

    if args.tasks_command == "list":
        for spec in list_tasks():
            if args.json:
                print(json.dumps(spec.summary()))
            else:
                shape = dims(spec.input_shape)
                out = spec.num_classes or dims(spec.target_shape or ())
                print(f"{spec.name:18s} {shape:10s} -> {str(out):8s} {spec.metric:16s} "
                      f"{spec.description}")
    elif args.tasks_command == "show":
        info = resolve_task(args.name).summary()
        if args.json:
            print(json.dumps(info))
        else:
            for key, value in info.items():
                if isinstance(value, dict):
                    value = ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
                print(f"{key:16s} {value}")
    elif args.tasks_command == "baseline":
        cmd_tasks_baseline(args)
    else:
        try:
            directory = build_task(args.name, args.root, args.seed, args.size, args.force)
        except OSError as e:
            raise EinspaceError(f"cannot write task {args.name!r}: {e.strerror}: "
                                f"{e.filename}") from None
        print(directory)


def cmd_tasks_baseline(args) -> None:
    """Train a seed (or any architecture) on a task with its recipe; print and record the score.
    A run that fails to train is recorded, then reported as an error."""
    from einspace.tasks.baseline import append_record, run_baseline
    from einspace.tasks.handle import resolve_task
    from einspace.tasks.status import Status

    from .architecture_source import resolve_architecture
    from .seeds import seed_names

    task = resolve_task(args.name)  # an unknown name fails before the architecture is parsed
    derivation = resolve_architecture(args.arch)
    overrides = {"seed": args.seed}
    if args.epochs is not None:
        overrides["eval_epochs" if args.final else "epochs"] = args.epochs
    if args.seconds is not None:
        overrides["max_seconds"] = args.seconds

    def progress(epoch: int, metrics: dict) -> None:
        if not args.json:
            print(f"  epoch {epoch}  loss {metrics['train_loss']:.4f}  score "
                  f"{metrics['score']:.4f}  {metrics['seconds']:.1f} s", file=sys.stderr)

    record = run_baseline(task, derivation,
                          args.arch if args.arch in seed_names() else derivation.text,
                          overrides, final=args.final, root=args.root, size=args.size,
                          callback=progress)
    try:
        out = append_record(record, args.out)
    except OSError as e:
        raise EinspaceError(f"cannot write results file {args.out}: {e.strerror}") from None
    if record["status"] == Status.FAILED:
        raise EinspaceError(f"{args.arch} failed to train on {args.name}: {record['reason']} "
                            f"(recorded in {out})")
    if args.json:
        print(json.dumps(record))
        return
    name = args.arch if args.arch in seed_names() else record["hash"]
    print(f"{args.name} {name}: {record['metric']} {record['score']:.4f} on "
          f"{record['eval_split']}  epochs {record['epochs']}/{record['planned_epochs']}  "
          f"{record['seconds']:.1f} s  params {record['params']:,}  (recorded in {out})")


def cmd_grammar(args) -> None:
    from .config import load_space_config

    print(load_space_config(args.config).grammar.to_text(), end="")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="einspace", description="Neural architecture search over the "
                     "einspace grammar.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("sample", help="draw architectures from the grammar")
    p.add_argument("--input-shape", type=input_shape, required=True, help="C,H,W or N,D")
    p.add_argument("-n", type=positive_int, default=1, help="how many (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first; the i-th uses seed+i")
    p.add_argument("--num-classes", type=positive_int, help="count a classification head too")
    p.add_argument("--config", help="YAML config with grammar/budget sections")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=cmd_sample)

    p = sub.add_parser("inspect", help="show an architecture's shapes, costs and graph")
    p.add_argument("arch", help="derivation text, a file holding it, or a seed name")
    p.add_argument("--input-shape", type=input_shape, required=True, help="C,H,W or N,D")
    p.add_argument("--num-classes", type=positive_int, help="count a classification head too")
    p.add_argument("--graph", help="write the data-flow graph: a picture (.png, .svg) or "
                   "its data (.dot, .graphml)")
    p.add_argument("--tree", help="write the derivation tree (.png, .dot or .graphml)")
    p.add_argument("--weights", metavar="FILE", help="a trained state_dict (RUN/weights/"
                   "trial-N.pt): show its parameters and L2 norm per node")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_inspect)

    p = sub.add_parser("distance", help="tree edit distance between two architectures (0: the "
                       "same network)")
    p.add_argument("a", help="derivation text, a file holding it, or a seed name")
    p.add_argument("b", help="derivation text, a file holding it, or a seed name")
    p.add_argument("--relabel-terminal", type=float, default=1.0,
                   help="cost of one terminal for another (default 1)")
    p.add_argument("--relabel-production", type=float, default=1.0,
                   help="cost of one production for another (default 1)")
    p.add_argument("--indel-node", type=float, default=1.0,
                   help="cost per node of inserting or deleting a subtree (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=cmd_distance)

    p = sub.add_parser("report", help="summarise a search run: text, figures, an HTML page")
    p.add_argument("run_dir")
    p.add_argument("--out", help="report directory (default RUN_DIR/report)")
    p.add_argument("--top-k", type=positive_int, default=10,
                   help="candidates listed and compared in the terminal figure (default 10)")
    p.add_argument("--graphs", type=int, default=5,
                   help="data-flow graphs of the best N candidates (default 5; 0 for none)")
    p.set_defaults(run=cmd_report)

    p = sub.add_parser("seeds", help="list the shipped seed architectures")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=cmd_seeds)

    p = sub.add_parser("terminals", help="list every registered terminal")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--papers", action="store_true",
                   help="a Markdown table of seed papers and their terminals")
    p.set_defaults(run=cmd_terminals)

    p = sub.add_parser("tasks", help="built-in tasks: list, show, build, baseline")
    tasks = p.add_subparsers(dest="tasks_command", parser_class=_Parser, metavar="ACTION",
                             required=True)
    q = tasks.add_parser("list", help="every built-in task")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q = tasks.add_parser("show", help="one task's specification, or what an unseen:DIR "
                         "holds")
    q.add_argument("name", help="a built-in task or unseen:/path/to/dir")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q = tasks.add_parser("build", help="generate a task into the cache (or --root)")
    q.add_argument("name")
    q.add_argument("--root", help="directory to build into (default: the einspace cache)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--size", choices=["small", "default"], default="default")
    q.add_argument("--force", action="store_true", help="rebuild even if cached")
    q = tasks.add_parser("baseline", help="train an architecture with the task's recipe and "
                         "record its score")
    q.add_argument("name", help="a built-in task or unseen:/path/to/dir")
    q.add_argument("--arch", required=True,
                   help="a seed name (mlp, resnet18, ...), derivation text, or a file holding it")
    q.add_argument("--epochs", type=positive_int,
                   help="epochs instead of the recipe's (its eval_epochs with --final)")
    q.add_argument("--seconds", type=positive_float, help="stop after the epoch that passes S s")
    q.add_argument("--final", action="store_true",
                   help="retrain on train+valid for the recipe's eval_epochs and score test")
    q.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    q.add_argument("--size", choices=["small", "default"], default="default",
                   help="task size of a built-in task (default: default)")
    q.add_argument("--root", help="where built-in tasks are built (default: the einspace cache)")
    q.add_argument("--out", default=BASELINE_RESULTS,
                   help=f"JSON-lines file the record is appended to (default {BASELINE_RESULTS})")
    q.add_argument("--json", action="store_true", help="print the record as one JSON object")
    p.set_defaults(run=cmd_tasks)

    p = sub.add_parser("grammar", help="print the active grammar (after config overrides)")
    p.add_argument("--config", help="YAML config with a grammar section")
    p.set_defaults(run=cmd_grammar)

    from einspace.search.commands import add_search_commands
    add_search_commands(sub, positive_int, positive_float)

    from .export.command import add_export_command
    add_export_command(sub, input_shape, positive_int)
    parser.commands = list(sub.choices)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            raise UsageError(f"a command is required ({', '.join(parser.commands)}); see "
                             f"einspace --help")
        args.run(args)
    except EinspaceError as e:
        print(f"einspace: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except OSError as e:  # a path the system refuses (too long, no permission, disk full)
        where = f"{str(e.filename)[:200]}: " if e.filename else ""
        print(f"einspace: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("einspace: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
