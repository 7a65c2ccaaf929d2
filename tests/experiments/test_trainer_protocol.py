"""The trainer's share of the authors' protocols: gradient clipping, per-batch lr/γ scaling,
end-of-epoch iterate averaging (PTB) and the paper's training loss."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from runs_helpers import params
from torch.nn import functional as F

from adaptopt.experiments.callbacks import Callback
from adaptopt.experiments.rundir import load_run, read_metrics
from adaptopt.experiments.trainer import (
    DATA_SEED_OFFSET,
    IterateAverage,
    TrainConfig,
    _lr_scaled,
    train,
)
from adaptopt.tasks import registry
from adaptopt.tasks.synthetic import SyntheticTask, synthetic


def _register(monkeypatch, name, cls, **fields):
    """Register task ``name``: the synthetic task as ``cls`` with ``fields`` replaced."""

    def build(validation=False, smoke=False, data_dir=None):
        base = synthetic(validation=validation)
        kwargs = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init}
        return cls(**{**kwargs, "name": name, **fields})

    monkeypatch.setitem(registry._TASKS, name, build)


def _first_batch(config: TrainConfig):
    task = config.build_task()
    task.budget = config.resolve(task).budget
    rng = torch.Generator().manual_seed(config.seed + DATA_SEED_OFFSET)
    return next(iter(task.train_batches(0, rng, torch.device("cpu"))))


def _grad_at_init(config: TrainConfig):
    """x_0 and the gradient of the first batch's loss there, computed outside the trainer."""
    torch.manual_seed(config.seed)
    model = config.build_task().build_model()
    x, y = _first_batch(config)
    F.cross_entropy(model(x), y).backward()
    return params(model), [p.grad.clone() for p in model.parameters()]


def _one_step(config: TrainConfig):
    return params(train(dataclasses.replace(config, epochs=1, max_steps_per_epoch=1)).model)


@pytest.mark.parametrize("threshold", [0.05, 1e3])  # fires / does not fire (negative control)
def test_clip_grad_norm_clips_the_global_norm_before_the_optimizer(tmp_path, threshold):
    config = TrainConfig("synthetic", "sgd", {"lr": 0.5, "momentum": 0.0}, clip_grad_norm=threshold)
    x0, g = _grad_at_init(config)
    norm = torch.sqrt(sum((t.double() ** 2).sum() for t in g)).item()
    factor = min(1.0, threshold / (norm + 1e-6))  # torch's clip_grad_norm_ rule
    x1 = params(
        train(dataclasses.replace(config, epochs=1, max_steps_per_epoch=1), tmp_path / "run").model
    )
    for a, b, gi in zip(x1, x0, g, strict=True):
        torch.testing.assert_close(a, b - 0.5 * factor * gi, rtol=1e-5, atol=1e-7)
    row = next(r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "grad_norm" in r)
    assert row["grad_norm"] == pytest.approx(norm, rel=1e-5)
    assert row["clipped"] is (norm > threshold)
    assert (norm > threshold) == (threshold == 0.05)


def test_clipping_defaults_to_the_task_and_zero_turns_it_off(monkeypatch):
    _register(monkeypatch, "clipped-synthetic", SyntheticTask, clip_grad_norm=0.25)
    task = registry.get("clipped-synthetic")
    assert TrainConfig("clipped-synthetic", "sgd").resolve(task).clip_grad_norm == 0.25
    off = TrainConfig("clipped-synthetic", "sgd", clip_grad_norm=0)
    assert off.resolve(task).clip_grad_norm == 0
    assert TrainConfig("synthetic", "sgd").resolve(synthetic()).iterate_averaging is None
    with pytest.raises(ValueError, match="clip_grad_norm"):
        TrainConfig("synthetic", "sgd", clip_grad_norm=-1.0)


class _HalfLength(SyntheticTask):
    """Every batch counts as a segment of half the nominal length (AWD-LSTM's scaling)."""

    def batch_lr_scale(self, batch):
        return 0.5


