"""Convergence of sign-compressed data parallelism against uncompressed Signum at equal steps.

Trains ``ptb-awdlstm`` at its smoke size (a 16/32-unit AWD-LSTM on the first 6,000 PTB training
tokens, real data) with 2 gloo processes on the CPU through the trainer
(:func:`adaptopt.experiments.trainer.train`, the code path of ``torchrun ... adaptopt train
--compress``), three ways, each with the same seeds, initial point and steps:

* ``signum``: DDP's fp32 all-reduce of the gradients, then Signum (momentum 0.9) on the mean;
* ``sign-mv``: signSGD with majority vote (``--compress sign-mv``: Signum momentum 0.9 on each
  worker, 1 bit per coordinate sent) with ``signsgd``, the same learning rate as Signum;
* ``ef-sign``: error-feedback scaled sign (``--compress ef-sign``) with ``sgd`` (no momentum).

It writes ``README.md`` (the scale, a table of the final losses with 95% t-intervals over the
seeds), ``curves.png`` (training and test loss per epoch, mean and 95% t-interval),
``curves.csv`` and ``final.csv`` to ``--out``. The learning rates are fixed (``--lr-sign``,
``--lr-ef``), not tuned per method. The task's gradient clipping and iterate averaging are off,
so that the gradient exchange is the only difference.

    python benchmarks/compressed_ddp_convergence.py          # writes docs/results/compressed_ddp
    python benchmarks/compressed_ddp_convergence.py --seeds 1 --epochs 1 --out /tmp/cddp
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from adaptopt.experiments.config import TrainConfig
from adaptopt.experiments.report import t_interval
from adaptopt.experiments.rundir import METRICS, read_metrics
from adaptopt.experiments.trainer import train

TASK = "ptb-awdlstm"
WORLD = 2
# method -> (optimizer, compress, which learning rate, extra hyperparameters)
METHODS: dict[str, tuple[str, str | None, str, dict[str, Any]]] = {
    "signum": ("signum", None, "lr_sign", {"momentum": 0.9}),
    "sign-mv": ("signsgd", "sign-mv", "lr_sign", {}),
    "ef-sign": ("sgd", "ef-sign", "lr_ef", {"momentum": 0.0}),
}
LABELS = {
    "signum": "Signum, fp32 all-reduce",
    "sign-mv": "signSGD-MV (1 bit, worker momentum 0.9)",
    "ef-sign": "EF-SignSGD (1 bit + 1 scale per tensor)",
}


def _config(method: str, seed: int, args: argparse.Namespace) -> TrainConfig:
    optimizer, compress, lr_key, extra = METHODS[method]
    return TrainConfig(
        task=TASK,
        optimizer=optimizer,
        hparams={"lr": getattr(args, lr_key), **extra},
        seed=seed,
        init_seed=0,  # one x_0 for every run: the seeds vary the batch order and dropout
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_steps_per_epoch=10**6,  # whole epochs
        smoke=True,
        clip_grad_norm=0,  # the task's clipping and averaging off: the exchanges alone differ
        iterate_averaging=0,
        eval_splits=("test",),
        device="cpu",
        data_dir=os.environ.get("ADAPTOPT_DATA"),
        compress=compress,
    )


def _worker(rank: int, port: int, args: argparse.Namespace, work: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(WORLD),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    # one process group for every run (train() then neither joins nor leaves it)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    for method in args.methods:
        for seed in range(args.seeds):
            start = time.perf_counter()
            run_dir = Path(work) / f"{method}-{seed}"  # a finished run there is reused
            train(_config(method, seed, args), run_dir, resume=True, progress=False)
            if rank == 0:
                print(f"{method} seed {seed}: {time.perf_counter() - start:.1f} s", flush=True)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FINAL = ("train_loss", "test_loss", "test_perplexity")
SMOOTH = 20  # steps in the moving average of the training batch losses


def _collect(work: Path, args: argparse.Namespace) -> dict[str, list[list[dict[str, Any]]]]:
    """Per method and seed: the rows of the run's ``metrics.jsonl`` (step and epoch rows)."""
    rows: dict[str, list[list[dict[str, Any]]]] = {}
    for method in args.methods:
        rows[method] = []
        for seed in range(args.seeds):
            run = read_metrics(work / f"{method}-{seed}" / METRICS)
            if len(_epochs(run)) != args.epochs:
                raise RuntimeError(f"{method} seed {seed}: not {args.epochs} epochs in {work}")
            rows[method].append(run)
    return rows


