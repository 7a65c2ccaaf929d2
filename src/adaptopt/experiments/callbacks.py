"""The trainer's callback contract.

A callback sees the run through a :class:`RunContext` at fixed points of the loop. Callbacks
must not change the training trajectory (the smoothness probe is tested for bitwise
side-effect freedom); they may write files under ``ctx.run_dir`` and metrics via ``ctx.log``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adaptopt.tasks.base import Task


@dataclass
class RunContext:
    """What a callback can see of the run in progress."""

    task: Task
    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    run_dir: Path | None
    log: Callable[[dict[str, Any]], None]  # append one metrics row (step/epoch added for you)
    step: int = 0  # optimizer steps taken so far
    epoch: int = 0


class Callback:
    """Base class with no-op hooks; override the ones you need."""

    def on_train_begin(self, ctx: RunContext) -> None:
        """Once, after the model and optimizer exist (and after a resume)."""

    def before_step(self, ctx: RunContext) -> None:
        """Before ``optimizer.step`` (parameters are x_t)."""

    def after_step(self, ctx: RunContext) -> None:
        """After ``optimizer.step`` (parameters are x_{t+1}); ``ctx.step`` already incremented."""

    def on_epoch_end(self, ctx: RunContext) -> None:
        """After each epoch's evaluation."""

    def on_train_end(self, ctx: RunContext) -> None:
        """Once, at the end (also for diverged runs)."""

    def on_log(self, ctx: RunContext, row: dict[str, Any]) -> None:
        """Every metrics row, after it was written (``row`` includes ``step`` and ``epoch``)."""


class TensorBoardCallback(Callback):
    """Mirror every numeric metric to TensorBoard (``pip install tensorboard``).

    Step rows go under ``train/``, epoch rows under ``epoch/``, both against the step.
    """

    def __init__(self, log_dir: str | Path | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("TensorBoard logging needs `pip install tensorboard`") from e
        self._writer_cls, self._log_dir, self._writer = SummaryWriter, log_dir, None

    def on_train_begin(self, ctx: RunContext) -> None:
        log_dir = self._log_dir or (ctx.run_dir / "tensorboard" if ctx.run_dir else None)
        self._writer = self._writer_cls(log_dir=None if log_dir is None else str(log_dir))

    def on_log(self, ctx: RunContext, row: dict[str, Any]) -> None:
        prefix = "epoch" if row.get("kind") == "epoch" else "train"
        for key, value in row.items():
            if key not in ("step", "epoch") and isinstance(value, (int, float)):
                self._writer.add_scalar(f"{prefix}/{key}", value, row["step"])

    def on_train_end(self, ctx: RunContext) -> None:
        self._writer.close()
