"""Probe presets: the paper's estimator (train mode, common dropout masks, 10% probe set) and
the cheap default; the preset is recorded in every row and named on every figure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adaptopt.experiments.callbacks import RunContext, SmoothnessCallback
from adaptopt.smoothness import (
    GLOBAL,
    PRESETS,
    SmoothnessProbe,
    SmoothnessRecords,
    plot_records,
    read_records,
)
from adaptopt.tasks import get as get_task


class DropoutNet(nn.Module):
    """dropout → linear, plus a parameter the loss does not use."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.linear = nn.Linear(10, 3)
        self.unused = nn.Parameter(torch.zeros(2))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(u))


def loss_fn(model: nn.Module, u: torch.Tensor) -> torch.Tensor:
    return model(u).tanh().square().sum()


def batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(8, 10, generator=g, dtype=torch.float64) for _ in range(3)]


def probe_unused_move(preset: str, steps: int = 2) -> SmoothnessProbe:
    """Probe steps in which only the unused parameter moves: x_t + γd is x_t for the loss."""
    torch.manual_seed(0)
    model = DropoutNet().double()
    probe = SmoothnessProbe(loss_fn, batches(), preset=preset, coords_per_layer=0, every=1)
    for t in range(steps):
        with probe.around_step(model, t), torch.no_grad():
            model.unused.add_(1.0)
    return probe


def test_paper_preset_uses_common_dropout_masks():
    probe = probe_unused_move("paper")
    assert probe.mode == "train" and probe.label == "paper"
    rows = [r for r in probe.rows if r["layer"] == GLOBAL]
    assert len(rows) == 2
    # ∇F(x_t + γd) and ∇F(x_t) for every γ: the same point, hence the same gradient exactly
    assert all(r["smoothness"] == 0.0 for r in rows)
    # fresh masks at each probed step: the same parameters give another gradient at step 1
    assert rows[0]["grad"] != rows[1]["grad"]


def test_without_common_masks_the_gradients_differ():
    # negative control: two train-mode gradients at the same point with masks drawn in turn
    torch.manual_seed(0)
    model = DropoutNet().double().train()
    grads = []
    for _ in range(2):
        model.zero_grad()
        sum(loss_fn(model, u) for u in batches()).backward()
        grads.append(model.linear.weight.grad.clone())
    assert not torch.equal(*grads)


def test_default_preset_is_eval_mode_and_deterministic():
    assert SmoothnessProbe(loss_fn, batches()).every == 200
    probe = probe_unused_move("default")
    assert probe.mode == "eval" and probe.label == "default"
    rows = [r for r in probe.rows if r["layer"] == GLOBAL]
    assert [r["smoothness"] for r in rows] == [0.0, 0.0]
    assert rows[0]["grad"] == rows[1]["grad"]  # no dropout: the same point, the same F
    assert {r["preset"] for r in rows} == {"default"}


def test_explicit_arguments_override_and_mark_the_preset():
    paper = SmoothnessProbe(loss_fn, batches(), preset="paper")
    assert (paper.every, paper.gammas) == (1, PRESETS["paper"].gammas)
    assert SmoothnessProbe(loss_fn, batches(), preset="paper", every=50).label == "paper"
    changed = SmoothnessProbe(loss_fn, batches(), preset="paper", gammas=[0.5])
    assert changed.label == "paper (modified)"
    assert SmoothnessProbe(loss_fn, batches(), mode="train").label == "default (modified)"
    with pytest.raises(ValueError, match="unknown probe preset 'zhang'"):
        SmoothnessProbe(loss_fn, batches(), preset="zhang")
    with pytest.raises(ValueError, match="unknown probe preset"):
        SmoothnessCallback(preset="Paper")


def run_callback(tmp_path, **kwargs) -> tuple[SmoothnessCallback, int]:
    task = get_task("synthetic", smoke=True)
    torch.manual_seed(0)
    model = task.build_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ctx = RunContext(task, model, opt, torch.device("cpu"), tmp_path, lambda row: None)
    callback = SmoothnessCallback(**kwargs)
    callback.on_train_begin(ctx)
    for batch in task.train_batches(0, torch.Generator().manual_seed(0), ctx.device):
        opt.zero_grad()
        task.loss(model, batch).backward()
        callback.before_step(ctx)
        opt.step()
        ctx.step += 1
        callback.after_step(ctx)
    n_probe = len(list(task.probe_batches(torch.Generator().manual_seed(0), ctx.device, 0.1)))
    return callback, n_probe


def test_callback_paper_preset_probes_the_tenth_of_the_data_in_train_mode(tmp_path):
    callback, n_probe = run_callback(tmp_path, every=2, preset="paper")  # as the trainer calls it
    probe = callback.probe
    assert (probe.mode, probe.every, probe.label) == ("train", 2, "paper")
    assert len(probe.batches) == n_probe  # all of the 10%, no cap
    records = read_records(tmp_path)
    assert len(records) and set(records.preset.tolist()) == {"paper"}
    assert SmoothnessCallback(preset="paper").every == 1  # Zhang et al.: every step


def test_callback_default_preset_and_probe_set_override(tmp_path):
    callback = SmoothnessCallback()
    assert (callback.every, callback.fraction, callback.max_batches) == (200, 0.1, 4)
    changed, _ = run_callback(tmp_path, every=3, preset="paper", max_batches=1)
    assert len(changed.probe.batches) == 1
    assert set(read_records(tmp_path).preset.tolist()) == {"paper (modified)"}


def rows(preset: str | None) -> list[dict]:
    out = []
    for step in range(4):
        row = {"step": step, "layer": GLOBAL, "quantity": "norm", "grad": 1.0 + step}
        row |= {"smoothness": 2.0 + step, "update": 0.1}
        out.append(row if preset is None else row | {"preset": preset})
    return out


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("paper", "probe preset: paper (train mode, common dropout masks"),
        ("default", "probe preset: default (eval mode"),
        ("paper (modified)", "probe preset: paper (modified)\n"),
        (None, "probe preset: unrecorded"),
    ],
)
def test_plot_titles_name_the_preset(preset, expected):
    records = SmoothnessRecords.from_rows(rows(preset))
    fig = plot_records(records, note="60 steps")
    title = fig._suptitle.get_text()
    assert title.startswith(expected) and title.endswith("\n60 steps")
