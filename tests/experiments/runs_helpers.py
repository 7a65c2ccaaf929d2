"""Shared helpers: everything here trains the seconds-scale "synthetic" task."""

from __future__ import annotations

import torch

from adaptopt.experiments.trainer import TrainConfig


def synthetic(optimizer: str = "sgd", **fields) -> TrainConfig:
    """A synthetic-task run: 512 training examples, batch 32 → 16 steps per epoch."""
    hparams = fields.pop("hparams", {"lr": 0.1, "momentum": 0.9})
    return TrainConfig("synthetic", optimizer, hparams, **{"epochs": 2, **fields})


def params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def checkpoint_params(run_dir) -> list[torch.Tensor]:
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    return list(state.values())
