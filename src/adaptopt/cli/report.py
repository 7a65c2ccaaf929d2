"""``adaptopt report``: Markdown + HTML report from run directories."""

from __future__ import annotations

import argparse
from pathlib import Path

from adaptopt.experiments.report import make_report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="tables and figures from run directories",
        description="Read run directories (nothing is rerun) and write report.md, report.html "
        "and PNGs: Table 1 with 95%% t-intervals, curves, sweep heatmaps, smoothness plots.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run directories or folders of them")
    parser.add_argument("--out", type=Path, help="report folder (default: PATHS[0]/report)")
    parser.add_argument("--title", default="adaptopt report")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = args.out or args.paths[0] / "report"
    print(make_report(args.paths, out, title=args.title))
    return 0
