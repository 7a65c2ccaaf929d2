"""Sharded parameters on 2 gloo processes (CPU): FSDP2's ``fully_shard`` and DTensor.

One spawn of 2 ranks runs every scenario (each rank records tensors; the assertions are made
here). The reference for each scenario is the same model trained in one process on the full
batches with the single-tensor step (``foreach=False, fused=False``): FSDP2 averages the two
ranks' gradients of their halves, which is the full-batch gradient of the mean loss.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from infos import INFOS, names
from torch import nn

from adaptopt.optim import OPTIMIZERS, _base, _momentum, create_optimizer

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is absent")

WORLD = 2
# every optimizer of the table (tests/optim/infos.py), with its ``train_hparams``
NAMES = names()
# the paths a user can ask for; "fused" on a DTensor must raise the documented ValueError.
# On the CPU the default (fused=None) falls back to the single-tensor step: "default" is it.
PATHS: dict[str, dict[str, Any]] = {
    "default": {},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}
EQUIVALENCE = ("signum", "sgd_clip", "sgd_normalized", "sgdol")  # element-wise, global norms
CHECKPOINTED = ("gsignsgd", "sgd_clip_momentum", "sgdol")
STEPS = 3


def _make(name: str, params, **kwargs: Any) -> torch.optim.Optimizer:
    if not INFOS[name].supports_fused:
        kwargs.pop("fused", None)
    return create_optimizer(name, params, **INFOS[name].train_hparams, **kwargs)


def _reference_opt(name: str, params) -> torch.optim.Optimizer:
    return _make(name, params, foreach=False, fused=False)


def _model() -> nn.Module:
    """7 and 3 output rows: uneven shards over 2 ranks (4 + 3, 2 + 1)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))


def _batch(i: int, rank: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``i`` (8 examples); ``rank``'s half of it, or all of it for ``None``."""
    g = torch.Generator().manual_seed(1000 + i)
    x, y = torch.randn(8, 5, generator=g), torch.randn(8, 3, generator=g)
    return (x, y) if rank is None else (x[4 * rank : 4 * rank + 4], y[4 * rank : 4 * rank + 4])


def _train(model: nn.Module, opt, steps: int, rank: int | None, first: int = 0) -> None:
    """``steps`` steps on batches ``first, first+1, ...`` (SGDOL: two batches per step)."""
    batches = iter(range(first * 2, (first + steps) * 2))

    def closure() -> torch.Tensor:
        x, y = _batch(next(batches), rank)
        loss = (model(x) - y).square().mean()
        loss.backward()
        return loss

    for _ in range(steps):
        opt.zero_grad()
        if isinstance(opt, OPTIMIZERS["sgdol"]):
            opt.step(closure)
        else:
            closure()
            next(batches)
            opt.step()


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [_full(p.detach()).clone() for p in model.parameters()]


def _sharded(mesh) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    model = _model()
    fully_shard(model, mesh=mesh)
    return model


def _shard_local_norm(tensors: list[torch.Tensor], foreach: bool) -> torch.Tensor:
    """The wrong norm: each rank's own shards only (what ``global_norm`` did before)."""
    local = [t.to_local() if hasattr(t, "to_local") else t for t in tensors]
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in local]))


# -- scenarios: (rank, mesh, out) -> recorded values -----------------------------------------
def _equivalence(rank: int, mesh, out: Path) -> dict[str, Any]:
    results = {}
    for name in EQUIVALENCE:
        sharded = _sharded(mesh)
        opt = _make(name, sharded.parameters())
        _train(sharded, opt, STEPS, rank)
        reference = _model()
        x0 = _params(reference)
        _train(reference, _reference_opt(name, reference.parameters()), STEPS, None)
        results[name] = {"sharded": _params(sharded), "ref": _params(reference), "x0": x0}
    return results


def _norm_control(rank: int, mesh, out: Path) -> dict[str, Any]:
    sharded = _sharded(mesh)
    x, y = _batch(0, rank)
    (sharded(x) - y).square().mean().backward()
    grads = [p.grad for p in sharded.parameters()]
    norms = {
        "global": _base.global_norm(grads, False),
        "global_foreach": _base.global_norm(grads, True),
        "local": _shard_local_norm(grads, False),
        "full": torch.linalg.vector_norm(torch.cat([_full(g).flatten() for g in grads])),
        "dot": _base.global_dot(grads, grads),
    }
    # where the global-norm family looks it up (its two-phase step, _momentum.py)
    with mock.patch.object(_momentum, "global_norm", _shard_local_norm):
        wrong = _sharded(mesh)
        _train(wrong, _make("sgd_clip", wrong.parameters()), STEPS, rank)
    return {"norms": norms, "shard_local_sgd_clip": _params(wrong)}


