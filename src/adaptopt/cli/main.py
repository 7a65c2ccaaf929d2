"""The ``adaptopt`` command line: one subcommand per area.

Each subcommand lives in ``adaptopt.cli.<name>`` and exposes ``register(subparsers)``, which
adds its parser and sets ``func`` to a callable taking the parsed ``argparse.Namespace``.

A mistake in the user's input (:class:`adaptopt.errors.UserError`: an unknown name, a bad value,
missing or damaged data, a malformed file, an existing run directory) ends the command with one
message on stderr and exit status 2, as argparse does for bad arguments; ``--debug`` shows the
traceback instead. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import torch

import adaptopt
from adaptopt._optional import MissingExtraError
from adaptopt.errors import UserError

COMMANDS = (  # one per line: adaptopt.cli.<name>
    "optimizers",
    "smoothness",
    "train",
    "sweep",
    "seeds",
    "report",
    "study",
    "demo",
    "theory",
    "data",
)
USAGE_ERROR = 2  # exit status of user mistakes, as argparse uses for bad arguments
# packages of the extras: a command whose module needs one is listed but explains what to install
_EXTRA_PACKAGES = {
    "scipy": "experiments",
    "matplotlib": "experiments",
    "tqdm": "experiments",
    "markdown": "experiments",
    "tomli": "experiments",
    "spacy": "experiments",
    "sacrebleu": "experiments",
    "submitit": "slurm",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adaptopt",
        description="Optimizers, smoothness probes and experiments for (L0,L1)-smooth losses.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"adaptopt {adaptopt.__version__} (torch {torch.__version__})",
    )
    debug_help = "show the full traceback of an error"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"adaptopt.cli.{name}")
        except ModuleNotFoundError as err:
            package = (err.name or "").split(".")[0]
            if package not in _EXTRA_PACKAGES:
                raise
            _register_unavailable(subparsers, name, package, _EXTRA_PACKAGES[package])
            continue
        module.register(subparsers)
    for sub in subparsers.choices.values():  # --debug also after the command
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return parser


def _register_unavailable(
    subparsers: argparse._SubParsersAction, name: str, package: str, extra: str
) -> None:
    """A placeholder for a command whose extra is not installed."""
    parser = subparsers.add_parser(name, help=f"(needs: pip install 'adaptopt[{extra}]')")
    parser.add_argument("args", nargs=argparse.REMAINDER)

    def run(args: argparse.Namespace) -> int:
        raise MissingExtraError(package, extra, f"adaptopt {name}")

    parser.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        if args.debug:
            raise
        return _usage_error(str(err))
    except SystemExit as exit_:  # raise SystemExit("message"): a command's own usage check
        if args.debug or not isinstance(exit_.code, str):
            raise
        return _usage_error(exit_.code)


def _usage_error(message: str) -> int:
    print(f"adaptopt: error: {message}", file=sys.stderr)
    return USAGE_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
