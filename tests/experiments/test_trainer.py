"""The trainer: initial weights, bitwise resume, divergence, metrics, closures, sharding."""

from __future__ import annotations

import json
import math

import pytest
import torch
from runs_helpers import checkpoint_params, params, synthetic

from adaptopt.errors import ConfigError
from adaptopt.experiments.callbacks import Callback
from adaptopt.experiments.rundir import load_run, read_metrics
from adaptopt.experiments.trainer import shard, train


def test_same_initial_weights_for_every_optimizer_given_the_seed():
    init = {
        (opt, seed): params(train(synthetic(opt, hparams={"lr": 0.1}, epochs=0, seed=seed)).model)
        for opt in ("sgd", "adam", "gsignsgd")
        for seed in (0, 1)
    }
    for opt in ("adam", "gsignsgd"):
        for seed in (0, 1):
            assert all(
                torch.equal(a, b) for a, b in zip(init[opt, seed], init["sgd", seed], strict=True)
            )
    assert not torch.equal(init["sgd", 0][0], init["sgd", 1][0])


class _Crash(Callback):
    """Raises after optimizer step ``at``, like a process killed mid-run."""

    def __init__(self, at: int) -> None:
        self.at = at

    def after_step(self, ctx) -> None:
        if ctx.step == self.at:
            raise KeyboardInterrupt


def _rows_without_time(run_dir):
    return [
        {k: v for k, v in r.items() if k != "time"} for r in read_metrics(run_dir / "metrics.jsonl")
    ]


@pytest.mark.parametrize("crash_at", [7, 16, 21])  # mid-epoch, at the epoch's end, in epoch 2
def test_resume_is_bitwise_identical(tmp_path, crash_at):
    config = synthetic(
        "gsignsgd", hparams={"lr": 1e-2, "bias_correction": True}, epochs=3, checkpoint_every=5
    )
    straight = train(config, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "resumed", callbacks=[_Crash(crash_at)])
    meta = json.loads((tmp_path / "resumed" / "meta.json").read_text())
    assert meta["status"] == "running"
    resumed = train(config, tmp_path / "resumed", resume=True)

    assert resumed.step == straight.step == 48
    assert all(
        torch.equal(a, b)
        for a, b in zip(params(resumed.model), params(straight.model), strict=True)
    )
    for a, b in zip(
        checkpoint_params(tmp_path / "resumed"),
        checkpoint_params(tmp_path / "straight"),
        strict=True,
    ):
        assert torch.equal(a, b)
    assert _rows_without_time(tmp_path / "resumed") == _rows_without_time(tmp_path / "straight")
    assert resumed.final == straight.final
    assert load_run(tmp_path / "resumed").meta["resumes"] == 1


def test_resume_after_the_last_checkpoint_keeps_the_final_metrics(tmp_path):
    class CrashAtEnd(Callback):
        def on_train_end(self, ctx):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(synthetic(epochs=1), tmp_path / "run", callbacks=[CrashAtEnd()])
    result = train(synthetic(epochs=1), tmp_path / "run", resume=True)
    assert result.status == "finished" and result.step == 16
    assert set(result.final) == {"train_loss", "train_loss_running", "test_loss", "test_accuracy"}
    row = load_run(tmp_path / "run").epochs[-1]
    assert result.final == {k: row[k] for k in result.final} == load_run(tmp_path / "run").final


def test_resume_of_a_done_run_returns_it_untouched(tmp_path):
    first = train(synthetic(epochs=1), tmp_path / "run")
    before = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    again = train(synthetic(epochs=1), tmp_path / "run", resume=True)
    assert (again.status, again.step, again.final) == (first.status, first.step, first.final)
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == before


def test_existing_run_directory_needs_resume(tmp_path):
    train(synthetic(epochs=1), tmp_path / "run")
    with pytest.raises(ValueError, match="already holds a run"):
        train(synthetic(epochs=1), tmp_path / "run")


def test_non_finite_loss_marks_the_run_diverged(tmp_path):
    result = train(synthetic(hparams={"lr": 1e38, "momentum": 0.9}), tmp_path / "run")
    run = load_run(tmp_path / "run")
    assert result.status == run.status == "diverged"
    assert run.meta["diverged_step"] == result.diverged_step == result.step
    assert 1 < result.step < 32
    last = run.rows[-1]
    assert last["step"] == result.step and not math.isfinite(last["loss"])


def test_run_directory_contents(tmp_path):
    train(synthetic(epochs=3, eval_every=2, log_every=4, validation=True), tmp_path / "run")
    run = load_run(tmp_path / "run")
    assert run.config["hparams"] == {"lr": 0.1, "momentum": 0.9}
    assert run.config["eval_splits"] == ["valid"] and run.config["batch_size"] == 32
    assert run.meta["status"] == "finished" and run.meta["step"] == 36  # 410 examples: 12/epoch
    assert run.meta["metric"] == {"name": "accuracy", "higher_is_better": True}
    assert {"git_commit", "versions", "device", "wall_time_s"} <= set(run.meta)
    steps = [r["step"] for r in run.rows if r.get("kind") != "epoch"]
    assert steps == list(range(4, 37, 4))
    epochs = run.epochs
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert ["valid_accuracy" in r for r in epochs] == [False, True, True]  # every 2nd, and last
    assert run.final == {k: v for k, v in epochs[-1].items() if k in run.final}
    assert set(run.final) == {"train_loss", "train_loss_running", "valid_loss", "valid_accuracy"}


