"""``einspace search`` and ``einspace evaluate``: the command-line face of the search.

    einspace search --config quickstart                 # a shipped config, local Ray
    einspace search --config my.yaml --task unseen:/data/addnist --time 2h --workers 8 \\
        --gpus-per-trial 0.25 --address head-ip:6379 --out results/addnist-re
    einspace search --resume results/addnist-re          # after a crash or a time limit
    einspace evaluate results/addnist-re --top-k 3       # retrain on train+valid, score test

Flags override the config file; the resolved config is written into the run directory.
``--trials N`` and ``--time 30m`` are the search's budget: ``--time`` alone lifts the config's
trial limit (the search runs that long), ``--trials`` alone keeps a time limit the config sets,
and both together stop the search at whichever is spent first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from einspace.errors import ConfigError

RESULTS = Path("results")


BUDGET_DEPRECATED = ("einspace: --budget is deprecated (it meant trials or time, while budget: in "
                     "a config means architecture limits); use --trials N or --time 30m")


def strategy_choice(name: str) -> str:
    """``--strategy``'s check: a registered strategy's name.  A type rather than argparse
    ``choices``, which ``--help`` would list, importing every strategy (torch, Optuna)."""
    from .strategies import strategy_names

    if name not in strategy_names():
        known = ", ".join(map(repr, strategy_names()))
        raise argparse.ArgumentTypeError(f"invalid choice: {name!r} (choose from {known})")
    return name


def budget_override(trials: int | None, time_budget: str | None) -> dict:
    """The ``search`` keys of ``--trials N`` and ``--time 30m`` (``2h``, ``900s``); ``--time``
    without ``--trials`` lifts the config's trial limit, as the time is the budget asked for."""
    from .config import parse_duration

    if time_budget is None:
        return {} if trials is None else {"trials": trials}
    parse_duration(time_budget)
    return {"time": time_budget, "trials": trials}


def deprecated_budget(text: str) -> dict:
    """``--budget 50`` (trials) or ``--budget 30m`` (time), as ``--trials``/``--time`` would
    give; the deprecation note is printed once the value is known to be good, so a bad value
    still fails with its one-line error alone."""
    if text.isdigit():
        if int(text) < 1:
            raise ConfigError("--budget must be at least 1 trial")
        override = budget_override(int(text), None)
    else:
        override = budget_override(None, text)
    print(BUDGET_DEPRECATED, file=sys.stderr)
    return override


def _overrides(args) -> dict:
    search: dict = {}
    if args.strategy:
        search["strategy"] = args.strategy
    if args.budget is not None:
        if args.trials is not None or args.time is not None:
            raise ConfigError("--budget (deprecated) cannot be combined with --trials or --time")
        search.update(deprecated_budget(args.budget))
    else:
        search.update(budget_override(args.trials, args.time))
    for key in ("workers", "cpus_per_trial", "gpus_per_trial", "address"):
        if getattr(args, key) is not None:
            search[key] = getattr(args, key)
    data: dict = {"search": search} if search else {}
    task: dict = {}
    if args.task:
        task["name"] = args.task
    if args.task_size:
        task["size"] = args.task_size
    if task:
        data["task"] = task
    if args.seed is not None:
        data["seed"] = args.seed
    if args.epochs is not None:
        data["training"] = {"epochs": args.epochs}
    if args.no_final:
        data["final"] = {"top_k": 0}
    return data


