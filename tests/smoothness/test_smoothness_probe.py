"""The probe leaves training untouched, is reproducible, and rejects bad input clearly."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from adaptopt.experiments.callbacks import RunContext, SmoothnessCallback
from adaptopt.experiments.trainer import TrainConfig
from adaptopt.experiments.trainer import train as train_run
from adaptopt.smoothness import GLOBAL, SmoothnessProbe, read_records
from adaptopt.tasks import get as get_task


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 8),
        nn.BatchNorm1d(8),
        nn.Dropout(0.3),
        nn.Linear(8, 3),
    )
    model[0].bias.requires_grad_(False)  # a frozen parameter
    model[6].eval()  # a submodule the user keeps in eval mode
    return model


def cnn_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


def cnn_data(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(6, 1, 8, 8, generator=g), torch.randint(0, 3, (6,), generator=g))
        for _ in range(n)
    ]


def train(probe: SmoothnessProbe | None, steps: int = 4) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = small_cnn()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(123)  # the training's dropout stream
    for t, batch in enumerate(cnn_data(steps)):
        opt.zero_grad()
        cnn_loss(model, batch).backward()
        if probe is None:
            opt.step()
        else:
            with probe.around_step(model, t):
                opt.step()
    return model, opt


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_probe_is_side_effect_free(mode):
    ref_model, ref_opt = train(None)
    ref_rng = torch.get_rng_state()
    probe = SmoothnessProbe(cnn_loss, cnn_data(2), every=1, coords_per_layer=3, mode=mode)
    model, opt = train(probe)
    assert (
        len(probe.rows) > 4 * 10
    )  # it measured every step, globally, per layer and per coordinate
    assert torch.equal(torch.get_rng_state(), ref_rng)
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(p, q), name
        assert (p.grad is None and q.grad is None) or torch.equal(p.grad, q.grad), name
    for (name, b), c in zip(model.named_buffers(), ref_model.buffers(), strict=True):
        assert torch.equal(b, c), name  # BatchNorm running statistics and counters
    assert [m.training for m in model.modules()] == [m.training for m in ref_model.modules()]
    state, ref_state = opt.state_dict()["state"], ref_opt.state_dict()["state"]
    for k in ref_state:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(state[k][key], ref_state[k][key])


def test_train_mode_uses_common_dropout_masks():
    # F(W) = ½‖W·drop(u)‖² is quadratic in W for a fixed mask, so L̂ is independent of γ
    # only if every point x_t + γd sees the same dropout mask
    torch.manual_seed(0)
    model = nn.Sequential(nn.Dropout(0.5), nn.Linear(10, 3, bias=False)).double()
    batches = [torch.randn(4, 10, dtype=torch.float64)]

    def loss(m, u):
        return 0.5 * m(u).square().sum()

    values = []
    for gamma in (1 / 6, 5 / 6):
        probe = SmoothnessProbe(loss, batches, every=1, gammas=[gamma], layers=(), mode="train")
        with probe.around_step(model, 0), torch.no_grad():
            model[1].weight.add_(0.1)
        values.append(probe.rows[0]["smoothness"])
        with torch.no_grad():
            model[1].weight.sub_(0.1)
    assert values[0] == pytest.approx(values[1], rel=1e-10)


def test_reproducible_with_fixed_seed():
    def rows(seed):
        probe = SmoothnessProbe(cnn_loss, cnn_data(2), every=2, coords_per_layer=2, seed=seed)
        train(probe, steps=4)
        return probe.rows

    first, second, other = rows(7), rows(7), rows(8)
    assert first == second
    assert sorted({r["step"] for r in first}) == [0, 2]  # every=2
    indices = [(r["layer"], r["index"]) for r in first if r["quantity"] == "coord"]
    other_indices = [(r["layer"], r["index"]) for r in other if r["quantity"] == "coord"]
    assert indices != other_indices


def test_layers_filter_and_minibatch_probe_set(tmp_path):
    model = small_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "probe.jsonl"
    probe = SmoothnessProbe(cnn_loss, every=1, coords_per_layer=1, layers=["5.*"], path=path)
    batch = cnn_data(1)[0]
    opt.zero_grad()
    cnn_loss(model, batch).backward()
    with probe.around_step(model, 0, batches=[batch]):  # the training minibatch as probe set
        opt.step()
    assert {r["layer"] for r in probe.rows} == {GLOBAL, "5.weight", "5.bias"}
    assert [json.loads(line) for line in path.read_text().splitlines()] == probe.rows
    assert len(read_records(path)) == len(probe.rows)


def test_clear_errors():
    with pytest.raises(ValueError, match="probe set is empty"):
        SmoothnessProbe(cnn_loss, [])
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        SmoothnessProbe(cnn_loss, [None]).before_step(frozen, 0)
    with pytest.raises(ValueError, match="no probe set"):
        SmoothnessProbe(cnn_loss).before_step(small_cnn(), 0)
    with pytest.raises(ValueError, match="gammas"):
        SmoothnessProbe(cnn_loss, [None], gammas=[0.0, 0.5])
    with pytest.raises(ValueError, match="every"):
        SmoothnessProbe(cnn_loss, [None], every=0)
    with pytest.raises(ValueError, match="mode"):
        SmoothnessProbe(cnn_loss, [None], mode="test")


def test_callback_in_a_trainer_loop(tmp_path):
    task = get_task("synthetic", smoke=True)
    torch.manual_seed(0)
    model = task.build_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    logged = []
    ctx = RunContext(task, model, opt, torch.device("cpu"), tmp_path, logged.append)
    callback = SmoothnessCallback(every=3, max_batches=2, coords_per_layer=1)
    callback.on_train_begin(ctx)
    assert len(callback.probe.batches) == 2
    for batch in task.train_batches(0, torch.Generator().manual_seed(0), ctx.device):
        opt.zero_grad()
        task.loss(model, batch).backward()
        callback.before_step(ctx)
        opt.step()
        ctx.step += 1
        callback.after_step(ctx)
    records = read_records(tmp_path)  # the run directory's smoothness.jsonl
    steps = sorted(set(records.step.tolist()))
    assert steps == list(range(0, ctx.step, 3))
    assert [row["smoothness_L_hat"] for row in logged] == records.select(
        layer=GLOBAL
    ).smoothness.tolist()


def test_trainer_with_probe_trains_identically(tmp_path):
    config = TrainConfig(task="synthetic", optimizer="sgd", smoke=True, device="cpu")
    plain = train_run(config, None)
    probed = train_run(config, tmp_path / "run", callbacks=[SmoothnessCallback(every=5)])
    for p, q in zip(probed.model.parameters(), plain.model.parameters(), strict=True):
        assert torch.equal(p, q)
    records = read_records(tmp_path / "run")
    assert sorted(set(records.step.tolist())) == list(range(0, probed.step, 5))


def test_callback_drops_rows_to_be_redone_on_resume(tmp_path):
    row = {"layer": GLOBAL, "quantity": "norm", "grad": 1.0, "smoothness": 1.0}
    path = tmp_path / "smoothness.jsonl"
    path.write_text("".join(json.dumps(row | {"step": s}) + "\n" for s in range(0, 30, 3)))
    task = get_task("synthetic", smoke=True)
    ctx = RunContext(task, task.build_model(), None, torch.device("cpu"), tmp_path, print, step=10)
    SmoothnessCallback().on_train_begin(ctx)  # resuming at step 10
    assert read_records(path).step.tolist() == [0, 3, 6, 9]
