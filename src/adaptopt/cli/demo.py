"""``adaptopt demo``: the main job: smoothness along training, a small Table 1, theory."""

from __future__ import annotations

import argparse
from pathlib import Path

from adaptopt.experiments.demo import run_demo


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="smoothness along training, Table 1 optimizers on an LSTM (PTB), theory; a report",
        description="Probe L̂ against ‖∇F‖ along training of the WikiText-2 Transformer (paper "
        "Fig. 1a), train the paper's Table 1 optimizers with 3 seeds on a small AWD-LSTM on PTB, "
        "run the theory demos, and write a Markdown/HTML report (minutes on 2 CPU cores).",
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