def cmd_search(args) -> None:
    from .config import load_config
    from .engine import run_search
    from .run_dir import RunDir

    if args.resume:
        clashing = [flag for flag, value in (("--config", args.config), ("--task", args.task),
                                             ("--strategy", args.strategy),
                                             ("--budget", args.budget),
                                             ("--trials", args.trials), ("--time", args.time),
                                             ("--seed", args.seed),
                                             ("--epochs", args.epochs), ("--out", args.out),
                                             ("--task-size", args.task_size),
                                             ("--cpus-per-trial", args.cpus_per_trial),
                                             ("--gpus-per-trial", args.gpus_per_trial))
                    if value is not None]
        if clashing:
            raise ConfigError(f"--resume continues a run with its stored config; "
                              f"{', '.join(clashing)} cannot change it")
        summary = run_search(None, args.resume, resume=True, address=args.address,
                             workers=args.workers, final_top_k=0 if args.no_final else None,
                             quiet=args.quiet)
    else:
        from einspace.tasks.handle import resolve_task

        config = load_config(args.config, _overrides(args))
        out = Path(args.out) if args.out else RESULTS / (
            f"{resolve_task(config.task['name']).short_name}-{config.strategy}-"
            f"{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            summary = run_search(config, out, quiet=args.quiet)
        except KeyboardInterrupt:
            if RunDir(out).is_run():
                print(f"einspace: search stopped; continue it with `einspace search --resume "
                      f"{out}`", file=sys.stderr)
            raise
    print(f"run: {summary.run_dir}")
    rejected = f", {summary.rejected} rejected before training" if summary.rejected else ""
    print(f"trials: {summary.trials} ({summary.failed} failed{rejected}) in "
          f"{summary.seconds:.0f} s"
          + (f"; {summary.exhausted}" if summary.exhausted else ""))
    if summary.best_index is None:
        print("best: none (no trial succeeded)")
        return
    print(f"best: trial {summary.best_index}, score {summary.best_score:.4f}")
    seed = json.loads((summary.run_dir / "summary.json").read_text()).get("seed")
    if seed is not None:
        print(f"seed: trial {seed['index']} ({seed['origin'][len('seed:'):]}), score "
              f"{seed['score']:.4f}; improvement {summary.best_score - seed['score']:+.4f}")
    for entry in summary.final:
        test = "failed" if entry["test_score"] is None else f"{entry['test_score']:.4f}"
        print(f"final: trial {entry['index']} test score {test}")
    print(summary.best_derivation)


def cmd_evaluate(args) -> None:
    from .engine import evaluate_run

    results = evaluate_run(args.run_dir, top_k=args.top_k, epochs=args.epochs,
                           address=args.address, quiet=args.quiet)
    for entry in results:
        test = "failed" if entry["test_score"] is None else f"{entry['test_score']:.4f}"
        print(f"trial {entry['index']}: test score {test} ({entry['epochs']} epochs, "
              f"{entry['seconds']:.0f} s)")


def add_search_commands(sub, positive_int, positive_float) -> None:
    """Register ``search`` and ``evaluate`` on the main parser's subcommands."""
    from .shipped import shipped_names

    p = sub.add_parser("search", help="run (or resume) an architecture search with Ray",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=__doc__.split("\n\n")[1])
    p.add_argument("--config", help=f"YAML file or shipped config ({', '.join(shipped_names())})")
    p.add_argument("--task", help="built-in task name or unseen:/path/to/dir")
    p.add_argument("--task-size", choices=["small", "default"], help="built-in task size")
    p.add_argument("--strategy", type=strategy_choice, metavar="NAME",
                   help="a registered search strategy (shipped: evolution, random, optuna)")
    p.add_argument("--trials", type=positive_int, help="trained trials (duplicates and "
                   "rejected candidates do not count)")
    p.add_argument("--time", metavar="DURATION", help="wall-clock budget: 900s, 30m, 2h "
                   "(without --trials, the config's trial limit is lifted)")
    p.add_argument("--budget", help="deprecated: use --trials or --time")
    p.add_argument("--workers", type=positive_int, help="concurrent trials")
    p.add_argument("--cpus-per-trial", type=positive_float)
    p.add_argument("--gpus-per-trial", type=float, help="fractions share a GPU (0.25)")
    p.add_argument("--address", help="Ray cluster host:port, or 'local' (default: the "
                   "config's search.address, else a local Ray); with --resume it moves the run")
    p.add_argument("--out", help="run directory (default results/<task>-<strategy>-<time>)")
    p.add_argument("--seed", type=int, help="search seed")
    p.add_argument("--epochs", type=positive_int, help="training epochs per trial")
    p.add_argument("--no-final", action="store_true", help="skip the final evaluation")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped or killed run")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(run=cmd_search)

    p = sub.add_parser("evaluate", help="retrain a run's best on train+valid, score test")
    p.add_argument("run_dir")
    p.add_argument("--top-k", type=positive_int, help="how many of the best (default: config)")
    p.add_argument("--epochs", type=positive_int, help="epochs (default: the recipe's "
                   "eval_epochs)")
    p.add_argument("--address", help="Ray cluster address (default: start Ray locally)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=cmd_evaluate)
