"""Data-parallel plumbing of the trainer: the process group under ``torchrun`` and batch
sharding. Every rank draws the same batches and trains on its slice of each (:func:`shard`,
along ``task.batch_dim``); DDP averages the gradients, so global-norm optimizers see the
full-batch gradient, as in one process."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

Batch = Any


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place under ``torchrun`` (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owned: bool = False  # we joined it, so we leave it

    @classmethod
    def join(cls) -> ProcessGroup:
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


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"``: this rank's CUDA device if there is one, else CPU; otherwise ``name``."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")
