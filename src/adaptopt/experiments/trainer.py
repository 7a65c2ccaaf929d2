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

- the model is initialised right after ``torch.manual_seed(seed)``, before the optimizer exists,
  so every optimizer starts from the same x_0 for a given seed; the data order comes from a
  separate generator seeded with ``seed + DATA_SEED_OFFSET``;
- a checkpoint holds model, optimizer, scheduler, every RNG state and the data position (the
  generator state at the start of the epoch and the number of batches taken since), so
  ``resume=True`` continues bitwise-identically. Mid-epoch checkpoints (``checkpoint_every``)
  are exact for tasks without state carried from batch to batch; epoch-end ones always are.

Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) every rank draws the same batches and
trains on its slice of each (:func:`shard`, along ``task.batch_dim``); DDP averages the
gradients, so global-norm optimizers (clipping, normalization, SGDOL) see the full-batch
gradient, as in one process. Recurrent state carried across batches (AWD-LSTM) is not
sharded: data-parallel training targets the stateless tasks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import pickle
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

import adaptopt
from adaptopt import tasks
from adaptopt.experiments.callbacks import Callback, RunContext
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
from adaptopt.tasks.base import Batch, Budget, Task

DATA_SEED_OFFSET = 0x5EED
# Fields that change how a run is executed or recorded, but not its result: not in the run id.
RUNTIME_FIELDS = ("device", "data_dir", "log_every", "checkpoint_every", "probe", "probe_preset")