def test_a_short_segment_scales_lr_and_gamma_of_the_clipped_step(monkeypatch):
    """SGDClipGrad on a batch with seq_len/bptt = s: x − min(η s, γ s/‖g‖) g (authors' PTB)."""
    _register(monkeypatch, "half-synthetic", _HalfLength)
    lr, gamma, s = 2.0, 0.05, 0.5
    config = TrainConfig("half-synthetic", "sgd_clip_grad", {"lr": lr, "gamma": gamma})
    x0, g = _grad_at_init(config)
    norm = torch.sqrt(sum((t.double() ** 2).sum() for t in g)).item()
    assert gamma / norm < lr  # clipping is active, so γ's scaling matters
    step = min(lr * s, gamma * s / norm)
    for a, b, gi in zip(_one_step(config), x0, g, strict=True):
        torch.testing.assert_close(a, b - step * gi, rtol=1e-5, atol=1e-7)
    # negative control: scaling lr alone would have taken a step twice as long
    unscaled = [b - min(lr * s, gamma / norm) * gi for b, gi in zip(x0, g, strict=True)]
    assert not all(
        torch.allclose(a, u, rtol=1e-5, atol=1e-7)
        for a, u in zip(_one_step(config), unscaled, strict=True)
    )


def test_lr_scaled_scales_lr_and_gamma_and_restores_them_exactly():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 0.3}, {"params": [], "lr": 0.7}])
    opt.param_groups[1]["gamma"] = 2.5
    with _lr_scaled(opt, 0.37):
        assert [g["lr"] for g in opt.param_groups] == [0.3 * 0.37, 0.7 * 0.37]
        assert opt.param_groups[1]["gamma"] == 2.5 * 0.37 and "gamma" not in opt.param_groups[0]
    assert [g["lr"] for g in opt.param_groups] == [0.3, 0.7]
    assert opt.param_groups[1]["gamma"] == 2.5


def _authors_trigger(losses, nonmono):
    """The first epoch (1-based) after which the authors' rule starts averaging, or None."""
    best = []
    for epoch, loss in enumerate(losses, 1):
        if len(best) > nonmono and loss > min(best[:-nonmono]):
            return epoch
        best.append(loss)
    return None


@pytest.mark.parametrize(
    "losses",
    [
        [5, 4, 3, 2, 1, 0.5, 0.4, 0.3],  # never worse: never fires
        [5, 4, 3, 3.5, 3.6, 3.7, 3.8, 3.9, 4.0],  # fires once len(best) > 2
        [5, 4, 4.5, 3, 2, 4.1, 1],  # worse than the recent ones but not the old best
        [1, 2, 3, 4, 5, 6],
    ],
)
def test_averaging_trigger_follows_the_authors_rule(losses):
    avg = IterateAverage(torch.nn.Linear(1, 1), nonmono=2)
    fired = [epoch for epoch, loss in enumerate(losses, 1) if avg.observe(epoch, loss)]
    expected = _authors_trigger(losses, 2)
    assert fired == ([] if expected is None else [expected])
    assert avg.started_epoch == expected


class _Scripted(SyntheticTask):
    """Validation losses follow a script; every evaluation reports the parameters' sum.

    The script position is a class attribute, so that a resumed run (a new task instance)
    continues it: register a fresh subclass per logical run (:func:`_fresh`)."""

    script = (3.0, 1.0, 2.0, 2.5, 2.6, 2.7, 2.8, 2.9)
    calls = 0

    def evaluate(self, model, split, device):
        out = super().evaluate(model, split, device)
        out["param_sum"] = sum(p.detach().double().sum().item() for p in model.parameters())
        if split == "valid":
            type(self).calls += 1
            out["loss"] = self.script[min(type(self).calls, len(self.script)) - 1]
        return out


def _fresh(monkeypatch) -> None:
    _register(monkeypatch, "scripted", type("Scripted", (_Scripted,), {"calls": 0}))


