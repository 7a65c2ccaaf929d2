"""Data-parallel training (gloo, 2 CPU processes) equals single-process training."""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp
from runs_helpers import checkpoint_params, params, synthetic

from adaptopt.experiments.trainer import train

# Batch 31 splits 16/15 over two ranks: the loss weights must make the average exact. The
# small gamma keeps SGDClipMomentum clipping at every step, so a per-rank (local) momentum
# norm would give different parameters.
CONFIG = synthetic(
    "sgd_clip_momentum",
    hparams={"lr": 1.0, "gamma": 0.05, "momentum": 0.9},
    epochs=1,
    batch_size=31,
    max_steps_per_epoch=6,
)


def _rank(rank: int, port: int, run_dir) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE="2",
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    train(CONFIG, run_dir)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process(tmp_path):
    mp.spawn(_rank, args=(_free_port(), tmp_path / "ddp"), nprocs=2)
    single = params(train(CONFIG).model)
    distributed = checkpoint_params(tmp_path / "ddp")
    init = params(train(synthetic("sgd_clip_momentum", hparams=CONFIG.hparams, epochs=0)).model)
    assert any(not torch.allclose(a, b) for a, b in zip(single, init, strict=True))  # it did train
    for a, b in zip(distributed, single, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert (tmp_path / "ddp" / "metrics.jsonl").read_text().count('"kind": "epoch"') == 1
