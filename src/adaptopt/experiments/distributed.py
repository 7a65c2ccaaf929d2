"""Data-parallel plumbing of the trainer: the process group under ``torchrun`` and batch
sharding. Every rank draws the same batches and trains on its slice of each (:func:`shard`,
along ``task.batch_dim``); DDP averages the gradients, so global-norm optimizers see the
full-batch gradient, as in one process. With ``compress`` (``TrainConfig.compress``) DDP exchanges
1-bit signs instead (:mod:`adaptopt.optim.comm_hooks`): the gradient the optimizer sees is then
the majority vote (``"sign-mv"``) or the mean scaled sign (``"ef-sign"``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from adaptopt.optim.comm_hooks import register_sign_compression

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

    def wrap(
        self,
        model: nn.Module,
        device: torch.device,
        compress: str | None = None,
        hook_state: dict[str, Any] | None = None,
    ) -> nn.Module:
        """DDP (gradients averaged over ranks during backward) when distributed.

        ``compress`` (``"sign-mv"`` or ``"ef-sign"``) registers the sign-compression hook
        (Signum momentum 0.9 on the workers for ``"sign-mv"``); ``hook_state`` is what
        :meth:`hook_state` returned when the checkpoint was written (every worker's momenta or
        residuals), restored into it. Compression needs more than one process: with world
        size 1 there is nothing to communicate and ``compress`` raises ``ValueError``.
        """
        if compress is not None and self.world_size == 1:
            raise ValueError(
                f"compress={compress!r} compresses the gradient exchange of data-parallel "
                "training and needs several processes (torchrun --nproc_per_node=N, N >= 2); "
                "this process runs alone (WORLD_SIZE=1)"
            )
        if self.world_size == 1:
            return model
        device_ids = [device.index] if device.type == "cuda" else None
        ddp = DistributedDataParallel(model, device_ids=device_ids)
        if compress is not None:
            state = register_sign_compression(ddp, compress)
            if hook_state is not None:
                state.load_gathered_state_dict(hook_state)
            # nn.Module.__setattr__ takes any value; torch annotates it for tensors and modules
            ddp.sign_compression = state  # type: ignore[assignment]
        elif hook_state is not None:
            raise ValueError("the checkpoint holds sign-compression state but compress is off")
        return ddp

    def hook_state(self, net: nn.Module) -> dict[str, Any] | None:
        """Every worker's sign-compression state (momenta or EF residuals) for a checkpoint,
        or ``None`` without compression. A collective when compressing: call it on every rank."""
        state = getattr(net, "sign_compression", None)
        return None if state is None else state.gather_state_dict()

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