def _epochs(run: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in run if r.get("kind") == "epoch"]


def _smoothed(run: list[dict[str, Any]], n: int) -> np.ndarray:
    """The first ``n`` batch losses, each the mean of the last ``SMOOTH`` (fewer at first)."""
    losses = np.array([r["loss"] for r in run if "kind" not in r][:n])
    cumsum = np.concatenate([[0.0], np.cumsum(losses)])
    lo = np.maximum(np.arange(1, n + 1) - SMOOTH, 0)
    return (cumsum[1:] - cumsum[lo]) / (np.arange(1, n + 1) - lo)


def _fmt(values: list[float], digits: int = 3) -> str:
    mean, half = t_interval(values)
    if not math.isfinite(half):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def _write(out: Path, rows: dict, args: argparse.Namespace, wall: float | None) -> str:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    out.mkdir(parents=True, exist_ok=True)
    epochs = np.arange(1, args.epochs + 1)
    steps = [_epochs(run)[-1]["step"] for runs in rows.values() for run in runs]
    n = min(steps)  # every run has these steps (the random BPTT lengths differ by seed)
    curves = {m: t_interval([_smoothed(run, n) for run in runs]) for m, runs in rows.items()}
    tests = {
        m: t_interval([[r["test_loss"] for r in _epochs(run)] for run in runs])
        for m, runs in rows.items()
    }
    with open(out / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "metric", "step", "epoch", "mean", "ci95_half_width", "seeds"])
        for method, runs in rows.items():
            mean, half = curves[method]
            for i in range(n):
                w.writerow(
                    [method, f"train_loss_ma{SMOOTH}", i + 1, "", f"{mean[i]:.6f}",
                     f"{half[i]:.6f}", len(runs)]
                )  # fmt: skip
            at = np.mean([[r["step"] for r in _epochs(run)] for run in runs], axis=0)
            mean, half = tests[method]
            for e, s, m, h in zip(epochs, at, mean, half, strict=True):
                w.writerow([method, "test_loss", f"{s:.1f}", e, f"{m:.6f}", f"{h:.6f}", len(runs)])
    with open(out / "final.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seed", "steps", *FINAL, "time_s"])
        for method, runs in rows.items():
            for seed, run in enumerate(runs):
                last = _epochs(run)[-1]
                w.writerow(
                    [method, seed, last["step"], *(f"{last[k]:.6f}" for k in FINAL),
                     f"{last['time']:.1f}"]
                )  # fmt: skip

    fig = Figure(figsize=(10.0, 3.9))
    left, right = fig.subplots(1, 2)
    for method in rows:
        (mean, half), x = curves[method], np.arange(1, n + 1)
        left.plot(x, mean, lw=1.2, label=LABELS[method])
        left.fill_between(x, mean - half, mean + half, alpha=0.25)
        mean, half = tests[method]
        right.plot(epochs, mean, marker="o", ms=3, label=LABELS[method])
        right.fill_between(epochs, mean - half, mean + half, alpha=0.25)
    left.set(xlabel="step", ylabel=f"training loss (moving mean of {SMOOTH} batches)")
    right.set(xlabel="epoch", ylabel="test loss")
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.legend()
    fig.suptitle(
        f"{TASK} (smoke size), {WORLD} gloo workers: mean over {args.seeds} seeds, "
        "95% t-interval shaded"
    )
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)

    table = [
        "| method | optimizer | lr | train loss (last epoch) | test loss | test perplexity |",
        "|---|---|---|---|---|---|",
    ]
    for method, runs in rows.items():
        optimizer, _, lr_key, _ = METHODS[method]
        last = [_epochs(run)[-1] for run in runs]
        cells = [_fmt([r[k] for r in last], 1 if "perplexity" in k else 3) for k in FINAL]
        table.append(
            f"| {LABELS[method]} | `{optimizer}` | {getattr(args, lr_key):g} | "
            + " | ".join(cells)
            + " |"
        )
    train_min = sum(_epochs(run)[-1]["time"] for runs in rows.values() for run in runs) / 60
    timing = f"Training time, summed over the {len(steps)} runs: {train_min:.1f} min"
    if wall is not None:
        timing += f"; the whole comparison, process start-up included: {wall / 60:.1f} min"
    text = f"""# Sign-compressed data parallelism: convergence at equal steps

Written by `benchmarks/compressed_ddp_convergence.py` (rerun it rather than editing this
folder). `{TASK}` at its smoke size, trained through the trainer with {WORLD} gloo processes on
the CPU: the code path of `torchrun --nproc_per_node={WORLD} -m adaptopt.cli.main train
--task {TASK} --compress ...`. Three ways, with the same seeds, initial point (`init_seed=0`)
and batches:

- **Signum, fp32 all-reduce**: DDP averages the gradients; `signum` (momentum 0.9) steps on
  the mean.
- **signSGD-MV**: `--compress sign-mv`: each worker keeps Signum momentum 0.9 and sends its
  signs (1 bit per coordinate); `signsgd` steps on the majority vote, with Signum's learning
  rate.
- **EF-SignSGD**: `--compress ef-sign`: each worker sends ‖p‖₁/d·sign(p) of its
  error-corrected gradient p (1 bit per coordinate and one float per tensor); `sgd` without
  momentum steps on the mean.

## Scale

- Model and data: the task's smoke size, a 3-layer AWD-LSTM with embedding 16 and hidden size
  32 (vocabulary 10,000), on the first 6,000 PTB training tokens and 1,500 test tokens; BPTT
  10 with the task's random lengths.
- Budget: global batch {args.batch_size} ({args.batch_size // WORLD} sequences per worker),
  {args.epochs} epochs = {min(steps)}–{max(steps)} steps per run (the random BPTT lengths
  depend on the seed; the three methods of a seed take the same steps), {args.seeds} seeds per
  method.
- Settings: the task's gradient clipping and iterate averaging are off, so that the gradient
  exchange is the only difference. Learning rates are fixed, not tuned per method: sign
  methods {args.lr_sign:g}, EF-SignSGD's SGD {args.lr_ef:g} (each the better of two values in
  a short trial).
- Curves: the training loss is the moving mean of {SMOOTH} batch losses (as each batch reported
  it, dropout on), over the {n} steps that every run has; the test loss is measured after each
  epoch.
- {timing} ({platform.machine()}, {WORLD} processes of one thread each, torch
  {torch.__version__}, on a shared 2-core machine).

This is a CPU-scale check that the compressed exchanges train, not the paper-scale
comparisons of Bernstein et al. (ICLR 2019) or Karimireddy et al. (ICML 2019).

## Results after {args.epochs} epochs (mean ± 95% t-interval over {args.seeds} seeds)

{chr(10).join(table)}

![training and test loss](curves.png)

Numbers: `curves.csv` (per method: the smoothed training loss per step and the test loss per
epoch, mean and 95% half-width over the seeds) and `final.csv` (the last epoch of every run).
"""
    (out / "README.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/results/compressed_ddp"))
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8, help="global (split over workers)")
    parser.add_argument("--lr-sign", type=float, default=3e-3)
    parser.add_argument("--lr-ef", type=float, default=5.0)
    parser.add_argument(
        "--work",
        type=Path,
        help="keep the run directories here (default: a temporary directory); finished runs "
        "found there are reused, so the report can be rewritten without training",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        fresh = not any(work.glob("*/metrics.jsonl"))  # everything trained now: time it
        start = time.perf_counter()
        mp.spawn(_worker, args=(_free_port(), args, str(work)), nprocs=WORLD)
        wall = time.perf_counter() - start
        rows = _collect(work, args)
    print(_write(args.out, rows, args, wall if fresh else None))


if __name__ == "__main__":
    main()