@dataclass
class TrainConfig:
    """Everything that defines one run. ``None`` fields are filled in by :meth:`resolve`.

    ``hparams`` override the task's tuned values for ``optimizer`` (``task.hparams``);
    ``validation=True`` trains on the training data minus a held-out validation split (grid
    search); ``eval_splits`` defaults to ``("valid",)`` then and to ``("test",)`` otherwise.
    ``clip_grad_norm`` and ``iterate_averaging`` default to the task's (``None``); 0 turns
    them off.
    """

    task: str
    optimizer: str
    hparams: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    epochs: int | None = None
    batch_size: int | None = None
    max_steps_per_epoch: int | None = None
    smoke: bool = False
    validation: bool = False
    eval_splits: tuple[str, ...] | None = None
    eval_every: int = 1  # evaluate every this many epochs (and always after the last)
    task_options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    data_dir: str | None = None
    log_every: int = 1
    checkpoint_every: int = 0  # also checkpoint every this many steps (0: at epoch ends only)
    probe: int = 0  # measure (L0,L1)-smoothness (SPEC.md §2) every this many steps (0: never)
    probe_preset: str = "default"  # "default" (cheap) or "paper" (adaptopt.smoothness)
    clip_grad_norm: float | None = None  # global gradient-norm threshold before the optimizer
    iterate_averaging: int | None = None  # nonmono of the end-of-epoch averaging (0: off)

    def __post_init__(self) -> None:
        if self.eval_splits is not None:
            self.eval_splits = tuple(self.eval_splits)
        for name in ("log_every", "checkpoint_every", "eval_every", "probe"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm >= 0:
            raise ValueError(f"clip_grad_norm must be >= 0, got {self.clip_grad_norm}")
        if self.iterate_averaging is not None and self.iterate_averaging < 0:
            raise ValueError(f"iterate_averaging must be >= 0, got {self.iterate_averaging}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown run setting(s) {', '.join(unknown)}; valid: {sorted(known)}")
        return cls(**d)

    def build_task(self) -> Task:
        return tasks.get(
            self.task,
            validation=self.validation,
            smoke=self.smoke,
            data_dir=self.data_dir,
            **self.task_options,
        )

    def resolve(self, task: Task) -> TrainConfig:
        """Explicit copy: the task's hparams merged under ours, the budget and splits filled in."""
        b = task.budget
        return dataclasses.replace(
            self,
            hparams={**task.hparams.get(self.optimizer, {}), **self.hparams},
            epochs=b.epochs if self.epochs is None else self.epochs,
            batch_size=b.batch_size if self.batch_size is None else self.batch_size,
            max_steps_per_epoch=self.max_steps_per_epoch or b.max_steps_per_epoch,
            eval_splits=self.eval_splits or (("valid",) if self.validation else ("test",)),
            clip_grad_norm=_default(self.clip_grad_norm, task.clip_grad_norm),
            iterate_averaging=_default(self.iterate_averaging, task.iterate_averaging),
        )

    @property
    def budget(self) -> Budget:
        return Budget(self.epochs, self.batch_size, self.max_steps_per_epoch)

    def identity(self, *, with_seed: bool = True) -> dict[str, Any]:
        """The fields that determine the result (JSON-normalised), optionally without the seed."""
        d = json.loads(json.dumps(dataclasses.asdict(self)))
        for name in RUNTIME_FIELDS + (() if with_seed else ("seed",)):
            d.pop(name)
        return d

    def run_id(self) -> str:
        """Hash of the resolved config and seed: equal ids ⇔ the same run."""
        return config_hash(self.identity())


def _default(value: Any, task_default: Any) -> Any:
    """The config's value, else the task's default; 0 (off) is stored as ``None``."""
    value = task_default if value is None else value
    return value or None


def config_hash(d: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class RunResult:
    status: str  # "finished" | "diverged"
    step: int  # optimizer steps taken
    final: dict[str, float]  # the last epoch row: train_loss, <split>_<metric>, ...
    diverged_step: int | None = None
    model: nn.Module | None = None
    run_dir: Path | None = None


@dataclass
class _Position:
    """Where the loop is: what a checkpoint needs besides model/optimizer/RNG states."""

    epoch: int = 0  # epochs completed
    batches: int = 0  # batches taken in the current epoch
    step: int = 0  # optimizer steps taken
    epoch_rng: torch.Tensor | None = None  # data generator state at the start of the epoch
    epoch_steps: int = 0  # optimizer steps taken in the current epoch
    loss_sum: float = 0.0  # of their reported losses (Task.loss_terms)
    wall_time: float = 0.0  # seconds of training before this process
    metrics_bytes: int = 0  # length of metrics.jsonl at the checkpoint
    final: dict[str, float] = field(default_factory=dict)  # the last epoch row's metrics


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
        return RunResult(
            meta["status"], meta["step"], meta["final"], meta["diverged_step"], run_dir=run_dir
        )
    group = _ProcessGroup.join()
    writer = run_dir is not None and group.rank == 0
    if writer and not resume and status(run_dir) != "missing":
        raise ValueError(f"{run_dir} already holds a run: resume it or choose another directory")
    task = config.build_task()
    config = config.resolve(task)
    task.budget = config.budget
    device = resolve_device(config.device, group.local_rank)
    callbacks = [*callbacks, *_probe_callbacks(config)]

    torch.manual_seed(config.seed)  # the initial weights depend on the seed only
    model = task.build_model().to(device)
    net = group.wrap(model, device)
    optimizer = create_optimizer(config.optimizer, model.parameters(), **_as_kwargs(config.hparams))
    batches_per_epoch = sum(1 for _ in task.train_batches(0, torch.Generator(), device))
    if batches_per_epoch == 0:
        raise ValueError(f"task {task.name!r} yields no training batches of {config.batch_size}")
    lr_lambda = task.lr_lambda(batches_per_epoch)
    scheduler = LambdaLR(optimizer, lr_lambda) if lr_lambda is not None else None
    data_rng = torch.Generator().manual_seed(config.seed + DATA_SEED_OFFSET)
    pos = _Position(epoch_rng=data_rng.get_state())

    averaging = IterateAverage(model, config.iterate_averaging)
    checkpoint = run_dir / CHECKPOINT if run_dir is not None else None
    if resume and checkpoint is not None and checkpoint.exists():
        pos = _load_checkpoint(checkpoint, model, optimizer, scheduler, averaging)
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / CONFIG, dataclasses.asdict(config))
        meta = {"started": time.time(), "resumes": -1}
        if (run_dir / META).exists():
            meta = read_json(run_dir / META)
        meta |= _environment(device, group.world_size)
        meta["metric"] = {"name": task.metric, "higher_is_better": task.higher_is_better}
        meta |= {"status": "running", "resumes": meta["resumes"] + 1}
        write_json(run_dir / META, meta)
        metrics = (run_dir / METRICS).open("a+b")
        metrics.truncate(pos.metrics_bytes)
        metrics.seek(pos.metrics_bytes)

    def log(row: dict[str, Any]) -> None:
        row = {"step": ctx.step, "epoch": ctx.epoch, **row}
        if writer:
            metrics.write((json.dumps(row) + "\n").encode())
            metrics.flush()
        for cb in callbacks:
            cb.on_log(ctx, row)

    def save() -> None:
        if writer:
            pos.metrics_bytes = metrics.tell()
            pos.wall_time = wall_before + time.perf_counter() - t0
            _save_checkpoint(checkpoint, model, optimizer, scheduler, pos, averaging)

    ctx = RunContext(
        task, model, optimizer, device, run_dir if writer else None, log, pos.step, pos.epoch
    )
    for cb in callbacks:
        cb.on_train_begin(ctx)
    done_batches = lambda: pos.epoch * batches_per_epoch + pos.batches  # noqa: E731
    bar = tqdm(
        total=config.epochs * batches_per_epoch,
        initial=done_batches(),
        disable=not _show_progress(progress, group.rank),
        unit="batch",
    )
    t0, wall_before = time.perf_counter(), pos.wall_time
    diverged_step = None
    while pos.epoch < config.epochs and diverged_step is None:
        data_rng.set_state(pos.epoch_rng)
        task.start_epoch(model)
        model.train()
        data = _Batches(task.train_batches(pos.epoch, data_rng, device), skip=pos.batches)
        while (batch := data.take()) is not None:
            for cb in callbacks:
                cb.before_step(ctx)
            evals: list[_Evaluation] = []
            closure = _closure(task, net, optimizer, data, batch, evals, group, config)
            with _lr_scaled(optimizer, task.batch_lr_scale(batch)):
                optimizer.step(closure)
            if scheduler is not None:
                scheduler.step()
            first = evals[0]  # the step's first batch, at x_t
            loss = group.mean(first.reported).item()  # the full batch's reported loss
            if not math.isfinite(group.mean(first.objective).item()):
                loss = math.nan
            pos.step, pos.batches = pos.step + 1, data.taken
            pos.epoch_steps, pos.loss_sum = pos.epoch_steps + 1, pos.loss_sum + loss
            ctx.step = pos.step
            bar.update(done_batches() - bar.n)
            bar.set_postfix(loss=f"{pos.loss_sum / pos.epoch_steps:.4g}", refresh=False)
            if not math.isfinite(loss) or (config.log_every and pos.step % config.log_every == 0):
                row = {"loss": loss, "lr": optimizer.param_groups[0]["lr"]}
                if config.clip_grad_norm is not None:
                    row |= {"grad_norm": first.grad_norm, "clipped": first.clipped}
                log(row)
            if not math.isfinite(loss):
                diverged_step = pos.step
                break
            for cb in callbacks:
                cb.after_step(ctx)
            if config.checkpoint_every and pos.step % config.checkpoint_every == 0:
                save()
        if diverged_step is not None:
            break
        running, done = pos.loss_sum / max(pos.epoch_steps, 1), pos.epoch + 1
        evaluate = done % max(config.eval_every, 1) == 0 or done == config.epochs
        final = _epoch_metrics(task, model, config, device, averaging, done, running, evaluate)
        pos = dataclasses.replace(
            pos,
            epoch=pos.epoch + 1,
            batches=0,
            epoch_steps=0,
            loss_sum=0.0,
            epoch_rng=data_rng.get_state(),
            final=final,
        )
        ctx.epoch = pos.epoch
        elapsed = wall_before + time.perf_counter() - t0
        log({"kind": "epoch", **final, "lr": optimizer.param_groups[0]["lr"], "time": elapsed})
        for cb in callbacks:
            cb.on_epoch_end(ctx)
        if not all(math.isfinite(v) for v in final.values()):
            diverged_step = pos.step
        save()
    bar.close()
    for cb in callbacks:
        cb.on_train_end(ctx)

    verdict = "finished" if diverged_step is None else "diverged"
    result = RunResult(verdict, pos.step, pos.final, diverged_step, model, run_dir)
    if writer:
        metrics.close()
        meta |= {
            "status": result.status,
            "step": result.step,
            "diverged_step": diverged_step,
            "final": pos.final,
            "averaging_started_epoch": averaging.started_epoch,
            "finished": time.time(),
            "wall_time_s": wall_before + time.perf_counter() - t0,
        }
        write_json(run_dir / META, meta)
    group.leave()
    return result


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


@dataclass(frozen=True)
class _ProcessGroup:
    """This process's place under ``torchrun`` (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owned: bool = False  # we joined it, so we leave it

    @classmethod
    def join(cls) -> _ProcessGroup:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        owned = world_size > 1 and not dist.is_initialized()
        if owned:
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        return cls(rank, world_size, local_rank, owned)

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """DDP (gradients averaged over ranks during backward) when distributed."""
        if self.world_size == 1:
            return model
        device_ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of ``x`` over ranks."""
        if self.world_size > 1:
            x = x.clone()
            dist.all_reduce(x)
            x /= self.world_size
        return x

    def leave(self) -> None:
        if self.owned:
            dist.destroy_process_group()


@dataclass
class _Evaluation:
    """One closure call: the objective and reported loss (detached), the pre-clip norm."""

    objective: torch.Tensor
    reported: torch.Tensor
    grad_norm: float | None = None
    clipped: bool | None = None


def _closure(
    task: Task,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: _Batches,
    first: Batch,
    evals: list[_Evaluation],
    group: _ProcessGroup,
    config: TrainConfig,
) -> Callable[[], torch.Tensor]:
    """The step's closure: its first call uses ``first``, later calls take fresh batches.

    Each call back-propagates the task's objective and, with ``config.clip_grad_norm``, clips
    the global norm of the (rank-averaged) gradient, as ``torch.nn.utils.clip_grad_norm_``.
    """
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
        if config.clip_grad_norm is not None:
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


class IterateAverage:
    """End-of-epoch iterate averaging, triggered by the validation loss (the authors' PTB rule).

    With ``nonmono = N``: after an epoch whose validation loss (of the current weights) is worse
    than the best of all but the last N recorded ones, averaging starts; from the next epoch
    on, every end-of-epoch weight enters a running mean, which all later evaluations use.
    ``nonmono=None`` disables it. ``state_dict`` holds everything a resumed run needs.
    """

    def __init__(self, model: nn.Module, nonmono: int | None) -> None:
        self.model, self.nonmono = model, nonmono
        self.history: list[float] = []  # validation losses before averaging started
        self.started_epoch: int | None = None  # the epoch after which the rule fired
        self.count = 0
        self.average: dict[str, torch.Tensor] = {}

    @property
    def active(self) -> bool:
        """Whether evaluations use the average (it holds at least one iterate)."""
        return self.count > 0

    def end_epoch(self) -> None:
        """Add the current weights to the running mean, if averaging has started."""
        if self.started_epoch is None:
            return
        self.count += 1
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if self.count == 1:
                    self.average[name] = p.detach().clone()
                else:
                    self.average[name].add_(p.detach() - self.average[name], alpha=1 / self.count)

    def observe(self, epoch: int, valid_loss: float) -> bool:
        """Record the current weights' validation loss; true if averaging starts now."""
        if self.nonmono is None or self.started_epoch is not None:
            return False
        n = self.nonmono
        fire = len(self.history) > n and valid_loss > min(self.history[:-n])
        self.history.append(valid_loss)
        if fire:
            self.started_epoch = epoch
        return fire

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model holds the average inside the block (if active), its own weights after."""
        if not self.active:
            yield
            return
        params = dict(self.model.named_parameters())
        own = {name: p.detach().clone() for name, p in params.items()}
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(self.average[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(own[name])

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": list(self.history),
            "started_epoch": self.started_epoch,
            "count": self.count,
            "average": {k: v.clone() for k, v in self.average.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])
        self.started_epoch = state["started_epoch"]
        self.count = state["count"]
        device = next(self.model.parameters()).device
        self.average = {k: v.to(device) for k, v in state["average"].items()}


def _epoch_metrics(
    task: Task,
    model: nn.Module,
    config: TrainConfig,
    device: torch.device,
    averaging: IterateAverage,
    epoch: int,
    running: float,
    evaluate: bool,
) -> dict[str, Any]:
    """The epoch row: training losses, evaluations (of the iterate average once it is active)
    and the averaging trigger. ``evaluate`` is false on epochs skipped by ``eval_every``."""
    final: dict[str, Any] = {"train_loss_running": running}
    if not task.train_loss_from_evaluation:
        final["train_loss"] = running
    elif evaluate:
        final["train_loss"] = _evaluate(task, model, "train", device)["loss"]
    averaging.end_epoch()
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


def shard(batch: Batch, rank: int, world_size: int, dim: int = 0) -> tuple[Batch, float]:
    """Rank's contiguous slice of every tensor in ``batch`` along ``dim``, and its loss weight.

    The weight n_rank·W/n makes the mean over ranks of the weighted mean-reduced local losses
    equal the full-batch loss (and likewise for the DDP-averaged gradient), also when n is not
    divisible by W.
    """
    sizes: list[int] = []

    def split(t: torch.Tensor) -> torch.Tensor:
        sizes.append(t.shape[dim])
        return torch.tensor_split(t, world_size, dim=dim)[rank]

    local = _map_tensors(split, batch)
    if not sizes:
        raise ValueError("cannot shard a batch that holds no tensors")
    n = sizes[0]
    n_local = len(range(n)[rank::world_size])  # tensor_split gives the same sizes
    if n_local == 0:
        raise ValueError(f"a batch of {n} along dim {dim} cannot be split over {world_size} ranks")
    return local, n_local * world_size / n


def _map_tensors(fn: Callable[[torch.Tensor], torch.Tensor], batch: Batch) -> Batch:
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # NamedTuple
        return type(batch)(*(_map_tensors(fn, b) for b in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_map_tensors(fn, b) for b in batch)
    if isinstance(batch, dict):
        return {k: _map_tensors(fn, v) for k, v in batch.items()}
    return batch


def _evaluate(task: Task, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        out = task.evaluate(model, split, device)
    model.train()
    return {k: float(v) for k, v in out.items()}


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"``: this rank's CUDA device if there is one, else CPU; otherwise ``name``."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _as_kwargs(hparams: dict[str, Any]) -> dict[str, Any]:
    """JSON/TOML lists back to tuples (``betas=[0.9, 0.999]`` → ``(0.9, 0.999)``)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in hparams.items()}


