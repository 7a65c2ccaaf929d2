"""SGDOL on a task with an LR schedule, through the trainer: each step is λ(t) × η_t.

The trainer attaches ``LambdaLR(task.lr_lambda)`` to scheduled tasks. SGDOL keeps its learned
step size η_t apart from ``lr``, so the schedule multiplies the learned step instead of
replacing it. The test replays every step in float64 from the recorded iterate x_t and the
step's two minibatches, with an independent FTRL rule (SPEC.md §1.4).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from adaptopt.experiments.callbacks import Callback
from adaptopt.experiments.trainer import TrainConfig, train
from adaptopt.tasks import registry
from adaptopt.tasks.base import Budget
from adaptopt.tasks.synthetic import SyntheticTask

FACTORS = (1.0, 0.5, 0.25, 2.0)  # λ(t) = FACTORS[t mod 4]
SMOOTHNESS, ALPHA = 10.0, 0.01  # a small α: η leaves 1/M within a few steps


@dataclass
class ScheduledSynthetic(SyntheticTask):
    """The synthetic task with an LR schedule; records the minibatches of each step."""

    steps: list[list[Any]] = field(default_factory=list)

    def lr_lambda(self, steps_per_epoch: int):
        return lambda t: FACTORS[t % len(FACTORS)]

    def loss(self, model, batch):
        if self.steps:
            self.steps[-1].append(batch)
        return super().loss(model, batch)


class _Record(Callback):
    """x_t, lr and learned_lr before each step; opens the step's batch list on the task."""

    def __init__(self) -> None:
        self.before: list[dict[str, Any]] = []
        self.final: torch.nn.Module | None = None

    def before_step(self, ctx) -> None:
        ctx.task.steps.append([])
        group = ctx.optimizer.param_groups[0]
        self.before.append(
            {"model": copy.deepcopy(ctx.model), "lr": group["lr"], "eta": group["learned_lr"]}
        )

    def on_train_end(self, ctx) -> None:
        self.final = copy.deepcopy(ctx.model)


@pytest.fixture
def scheduled_task(monkeypatch):
    made: list[ScheduledSynthetic] = []

    def build(validation: bool = False, smoke: bool = False, **_: Any) -> ScheduledSynthetic:
        task = ScheduledSynthetic(
            name="synthetic-scheduled",
            metric="accuracy",
            higher_is_better=True,
            budget=Budget(epochs=1, batch_size=32),
            validation=validation,
        )
        made.append(task)
        return task

    monkeypatch.setitem(registry._TASKS, "synthetic-scheduled", build)
    return made


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().double().flatten() for p in model.parameters()])


def _gradient(model: torch.nn.Module, task: SyntheticTask, batch) -> torch.Tensor:
    """∇ loss(batch) at the model's parameters, in float64 (not recorded as a step's batch)."""
    twin = copy.deepcopy(model).double()
    x, y = batch
    SyntheticTask.loss(task, twin, (x.double(), y)).backward()
    return torch.cat([p.grad.flatten() for p in twin.parameters()])


def test_sgdol_on_a_scheduled_task_steps_schedule_times_learned_eta(scheduled_task):
    record = _Record()
    config = TrainConfig(
        "synthetic-scheduled",
        "sgdol",
        {"smoothness": SMOOTHNESS, "alpha": ALPHA},
        epochs=2,
        eval_splits=("test",),
    )
    result = train(config, callbacks=[record])
    (task,) = scheduled_task
    steps = len(record.before)
    assert result.step == steps == 16  # 16 batches an epoch, two per SGDOL step
    assert all(len(batches) >= 2 for batches in task.steps)

    iterates = [_flat(r["model"]) for r in record.before] + [_flat(record.final)]
    sums = [ALPHA, ALPHA]
    expected, ignored, overwritten, etas = [], [], [], []
    for t in range(steps):
        eta = min(max(sums[0] / (SMOOTHNESS * sums[1]), 0.0), 2.0 / SMOOTHNESS)
        model, (first, second) = record.before[t]["model"], task.steps[t][:2]
        g, g2 = _gradient(model, task, first), _gradient(model, task, second)
        sums = [sums[0] + float(g @ g2), sums[1] + float(g @ g)]
        factor = FACTORS[t % len(FACTORS)]
        assert record.before[t]["lr"] == factor  # the scheduler sets lr, SGDOL leaves it
        assert record.before[t]["eta"] == pytest.approx(eta, rel=1e-4)
        expected.append(-factor * eta * g)
        ignored.append(-eta * g)  # the schedule ignored
        overwritten.append(-factor / SMOOTHNESS * g)  # the scheduler replacing η: plain SGD
        etas.append(eta)
    assert max(abs(eta * SMOOTHNESS - 1) for eta in etas) > 0.1  # η moved away from 1/M

    def matches(steps_taken: list[torch.Tensor]) -> bool:
        """x_{t+1} − x_t equals the step, to float32 rounding of x and the float32 step."""
        for t, step in enumerate(steps_taken):
            moved = iterates[t + 1] - iterates[t]
            tolerance = 2 * torch.finfo(torch.float32).eps * iterates[t + 1].abs()
            tolerance += 1e-4 * step.abs().max()
            if not bool(((moved - step).abs() <= tolerance).all()):
                return False
        return True

    assert matches(expected)
    assert not matches(ignored)
    assert not matches(overwritten)