class _EndOfEpochWeights(Callback):
    def __init__(self) -> None:
        self.sums: list[float] = []

    def on_epoch_end(self, ctx) -> None:
        self.sums.append(sum(p.detach().double().sum().item() for p in ctx.model.parameters()))


class _Crash(Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def after_step(self, ctx) -> None:
        if ctx.step == self.at:
            raise KeyboardInterrupt


def _averaging_config():
    return TrainConfig(
        "scripted",
        "sgd",
        {"lr": 0.1, "momentum": 0.9},
        epochs=8,
        max_steps_per_epoch=3,
        eval_splits=("test",),
        iterate_averaging=2,
        checkpoint_every=2,
    )


def test_iterate_averaging_evaluates_the_running_mean_of_end_of_epoch_weights(
    tmp_path, monkeypatch
):
    _fresh(monkeypatch)
    weights = _EndOfEpochWeights()
    result = train(_averaging_config(), tmp_path / "run", callbacks=[weights])
    epochs = load_run(tmp_path / "run").epochs
    start = _authors_trigger(list(_Scripted.script), 2)
    assert start == 5
    assert [r.get("averaging_started", False) for r in epochs] == [e == start for e in range(1, 9)]
    for epoch, row in enumerate(epochs, 1):
        if epoch <= start:  # the current weights are evaluated
            assert "averaged_iterates" not in row
            assert row["test_param_sum"] == pytest.approx(weights.sums[epoch - 1], rel=1e-9)
        else:  # the mean of the end-of-epoch weights of epochs start+1 .. epoch
            mean = sum(weights.sums[start:epoch]) / (epoch - start)
            assert row["averaged_iterates"] == epoch - start
            assert row["test_param_sum"] == pytest.approx(mean, rel=1e-5)  # float32 sums
            if epoch - start > 1:  # negative control: not the current weights
                assert row["test_param_sum"] != pytest.approx(weights.sums[epoch - 1], rel=1e-4)
    assert load_run(tmp_path / "run").meta["averaging_started_epoch"] == start
    # training itself continued from the current weights, not from the average
    own = sum(p.detach().double().sum().item() for p in result.model.parameters())
    assert own == weights.sums[-1]


@pytest.mark.parametrize("crash_at", [11, 15, 19])  # before, at and after the trigger epoch
def test_resume_across_the_averaging_trigger_is_bitwise(tmp_path, monkeypatch, crash_at):
    _fresh(monkeypatch)
    config = _averaging_config()
    straight = train(config, tmp_path / "straight")
    _fresh(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "resumed", callbacks=[_Crash(crash_at)])
    resumed = train(config, tmp_path / "resumed", resume=True)
    assert all(
        torch.equal(a, b)
        for a, b in zip(params(resumed.model), params(straight.model), strict=True)
    )

    def rows(d):
        return [
            {k: v for k, v in r.items() if k != "time"} for r in read_metrics(d / "metrics.jsonl")
        ]

    assert rows(tmp_path / "resumed") == rows(tmp_path / "straight")
    state = {
        d: torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)["averaging"]
        for d in ("straight", "resumed")
    }
    assert state["straight"]["count"] == state["resumed"]["count"] == 3
    for name, tensor in state["straight"]["average"].items():
        assert torch.equal(tensor, state["resumed"]["average"][name])


class _EvaluatedTrainLoss(SyntheticTask):
    train_loss_from_evaluation = True


def test_train_loss_is_the_eval_mode_loss_over_the_training_set_when_the_task_says_so(
    monkeypatch,
):
    _register(monkeypatch, "evaluated", _EvaluatedTrainLoss)
    config = TrainConfig("evaluated", "sgd", {"lr": 0.1, "momentum": 0.9}, epochs=1)
    result = train(config)
    x, y = result.model and registry.get("evaluated")._splits["train"]
    with torch.no_grad():
        expected = F.cross_entropy(result.model(x), y).item()
    assert result.final["train_loss"] == pytest.approx(expected, rel=1e-6)
    assert result.final["train_loss_running"] != pytest.approx(expected, rel=1e-3)
    running = train(TrainConfig("synthetic", "sgd", {"lr": 0.1, "momentum": 0.9}, epochs=1))
    assert running.final["train_loss"] == running.final["train_loss_running"]


