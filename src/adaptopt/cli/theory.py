"""``adaptopt theory theorem1|gd-lower-bound|scale-free|sgdol-noise``: executable theory.

Each writes a Markdown and a CSV table and a PNG to ``--out`` and prints the Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adaptopt import theory


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "theory", help="Theorem 1 calculator and the theory demos (tables + PNG)"
    )
    actions = parser.add_subparsers(dest="action", required=True)

    sub = actions.add_parser(
        "theorem1", help="Theorem 1's alpha, beta1, eta, rho, thresholds on T and bound"
    )
    sub.add_argument("--L0", type=float, nargs="+", required=True, help="L0 (scalar or vector)")
    sub.add_argument("--L1", type=float, nargs="+", required=True, help="L1 (scalar or vector)")
    sub.add_argument(
        "--sigma", type=float, nargs="+", required=True, help="noise bound (scalar or vector)"
    )
    sub.add_argument("--Delta", type=float, required=True, help="upper bound on F(x1) - F*")
    sub.add_argument("-T", type=int, required=True, help="number of iterations")
    sub.add_argument("--beta2", type=float, required=True)
    sub.add_argument("--dim", type=int, help="dimension d when all constants are scalars")
    _add_out(sub, "theorem1")
    sub.set_defaults(func=_run, demo=_theorem1)

    sub = actions.add_parser(
        "gd-lower-bound", help="Theorem 2: GD's iterations grow with M*L1, sign methods' do not"
    )
    sub.add_argument("--M", type=float, nargs="+", default=[1, 3, 10, 30, 100, 300, 1000])
    sub.add_argument("--L0", type=float, default=1.0)
    sub.add_argument("--L1", type=float, default=1.0)
    sub.add_argument("--eps", type=float, default=0.25, help="target |f'| < eps")
    sub.add_argument("--Delta", type=float, default=1.0, help="f(x0) - f* of the Huber member")
    _add_out(sub, "gd_lower_bound")
    sub.set_defaults(func=_run, demo=_gd_lower_bound)

    sub = actions.add_parser(
        "scale-free", help="same iterates on f and its rescaled twin for scale-free methods"
    )
    sub.add_argument(
        "--h", type=float, nargs=2, default=[1.0, 20.0], help="Hessian diagonal of f (2-d)"
    )
    sub.add_argument("--steps", type=int, default=60)
    _add_out(sub, "scale_free")
    sub.set_defaults(func=_run, demo=_scale_free)

    sub = actions.add_parser("sgdol-noise", help="SGDOL (defaults) vs SGD tuned per noise level")
    sub.add_argument("--sigmas", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1, 1.0, 10.0])
    sub.add_argument("--gradients", type=int, default=1000, help="stochastic gradients per run")
    sub.add_argument("--seeds", type=int, default=5)
    _add_out(sub, "sgdol_noise")
    sub.set_defaults(func=_run, demo=_sgdol_noise)


def _add_out(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument(
        "--out", type=Path, default=Path("runs/theory") / name, help="output folder"
    )
    parser.set_defaults(table=name)


def _run(args: argparse.Namespace) -> int:
    try:
        args.demo(args)
    except ValueError as error:
        raise SystemExit(f"adaptopt theory {args.action}: {error}") from None
    table = args.out / f"{args.table}.md"
    print(table.read_text())
    print(f"written: {table.with_suffix('.csv')}, {table.with_suffix('.png')}")
    return 0


def _scalar_or_vector(values: list[float]) -> float | list[float]:
    return values[0] if len(values) == 1 else values


def _theorem1(args: argparse.Namespace) -> None:
    theory.run_theorem1(
        _scalar_or_vector(args.L0),
        _scalar_or_vector(args.L1),
        _scalar_or_vector(args.sigma),
        args.Delta,
        args.T,
        args.beta2,
        dim=args.dim,
        out_dir=args.out,
    )


def _gd_lower_bound(args: argparse.Namespace) -> None:
    theory.run_gd_lower_bound(
        args.out, Ms=args.M, L0=args.L0, L1=args.L1, eps=args.eps, Delta=args.Delta
    )


def _scale_free(args: argparse.Namespace) -> None:
    theory.run_scale_free(args.out, h=args.h, steps=args.steps)


def _sgdol_noise(args: argparse.Namespace) -> None:
    theory.run_sgdol_noise(args.out, sigmas=args.sigmas, gradients=args.gradients, seeds=args.seeds)
