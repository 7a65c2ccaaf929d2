"""The trainer's callback contract.

A callback sees the run through a :class:`RunContext` at fixed points of the loop. Callbacks
must not change the training trajectory (the smoothness probe is tested for bitwise
side-effect freedom); they may write files under ``ctx.run_dir`` and metrics via ``ctx.log``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from adaptopt.smoothness.presets import get_preset
from adaptopt.smoothness.probe import FROM_PRESET, MODIFIED, SmoothnessProbe, fork_rngs
from adaptopt.smoothness.records import GLOBAL, RECORDS_FILE
from adaptopt.tasks.base import Task

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter


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
        self._writer_cls, self._log_dir = SummaryWriter, log_dir
        self._writer: SummaryWriter | None = None

    def on_train_begin(self, ctx: RunContext) -> None:
        log_dir = self._log_dir or (ctx.run_dir / "tensorboard" if ctx.run_dir else None)
        self._writer = self._writer_cls(log_dir=None if log_dir is None else str(log_dir))

    @property
    def writer(self) -> SummaryWriter:
        """The run's writer (from ``on_train_begin`` on)."""
        if self._writer is None:
            raise RuntimeError("TensorBoardCallback: on_train_begin has not run")
        return self._writer

    def on_log(self, ctx: RunContext, row: dict[str, Any]) -> None:
        prefix = "epoch" if row.get("kind") == "epoch" else "train"
        for key, value in row.items():
            if key not in ("step", "epoch") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{prefix}/{key}", value, row["step"])

    def on_train_end(self, ctx: RunContext) -> None:
        self.writer.close()


UPDATES_FILE = "updates.jsonl"
UPDATE_BINS = tuple(range(-16, 3))  # orders of magnitude 10^-16 … 10^2 (|Δx| clamped into them)


