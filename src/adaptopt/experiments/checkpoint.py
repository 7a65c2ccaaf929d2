"""Checkpoints of a run: model, optimizer, scheduler, every RNG state, the loop's position
and the iterate average, written atomically and read back with ``weights_only=True``."""

from __future__ import annotations

import dataclasses
import os
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from adaptopt.experiments.averaging import IterateAverage


@dataclass
class Position:
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


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR | None,
    pos: Position,
    averaging: IterateAverage,
    comm_hook: dict[str, Any] | None = None,
) -> None:
    rng = _rng_states()
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng,
        "position": dataclasses.asdict(pos),
        "averaging": averaging.state_dict(),
        "comm_hook": comm_hook,  # every worker's sign-compression state (ProcessGroup.hook_state)
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill leaves the previous checkpoint intact


def restore_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR | None,
    averaging: IterateAverage,
) -> tuple[Position, dict[str, Any] | None]:
    state = load_checkpoint(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    _set_rng_states(state["rng"])
    if "averaging" in state:
        averaging.load_state_dict(state["averaging"])
    return Position(**state["position"]), state.get("comm_hook")


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
    state = np.random.get_state()
    assert isinstance(state, tuple)  # the legacy form, as the global generator is an MT19937
    kind, keys, pos, has_gauss, gauss = state
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
