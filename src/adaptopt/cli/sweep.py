"""``adaptopt sweep``: a grid search from a TOML file (see adaptopt.experiments.sweep)."""

from __future__ import annotations

import argparse
from pathlib import Path

from adaptopt.experiments.sweep import print_settings, sweep


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="grid search on the validation split",
        description="Run every point of the grid in SPEC (TOML) × seeds into OUT/runs/<run id>, "
        "skipping finished runs, and print the best setting per optimizer.",
    )
    parser.add_argument("spec", type=Path, help="sweep file (TOML)")
    parser.add_argument("--out", type=Path, required=True, help="sweep directory")
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    add_executor_arguments(parser)
    parser.set_defaults(func=run)


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """``--executor`` and the SLURM options (shared with ``adaptopt study run``)."""
    parser.add_argument("--executor", choices=("local", "slurm"), default="local")
    slurm = parser.add_argument_group("SLURM (with --executor slurm; needs submitit)")
    slurm.add_argument("--partition", help="SLURM partition")
    slurm.add_argument("--timeout-min", type=int, default=24 * 60, help="time limit per run")
    slurm.add_argument("--gpus-per-node", type=int, default=1)
    slurm.add_argument("--cpus-per-task", type=int, default=4)
    slurm.add_argument(
        "--array-parallelism", type=int, default=64, help="runs of the array job at a time"
    )


def slurm_parameters(args: argparse.Namespace) -> dict:
    """submitit parameters from the SLURM options."""
    return {
        "timeout_min": args.timeout_min,
        "gpus_per_node": args.gpus_per_node,
        "cpus_per_task": args.cpus_per_task,
        "slurm_array_parallelism": args.array_parallelism,
    } | ({"slurm_partition": args.partition} if args.partition else {})


def run(args: argparse.Namespace) -> int:
    slurm = slurm_parameters(args)
    best = sweep(args.spec, args.out, workers=args.workers, executor=args.executor, slurm=slurm)
    print_settings(best)
    print(f"best settings: {args.out / 'best.json'}")
    return 0
