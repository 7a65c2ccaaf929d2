"""``adaptopt demo``: the main job — a small Table 1 study on CPU, theory demos, a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from adaptopt.experiments.demo import run_demo


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="Table 1 optimizers on Fashion-MNIST (3 seeds, ~10 min on 2 CPU cores) + theory",
        description="Train the paper's Table 1 optimizers with 3 seeds on Fashion-MNIST at a "
        "reduced budget, run the theory demos, and write a Markdown/HTML report.",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="study directory")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="parallel training processes")
    parser.add_argument("--smoke", action="store_true", help="seconds-scale version (tests)")
    parser.add_argument(
        "--no-theory", dest="theory", action="store_false", help="skip the theory demos"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = run_demo(
        args.out, seeds=args.seeds, workers=args.workers, smoke=args.smoke, with_theory=args.theory
    )
    table = report.read_text().split("## Table 1", 1)[1].split("\n## ", 1)[0]
    print(f"## Table 1{table.rstrip()}\n\nreport: {report.resolve()}")
    print(f"html:   {report.with_suffix('.html').resolve()}")
    return 0
