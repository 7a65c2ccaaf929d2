"""Tensor subclasses (DTensor) never reach the fused step's native kernels: ``fused=None`` falls
back to the non-fused step, ``fused=True`` raises (a 1-process gloo mesh on CPU)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from infos import names
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from adaptopt.optim import create_optimizer
from adaptopt.optim._base import is_plain

FUSED = names(lambda info: info.supports_fused)
HPARAMS = {"lr": 0.05, "gamma": 0.5}  # gamma: the clipped SGDs


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    store = dist.FileStore(str(tmp_path_factory.mktemp("store") / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield init_device_mesh("cpu", (1,))
    dist.destroy_process_group()


def _make(name: str, params, **kwargs):
    hparams = {k: v for k, v in HPARAMS.items() if k == "lr" or "clip" in name}
    return create_optimizer(name, params, **hparams, **kwargs)


def _grads(step: int) -> torch.Tensor:
    return torch.randn(6, 5, generator=torch.Generator().manual_seed(step))


def test_fused_is_the_cpu_default_for_plain_tensors():
    assert names(lambda info: info.cls.supports_fused) == FUSED  # the table, not a count
    # the property the fallback is about: plain parameters do get the fused step by default
    p = torch.nn.Parameter(torch.ones(3))
    assert _make("signum", [p]).param_groups[0]["fused"] is True
    assert is_plain(p) and is_plain(None) and is_plain(torch.ones(1))


@pytest.mark.parametrize("name", FUSED)
def test_dtensor_falls_back_and_matches_plain(mesh, name):
    x0 = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    sharded = torch.nn.Parameter(distribute_tensor(x0.clone(), mesh, [Shard(0)]))
    plain = torch.nn.Parameter(x0.clone())
    assert isinstance(sharded, DTensor) and not is_plain(sharded)
    opt = _make(name, [sharded])
    assert opt.param_groups[0]["fused"] is False  # fused=None chose the non-fused step
    reference = _make(name, [plain], fused=False)
    for step in range(3):
        sharded.grad = distribute_tensor(_grads(step), mesh, [Shard(0)])
        plain.grad = _grads(step)
        opt.step()
        reference.step()
    assert isinstance(sharded, DTensor)
    assert not torch.equal(plain.detach(), x0)  # it trained
    torch.testing.assert_close(sharded.detach().to_local(), plain.detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", FUSED)
def test_fused_true_refuses_dtensor(mesh, name):
    p = torch.nn.Parameter(distribute_tensor(torch.zeros(4, 2), mesh, [Shard(0)]))
    with pytest.raises(ValueError, match="cannot update a DTensor"):
        _make(name, [p], fused=True)


def test_fused_group_meeting_a_subclass_at_step_time(mesh):
    """A group built on plain tensors whose parameters are later swapped for DTensors:
    the default falls back, an explicit fused=True raises (no crash either way)."""
    for fused, raises in ((None, False), (True, True)):
        p = torch.nn.Parameter(torch.ones(4, 2))
        opt = _make("signum", [p], fused=fused)
        assert opt.param_groups[0]["fused"] is True
        d = torch.nn.Parameter(distribute_tensor(torch.ones(4, 2), mesh, [Shard(0)]))
        d.grad = distribute_tensor(torch.ones(4, 2), mesh, [Shard(0)])
        opt.param_groups[0]["params"] = [d]
        if raises:
            with pytest.raises(ValueError, match="cannot update a DTensor"):
                opt.step()
        else:
            opt.step()
            assert opt.param_groups[0]["fused"] is False
            torch.testing.assert_close(d.detach().to_local(), torch.full((4, 2), 1 - 0.05))