def _placements_data() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return [torch.randn(*shape, generator=g) for shape in ((3, 4), (5, 6), (3, 4), (5, 6))]


def _placements(rank: int, mesh, out: Path) -> dict[str, Any]:
    """distribute_tensor beyond FSDP2's Shard(0): a replicated parameter, a Shard(1) one, and
    a Partial (pending-sum) gradient; one normalized-SGD step (‖g‖ global)."""
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

    a, b, ga, gb = _placements_data()
    grads = [
        DTensor.from_local(ga * (1 + rank) / 3, mesh, [Partial()]),  # sums to ga over 2 ranks
        distribute_tensor(gb, mesh, [Shard(1)]),
    ]
    norms = {"norm": _base.global_norm(grads, True), "dot": _base.global_dot(grads, grads)}
    pa = nn.Parameter(distribute_tensor(a, mesh, [Replicate()]))
    pb = nn.Parameter(distribute_tensor(b, mesh, [Shard(1)]))
    pa.grad, pb.grad = distribute_tensor(ga, mesh, [Replicate()]), grads[1]
    create_optimizer("sgd_normalized", [pa, pb], lr=0.1, momentum=0.0).step()
    return {**norms, "params": [_full(pa.detach()), _full(pb.detach())]}


def _paths(rank: int, mesh, out: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in NAMES:
        reference = _model()
        _train(reference, _reference_opt(name, reference.parameters()), 2, None)
        for path, kwargs in PATHS.items():
            if path == "fused" and not INFOS[name].supports_fused:
                continue  # no fused step (no such argument): SGDOL
            sharded = _sharded(mesh)
            try:
                opt = _make(name, sharded.parameters(), **kwargs)
            except ValueError as err:
                results[f"{name}/{path}"] = f"refused: {err}"
                continue
            _train(sharded, opt, 2, rank)
            group = opt.param_groups[0]
            results[f"{name}/{path}"] = {
                "sharded": _params(sharded),
                "ref": _params(reference),
                "fused": bool(group.get("fused")),
                "foreach": bool(group["foreach"]),
            }
    return results


def _checkpoint(rank: int, mesh, out: Path) -> dict[str, Any]:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    results = {}
    for name in CHECKPOINTED:
        model = _sharded(mesh)
        opt = _make(name, model.parameters())
        _train(model, opt, 2, rank)
        state = {
            "model": get_model_state_dict(model),
            "optim": get_optimizer_state_dict(model, opt),
        }
        dcp.save(state, checkpoint_id=str(out / f"dcp-{name}"))
        saved = {
            "state": [
                {k: _full(v).clone() for k, v in opt.state[p].items()} for p in model.parameters()
            ],
            "groups": [
                {k: v for k, v in g.items() if k != "params" and not torch.is_tensor(v)}
                for g in opt.param_groups
            ],
            "params": _params(model),
        }
        _train(model, opt, 1, rank, first=2)  # the step after the checkpoint
        results[name] = {"saved": saved, "next": _params(model)}
    return results


SCENARIOS = {
    "equivalence": _equivalence,
    "norm_control": _norm_control,
    "placements": _placements,
    "paths": _paths,
    "checkpoint": _checkpoint,
}


def _worker(rank: int, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    torch.set_num_threads(1)
    store = dist.FileStore(os.path.join(out, "store"), WORLD)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=WORLD)
    mesh = init_device_mesh("cpu", (WORLD,))
    results: dict[str, Any] = {}
    for key, scenario in SCENARIOS.items():
        try:
            results[key] = scenario(rank, mesh, Path(out))
        except Exception:  # recorded, so that each test reports its own failure
            results[key] = traceback.format_exc()
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> tuple[list[dict[str, Any]], Path]:
    out = tmp_path_factory.mktemp("sharded")
    ctx = mp.spawn(_worker, args=(str(out),), nprocs=WORLD, join=False)
    deadline = time.monotonic() + 300
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2-rank sharded scenarios did not finish within 300 s")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)], out


def _result(ranks, key: str) -> list[Any]:
    results = [r[key] for r in ranks[0]]
    for r in results:
        if isinstance(r, str):
            pytest.fail(f"scenario {key!r} raised on a rank:\n{r}")
    return results


def _assert_params(actual: list[torch.Tensor], expected: list[torch.Tensor], atol: float) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=atol)


@pytest.mark.parametrize("name", EQUIVALENCE)
def test_fully_shard_training_equals_one_process(ranks, name):
    for rank in _result(ranks, "equivalence"):
        r = rank[name]
        _assert_params(r["sharded"], r["ref"], atol=1e-6)
        # it trained: every tensor moved by far more than the tolerance
        assert min((a - b).abs().max() for a, b in zip(r["ref"], r["x0"], strict=True)) > 1e-4


