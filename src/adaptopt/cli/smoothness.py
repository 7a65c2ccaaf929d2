"""``adaptopt smoothness fit|plot RECORDS``: (L0, L1) fits and paper-style plots of a run's
smoothness records (a ``smoothness.jsonl`` file or a run directory holding one)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from adaptopt.smoothness import fit_records, plot_records, read_records
from adaptopt.smoothness.records import QUANTITIES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "smoothness", help="fit and plot (L0,L1)-smoothness records of a run"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    for name, func, help_ in (
        ("fit", _fit, "print the fitted L0, L1 per layer"),
        ("plot", _plot, "log-log scatter coloured by iteration with the fitted line"),
    ):
        sub = actions.add_parser(name, help=help_)
        sub.add_argument("records", type=Path, help="smoothness.jsonl or a run directory")
        sub.add_argument(
            "--quantity",
            choices=QUANTITIES,
            default="norm",
            help="norm: global/per-layer L̂_t (Fig. 1); coord: coordinates (Fig. 3)",
        )
        sub.add_argument(
            "--coverage",
            type=float,
            default=1.0,
            help="fraction of points the line must lie above (default 1)",
        )
        sub.add_argument(
            "--layer",
            action="append",
            dest="layers",
            metavar="NAME",
            help="restrict to this layer (repeatable); '__global__' for the model",
        )
        sub.set_defaults(func=_run, action_func=func)
        if name == "fit":
            sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        else:
            sub.add_argument(
                "-o",
                "--output",
                type=Path,
                help="output image (default: smoothness_<quantity>.png next to the records)",
            )
            sub.add_argument("--max-panels", type=int, default=12)


def _run(args: argparse.Namespace) -> int:
    try:
        return args.action_func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"adaptopt smoothness {args.action}: error: {e}", file=sys.stderr)
        return 2


def _fit(args: argparse.Namespace) -> int:
    fits = fit_records(read_records(args.records), args.quantity, args.coverage)
    if args.layers:
        unknown = sorted(set(args.layers) - fits.keys())
        if unknown:
            raise ValueError(f"no {args.quantity!r} rows for layers {unknown}")
        fits = {n: fits[n] for n in args.layers}
    if args.json:
        print(json.dumps({n: asdict(f) for n, f in fits.items()}, indent=2))
        return 0
    width = max(len(n) for n in fits)
    print(f"{'layer':<{width}}  {'L0':>11}  {'L1':>11}  {'covered':>7}  {'n':>6}")
    for name, f in fits.items():
        print(f"{name:<{width}}  {f.L0:>11.4g}  {f.L1:>11.4g}  {f.covered:>7.1%}  {f.n:>6}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    records = read_records(args.records)
    output = args.output
    if output is None:
        folder = args.records if args.records.is_dir() else args.records.parent
        output = folder / f"smoothness_{args.quantity}.png"
    plot_records(
        records,
        quantity=args.quantity,
        layers=args.layers,
        coverage=args.coverage,
        max_panels=args.max_panels,
        path=output,
    )
    print(output)
    return 0
