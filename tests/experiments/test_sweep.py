"""Sweeps: grids, run ids, skipping, kill + resume, best-setting rule, submitit jobs."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from runs_helpers import synthetic

from adaptopt.experiments.rundir import Run, find_runs, status
from adaptopt.experiments.sweep import (
    Setting,
    expand,
    grid_values,
    load_spec,
    rank_settings,
    resolve_all,
    run_all,
    submit_slurm,
    sweep,
)
from adaptopt.tasks import get

SPEC = """
task = "synthetic"
seeds = 2
[budget]
epochs = 2
[optimizers.sgd]
momentum = 0.9
[optimizers.sgd.grid]
lr = {log = [1e-2, 1e38], num = 3}
[optimizers.sgd_clip_momentum.grid]
lr = [0.1, 1.0]
gamma = [1.0]
"""


def test_grid_values():
    assert grid_values({"log": [1e-4, 1e-1], "num": 4}, "x") == [1e-4, 1e-3, 1e-2, 1e-1]
    assert grid_values({"linear": [0, 1], "num": 3}, "x") == [0.0, 0.5, 1.0]
    assert grid_values([[0.9, 0.99], [0.9, 0.999]], "x") == [[0.9, 0.99], [0.9, 0.999]]
    with pytest.raises(ValueError, match=r"optimizers.sgd.grid.lr: expected a list"):
        grid_values({"log": [1, 2]}, "optimizers.sgd.grid.lr")


def test_expand_and_errors():
    spec = {
        "task": "synthetic",
        "seeds": [3, 4],
        "budget": {"epochs": 1},
        "optimizers": {"adam": {"betas": [0.9, 0.99], "grid": {"lr": [1, 2, 3], "eps": [0, 1]}}},
    }
    configs = expand(spec)
    assert len(configs) == 3 * 2 * 2
    assert {c.seed for c in configs} == {3, 4} and all(c.validation for c in configs)
    assert (
        configs[0].hparams == {"betas": [0.9, 0.99], "lr": 1, "eps": 0} and configs[0].epochs == 1
    )
    with pytest.raises(ValueError, match="unknown sweep key"):
        expand({**spec, "sede": 1})
    with pytest.raises(ValueError, match=r"unknown \[budget\] key"):
        expand({**spec, "budget": {"epoch": 1}})
    with pytest.raises(ValueError, match="needs `task"):
        expand({"task": "synthetic"})


def test_run_id_hashes_the_resolved_config_and_seed():
    task = get("synthetic")
    base = synthetic("sgd", hparams={}).resolve(task)  # the task's tuned sgd values
    explicit = synthetic("sgd", hparams={"lr": 0.1, "momentum": 0.9}).resolve(task)
    assert base.run_id() == explicit.run_id()
    assert synthetic(device="cpu", log_every=7).resolve(task).run_id() == explicit.run_id()
    assert synthetic(seed=1).resolve(task).run_id() != explicit.run_id()
    assert synthetic(hparams={"lr": 0.2}).resolve(task).run_id() != explicit.run_id()
    assert synthetic(epochs=3).resolve(task).run_id() != explicit.run_id()


def test_sweep_end_to_end_ranks_diverged_last_and_skips_done_runs(tmp_path):
    spec_path = tmp_path / "sweep.toml"
    spec_path.write_text(SPEC)
    best = sweep(spec_path, tmp_path / "out", workers=2)
    runs = list(find_runs([tmp_path / "out"]))
    assert len(runs) == 10 and all(r.config["validation"] for r in runs)
    diverged = {r.config["hparams"]["lr"] for r in runs if r.status == "diverged"}
    assert diverged == {1e38}
    ranked = rank_settings(runs)[("synthetic", "sgd")]
    assert [s.config["hparams"]["lr"] for s in ranked][-1] == 1e38 and ranked[-1].diverged
    assert ranked[0].value >= ranked[1].value
    assert best["synthetic", "sgd"].config == ranked[0].config
    summary = json.loads((tmp_path / "out" / "best.json").read_text())
    assert {s["optimizer"] for s in summary} == {"sgd", "sgd_clip_momentum"}
    assert run_all(expand(load_spec(spec_path)), tmp_path / "out") == []  # all done: none rerun


def test_killed_sweep_resumes_keeping_finished_runs_and_repeating_none(tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text(
        'task = "synthetic"\nseeds = 12\n[budget]\nepochs = 4\n'
        "[optimizers.sgd_clip_momentum]\nlr = 1.0\ngamma = 0.5\n"
    )
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = f"from adaptopt.experiments.sweep import sweep; sweep({str(spec)!r}, {str(out)!r})"
    cmd = [sys.executable, "-c", code]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while _count(out, "finished") < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    finished = {
        p.parent.name: p.read_bytes()
        for p in out.glob("runs/*/meta.json")
        if json.loads(p.read_bytes())["status"] == "finished"
    }
    assert 3 <= len(finished) < 12

    ran = run_all(expand(load_spec(spec)), out)
    assert set(ran).isdisjoint(finished) and len(ran) + len(finished) == 12
    for run_id, meta in finished.items():  # untouched
        assert (out / "runs" / run_id / "meta.json").read_bytes() == meta
    runs = list(find_runs([out]))
    assert len(runs) == 12 and all(r.status == "finished" for r in runs)
    for run in runs:
        steps = [r["step"] for r in run.rows if r.get("kind") != "epoch"]
        assert steps == list(range(1, 4 * 12 + 1))  # nothing lost, nothing logged twice


def _count(out: Path, state: str) -> int:
    return sum(status(p.parent) == state for p in out.glob("runs/*/meta.json"))


def _fake_run(value, loss, state="finished", higher=True, lr=0.1):
    config = synthetic(hparams={"lr": lr}, validation=True).resolve(get("synthetic"))
    meta = {
        "status": state,
        "final": {"valid_accuracy": value, "valid_loss": loss},
        "metric": {"name": "accuracy", "higher_is_better": higher},
    }
    return Run(Path("x"), dataclasses.asdict(config), meta, [])


def test_best_setting_rule():
    runs = [
        _fake_run(0.9, 0.5, lr=1.0),
        _fake_run(0.9, 0.3, lr=2.0),  # same metric, lower loss: wins the tie
        _fake_run(0.95, 0.1, state="diverged", lr=3.0),  # diverged: last whatever its value
        _fake_run(0.8, 0.2, lr=4.0),
        _fake_run(0.99, 0.0, state="running", lr=5.0),  # not done: ignored
    ]
    order = [s.config["hparams"]["lr"] for s in rank_settings(runs)[("synthetic", "sgd")]]
    assert order == [2.0, 1.0, 4.0, 3.0]
    lower = [_fake_run(v, 0.0, higher=False, lr=v) for v in (3.0, 1.0, 2.0)]
    order = [s.config["hparams"]["lr"] for s in rank_settings(lower)[("synthetic", "sgd")]]
    assert order == [1.0, 2.0, 3.0]


def test_setting_mean_over_seeds_and_nan_counts_as_diverged():
    s = Setting({}, [_fake_run(0.5, 1.0), _fake_run(0.7, 3.0)], "valid_accuracy", True)
    assert (s.value, s.loss, s.diverged) == (pytest.approx(0.6), 2.0, False)
    assert Setting({}, [_fake_run(np.nan, 1.0)], "valid_accuracy", True).diverged


def test_submitit_debug_executor_runs_the_jobs(tmp_path):
    pytest.importorskip("submitit", reason="optional dependency for SLURM sweeps")
    configs = resolve_all([synthetic(epochs=1, seed=s) for s in (0, 1)])
    dirs = [tmp_path / "runs" / c.run_id() for c in configs]
    jobs = submit_slurm(configs, dirs, tmp_path / "slurm", cluster="debug")
    assert [job.result() for job in jobs] == ["finished", "finished"]
    assert all(status(d) == "finished" for d in dirs)


def test_slurm_array_job_construction(tmp_path, monkeypatch):
    """A stand-in `sbatch` records the submission: one array job, one task per run."""
    pytest.importorskip("submitit", reason="optional dependency for SLURM sweeps")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"\n'
    )
    (bin_dir / "srun").write_text("#!/bin/sh\n")  # submitit checks that it exists
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    configs = resolve_all([synthetic(epochs=1, seed=s) for s in range(3)])
    dirs = [tmp_path / "runs" / c.run_id() for c in configs]
    jobs = submit_slurm(
        configs,
        dirs,
        tmp_path / "slurm",
        timeout_min=90,
        gpus_per_node=1,
        slurm_partition="gpu",
        slurm_array_parallelism=2,
    )
    assert [j.job_id for j in jobs] == ["4242_0", "4242_1", "4242_2"]
    script = (tmp_path / "submitted.sh").read_text()
    for line in (
        "#SBATCH --array=0-2%2",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=90",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --job-name=adaptopt-sweep",
    ):
        assert line in script
    for job, config, run_dir in zip(jobs, configs, dirs, strict=True):
        with job.paths.submitted_pickle.open("rb") as f:
            submission = pickle.load(f)
        assert submission.function.__name__ == "run_one"
        assert submission.args == (config, run_dir)


def test_load_spec_errors(tmp_path):
    with pytest.raises(ValueError, match="sweep file not found"):
        load_spec(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("task = \n")
    with pytest.raises(ValueError, match=r"bad\.toml is not valid TOML"):
        load_spec(tmp_path / "bad.toml")
