"""Reports: t-intervals against scipy, Table 1 numbers, figures, HTML."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from runs_helpers import synthetic
from scipy import stats

from adaptopt.experiments.report import make_report, t_interval
from adaptopt.experiments.rundir import find_runs
from adaptopt.experiments.seeds import run_seeds
from adaptopt.experiments.sweep import run_all
from adaptopt.experiments.trainer import train


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_t_interval_half_width_equals_scipy(n):
    x = np.random.default_rng(n).normal(3.0, 2.0, n)
    low, high = stats.t.interval(0.95, n - 1, loc=x.mean(), scale=stats.sem(x))
    mean, half = t_interval(x)
    assert mean == pytest.approx(x.mean(), rel=1e-15)
    assert half == pytest.approx((high - low) / 2, rel=1e-12)
    assert t_interval(x, 0.99)[1] > half


def test_t_interval_degenerate_cases():
    assert t_interval([4.0])[0] == 4.0 and math.isnan(t_interval([4.0])[1])
    assert all(math.isnan(v) for v in t_interval([]))
    assert t_interval([2.0, 2.0, 2.0]) == (2.0, 0.0)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Three seeds of two settings (retrained) + a 2 × 2 lr × weight-decay sweep."""
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("study")
    settings = [
        synthetic("sgd", hparams={"lr": 0.1, "momentum": 0.9}, epochs=3),
        synthetic("gsignsgd", hparams={"lr": 0.01}, epochs=3),
    ]
    run_seeds(settings, out / "seeds", seeds=3)
    grid = [
        synthetic(hparams={"lr": lr, "weight_decay": wd}, epochs=1, validation=True)
        for lr in (0.01, 1e38)
        for wd in (0.0, 1e-3)
    ]
    run_all(grid, out / "sweep")
    train(synthetic(epochs=1, probe=4, seed=7), out / "probed")
    return out


def test_report_contains_table1_with_t_intervals_and_the_pngs(study):
    report = make_report([study], study / "report", title="study")
    text = report.read_text()
    assert text.startswith("# study")
    rows: dict[str, str] = {}  # first row of each label: Table 1 (before the settings table)
    for line in text.splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split("|")[1].strip(), line)
    assert "| Method | synthetic: training loss | synthetic: test accuracy |" in text
    runs = [r for r in find_runs([study / "seeds"]) if r.config["optimizer"] == "gsignsgd"]
    mean, half = t_interval([r.final["test_accuracy"] for r in runs])
    cells = re.findall(r"(\d+\.\d{4}) ± (\d+\.\d{4})", rows["Generalized SignSGD"])
    assert len(cells) == 2 and cells[1] == (f"{mean:.4f}", f"{half:.4f}")
    assert {"SGD Momentum (epochs=3)", "SGD Momentum (epochs=1)"} <= set(rows)  # + the probed run
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "curves_synthetic.png" in images and "heatmap_synthetic_sgd.png" in images
    assert "## Smoothness" in text and any(name.startswith("smoothness_") for name in images)
    for name in images:
        assert (study / "report" / name).read_bytes().startswith(b"\x89PNG")
    assert "| synthetic | SGD Momentum | lr=0.01, momentum=0.9, weight_decay=" in text
    html = (study / "report" / "report.html").read_text()
    assert html.count("<table>") == 3 and '<img alt="' in html and "<strong>" in html


def test_report_of_nothing_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no run directories"):
        make_report([tmp_path], tmp_path / "report")
    with pytest.raises(ValueError, match="no such run directory"):
        make_report([tmp_path / "missing"], tmp_path / "report")