def test_norms_are_global_over_the_mesh(ranks):
    for rank in _result(ranks, "norm_control"):
        norms = rank["norms"]
        torch.testing.assert_close(norms["global"], norms["full"], rtol=1e-6, atol=0)
        torch.testing.assert_close(norms["global_foreach"], norms["full"], rtol=1e-6, atol=0)
        torch.testing.assert_close(norms["dot"], norms["full"].double().square(), rtol=1e-6, atol=0)
        # negative control: one rank's shards alone miss a large part of the norm
        assert norms["local"] < 0.99 * norms["full"]


def test_replicated_and_partial_placements(ranks):
    a, b, ga, gb = (t.double() for t in _placements_data())
    norm = torch.cat([ga.flatten(), gb.flatten()]).norm()
    for rank in _result(ranks, "placements"):
        torch.testing.assert_close(rank["norm"].double(), norm, rtol=1e-6, atol=0)
        torch.testing.assert_close(rank["dot"], norm.square(), rtol=1e-6, atol=0)
        expected = [a - 0.1 * ga / norm, b - 0.1 * gb / norm]
        for actual, e in zip(rank["params"], expected, strict=True):
            torch.testing.assert_close(actual.double(), e, rtol=0, atol=1e-6)


def test_shard_local_norm_would_train_elsewhere(ranks):
    """Negative control of the equivalence: clipping by the shard-local norm (the old
    behaviour) ends far from the one-process run that the global norm matches to 1e-6."""
    for rank in ranks[0]:
        if isinstance(rank["norm_control"], str) or isinstance(rank["equivalence"], str):
            pytest.fail("a scenario raised")
        wrong = rank["norm_control"]["shard_local_sgd_clip"]
        ref = rank["equivalence"]["sgd_clip"]["ref"]
        assert max((a - b).abs().max() for a, b in zip(wrong, ref, strict=True)) > 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_every_optimizer_steps_fully_shard_params_on_every_path(ranks, name):
    results = _result(ranks, "paths")
    for rank in results:
        for path in PATHS:
            r = rank.get(f"{name}/{path}")
            if path == "fused" and not INFOS[name].supports_fused:
                assert r is None
                continue
            if path == "fused":  # the documented refusal, on both ranks
                assert isinstance(r, str) and "cannot update a DTensor" in r, r
                continue
            assert isinstance(r, dict), r
            assert not r["fused"]  # fused=None fell back
            assert r["foreach"] == (path == "foreach")
            _assert_params(r["sharded"], r["ref"], atol=1e-6)


@pytest.mark.parametrize("name", CHECKPOINTED)
def test_dcp_checkpoint_reshards_from_two_ranks_to_one(ranks, name):
    """Save with 2 ranks through torch.distributed.checkpoint, load in this process (no
    process group) into a plain model + optimizer: same state, same next step."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    results, out = _result(ranks, "checkpoint"), ranks[1]
    saved, following = results[0][name]["saved"], results[0][name]["next"]
    model = _model()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # nothing of x_0 may survive the load
    opt = _make(name, model.parameters())  # fused=None: the fused step for plain tensors
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
    dcp.load(state, checkpoint_id=str(out / f"dcp-{name}"), no_dist=True)
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, opt, state["optim"])

    _assert_params(_params(model), saved["params"], atol=0)
    for p, expected in zip(model.parameters(), saved["state"], strict=True):
        assert set(opt.state[p]) == set(expected)
        for key, value in expected.items():
            loaded = opt.state[p][key]
            assert loaded.dtype == value.dtype and torch.equal(loaded.cpu(), value), key
            if key == "step":
                assert loaded.dtype == torch.float64 and loaded.item() == 2.0
    for group, expected in zip(opt.param_groups, saved["groups"], strict=True):
        for key, value in expected.items():
            if key not in _base.IMPLEMENTATION_KEYS:
                assert group[key] == value, key
    if name != "sgdol":
        assert saved["state"][0]  # there was state to carry
    else:
        assert saved["groups"][0]["sum_grad_sq"] > INFOS["sgdol"].train_hparams["alpha"]
    _train(model, opt, 1, None, first=2)
    _assert_params(_params(model), following, atol=1e-6)


def test_sgdol_without_closure_at_lr_zero_is_a_noop():
    """How torch.distributed.checkpoint initializes optimizer state (zero gradients, lr = 0,
    ``step()``); any other closure-less SGDOL step still raises."""
    p = nn.Parameter(torch.ones(3))
    opt = create_optimizer("sgdol", [p], lr=0.0)
    p.grad = torch.ones(3)
    before = dict(opt.param_groups[0])
    assert opt.step() is None
    assert torch.equal(p.detach(), torch.ones(3)) and opt.param_groups[0] == before
    opt.param_groups[0]["lr"] = 1.0
    with pytest.raises(RuntimeError, match="needs a closure"):
        opt.step()