def _show_progress(progress: bool | None, rank: int) -> bool:
    return rank == 0 and (sys.stderr.isatty() if progress is None else progress)


def _probe_callbacks(config: TrainConfig) -> list[Callback]:
    if not config.probe:
        return []
    from adaptopt.smoothness import SmoothnessCallback

    return [SmoothnessCallback(every=config.probe, preset=config.probe_preset)]


def _save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR | None,
    pos: _Position,
    averaging: IterateAverage,
) -> None:
    rng = _rng_states()
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng,
        "position": dataclasses.asdict(pos),
        "averaging": averaging.state_dict(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill leaves the previous checkpoint intact


def _load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR | None,
    averaging: IterateAverage,
) -> _Position:
    state = load_checkpoint(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    _set_rng_states(state["rng"])
    if "averaging" in state:
        averaging.load_state_dict(state["averaging"])
    return _Position(**state["position"])


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents, read with ``torch.load(weights_only=True)``: tensors, numbers,
    strings and containers only, so a file from elsewhere cannot run code when loaded."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path} is not a checkpoint that can be loaded safely: it holds objects other than "
            "tensors, numbers and strings (a checkpoint from another program, an older adaptopt, "
            f"or a tampered file). Refusing to unpickle it. Details: {e}"
        ) from e


def _rng_states() -> dict[str, Any]:
    """Every RNG state as tensors and plain numbers (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, words, python_gauss = random.getstate()
    rng: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "words": torch.tensor(words), "gauss": python_gauss},
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def _set_rng_states(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    n = rng["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    p = rng["python"]
    random.setstate((p["version"], tuple(p["words"].tolist()), p["gauss"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


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
