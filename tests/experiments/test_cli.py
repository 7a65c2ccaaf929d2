"""The subcommands end to end on the synthetic task (and the demo's smoke version)."""

from __future__ import annotations

import pytest

from adaptopt.cli.main import main
from adaptopt.cli.train import parse_assignments
from adaptopt.experiments.rundir import find_runs, load_run


def test_parse_assignments_uses_toml_values():
    got = parse_assignments(["lr=1e-3", "betas=[0.9, 0.99]", "nesterov=true", "mode=l2"], "x")
    assert got == {"lr": 1e-3, "betas": [0.9, 0.99], "nesterov": True, "mode": "l2"}
    with pytest.raises(SystemExit, match="key=value"):
        parse_assignments(["lr"], "--hparam")


def test_train_resume_sweep_seeds_report(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = [
        "train",
        "--task",
        "synthetic",
        "--optimizer",
        "sgd_clip_grad",
        "--hparam",
        "lr=0.5",
        "--hparam",
        "gamma=1",
        "--epochs",
        "2",
        "--run-dir",
        str(run_dir),
    ]
    assert main(args) == 0
    assert "finished: train_loss" in capsys.readouterr().out
    run = load_run(run_dir)
    assert run.config["hparams"] == {"lr": 0.5, "gamma": 1} and run.status == "finished"
    assert main([*args, "--resume"]) == 0

    spec = tmp_path / "sweep.toml"
    spec.write_text(
        'task = "synthetic"\n[budget]\nepochs = 1\n'
        "[optimizers.sgd.grid]\nlr = [0.03, 0.3]\nweight_decay = [0, 1e-3]\n"
    )
    assert main(["sweep", str(spec), "--out", str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    assert "synthetic sgd: {" in out and "best.json" in out
    assert (
        main(
            [
                "seeds",
                "--from-sweep",
                str(tmp_path / "sweep"),
                "--seeds",
                "2",
                "--epochs",
                "2",
                "--out",
                str(tmp_path / "study"),
            ]
        )
        == 0
    )
    assert "| SGD Momentum | " in capsys.readouterr().out
    study = list(find_runs([tmp_path / "study"]))
    assert len(study) == 2 and {r.config["seed"] for r in study} == {0, 1}
    assert all(not r.config["validation"] and r.config["epochs"] == 2 for r in study)

    assert main(["report", str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    assert capsys.readouterr().out.strip().endswith("report.md")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Table 1" in text and "heatmap_synthetic_sgd.png" in text


def test_seeds_needs_an_optimizer_with_task(tmp_path, capsys):
    assert main(["seeds", "--task", "synthetic", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "adaptopt: error: --task needs --optimizer\n"


def test_demo_smoke(tmp_path, capsys):
    argv = ["demo", "--smoke", "--seeds", "2", "--workers", "1", "--no-theory"]
    code = main([*argv, "--out", str(tmp_path)])
    captured = capsys.readouterr()
    if code == 2 and "not found" in captured.err:
        pytest.skip(f"PTB or WikiText-2 not installed: {captured.err}")
    assert code == 0, captured.err
    out = captured.out
    for name in ("SGD Momentum", "SGDClipGrad", "SGDClipMomentum", "Adam", "Generalized SignSGD"):
        assert f"| {name} |" in out
    assert (tmp_path / "report.md").exists() and (tmp_path / "curves_ptb-awdlstm.png").exists()
    report = (tmp_path / "report.md").read_text()
    assert "Unbounded smoothness along training" in report and "L0" in report
    assert (tmp_path / "smoothness" / "smoothness.png").exists()
    assert len(list(find_runs([tmp_path / "runs"]))) == 12