def test_run_config_round_trips_the_new_settings():
    config = TrainConfig("synthetic", "sgd", clip_grad_norm=0.5, iterate_averaging=5)
    again = TrainConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(config))))
    assert again == config and again.run_id() == config.run_id()
    assert (
        TrainConfig("synthetic", "sgd", probe_preset="paper").run_id()
        == TrainConfig("synthetic", "sgd").run_id()
    )


class _Payload:
    """Unpickling this runs code: what a tampered checkpoint could carry."""

    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_a_checkpoint_carrying_a_pickled_object_is_refused(tmp_path, capsys):
    config = TrainConfig("synthetic", "sgd", {"lr": 0.1, "momentum": 0.9}, epochs=2)
    train(config, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    state["position"]["epoch"] = 1  # resume from the middle, so the checkpoint is loaded
    state["extra"] = _Payload()
    torch.save(state, tmp_path / "run" / "checkpoint.pt")
    (tmp_path / "run" / "meta.json").write_text(json.dumps({"status": "running", "resumes": 0}))
    with pytest.raises(ValueError, match="loaded safely"):
        train(config, tmp_path / "run", resume=True)
    assert "unpickled code ran" not in capsys.readouterr().out


def test_init_seed_fixes_x0_across_run_seeds_and_leaves_the_rest_to_the_seed():
    def initial(**fields):
        return params(train(TrainConfig("synthetic", "sgd", {"lr": 0.1}, epochs=0, **fields)).model)

    def trained(**fields):
        return params(train(TrainConfig("synthetic", "sgd", {"lr": 0.1}, epochs=1, **fields)).model)

    same = zip(initial(seed=1, init_seed=7), initial(seed=2, init_seed=7), strict=True)
    assert all(torch.equal(a, b) for a, b in same)
    assert all(
        torch.equal(a, b)
        for a, b in zip(initial(seed=7), initial(seed=1, init_seed=7), strict=True)
    )
    assert not torch.equal(initial(seed=1)[0], initial(seed=2)[0])  # negative control
    # the data order still follows the run seed
    assert not torch.equal(trained(seed=1, init_seed=7)[0], trained(seed=2, init_seed=7)[0])


def test_wall_time_counts_each_second_once_across_checkpoints_and_resumes(tmp_path):
    config = TrainConfig("synthetic", "sgd", {"lr": 0.1}, epochs=3, checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "run", callbacks=[_Crash(20)])
    train(config, tmp_path / "run", resume=True)
    meta = load_run(tmp_path / "run").meta
    elapsed = meta["finished"] - meta["started"]  # both processes, and the gap between them
    assert 0 < meta["wall_time_s"] <= elapsed
    times = [r["time"] for r in load_run(tmp_path / "run").epochs]
    assert times == sorted(times) and times[-1] <= meta["wall_time_s"]


def test_sgdol_rows_log_the_learned_step_size_beside_the_multiplier(tmp_path):
    config = TrainConfig("synthetic", "sgdol", {}, epochs=1, max_steps_per_epoch=4)
    result = train(config, tmp_path / "run")
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    assert [r["lr"] for r in rows] == [1.0] * 2  # two batches per SGDOL step
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["optimizer"]
    assert rows[-1]["learned_lr"] == state["param_groups"][0]["learned_lr"]
    assert all(0 <= r["learned_lr"] <= 2 / 10 for r in rows)  # clip(·, 0, 2/M), M = 10
    assert rows[0]["learned_lr"] != rows[-1]["learned_lr"]  # it is learned, not constant
    assert result.status == "finished" and "learned_lr" not in _sgd_row(tmp_path)


def _sgd_row(tmp_path):
    train(TrainConfig("synthetic", "sgd", {"lr": 0.1}, epochs=1), tmp_path / "sgd")
    return read_metrics(tmp_path / "sgd" / "metrics.jsonl")[0]
