"""Studies: file validation, grid → seeds → report, interruption and resumption, records."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from adaptopt.experiments import study as study_mod
from adaptopt.experiments import sweep as sweep_mod
from adaptopt.experiments.callbacks import (
    UPDATE_BINS,
    Callback,
    RunContext,
    UpdateMagnitudeCallback,
    update_stats,
)
from adaptopt.experiments.rundir import find_runs
from adaptopt.experiments.study import (
    StudyError,
    available,
    load_study,
    plan,
    run_study,
    study_runs,
)
from adaptopt.experiments.study_report import write_report
from adaptopt.tasks.image import CIFAR10_HPARAMS
from adaptopt.tasks.language import PTB_HPARAMS
from adaptopt.tasks.translation import MULTI30K_HPARAMS

TINY = """
title = "Tiny study"
description = "SGD against itself on the synthetic task."
tasks = ["synthetic"]
figures = ["table", "grid", "updates"]
seeds = 5
grid_seeds = 1
[budget]
epochs = 2
max_steps_per_epoch = 4
[run]
checkpoint_every = 2
[callbacks]
update_magnitudes = 3
[optimizers.sgd]
momentum = 0.9
[optimizers.sgd.grid]
lr = [0.003, 0.03, 0.3]
[optimizers.nesterov]
optimizer = "sgd"
momentum = 0.9
nesterov = true
lr = 0.1
[scales.cpu]
note = "Four steps per epoch."
seeds = 3
[scales.paper]
[scales.paper.budget]
epochs = 20
"""
REPO_STUDIES = Path(__file__).resolve().parents[2] / "studies"


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    (tmp_path / "studies").mkdir()
    path = tmp_path / "studies" / "tiny.toml"
    path.write_text(TINY)
    return path


class _Stop(Exception):
    pass


class _KillAt(Callback):
    """Raise after the given step (a killed process: the run stays "running")."""

    def __init__(self, step: int) -> None:
        self.step = step

    def after_step(self, ctx: RunContext) -> None:
        if ctx.step == self.step:
            raise _Stop


def _count_training(monkeypatch, kill_call: int | None = None) -> list[str]:
    """Record the runs the sweep machinery actually trains; kill the ``kill_call``-th."""
    trained: list[str] = []
    calls = [0]
    real = sweep_mod.train

    def train(config, run_dir, **kw):
        meta = run_dir / "meta.json"
        if meta.exists() and json.loads(meta.read_text())["status"] in study_mod.DONE:
            return real(config, run_dir, **kw)
        trained.append(run_dir.name)
        calls[0] += 1
        if calls[0] == kill_call:
            kw["callbacks"] = [*kw.get("callbacks", ()), _KillAt(3)]
        return real(config, run_dir, **kw)

    monkeypatch.setattr(sweep_mod, "train", train)
    return trained


def test_scales_and_plan(tiny):
    cpu, paper = load_study(tiny, "cpu"), load_study(tiny, "paper")
    assert cpu.seeds == [0, 1, 2] and paper.seeds == [0, 1, 2, 3, 4]
    assert cpu.budget == {"epochs": 2, "max_steps_per_epoch": 4}
    assert paper.budget == {"epochs": 20, "max_steps_per_epoch": 4}
    assert cpu.note == "Four steps per epoch." and paper.note == ""
    assert cpu.work_dir == tiny.parent.parent / "runs/studies/tiny/cpu"
    assert cpu.results_dir == tiny.parent.parent / "docs/results/tiny/cpu"
    grid = cpu.grid_configs()  # only the arm with a grid; one seed each
    assert [(c.optimizer, c.hparams["lr"], c.seed, c.validation) for c in grid] == [
        ("sgd", lr, 0, True) for lr in (0.003, 0.03, 0.3)
    ]
    assert all(c.checkpoint_every == 2 for c in grid)
    now = plan(cpu, [])
    assert now.undecided == [("synthetic", "sgd")] and now.seeds == []
    # runs are told apart by the most specific arm they match
    assert cpu.arm_of({"optimizer": "sgd", "hparams": {"momentum": 0.9, "lr": 1}}) == "sgd"
    nesterov = {"optimizer": "sgd", "hparams": {"momentum": 0.9, "nesterov": True, "lr": 0.1}}
    assert cpu.arm_of(nesterov) == "nesterov"
    assert cpu.arm_of({"optimizer": "adam", "hparams": {}}) is None


def test_run_interrupted_resumed_and_rebuilt_from_records(tiny, monkeypatch):
    study = load_study(tiny, "cpu")
    trained = _count_training(monkeypatch, kill_call=5)  # grid: 3 runs; 5th = 2nd seed run
    with pytest.raises(_Stop):
        run_study(study, log=lambda *a: None)
    assert len(trained) == 5
    runs = {r.path.name: r for r in find_runs([study.work_dir / "runs"])}
    assert [runs[i].status for i in trained] == ["finished"] * 4 + ["running"]
    killed = study.work_dir / "runs" / trained[-1]
    assert json.loads((killed / "meta.json").read_text())["status"] == "running"
    finished_meta = {
        i: (study.work_dir / "runs" / i / "meta.json").read_bytes() for i in trained[:4]
    }

    trained.clear()
    report = run_study(study, log=lambda *a: None)
    # the 4 finished runs are not repeated; the killed one resumes; the rest run once
    assert trained[0] == killed.name and not set(trained) & set(finished_meta)
    assert len(trained) == 3 + 3 * 2 - 4  # grid + 2 arms × 3 seeds, minus the 4 done
    for i, meta in finished_meta.items():
        assert (study.work_dir / "runs" / i / "meta.json").read_bytes() == meta
    resumed = json.loads((killed / "meta.json").read_text())
    assert resumed["status"] == "finished" and resumed["resumes"] == 1

    all_runs = list(find_runs([study.work_dir / "runs"]))
    assert len(all_runs) == 9 and all(r.status == "finished" for r in all_runs)
    # the chosen lr is the best mean final validation accuracy of the grid (ties: loss)
    grid = [r for r in all_runs if r.config["validation"]]
    best = max(grid, key=lambda r: (r.final["valid_accuracy"], -r.final["valid_loss"]))
    tests = [
        r for r in all_runs if not r.config["validation"] and "nesterov" not in r.config["hparams"]
    ]
    assert {r.config["hparams"]["lr"] for r in tests} == {best.config["hparams"]["lr"]}
    assert sorted(r.config["seed"] for r in tests) == [0, 1, 2]
    assert all(r.config["eval_splits"] == ["test"] for r in tests)
    # records (no checkpoints) next to the report
    records = study.results_dir / "runs"
    assert sorted(p.name for p in records.iterdir()) == sorted(r.path.name for r in all_runs)
    assert not list(records.rglob("checkpoint.pt"))
    assert (records / tests[0].path.name / "updates.jsonl").exists()
    assert report == study.results_dir / "README.md"
    text = report.read_text()
    assert "Scale `cpu`" in text and "Four steps per epoch." in text
    assert "9 finished) of 9 planned" in text

    # rebuilt from the records alone: the work dir is gone
    shutil.rmtree(study.work_dir)
    write_report(study)
    rows = list(csv.DictReader((study.results_dir / "table.csv").open()))
    row = next(r for r in rows if r["arm"] == "sgd" and r["key"] == "test_accuracy")
    values = [r.final["test_accuracy"] for r in tests]
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert int(row["n"]) == 3
    assert float(row["mean"]) == pytest.approx(np.mean(values), rel=1e-12)
    assert float(row["ci95"]) == pytest.approx(half, rel=1e-9)
    assert {p.name for p in study.results_dir.glob("*.png")} == {
        "grid_synthetic.png",
        "updates_synthetic.png",
    }
    assert report.read_text() == text  # same records, same report

    # continued on another machine: the records are restored, nothing is retrained
    trained.clear()
    run_study(study, report=False, log=lambda *a: None)
    assert trained == []


def test_stale_runs_are_left_out(tiny, monkeypatch):
    study = load_study(tiny, "cpu")
    _count_training(monkeypatch)
    run_study(study, report=False, log=lambda *a: None)
    edited = tiny.read_text().replace("max_steps_per_epoch = 4", "max_steps_per_epoch = 3")
    tiny.write_text(edited)
    study = load_study(tiny, "cpu")
    now = plan(study)
    assert len(list(study_runs(study))) == 9
    assert now.undecided == [("synthetic", "sgd")]  # the old grid runs do not count
    report = run_study(study, log=lambda *a: None)
    assert report is not None
    # 9 runs on plan (3 grid + 2 arms × 3 seeds) and the 9 of the first version
    assert "Runs on record: 18 (18 finished) of 9 planned, 9 more from earlier versions" in (
        report.read_text()
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("seeds = 5", "seed = 5"), r"unknown key\(s\) \['seed'\] in top level"),
        (
            ("[scales.paper]\n[scales.paper.budget]\nepochs = 20\n", ""),
            r"missing scale\(s\) \['paper'\]",
        ),
        (('optimizer = "sgd"', 'optimizer = "sgdd"'), r"unknown optimizer 'sgdd'"),
        (('tasks = ["synthetic"]', 'tasks = ["nope"]'), r"unknown task\(s\) \['nope'\]"),
        (("epochs = 2\n", "epochs = 0\n"), r"\[budget\] epochs must be a positive integer"),
        (("checkpoint_every = 2", "lr = 2"), r"unknown key\(s\) \['lr'\] in \[run\]"),
        (('"updates"]', '"bars"]'), r"unknown figure\(s\) \['bars'\]"),
        (
            ("momentum = 0.9\n[", "momentum = 0.9\nlr = 1\n["),
            r"\['lr'\] both fixed and in the grid",
        ),
        (
            ("nesterov = true", "nesterow = true"),
            r"unknown hyperparameter\(s\) \['nesterow'\] of sgd",
        ),
        (("title =", "title = = "), r"is not valid TOML"),
    ],
)
def test_bad_files(tiny, edit, message):
    tiny.write_text(TINY.replace(*edit))
    with pytest.raises(StudyError, match=message):
        load_study(tiny, "cpu")


def test_same_arms_and_unknown_names(tiny):
    tiny.write_text(TINY.replace("nesterov = true\nlr = 0.1\n", ""))
    with pytest.raises(StudyError, match=r"arms 'sgd' and 'nesterov' .* make them differ"):
        load_study(tiny, "cpu")
    tiny.write_text(TINY)
    with pytest.raises(StudyError, match=r"unknown scale 'gpu'; this study has: cpu, paper"):
        load_study(tiny, "gpu")
    with pytest.raises(StudyError, match=r"unknown study 'nope'; available in .*: tiny"):
        load_study("nope", directory=tiny.parent)


def test_cli_errors_are_one_line(tiny, monkeypatch, capsys):
    from adaptopt.cli.main import main

    monkeypatch.setenv("ADAPTOPT_STUDIES", str(tiny.parent))
    assert main(["study", "report", "nope"]) == 2
    assert re.match(r"^adaptopt: error: study: .*unknown study 'nope'", capsys.readouterr().err)
    assert main(["study", "run", "tiny", "--scale", "big"]) == 2
    err = capsys.readouterr().err
    assert re.match(r"^adaptopt: error: study: .*unknown scale 'big'", err) and err.count("\n") == 1
    assert main(["study", "list"]) == 0
    assert "tiny" in capsys.readouterr().out


# ---- the repository's studies --------------------------------------------------------------

TUNED = {  # the authors' tuned values the grids must bracket
    "ptb-awdlstm": PTB_HPARAMS,
    "multi30k-transformer": MULTI30K_HPARAMS,
    "fmnist-resnet20": CIFAR10_HPARAMS,  # Fashion-MNIST stands in for CIFAR-10
    "cifar10-resnet20": CIFAR10_HPARAMS,
    "wikitext2-gpt2": {"adam": {"lr": 2.5e-4}},
}
STUDIES = [
    "table1-ptb",
    "multi30k",
    "table1-image",
    "smoothness",
    "clipping-gpt2",
    "scale-free-depth",
]


def test_repository_studies_exist():
    assert set(STUDIES) <= set(available(REPO_STUDIES))


@pytest.mark.parametrize("name", STUDIES)
@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_repository_study_is_valid(name, scale):
    study = load_study(REPO_STUDIES / f"{name}.toml", scale)
    assert study.note, "every scale says what it is"
    for arm in study.arms:
        for key, values in arm.grid.items():
            tuned = [
                TUNED[t][arm.optimizer][key]
                for t in study.tasks
                if t in TUNED and key in TUNED[t].get(arm.optimizer, {})
            ]
            for value in tuned:  # the tuned value, and values on both sides of it
                assert value in values, (name, scale, arm.label, key, value, values)
                assert min(values) < value < max(values), (name, scale, arm.label, key)


def test_depth_study_brackets_the_authors_values():
    """AdamW-Scale-free README: lr 1e-3 (depth 20) and 5e-4 (44 and deeper) for both."""
    for scale in ("cpu", "paper"):
        study = load_study(REPO_STUDIES / "scale-free-depth.toml", scale)
        modes = {a.fixed["weight_decay_mode"] for a in study.arms}
        assert modes == {"decoupled", "l2", "proximal"}
        for arm in study.arms:
            lrs = arm.grid["lr"]
            assert {5e-4, 1e-3} <= set(lrs) and min(lrs) < 5e-4 and max(lrs) > 1e-3


def test_table1_studies_have_the_six_optimizers():
    six = {"sgd", "sgd_normalized", "sgd_clip_grad", "sgd_clip_momentum", "adam", "gsignsgd"}
    for name in ("table1-ptb", "multi30k", "table1-image"):
        study = load_study(REPO_STUDIES / f"{name}.toml", "cpu")
        assert {a.optimizer for a in study.arms} == six
        assert len(study.seeds) >= 3
        assert len(load_study(REPO_STUDIES / f"{name}.toml", "paper").seeds) == 5


# ---- update magnitudes ---------------------------------------------------------------------


def test_update_stats_against_numpy():
    g = torch.Generator().manual_seed(0)
    before = torch.randn(1000, generator=g)
    delta = torch.randn(1000, generator=g) * 10.0 ** torch.randint(-9, 1, (1000,), generator=g)
    delta[:7] = 0
    stats_ = update_stats(before + delta, before)
    d = np.abs((before + delta).double().numpy() - before.double().numpy())
    assert stats_["zero"] == int(np.sum(d == 0)) >= 7
    assert stats_["median"] == pytest.approx(np.sort(d)[(len(d) - 1) // 2], rel=1e-12)
    assert stats_["max"] == pytest.approx(d.max(), rel=1e-12)
    nz = d[d > 0]
    expected = [int(np.sum(np.clip(np.floor(np.log10(nz)), -16, 2) == k)) for k in UPDATE_BINS]
    assert stats_["bins"] == expected and sum(expected) + stats_["zero"] == 1000


def test_update_callback_records_every_n_steps(tmp_path):
    from runs_helpers import synthetic

    from adaptopt.experiments.trainer import train

    train(
        synthetic(epochs=1, max_steps_per_epoch=7),
        tmp_path / "r",
        callbacks=[UpdateMagnitudeCallback(3)],
    )
    rows = [json.loads(x) for x in (tmp_path / "r" / "updates.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in rows}) == [1, 4, 7]
    assert {r["layer"] for r in rows} == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert all(r["zero"] < r["numel"] for r in rows)  # SGD moved every tensor


def test_slurm_jobs_get_the_callbacks(tmp_path):
    pytest.importorskip("submitit", reason="optional dependency for SLURM studies")
    from runs_helpers import synthetic

    configs = sweep_mod.resolve_all([synthetic(epochs=1, max_steps_per_epoch=3)])
    dirs = [tmp_path / "runs" / c.run_id() for c in configs]
    jobs = sweep_mod.submit_slurm(
        configs, dirs, tmp_path / "slurm", cluster="debug", callbacks=[UpdateMagnitudeCallback(2)]
    )
    assert [j.result() for j in jobs] == ["finished"]
    steps = {json.loads(x)["step"] for x in (dirs[0] / "updates.jsonl").read_text().splitlines()}
    assert steps == {1, 3}


def test_report_names_a_swept_hyperparameter_without_effect(tmp_path, monkeypatch):
    """Without momentum, SGD's dampening changes nothing: the grid table says so instead of
    presenting the tie-break as a choice; the learning rate, which does change the runs, is
    not named (negative control)."""
    (tmp_path / "studies").mkdir()
    path = tmp_path / "studies" / "inert.toml"
    path.write_text(
        TINY.replace('figures = ["table", "grid", "updates"]', 'figures = ["grid"]')
        .replace("[callbacks]\nupdate_magnitudes = 3\n", "")
        .replace(
            "[optimizers.sgd]\nmomentum = 0.9\n[optimizers.sgd.grid]\nlr = [0.003, 0.03, 0.3]",
            "[optimizers.sgd]\nmomentum = 0.0\n[optimizers.sgd.grid]\nlr = [0.003, 0.3]\n"
            "dampening = [0.0, 0.5]",
        )
        .replace("seeds = 3", "seeds = 1")
    )
    study = load_study(path, "cpu")
    run_study(study, log=lambda *a: None)
    row = next(
        line
        for line in (study.results_dir / "README.md").read_text().splitlines()
        if line.startswith("| synthetic | sgd |")
    )
    assert "4/4" in row and "**no effect: dampening**" in row
    assert "no effect: lr" not in row and "lr, dampening" not in row
