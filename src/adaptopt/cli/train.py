"""``adaptopt train``: one run into a run directory (works under ``torchrun`` too)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from adaptopt.experiments.callbacks import TensorBoardCallback
from adaptopt.experiments.trainer import TrainConfig, train

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def parse_assignments(items: list[str] | None, what: str) -> dict[str, Any]:
    """``["lr=0.1", "betas=[0.9, 0.99]", "nesterov=true"]`` → dict; values in TOML syntax,
    anything that is not valid TOML is kept as a string."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{what} must look like key=value, got {item!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value
    return out


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``seeds``: hyperparameters, budget, task, device."""
    parser.add_argument(
        "--hparam",
        action="append",
        metavar="KEY=VALUE",
        help="optimizer hyperparameter (repeatable; default: the task's tuned "
        "values for the optimizer)",
    )
    parser.add_argument("--epochs", type=int, help="override the task's number of epochs")
    parser.add_argument("--batch-size", type=int, help="override the task's batch size")
    parser.add_argument("--max-steps-per-epoch", type=int, help="cap the steps of each epoch")
    parser.add_argument("--eval-every", type=int, default=1, help="evaluate every N epochs")
    parser.add_argument("--smoke", action="store_true", help="the task's seconds-scale version")
    parser.add_argument(
        "--task-option",
        action="append",
        metavar="KEY=VALUE",
        help="extra keyword argument of the task constructor (repeatable)",
    )
    parser.add_argument(
        "--clip-grad-norm",
        type=float,
        metavar="C",
        help="clip the global gradient norm at C before the optimizer (default: the task's; "
        "0: off); logs the pre-clip norm and whether it fired",
    )
    parser.add_argument(
        "--iterate-averaging",
        type=int,
        metavar="NONMONO",
        help="average end-of-epoch weights once the validation loss is worse than the best of "
        "all but the last NONMONO epochs (default: the task's; 0: off)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda:1 ...")
    parser.add_argument("--data-dir", help="where to look for datasets first")
    parser.add_argument("--log-every", type=int, default=1, help="log the loss every N steps")


def run_config(args: argparse.Namespace, **fields: Any) -> TrainConfig:
    return TrainConfig(
        hparams=parse_assignments(args.hparam, "--hparam"),
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_steps_per_epoch=args.max_steps_per_epoch,
        eval_every=args.eval_every,
        smoke=args.smoke,
        task_options=parse_assignments(args.task_option, "--task-option"),
        device=args.device,
        data_dir=args.data_dir,
        log_every=args.log_every,
        clip_grad_norm=args.clip_grad_norm,
        iterate_averaging=args.iterate_averaging,
        **fields,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one run",
        description="Train one run into a run directory (config.json, meta.json, metrics.jsonl, "
        "checkpoint.pt). Under `torchrun --nproc_per_node=N` it trains data-parallel.",
    )
    parser.add_argument("--task", required=True, help="task name (see adaptopt.tasks.available)")
    parser.add_argument("--optimizer", required=True, help="optimizer name (adaptopt optimizers)")
    parser.add_argument("--seed", type=int, default=0)
    add_run_arguments(parser)
    parser.add_argument(
        "--validation", action="store_true", help="hold out the validation split and evaluate on it"
    )
    parser.add_argument(
        "--eval",
        nargs="+",
        dest="eval_splits",
        metavar="SPLIT",
        help="splits to evaluate after each epoch (default: valid with --validation, else test)",
    )
    parser.add_argument("--run-dir", type=Path, help="default: runs/<task>/<optimizer>-<run id>")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        help="also checkpoint every N steps (default: after each epoch)",
    )
    parser.add_argument(
        "--probe",
        type=int,
        nargs="?",
        const=200,
        default=0,
        metavar="EVERY",
        help="record (L0,L1)-smoothness every EVERY steps (default 200) into smoothness.jsonl",
    )
    parser.add_argument(
        "--probe-preset",
        choices=("default", "paper"),
        default="default",
        help="smoothness probe preset: cheap default or the paper's (see adaptopt.smoothness)",
    )
    parser.add_argument(
        "--probe-batches",
        type=int,
        metavar="N",
        help="cap the probe set at N training batches (the probe is then '<preset> (modified)')",
    )
    parser.add_argument(
        "--compress",
        choices=("sign-mv", "ef-sign"),
        help="under torchrun: exchange 1-bit gradient signs instead of the fp32 all-reduce "
        "(sign-mv: majority vote of the workers' Signum momenta, use --optimizer signsgd; "
        "ef-sign: error-feedback scaled sign, use --optimizer sgd)",
    )
    parser.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = run_config(
        args,
        task=args.task,
        optimizer=args.optimizer,
        seed=args.seed,
        validation=args.validation,
        eval_splits=args.eval_splits,
        checkpoint_every=args.checkpoint_every,
        probe=args.probe,
        probe_preset=args.probe_preset,
        probe_batches=args.probe_batches,
        compress=args.compress,
    )
    run_dir = args.run_dir
    if run_dir is None:
        run_id = config.resolve(config.build_task()).run_id()
        run_dir = Path("runs") / args.task / f"{args.optimizer}-{run_id}"
    callbacks = [TensorBoardCallback()] if args.tensorboard else []
    result = train(config, run_dir, resume=args.resume, callbacks=callbacks, progress=args.progress)
    if int(os.environ.get("RANK", "0")) == 0:
        where = f" at step {result.diverged_step}" if result.status == "diverged" else ""
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in result.final.items())
        print(f"{result.status}{where}: {metrics}\nrun directory: {run_dir}")
    return 0