class UpdateMagnitudeCallback(Callback):
    """Record the magnitudes of each layer's update |Δx_j| = |x_{t+1,j} − x_{t,j}| every
    ``every`` steps into ``run_dir/updates.jsonl`` (talk §3, scale-freeness; the AdamW
    scale-free study's histograms of update magnitudes by order of magnitude).

    One row per recorded step and parameter tensor::

        {"step": t, "layer": name, "numel": n, "mean": mean |Δx|, "median": ..., "max": ...,
         "zero": #coordinates with Δx = 0, "bins": counts of floor(log10 |Δx|) = k for k in
         UPDATE_BINS (values outside the range clamped into it, zeros excluded)}

    Read-only on the trajectory: it copies x_t before the step and compares after it. On a
    resumed run, rows of steps not yet retaken are dropped and redone (like the probe's).
    """

    def __init__(self, every: int, filename: str = UPDATES_FILE) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every = every
        self.filename = filename
        self._before: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, ctx: RunContext) -> None:
        self._path = None if ctx.run_dir is None else Path(ctx.run_dir) / self.filename
        if self._path is not None and self._path.exists():
            rows = self._path.read_text().splitlines()
            kept = [r for r in rows if r and json.loads(r)["step"] <= ctx.step]
            self._path.write_text("".join(r + "\n" for r in kept))

    def before_step(self, ctx: RunContext) -> None:
        # after this step ctx.step will be step + 1: record steps 1, every + 1, 2·every + 1, …
        if ctx.step % self.every == 0:
            self._before = {
                name: p.detach().clone()
                for name, p in ctx.model.named_parameters()
                if p.requires_grad
            }

    def after_step(self, ctx: RunContext) -> None:
        if self._before is None:
            return
        rows = [
            {"step": ctx.step, "layer": name, **update_stats(p, self._before[name])}
            for name, p in ctx.model.named_parameters()
            if name in self._before
        ]
        self._before = None
        if self._path is not None:
            with self._path.open("a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in rows))


def update_stats(after: torch.Tensor, before: torch.Tensor) -> dict[str, Any]:
    """Summary of |after − before| (see :class:`UpdateMagnitudeCallback`), in float64."""
    delta = (after.detach().double() - before.double()).abs().flatten().cpu()
    nonzero = delta[delta > 0]
    exponent = torch.floor(torch.log10(nonzero)).clamp(UPDATE_BINS[0], UPDATE_BINS[-1])
    counts = torch.bincount((exponent - UPDATE_BINS[0]).long(), minlength=len(UPDATE_BINS))
    return {
        "numel": delta.numel(),
        "mean": delta.mean().item(),
        "median": delta.median().item(),
        "max": delta.max().item(),
        "zero": int(delta.numel() - nonzero.numel()),
        "bins": counts.tolist(),
    }


class SmoothnessCallback(Callback):
    """Runs a :class:`SmoothnessProbe` in the trainer; rows go to ``run_dir/smoothness.jsonl``.

    The probe set is the first ``max_batches`` of ``task.probe_batches(fraction)``, drawn with a
    generator seeded by ``seed``; F is ``task.loss`` averaged over it. ``preset`` (``"default"``:
    4 training batches, eval mode, every 200 steps; ``"paper"``: 10% of the training data,
    train mode with common dropout masks, every step) gives the defaults of ``every``,
    ``fraction``, ``max_batches`` and of the probe's ``gammas`` and ``mode``. ``options`` are
    the other keyword arguments of :class:`SmoothnessProbe` (``gammas``, ``mode``, ...).
    On a resumed run, rows of steps not yet retaken are dropped from the file and redone.
    """

    def __init__(
        self,
        *,
        preset: str = "default",
        every: int | None = None,
        fraction: float | None = None,
        max_batches: int | None = FROM_PRESET,
        seed: int = 0,
        filename: str = RECORDS_FILE,
        **options: Any,
    ) -> None:
        spec = get_preset(preset)
        fraction = spec.fraction if fraction is None else fraction
        max_batches = spec.max_batches if max_batches is FROM_PRESET else max_batches
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"max_batches must be >= 1 or None, got {max_batches}")
        self.preset = preset
        self.every = spec.every if every is None else every
        self.fraction = fraction
        self.max_batches = max_batches
        self.seed = seed
        self.filename = filename
        self.options = options
        self.probe: SmoothnessProbe | None = None
        self._same_probe_set = (fraction, max_batches) == (spec.fraction, spec.max_batches)

    def on_train_begin(self, ctx: RunContext) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        with fork_rngs():
            torch.manual_seed(self.seed)  # for tasks whose batches use the global RNG
            batches = list(ctx.task.probe_batches(gen, ctx.device, self.fraction))
        path = None if ctx.run_dir is None else Path(ctx.run_dir) / self.filename
        if path is not None and path.exists():  # resumed: steps from ctx.step on are redone
            kept = [r for r in path.read_text().splitlines() if json.loads(r)["step"] < ctx.step]
            path.write_text("".join(r + "\n" for r in kept))
        self.probe = SmoothnessProbe(
            ctx.task.loss,
            batches[: self.max_batches],
            preset=self.preset,
            every=self.every,
            seed=self.seed,
            path=path,
            **self.options,
        )
        if not self._same_probe_set and not self.probe.label.endswith(MODIFIED):
            self.probe.label += MODIFIED

    def _started(self) -> SmoothnessProbe:
        if self.probe is None:
            raise RuntimeError("SmoothnessCallback: on_train_begin has not run")
        return self.probe

    def before_step(self, ctx: RunContext) -> None:
        self._started().before_step(ctx.model, ctx.step)

    def after_step(self, ctx: RunContext) -> None:
        rows = self._started().after_step(ctx.model)
        if rows and rows[0]["layer"] == GLOBAL:
            global_row = rows[0]
            ctx.log(
                {
                    "smoothness_grad_norm": global_row["grad"],
                    "smoothness_L_hat": global_row["smoothness"],
                }
            )
