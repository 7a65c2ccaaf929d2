"""``adaptopt seeds``: retrain a setting with N seeds on all training data, test at the end."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from adaptopt.cli.train import add_run_arguments, run_config
from adaptopt.experiments.report import table1, to_markdown
from adaptopt.experiments.rundir import find_runs
from adaptopt.experiments.seeds import best_from_sweep, run_seeds


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "seeds",
        help="retrain the best (or a given) setting with N seeds",
        description="Train each setting with --seeds seeds on the full training data into "
        "OUT/runs/<run id> (finished runs are skipped) and print Table 1.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-sweep", type=Path, help="take the best settings of this sweep")
    source.add_argument("--task", help="task name (with --optimizer and --hparam)")
    parser.add_argument(
        "--optimizer",
        nargs="+",
        default=[],
        help="optimizer(s); with --from-sweep: a subset of the sweep's",
    )
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0..N-1)")
    parser.add_argument("--out", type=Path, required=True, help="study directory")
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    add_run_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.from_sweep:
        budget = ("epochs", "batch_size", "max_steps_per_epoch")
        overrides = {k: getattr(args, k) for k in budget if getattr(args, k) is not None}
        settings = [
            dataclasses.replace(s, **overrides)
            for s in best_from_sweep(args.from_sweep, args.optimizer)
        ]
    elif not args.optimizer:
        raise SystemExit("--task needs --optimizer")
    else:
        settings = [run_config(args, task=args.task, optimizer=o) for o in args.optimizer]
    run_seeds(settings, args.out, args.seeds, workers=args.workers)
    runs = [r for r in find_runs([args.out]) if not r.config.get("validation")]
    print(to_markdown(table1(runs)))
    return 0
