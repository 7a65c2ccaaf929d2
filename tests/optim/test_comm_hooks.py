"""Sign-compressed DDP (gloo, 2 and 4 CPU processes) against a float64 simulation of the same
per-worker gradients: majority vote, tie rule, bucket tails, EF residuals, resume, bytes."""

from __future__ import annotations

import copy
import io
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from adaptopt.optim.comm_hooks import (
    SignCompressionState,
    pack_bits,
    register_sign_compression,
    sign_compression_hook,
    unpack_bits,
)

BETA = 0.9
STEPS = 3


class Net(nn.Module):
    """Parameters of 15, 3, 21, 7 and 13 + 1 coordinates: sizes that are not multiples of 8;
    ``idle``'s gradient is exactly 0 (its output is multiplied by 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.idle = nn.Linear(5, 3), nn.Linear(3, 7), nn.Linear(13, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x[:, :5]))).square().sum() + 0 * self.idle(x).sum()


def _inputs(rank: int, step: int) -> torch.Tensor:
    return torch.randn(4, 13, generator=torch.Generator().manual_seed(1000 * step + rank))


class _Counter:
    """Counts the bytes each collective is handed (wraps the torch.distributed functions)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        for name in ("all_reduce", "all_gather_single", "all_gather_into_tensor"):
            if hasattr(dist, name):
                setattr(dist, name, self._wrap(name, getattr(dist, name)))

    def _wrap(self, name, fn):
        def counted(*args, **kwargs):
            x = args[0] if name == "all_reduce" else args[1]
            self.calls.append((name, x.numel() * x.element_size()))
            return fn(*args, **kwargs)

        return counted

    def take(self) -> list[tuple[str, int]]:
        calls, self.calls = self.calls, []
        return calls


def _ddp(model: nn.Module) -> DistributedDataParallel:
    return DistributedDataParallel(model, bucket_cap_mb=40 / 2**20)  # small buckets


def _run(ddp, hook_state, steps, register=True):
    """Backward passes on each rank's own inputs; per step, the local gradients (captured in
    the hook, before compression), the gradients DDP leaves (after it) and the bucket sizes."""
    names = {p: n for n, p in ddp.module.named_parameters()}
    current: dict = {}

    def hook(state, bucket):
        for p, g in zip(bucket.parameters(), bucket.gradients(), strict=True):
            current["local"][names[p]] = g.detach().clone()
        current["buckets"].append(bucket.buffer().numel())
        return sign_compression_hook(state, bucket)

    if register:
        ddp.register_comm_hook(hook_state, hook)
    out = []
    for step in steps:
        current.update(local={}, buckets=[])
        ddp.zero_grad()
        ddp(_inputs(dist.get_rank(), step)).backward()
        after = {n: p.grad.detach().clone() for n, p in ddp.module.named_parameters()}
        out.append({"local": current["local"], "after": after, "buckets": current["buckets"]})
    return out


