"""``adaptopt optimizers``: list the registry with each optimizer's hyperparameters."""

from __future__ import annotations

import argparse
import inspect

from adaptopt.optim import OPTIMIZERS, hyperparameters


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("optimizers", help="list optimizers and their hyperparameters")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for name, cls in sorted(OPTIMIZERS.items()):
        signature = inspect.signature(cls.__init__).parameters
        hps = ", ".join(
            p if signature[p].default is inspect.Parameter.empty else f"{p}={signature[p].default}"
            for p in hyperparameters(name)
        )
        print(f"{name:18s} {cls.__module__}.{cls.__qualname__}({hps})")
    return 0