def test_epoch_train_loss_is_the_mean_of_its_step_losses(tmp_path):
    train(synthetic(epochs=2), tmp_path / "run")
    run = load_run(tmp_path / "run")
    for epoch in (0, 1):
        losses = [r["loss"] for r in run.rows if r.get("kind") != "epoch" and r["epoch"] == epoch]
        assert len(losses) == 16
        assert run.epochs[epoch]["train_loss"] == pytest.approx(sum(losses) / 16, rel=1e-12)


def test_sgdol_closure_takes_a_fresh_batch_per_call():
    seen: list[torch.Tensor] = []

    class Spy(Callback):
        def on_train_begin(self, ctx):
            loss = ctx.task.loss
            ctx.task.loss = lambda model, batch: seen.append(batch[0]) or loss(model, batch)

    result = train(synthetic("sgdol", hparams={}, epochs=1), callbacks=[Spy()])
    assert result.step == 8 and len(seen) == 16  # two batches per step, 16 per epoch
    assert len({t.sum().item() for t in seen}) == 16


def test_callbacks_see_every_logged_row():
    rows = []

    class Collect(Callback):
        def on_log(self, ctx, row):
            rows.append(row)

    train(synthetic(epochs=1, log_every=8), callbacks=[Collect()])
    assert [(r["step"], r.get("kind")) for r in rows] == [(8, None), (16, None), (16, "epoch")]


def test_shard_weights_make_the_rank_mean_equal_the_full_batch_loss():
    torch.manual_seed(0)
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    full = ((x.sum(1) - y) ** 2).mean()
    local = []
    for rank in range(2):
        (xs, ys), weight = shard((x, y), rank, 2)
        assert len(xs) == len(ys) == (3 if rank == 0 else 2)
        local.append(((xs.sum(1) - ys) ** 2).mean() * weight)
    assert torch.allclose(sum(local) / 2, full, rtol=1e-14)
    with pytest.raises(ValueError, match="cannot be split over 8 ranks"):
        shard((x, y), 7, 8)


def test_shard_keeps_named_tuples_and_non_tensors():
    from adaptopt.tasks.language import Segment

    seg = Segment(torch.arange(12).view(3, 4), torch.arange(12).view(3, 4), carry=True)
    local, weight = shard(seg, 1, 2, dim=1)
    assert isinstance(local, Segment) and local.carry is True and weight == 1.0
    assert local.x.tolist() == [[2, 3], [6, 7], [10, 11]]


def test_probe_records_smoothness_without_changing_the_trajectory(tmp_path):
    plain = train(synthetic(epochs=1))
    probed = train(synthetic(epochs=1, probe=5), tmp_path / "run")
    assert all(
        torch.equal(a, b) for a, b in zip(params(plain.model), params(probed.model), strict=True)
    )
    rows = [json.loads(line) for line in (tmp_path / "run" / "smoothness.jsonl").open()]
    assert {r["step"] for r in rows} == {0, 5, 10, 15}
    logged = [r for r in load_run(tmp_path / "run").rows if "smoothness_L_hat" in r]
    assert len(logged) == 4


def test_tensorboard_callback_writes_events_or_says_what_to_install(tmp_path):
    from adaptopt.experiments.callbacks import TensorBoardCallback

    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install tensorboard"):
            TensorBoardCallback()
        return
    train(synthetic(epochs=1), tmp_path / "run", callbacks=[TensorBoardCallback()])
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_stateful_language_model_resumes_bitwise_at_an_epoch_boundary(tmp_path):
    """AWD-LSTM (PTB, smoke size): carried hidden state, random BPTT lengths, lr scaling."""
    from adaptopt.data import DatasetNotFoundError
    from adaptopt.experiments.trainer import TrainConfig

    config = TrainConfig("ptb-awdlstm", "gsignsgd", smoke=True, epochs=3)
    try:
        straight = train(config, tmp_path / "straight")
    except DatasetNotFoundError as e:
        pytest.skip(f"PTB not available: {e}")
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "resumed", callbacks=[_Crash(3)])  # 2 steps per epoch
    resumed = train(config, tmp_path / "resumed", resume=True)
    assert resumed.step == straight.step == 6 and resumed.final == straight.final
    assert all(
        torch.equal(a, b)
        for a, b in zip(params(resumed.model), params(straight.model), strict=True)
    )


def test_probe_batches_caps_the_probe_set_and_marks_the_preset_modified(tmp_path):
    capped = synthetic(epochs=1, probe=5, probe_batches=1)
    assert capped.run_id() == synthetic(epochs=1, probe=5).run_id()  # measurement only
    train(capped, tmp_path / "capped")
    train(synthetic(epochs=1, probe=5, probe_batches=4), tmp_path / "preset")
    train(synthetic(epochs=1, probe=5), tmp_path / "default")

    def rows(name):
        return [json.loads(line) for line in (tmp_path / name / "smoothness.jsonl").open()]

    assert {r["preset"] for r in rows("capped")} == {"default (modified)"}
    assert {r["preset"] for r in rows("preset")} == {"default"}  # 4 = the preset's own cap
    one, four = rows("capped")[0], rows("default")[0]
    assert one["grad"] != four["grad"]  # F on one batch is not F on four
    assert rows("preset") == rows("default")
    with pytest.raises(ConfigError, match="probe_batches"):
        synthetic(probe_batches=0)
