"""``adaptopt train --compress`` under 2 gloo processes: training with the sign-compressed
exchange resumes bitwise from a checkpoint (the EF residuals of every worker are in it)."""

from __future__ import annotations

import contextlib
import inspect
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from runs_helpers import checkpoint_params, synthetic

from adaptopt.experiments import checkpoint, trainer
from adaptopt.experiments.callbacks import Callback
from adaptopt.experiments.trainer import train

pytestmark = pytest.mark.skipif(
    "comm_hook" not in inspect.getsource(checkpoint)
    or "compress=" not in inspect.getsource(trainer),
    reason="the trainer does not pass TrainConfig.compress / the hook state yet",
)

CONFIG = synthetic("sgd", hparams={"lr": 0.05}, epochs=2, max_steps_per_epoch=5, compress="ef-sign")


class _Crash(Callback):
    def after_step(self, ctx) -> None:
        if ctx.step == 7:  # in epoch 2, two steps after the epoch-1 checkpoint
            raise KeyboardInterrupt


def _rank(rank: int, port: int, root) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE="2",
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    # one process group for the three runs (train() then neither joins nor leaves it): a
    # rank re-joining while the other still holds the previous group could meet its store
    dist.init_process_group("gloo", rank=rank, world_size=2)
    train(CONFIG, root / "straight")
    with contextlib.suppress(KeyboardInterrupt):
        train(CONFIG, root / "resumed", callbacks=[_Crash()])
    train(CONFIG, root / "resumed", resume=True)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ef_sign_training_resumes_bitwise(tmp_path):
    mp.spawn(_rank, args=(_free_port(), tmp_path), nprocs=2)
    state = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    hook = state["comm_hook"]
    assert hook["mode"] == "ef-sign" and hook["world_size"] == 2
    residuals = torch.cat([t.flatten(1) for t in hook["buffers"].values()], 1)
    assert residuals.abs().sum() > 0 and not torch.equal(residuals[0], residuals[1])
    resumed = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    for name, t in hook["buffers"].items():
        assert torch.equal(t, resumed["comm_hook"]["buffers"][name])
    for a, b in zip(
        checkpoint_params(tmp_path / "straight"),
        checkpoint_params(tmp_path / "resumed"),
        strict=True,
    ):
        assert torch.equal(a, b)
    # negative control: the same run without compression ends elsewhere
    plain = train(synthetic("sgd", hparams={"lr": 0.05}, epochs=2, max_steps_per_epoch=5))
    ours = checkpoint_params(tmp_path / "straight")
    assert any(
        not torch.allclose(a, b)
        for a, b in zip(ours, plain.model.state_dict().values(), strict=True)
    )