def _worker(rank: int, world: int, port: int, path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    counter = _Counter()
    torch.manual_seed(0)
    model = Net()
    result: dict = {}
    for mode, beta in (("sign-mv", BETA), ("sign-mv", 0.0), ("ef-sign", 0.0)):
        ddp = _ddp(copy.deepcopy(model))
        state = SignCompressionState({p: n for n, p in ddp.module.named_parameters()}, mode, beta)
        counter.take()
        result[mode, beta] = _run(ddp, state, range(STEPS))
        result[mode, beta, "calls"] = counter.take()
        result[mode, beta, "state"] = state.gather_state_dict()
    # resume: 2 steps, checkpoint (gathered, through torch.save), 2 more on a fresh DDP
    ddp = _ddp(copy.deepcopy(model))
    state = SignCompressionState({p: n for n, p in ddp.module.named_parameters()}, "ef-sign", 0)
    _run(ddp, state, range(2))
    buffer = io.BytesIO()
    torch.save(state.gather_state_dict(), buffer)
    straight = _run(ddp, state, range(2, 4), register=False)
    ddp2 = _ddp(copy.deepcopy(model))
    state2 = SignCompressionState({p: n for n, p in ddp2.module.named_parameters()}, "ef-sign", 0)
    buffer.seek(0)
    state2.load_gathered_state_dict(torch.load(buffer, weights_only=True))
    resumed = _run(ddp2, state2, range(2, 4))
    result["resume"] = (straight, resumed, state.state_dict(), state2.state_dict())
    # uncompressed baseline: torch's fp32 all-reduce hook (Python-level dist.all_reduce)
    ddp = _ddp(copy.deepcopy(model))
    ddp.register_comm_hook(None, default_hooks.allreduce_hook)
    counter.take()
    ddp(_inputs(rank, 0)).backward()
    result["allreduce_calls"] = counter.take()
    # the trainer's path: ProcessGroup.wrap registers the hook and exposes its state
    from adaptopt.experiments.distributed import ProcessGroup

    group = ProcessGroup(rank, world)
    net = group.wrap(copy.deepcopy(model), torch.device("cpu"), compress="sign-mv")
    net(_inputs(rank, 0)).backward()
    result["group_state"] = group.hook_state(net)
    torch.save(result, os.path.join(path, f"{rank}.pt"))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sign(v: torch.Tensor, rank: int) -> torch.Tensor:
    """The documented encoding: +1 for v > 0, −1 for v < 0, 0 → +1 on even ranks, −1 on odd."""
    zero = 1.0 if rank % 2 == 0 else -1.0
    return torch.where(v > 0, 1.0, torch.where(v < 0, -1.0, zero)).double()


@pytest.fixture(scope="module", params=[2, 4])
def runs(request, tmp_path_factory):
    world = request.param
    path = tmp_path_factory.mktemp(f"w{world}")
    mp.spawn(_worker, args=(world, _free_port(), str(path)), nprocs=world)
    return world, [torch.load(path / f"{r}.pt", weights_only=False) for r in range(world)]


def test_pack_bits_roundtrip_with_tails():
    for d in (1, 7, 8, 9, 23):
        bits = torch.rand(d, generator=torch.Generator().manual_seed(d)) > 0.5
        packed = pack_bits(bits)
        assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(d / 8)
        assert torch.equal(unpack_bits(packed, d), bits)
        expected = sum(int(b) << (i % 8) for i, b in enumerate(bits.tolist()) if i < 8)
        assert int(packed[0]) == expected  # bit j of byte 0 is element j


@pytest.mark.parametrize("beta", [BETA, 0.0])
def test_vote_equals_simulation(runs, beta):
    world, ranks = runs
    names = list(ranks[0]["sign-mv", beta][0]["local"])
    momenta = [{n: 0.0 for n in names} for _ in range(world)]
    ties = 0
    for step in range(STEPS):
        for n in names:
            total = 0
            for r in range(world):
                g = ranks[r]["sign-mv", beta][step]["local"][n].double()
                momenta[r][n] = beta * momenta[r][n] + (1 - beta) * g
                total = total + _sign(momenta[r][n], r)
            vote = torch.sign(total)
            ties += int((total == 0).sum())
            for r in range(world):
                assert torch.equal(ranks[r]["sign-mv", beta][step]["after"][n].double(), vote)
    assert ties > 0  # the tie rule (vote 0) was exercised ...
    idle = ranks[0]["sign-mv", beta][0]
    assert not idle["local"]["idle.weight"].any()  # ... also by the all-zero gradient
    assert not idle["after"]["idle.weight"].any()  # which gets vote 0 (even world size)
    steps = ranks[0]["sign-mv", beta]
    assert any(d % 8 for s in steps for d in s["buckets"]) and len(steps[-1]["buckets"]) >= 2


def test_momentum_changes_the_vote(runs):
    _, ranks = runs
    with_m, without = ranks[0]["sign-mv", BETA][-1]["after"], ranks[0]["sign-mv", 0.0][-1]["after"]
    assert any(not torch.equal(with_m[n], without[n]) for n in with_m)


def test_ef_sign_equals_simulation(runs):
    world, ranks = runs
    names = list(ranks[0]["ef-sign", 0.0][0]["local"])
    residuals = [{n: 0.0 for n in names} for _ in range(world)]
    feedback_matters = False
    for step in range(STEPS):
        for n in names:
            mean, without_feedback = 0, 0
            for r in range(world):
                g = ranks[r]["ef-sign", 0.0][step]["local"][n].double()
                p = g + residuals[r][n]
                delta = p.abs().mean() * _sign(p, r)
                residuals[r][n] = p - delta
                mean = mean + delta / world
                without_feedback = without_feedback + g.abs().mean() * _sign(g, r) / world
            for r in range(world):
                got = ranks[r]["ef-sign", 0.0][step]["after"][n].double()
                torch.testing.assert_close(got, mean, rtol=1e-5, atol=1e-6)  # float32 rounding
            feedback_matters |= not torch.allclose(without_feedback, mean, rtol=1e-3, atol=1e-3)
    assert feedback_matters  # negative control: plain scaled sign is far outside the tolerance
    for r in range(world):
        saved = ranks[0]["ef-sign", 0.0, "state"]["buffers"]
        for n in names:
            torch.testing.assert_close(saved[n][r].double(), residuals[r][n], rtol=1e-5, atol=1e-6)
    assert any(residuals[0][n].abs().max() > 1e-3 for n in names)


def test_ef_resume_is_bitwise(runs):
    _, ranks = runs
    for rank in ranks:
        straight, resumed, state, state2 = rank["resume"]
        for a, b in zip(straight, resumed, strict=True):
            for n in a["after"]:
                assert torch.equal(a["after"][n], b["after"][n])
        assert state["buffers"].keys() == state2["buffers"].keys()
        for n, t in state["buffers"].items():
            assert torch.equal(t, state2["buffers"][n])
        assert any(t.abs().sum() > 0 for t in state["buffers"].values())


def test_bytes_per_step(runs):
    world, ranks = runs
    reduced = sum(b for _, b in ranks[0]["allreduce_calls"])
    d = sum(p.numel() for p in Net().parameters())
    assert reduced == 4 * d  # one uncompressed step: d float32 values
    n_tensors = 6
    for mode, extra in (("sign-mv", 0), ("ef-sign", 4 * n_tensors)):
        beta = BETA if mode == "sign-mv" else 0.0
        steps, calls = ranks[0][mode, beta], ranks[0][mode, beta, "calls"]
        assert {name for name, _ in calls} <= {"all_gather_single", "all_gather_into_tensor"}
        buckets = [b for s in steps for b in s["buckets"]]  # DDP rebuilds them after step 1
        assert sum(buckets) == STEPS * d and len(steps[-1]["buckets"]) >= 2
        assert len(calls) == len(buckets)
        sent = sum(b for _, b in calls)
        assert sent == sum(math.ceil(b / 8) for b in buckets) + STEPS * extra
        # bandwidth-optimal costs per worker: all-reduce sends (and receives) 2(W-1)/W of the
        # buffer, all-gather sends its chunk to (and receives one from) each of W-1 others
        last = sum(b for _, b in calls[-len(steps[-1]["buckets"]) :])
        ratio = (2 * (world - 1) / world * reduced) / ((world - 1) * last)
        print(f"W={world} {mode}: {last} B/step vs {reduced} B fp32, ring ratio {ratio:.2f}")
        assert ratio < 64 / world  # tails (and scales: 6 of them for 60 coordinates) cost
        if mode == "sign-mv":
            assert ratio > 0.8 * 64 / world


def test_process_group_wrap(runs):
    world, ranks = runs
    state = ranks[0]["group_state"]
    assert state["mode"] == "sign-mv" and state["world_size"] == world
    assert set(state["buffers"]) == {n for n, _ in Net().named_parameters()}


def test_errors():
    with pytest.raises(ValueError, match="unknown sign compression"):
        SignCompressionState({}, "sign")
    with pytest.raises(ValueError, match="momentum"):
        SignCompressionState({}, "ef-sign", 0.9)
    with pytest.raises(TypeError, match="DistributedDataParallel"):
        register_sign_compression(nn.Linear(2, 2))


def test_train_config_compress():
    from adaptopt.experiments.config import TrainConfig

    with pytest.raises(ValueError, match="compress must be None or one of sign-mv, ef-sign"):
        TrainConfig("synthetic", "signsgd", compress="sign")
    plain = TrainConfig("synthetic", "signsgd")
    assert "compress" not in plain.identity()  # ids of runs without it are unchanged
    assert TrainConfig("synthetic", "signsgd", compress="sign-mv").run_id() != plain.run_id()


def test_compress_needs_several_processes():
    from adaptopt.experiments.distributed import ProcessGroup

    group = ProcessGroup()
    assert group.wrap(nn.Linear(2, 2), torch.device("cpu")).__class__ is nn.Linear
    with pytest.raises(ValueError, match="needs several processes"):
        group.wrap(nn.Linear(2, 2), torch.device("cpu"), compress="ef-sign")
    assert group.hook_state(nn.Linear(2, 2)) is None


def test_cli_compress_option(monkeypatch, tmp_path):
    import adaptopt.cli.train as cli

    seen = []
    monkeypatch.setattr(cli, "train", lambda config, *a, **k: seen.append(config) or 1 / 0)
    args = ["train", "--task", "synthetic", "--optimizer", "signsgd", "--run-dir", str(tmp_path)]
    from adaptopt.cli.main import main

    with pytest.raises(ZeroDivisionError):
        main([*args, "--compress", "ef-sign"])
    assert seen[-1].compress == "ef-sign"
    with pytest.raises(SystemExit):
        main([*args, "--compress", "bits"])
