"""The ``adaptopt`` command line: one subcommand per area.

Each subcommand lives in ``adaptopt.cli.<name>`` and exposes ``register(subparsers)``, which
adds its parser and sets ``func`` to a callable taking the parsed ``argparse.Namespace``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

COMMANDS = (
    "optimizers",
    "smoothness",
    "train",
    "sweep",
    "seeds",
    "report",
    "study",
    "demo",
    "theory",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adaptopt",
        description="Optimizers, smoothness probes and experiments for (L0,L1)-smooth losses.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"adaptopt.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
