"""The main job, ``adaptopt demo``: a small Table 1 study on CPU, the theory demos, a report.

The six optimizers of the paper's Table 1 (SPEC.md §1.2) with the authors' tuned CIFAR-10
hyperparameters (SPEC.md §4; weight decay 1e-4) train the SGDOL CNN on Fashion-MNIST from the
same initial weights per seed, 3 seeds each, on a budget sized for two CPU cores: 4 × 40 steps
of batch 100 (16,000 images, a quarter of an epoch), the test set evaluated after the last.
Then the executable theory (Theorem 2's GD lower bound, scale-freeness, SGDOL's noise
adaptivity) runs, and everything lands in one Markdown/HTML report. Measured on an idle 2-core
machine: 18 runs of 32–41 s with two workers, 6m26s for ``make demo`` once ``.venv`` exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from adaptopt import theory
from adaptopt.experiments.report import TABLE1_NAMES, Block, Image, make_report
from adaptopt.experiments.seeds import run_seeds
from adaptopt.experiments.trainer import TrainConfig
from adaptopt.tasks.image import CIFAR10_HPARAMS

TASK = "fmnist-cnn"
BUDGET = {"epochs": 4, "batch_size": 100, "max_steps_per_epoch": 40, "eval_every": 4}
SMOKE_BUDGET = {"epochs": 2, "batch_size": 32, "max_steps_per_epoch": 2, "eval_every": 1}
# (title, function of the output folder) for each theory demo.
THEORY_DEMOS: tuple[tuple[str, Callable[[Path], Any]], ...] = (
    ("Theorem 2: gradient descent's lower bound vs sign methods", theory.run_gd_lower_bound),
    ("Scale-freeness on a diagonally ill-conditioned quadratic", theory.run_scale_free),
    ("SGDOL adapts to the noise level without tuning", theory.run_sgdol_noise),
)


def demo_settings(smoke: bool = False) -> list[TrainConfig]:
    """One setting per Table 1 optimizer (authors' CIFAR-10 values), in the paper's order."""
    budget = SMOKE_BUDGET if smoke else BUDGET
    return [
        TrainConfig(TASK, name, dict(CIFAR10_HPARAMS[name]), smoke=smoke, log_every=5, **budget)
        for name in TABLE1_NAMES
    ]


def run_theory(report_dir: Path) -> list[Block]:
    """Run the theory demos into ``report_dir/theory``; their tables and figures as blocks."""
    blocks: list[Block] = ["## Executable theory"]
    for title, demo in THEORY_DEMOS:
        folder = report_dir / "theory" / demo.__name__.removeprefix("run_")
        demo(folder)
        blocks.append(f"### {title}")
        for table in sorted(folder.glob("*.md")):  # each starts with its own "# title"
            blocks.append(table.read_text().split("\n", 1)[1].strip())
        for png in sorted(folder.glob("*.png")):
            blocks.append(Image(str(png.relative_to(report_dir)), f"{title} ({png.name})"))
    return blocks


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    seeds: int | Sequence[int] = 3,
    workers: int = 2,
    smoke: bool = False,
    with_theory: bool = True,
    progress: bool | None = None,
) -> Path:
    """Train, run the theory demos and write the report; returns the report's path.

    ``smoke`` uses the task's seconds-scale version (tests). Finished runs are kept, so a
    second call only reruns the theory demos and rewrites the report.
    """
    out_dir = Path(out_dir)
    run_seeds(demo_settings(smoke), out_dir, seeds, workers=workers, progress=progress)
    extra = run_theory(out_dir) if with_theory else []
    budget = SMOKE_BUDGET if smoke else BUDGET
    steps = budget["epochs"] * budget["max_steps_per_epoch"]
    note = (
        f"Table 1 optimizers on {TASK}{' (smoke)' if smoke else ''}: {steps} steps of batch "
        f"{budget['batch_size']}, the authors' CIFAR-10 hyperparameters, every optimizer from "
        "the same initial weights per seed."
    )
    return make_report(
        [out_dir / "runs"], out_dir, title="adaptopt demo", intro=[note], extra=extra
    )
