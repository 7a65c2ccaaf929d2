"""One training run: task + optimizer + seed → run directory (SPEC.md §4).

The loop in :func:`train` is the whole story: every step goes through
``optimizer.step(closure)``, where the closure zeroes the gradients, takes the *next* training
batch, computes ``task.loss_terms``, calls ``backward`` on the objective and, with
``clip_grad_norm``, clips the global gradient norm (SGDOL calls it twice and so consumes two
batches; if the epoch runs dry inside a step, the step's first batch is used again). Each
step's lr (and clipping threshold γ) is scaled by ``task.batch_lr_scale(batch)``. After each
epoch the model is evaluated on ``config.eval_splits`` and a checkpoint is written.

Epoch metrics: ``train_loss_running`` is the mean of the batches' reported losses;
``train_loss`` is the paper's training loss: the task's evaluation of the training set in
eval mode (``Task.train_loss_from_evaluation``, the authors' image tasks) or else the running
mean. With ``iterate_averaging = N`` (the authors' PTB rule, after Merity et al.'s NT-ASGD),
once the validation loss of the current weights is worse than the best of all but the last N
epoch evaluations, the end-of-epoch weights of every later epoch are averaged (a running
mean) and all evaluations from then on use the average; training continues from the
current weights.

Reproducibility:

- the model is initialised right after ``torch.manual_seed(seed)`` (or ``init_seed``: the
  authors reuse one saved x_0 for every seed and optimizer), before the optimizer exists,
  so every optimizer starts from the same x_0 for a given seed; the data order comes from a
  separate generator seeded with ``seed + DATA_SEED_OFFSET``;
- a checkpoint holds model, optimizer, scheduler, every RNG state and the data position (the
  generator state at the start of the epoch and the number of batches taken since), so
  ``resume=True`` continues bitwise-identically. Mid-epoch checkpoints (``checkpoint_every``)
  are exact for tasks without state carried from batch to batch; epoch-end ones always are.

Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) every rank draws the same batches and
trains on its slice of each (:mod:`~adaptopt.experiments.distributed`); DDP averages the
gradients, so global-norm optimizers (clipping, normalization, SGDOL) see the full-batch
gradient, as in one process. Recurrent state carried across batches (AWD-LSTM) is not
sharded: data-parallel training targets the stateless tasks.

The pieces live beside this module: the run's definition in ``config`` (torch-free),
checkpoints in ``checkpoint``, the process group in ``distributed``, iterate averaging in
``averaging``; this module is the loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

import adaptopt
from adaptopt.errors import RunExistsError
from adaptopt.experiments.averaging import IterateAverage
from adaptopt.experiments.callbacks import Callback, RunContext, SmoothnessCallback
from adaptopt.experiments.checkpoint import Position, restore_checkpoint, save_checkpoint
from adaptopt.experiments.config import RUNTIME_FIELDS, TrainConfig, config_hash, hparam_kwargs
from adaptopt.experiments.distributed import ProcessGroup, resolve_device, shard
from adaptopt.experiments.rundir import (
    CHECKPOINT,
    CONFIG,
    DONE,
    META,
    METRICS,
    read_json,
    status,
    write_json,
)
from adaptopt.optim import create_optimizer
from adaptopt.tasks.base import Batch, Task

__all__ = [
    "DATA_SEED_OFFSET",
    "RUNTIME_FIELDS",
    "IterateAverage",
    "RunResult",
    "TrainConfig",
    "config_hash",
    "resolve_device",
    "shard",
    "train",
]

DATA_SEED_OFFSET = 0x5EED


@dataclass
class RunResult:
    """How a run ended; ``model`` holds the trained weights (not the iterate average)."""

    status: str  # "finished" | "diverged"
    step: int  # optimizer steps taken
    final: dict[str, float]  # the last epoch row: train_loss, <split>_<metric>, ...
    diverged_step: int | None = None
    model: nn.Module | None = None
    run_dir: Path | None = None


def train(
    config: TrainConfig,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    progress: bool | None = None,
) -> RunResult:
    """Train one run. With ``run_dir=None`` nothing is written (and nothing can be resumed).

    ``resume=True`` continues from ``run_dir``'s checkpoint (if any; a done run is returned as
    it is). ``progress`` shows a tqdm bar with the running loss (default: when stderr is a TTY).
    """
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None and resume and status(run_dir) in DONE:
        meta = read_json(run_dir / META)
        final, diverged = meta["final"], meta["diverged_step"]
        return RunResult(meta["status"], meta["step"], final, diverged, run_dir=run_dir)
    run = _Run.start(config, run_dir, resume)
    config, pos, callbacks = run.config, run.pos, [*callbacks, *_probe_callbacks(run.config)]
    ctx = RunContext(run.task, run.model, run.optimizer, run.device, run.run_dir, lambda r: None)

    def log(row: dict[str, Any]) -> None:
        row = {"step": ctx.step, "epoch": ctx.epoch, **row}
        run.write_row(row)
        for cb in callbacks:
            cb.on_log(ctx, row)

    ctx.log, ctx.step, ctx.epoch = log, pos.step, pos.epoch
    for cb in callbacks:
        cb.on_train_begin(ctx)
    bar = run.progress_bar(progress)
    diverged_step = None
    assert config.epochs is not None  # run.config is resolved
    while pos.epoch < config.epochs and diverged_step is None:
        assert pos.epoch_rng is not None  # set by _Run.start and at every epoch's end
        run.data_rng.set_state(pos.epoch_rng)
        run.task.start_epoch(run.model)
        run.model.train()
        data = _Batches(run.task.train_batches(pos.epoch, run.data_rng, run.device), pos.batches)
        while diverged_step is None and (batch := data.take()) is not None:
            for cb in callbacks:
                cb.before_step(ctx)
            first = run.step(data, batch)
            loss = run.group.mean(first.reported).item()  # the full batch's loss at x_t
            if not math.isfinite(run.group.mean(first.objective).item()):
                loss = math.nan
            pos.step, pos.batches = pos.step + 1, data.taken
            pos.epoch_steps, pos.loss_sum = pos.epoch_steps + 1, pos.loss_sum + loss
            ctx.step = pos.step
            bar.update(run.done_batches() - bar.n)
            bar.set_postfix(loss=f"{pos.loss_sum / pos.epoch_steps:.4g}", refresh=False)
            if not math.isfinite(loss) or (config.log_every and pos.step % config.log_every == 0):
                log(_step_row(loss, run.optimizer, first, config))
            if not math.isfinite(loss):
                diverged_step = pos.step
                continue
            for cb in callbacks:
                cb.after_step(ctx)
            if config.checkpoint_every and pos.step % config.checkpoint_every == 0:
                run.save()
        if diverged_step is not None:
            break
        final = run.end_epoch()
        ctx.epoch = pos.epoch
        log({"kind": "epoch", **final, "lr": run.optimizer.param_groups[0]["lr"]} | run.clock())
        for cb in callbacks:
            cb.on_epoch_end(ctx)
        if not all(math.isfinite(v) for v in final.values()):
            diverged_step = pos.step
        run.save()
    bar.close()
    for cb in callbacks:
        cb.on_train_end(ctx)
    return run.finish(diverged_step)


@dataclass
class _Run:
    """Everything one run holds: its objects, the loop's position and its recording."""

    config: TrainConfig  # resolved
    task: Task
    model: nn.Module
    net: nn.Module  # ``model``, wrapped in DDP when distributed
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR | None
    device: torch.device
    group: ProcessGroup
    batches_per_epoch: int
    data_rng: torch.Generator
    averaging: IterateAverage
    pos: Position
    run_dir: Path | None  # only where this process writes the run directory
    meta: dict[str, Any]
    metrics: IO[bytes] | None = None  # open when this process writes the run directory
    t0: float = 0.0  # perf_counter() when this process started training
    wall_before: float = 0.0  # seconds of training before this process (from the checkpoint)

    @classmethod
    def start(cls, config: TrainConfig, run_dir: Path | None, resume: bool) -> _Run:
        """Build task, model and optimizer; restore the checkpoint; open the run directory."""
        group = ProcessGroup.join()
        writer = run_dir is not None and group.rank == 0
        if writer and run_dir is not None and not resume and status(run_dir) != "missing":
            raise RunExistsError(f"{run_dir} already holds a run: resume it or choose another one")
        task = config.build_task()
        config = config.resolve(task)
        task.budget = config.budget
        device = resolve_device(config.device, group.local_rank)
        init = config.seed if config.init_seed is None else config.init_seed
        torch.manual_seed(init)  # the initial weights depend on this seed only
        model = task.build_model().to(device)
        if config.init_seed is not None:
            torch.manual_seed(config.seed)  # the run's own randomness (dropout, ...)
        params, hparams = model.parameters(), hparam_kwargs(config.hparams)
        optimizer = create_optimizer(config.optimizer, params, **hparams)
        n = sum(1 for _ in task.train_batches(0, torch.Generator(), device))
        if n == 0:
            raise ValueError(
                f"task {task.name!r} yields no training batches of {config.batch_size}"
            )
        lr_lambda = task.lr_lambda(n)
        scheduler = LambdaLR(optimizer, lr_lambda) if lr_lambda is not None else None
        data_rng = torch.Generator().manual_seed(config.seed + DATA_SEED_OFFSET)
        averaging = IterateAverage(model, config.iterate_averaging or None)
        pos = Position(epoch_rng=data_rng.get_state())
        hook_state = None
        if resume and run_dir is not None and (run_dir / CHECKPOINT).exists():
            pos, hook_state = restore_checkpoint(
                run_dir / CHECKPOINT, model, optimizer, scheduler, averaging
            )
        net = group.wrap(model, device, compress=config.compress, hook_state=hook_state)
        run = cls(
            config,
            task,
            model,
            net,
            optimizer,
            scheduler,
            device,
            group,
            n,
            data_rng,
            averaging,
            pos,
            run_dir if writer else None,
            {},
        )
        run.open()
        return run

    def open(self) -> None:
        """Write config and meta (status "running") and open metrics.jsonl at the checkpoint."""
        self.t0, self.wall_before = time.perf_counter(), self.pos.wall_time
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.run_dir / CONFIG, dataclasses.asdict(self.config))
        meta: dict[str, Any] = {"started": time.time(), "resumes": -1}
        if (self.run_dir / META).exists():
            meta = read_json(self.run_dir / META)
        meta |= _environment(self.device, self.group.world_size)
        meta["metric"] = {"name": self.task.metric, "higher_is_better": self.task.higher_is_better}
        self.meta = meta | {"status": "running", "resumes": meta["resumes"] + 1}
        write_json(self.run_dir / META, self.meta)
        self.metrics = (self.run_dir / METRICS).open("a+b")
        self.metrics.truncate(self.pos.metrics_bytes)
        self.metrics.seek(self.pos.metrics_bytes)

    def write_row(self, row: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.write((json.dumps(row) + "\n").encode())
            self.metrics.flush()

    def wall_time(self) -> float:
        return self.wall_before + time.perf_counter() - self.t0

    def clock(self) -> dict[str, float]:
        return {"time": self.wall_time()}

    def done_batches(self) -> int:
        return self.pos.epoch * self.batches_per_epoch + self.pos.batches

    def progress_bar(self, progress: bool | None) -> Any:
        assert self.config.epochs is not None  # resolved in start
        return tqdm(
            total=self.config.epochs * self.batches_per_epoch,
            initial=self.done_batches(),
            disable=not _show_progress(progress, self.group.rank),
            unit="batch",
        )

    def step(self, data: _Batches, batch: Batch) -> _Evaluation:
        """One optimizer step (the scheduler's too) on ``batch``; its first evaluation."""
        evals: list[_Evaluation] = []
        closure = _closure(self, data, batch, evals)
        with _lr_scaled(self.optimizer, self.task.batch_lr_scale(batch)):
            # torch annotates the closure as returning a float; its optimizers take any loss
            self.optimizer.step(closure)  # type: ignore[arg-type]
        if self.scheduler is not None:
            self.scheduler.step()
        return evals[0]

    def end_epoch(self) -> dict[str, Any]:
        """Evaluate, average, and move the position to the next epoch; the epoch's metrics."""
        pos, config = self.pos, self.config
        running, done = pos.loss_sum / max(pos.epoch_steps, 1), pos.epoch + 1
        evaluate = done % max(config.eval_every, 1) == 0 or done == config.epochs
        final = _epoch_metrics(self, done, running, evaluate)
        pos.epoch, pos.batches, pos.epoch_steps, pos.loss_sum = done, 0, 0, 0.0
        pos.epoch_rng, pos.final = self.data_rng.get_state(), final
        return final

    def save(self) -> None:
        comm_hook = self.group.hook_state(self.net)  # a collective: every rank takes part
        if self.run_dir is None or self.metrics is None:
            return
        self.pos.metrics_bytes = self.metrics.tell()
        self.pos.wall_time = self.wall_time()
        save_checkpoint(
            self.run_dir / CHECKPOINT,
            self.model,
            self.optimizer,
            self.scheduler,
            self.pos,
            self.averaging,
            comm_hook,
        )

    def finish(self, diverged_step: int | None) -> RunResult:
        verdict = "finished" if diverged_step is None else "diverged"
        pos = self.pos
        result = RunResult(verdict, pos.step, pos.final, diverged_step, self.model, self.run_dir)
        if self.run_dir is not None and self.metrics is not None:
            self.metrics.close()
            self.meta |= {
                "status": result.status,
                "step": result.step,
                "diverged_step": diverged_step,
                "final": pos.final,
                "averaging_started_epoch": self.averaging.started_epoch,
                "finished": time.time(),
                "wall_time_s": self.wall_time(),
            }
            write_json(self.run_dir / META, self.meta)
        self.group.leave()
        return result


def _step_row(
    loss: float, optimizer: torch.optim.Optimizer, first: _Evaluation, config: TrainConfig
) -> dict[str, Any]:
    row: dict[str, Any] = {"loss": loss, "lr": optimizer.param_groups[0]["lr"]}
    if "learned_lr" in optimizer.param_groups[0]:  # SGDOL: lr multiplies the learned step
        row["learned_lr"] = optimizer.param_groups[0]["learned_lr"]
    if config.clip_grad_norm:
        row |= {"grad_norm": first.grad_norm, "clipped": first.clipped}
    return row


class _Batches:
    """One epoch's batch iterator, counting the batches taken (the data position)."""

    def __init__(self, batches: Iterator[Batch], skip: int) -> None:
        self._it, self.taken = iter(batches), 0
        for _ in range(skip):
            self.take()

    def take(self, default: Batch | None = None) -> Batch | None:
        """The next batch, or ``default`` when the epoch is exhausted."""
        batch = next(self._it, None)
        if batch is None:
            return default
        self.taken += 1
        return batch


@dataclass
class _Evaluation:
    """One closure call: the objective and reported loss (detached), the pre-clip norm."""

    objective: torch.Tensor
    reported: torch.Tensor
    grad_norm: float | None = None
    clipped: bool | None = None


def _closure(
    run: _Run, data: _Batches, first: Batch, evals: list[_Evaluation]
) -> Callable[[], torch.Tensor]:
    """The step's closure: its first call uses ``first``, later calls take fresh batches.

    Each call back-propagates the task's objective and, with ``config.clip_grad_norm``, clips
    the global norm of the (rank-averaged) gradient, as ``torch.nn.utils.clip_grad_norm_``.
    """
    task, net, optimizer, group, config = run.task, run.net, run.optimizer, run.group, run.config
    pending = [first]

    def closure() -> torch.Tensor:
        batch = pending.pop() if pending else data.take(default=first)
        optimizer.zero_grad(set_to_none=True)
        weights = (1.0, 1.0)
        if group.world_size > 1:
            batch, weight = shard(batch, group.rank, group.world_size, task.batch_dim)
            weights = (group.world_size if task.loss_reduction == "sum" else weight, weight)
        objective, reported = task.loss_terms(net, batch)
        objective = objective * weights[0]
        objective.backward()
        record = _Evaluation(objective.detach(), reported.detach() * weights[1])
        if config.clip_grad_norm:
            params = [p for p in net.parameters() if p.grad is not None]
            norm = float(nn.utils.clip_grad_norm_(params, config.clip_grad_norm))
            record.grad_norm, record.clipped = norm, norm > config.clip_grad_norm
        evals.append(record)
        return objective

    return closure


@contextlib.contextmanager
def _lr_scaled(optimizer: torch.optim.Optimizer, scale: float) -> Iterator[None]:
    """Multiply every group's ``lr``, and its clipping threshold ``gamma`` if it has one, by
    ``scale`` for one step (``Task.batch_lr_scale``); both are restored exactly afterwards."""
    keys = ("lr", "gamma")
    if scale == 1.0:
        yield
        return
    saved = [{k: group[k] for k in keys if k in group} for group in optimizer.param_groups]
    for group, values in zip(optimizer.param_groups, saved, strict=True):
        group.update({k: v * scale for k, v in values.items()})
    try:
        yield
    finally:
        for group, values in zip(optimizer.param_groups, saved, strict=True):
            group.update(values)


def _epoch_metrics(run: _Run, epoch: int, running: float, evaluate: bool) -> dict[str, Any]:
    """The epoch row: training losses, evaluations (of the iterate average once it is active)
    and the averaging trigger. ``evaluate`` is false on epochs skipped by ``eval_every``."""
    task, model, config, device, averaging = (
        run.task,
        run.model,
        run.config,
        run.device,
        run.averaging,
    )
    final: dict[str, Any] = {"train_loss_running": running}
    if not task.train_loss_from_evaluation:
        final["train_loss"] = running
    elif evaluate:
        final["train_loss"] = _evaluate(task, model, "train", device)["loss"]
    averaging.end_epoch()
    assert config.eval_splits is not None  # resolved
    splits = list(config.eval_splits) if evaluate else []
    check = averaging.nonmono is not None and averaging.started_epoch is None
    if check and "valid" not in splits:
        splits.append("valid")  # the trigger needs the validation loss every epoch
    with averaging.swapped_in():
        for split in splits:
            evaluation = _evaluate(task, model, split, device)
            final |= {f"{split}_{k}": v for k, v in evaluation.items()}
    if averaging.active:
        final["averaged_iterates"] = averaging.count
    if check and averaging.observe(epoch, final["valid_loss"]):
        final["averaging_started"] = True
    return final


def _evaluate(task: Task, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        out = task.evaluate(model, split, device)
    model.train()
    return {k: float(v) for k, v in out.items()}


def _show_progress(progress: bool | None, rank: int) -> bool:
    return rank == 0 and (sys.stderr.isatty() if progress is None else progress)


def _probe_callbacks(config: TrainConfig) -> list[Callback]:
    if not config.probe:
        return []
    if config.probe_batches is None:
        return [SmoothnessCallback(every=config.probe, preset=config.probe_preset)]
    return [
        SmoothnessCallback(
            every=config.probe, preset=config.probe_preset, max_batches=config.probe_batches
        )
    ]


def _environment(device: torch.device, world_size: int) -> dict[str, Any]:
    """What the run ran on: git commit, library versions, device."""
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=Path(__file__).parent,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "git_commit": commit,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "adaptopt": adaptopt.__version__,
        },
        "device": str(device),
        "device_name": name or platform.machine(),
        "world_size": world_size,
        "hostname": platform.node(),
        "argv": sys.argv,
    }
