"""The main job, ``adaptopt demo``: the paper's story on real data in minutes on two CPU cores.

1. **Unbounded smoothness.** The 2-layer Transformer LM of paper Fig. 1a (PyTorch's tutorial
   settings: SGD lr 5, gradient clipping 0.5), at its smoke size on WikiText-2, with the
   smoothness probe (preset ``"default"``) every few steps: L̂_t against ‖∇F(x_t)‖, the fitted
   (L0, L1) and their rank correlation.
2. **Table 1 on an LSTM.** The six optimizers of the paper's Table 1 with the authors' PTB
   hyperparameters train the smoke-size AWD-LSTM (16/32 units, BPTT 10) on the first 6,000
   PTB training tokens, 3 seeds, every optimizer from the same initial weights per seed;
   test perplexity and training loss with 95% t-intervals. The model and budget are far
   smaller than the paper's (750 epochs of a 24M-parameter model): the table shows how the
   optimizers behave on an LSTM at this budget, not the paper's end-of-training ranking,
   which the ``table1-ptb`` study measures.
3. The executable theory (Theorem 2's GD lower bound, scale-freeness, SGDOL's noise
   adaptivity).

Everything lands in one Markdown/HTML report that links to the studies and the fidelity
ledger. Finished runs are kept, so a second call only redoes the theory and the report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptopt import theory
from adaptopt.experiments.report import TABLE1_NAMES, Block, Image, Table, make_report
from adaptopt.experiments.seeds import run_seeds
from adaptopt.experiments.trainer import TrainConfig, train
from adaptopt.smoothness import fit_records, plot_records, read_records
from adaptopt.tasks.language import PTB_HPARAMS

TASK = "ptb-awdlstm"
# TrainConfig fields of the Table 1 runs and of the smoothness run
BUDGET: dict[str, Any] = {
    "epochs": 6,
    "batch_size": 4,
    "max_steps_per_epoch": 1000,
    "eval_every": 6,
}
SMOKE_BUDGET: dict[str, Any] = {
    "epochs": 2,
    "batch_size": 4,
    "max_steps_per_epoch": 3,
    "eval_every": 1,
}
SMOOTHNESS_TASK = "wikitext2-transformer"
SMOOTHNESS_RUN: dict[str, Any] = {
    "epochs": 1,
    "batch_size": 4,
    "max_steps_per_epoch": 150,
    "probe": 5,
}
SMOOTHNESS_SMOKE: dict[str, Any] = {
    "epochs": 1,
    "batch_size": 4,
    "max_steps_per_epoch": 6,
    "probe": 2,
}
STUDIES = "docs/results"  # the committed study reports, relative to the repository
# (title, function of the output folder) for each theory demo.
THEORY_DEMOS: tuple[tuple[str, Callable[[Path], Any]], ...] = (
    ("Theorem 2: gradient descent's lower bound vs sign methods", theory.run_gd_lower_bound),
    ("Scale-freeness on a diagonally ill-conditioned quadratic", theory.run_scale_free),
    ("SGDOL adapts to the noise level without tuning", theory.run_sgdol_noise),
)


def demo_settings(smoke: bool = False) -> list[TrainConfig]:
    """One setting per Table 1 optimizer (authors' PTB values), in the paper's order."""
    budget = SMOKE_BUDGET if smoke else BUDGET
    return [
        TrainConfig(TASK, name, dict(PTB_HPARAMS[name]), smoke=True, log_every=10, **budget)
        for name in TABLE1_NAMES
    ]


def run_smoothness(report_dir: Path, smoke: bool = False) -> list[Block]:
    """Train the Fig. 1a Transformer with the probe; the scatter, the fit and its table."""
    run_dir = report_dir / "smoothness" / "run"
    config = TrainConfig(
        SMOOTHNESS_TASK,
        "sgd",
        smoke=True,
        log_every=10,
        **(SMOOTHNESS_SMOKE if smoke else SMOOTHNESS_RUN),
    )
    train(config, run_dir, resume=True)  # a finished run is kept, an interrupted one resumed
    records = read_records(run_dir / "smoothness.jsonl")
    rows = records.select(quantity="norm", layer="__global__")
    blocks: list[Block] = [
        "## Unbounded smoothness along training (paper Fig. 1a)",
        f"`{SMOOTHNESS_TASK}` at its smoke size on WikiText-2 with the tutorial's SGD (lr 5, "
        f"gradient norm clipped at 0.5), {len(rows.grad)} probes of L̂_t = max_γ "
        "‖∇F(x_t + γd) − ∇F(x_t)‖/‖γd‖ (d = x_{t+1} − x_t) against ‖∇F(x_t)‖ on a fixed probe "
        "set (preset `default`). (L0, L1)-smoothness predicts L̂ ≤ L0 + L1‖∇F‖ with L1 > 0: "
        "the local smoothness grows with the gradient norm instead of staying bounded.",
    ]
    if len(rows.grad) >= 3:
        fits = {c: fit_records(records, coverage=c)["__global__"] for c in (1.0, 0.95)}
        rho = _spearman(rows.grad, rows.smoothness)
        blocks.append(
            Table(
                ["coverage", "L0", "L1", "points covered", "Spearman ρ(‖∇F‖, L̂)"],
                [
                    [f"{c:.0%}", f"{f.L0:.3g}", f"{f.L1:.3g}", f"{f.covered:.0%}", f"{rho:.2f}"]
                    for c, f in fits.items()
                ],
            )
        )
        path = report_dir / "smoothness" / "smoothness.png"
        plot_records(records, coverage=0.95, path=path)
        blocks.append(Image(str(path.relative_to(report_dir)), "L̂ against ‖∇F‖, fitted line"))
    return blocks


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Rank correlation (no ties expected among float measurements)."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


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
    """Smoothness run, Table 1 runs, theory demos and the report; returns the report's path.

    ``smoke`` shrinks every run to a few steps (tests). Finished runs are kept.
    """
    out_dir = Path(out_dir)
    print("[demo 1/3] smoothness probe along training (WikiText-2 Transformer)", flush=True)
    smoothness = run_smoothness(out_dir, smoke)
    print("[demo 2/3] Table 1 optimizers on the AWD-LSTM (PTB), 3 seeds each", flush=True)
    run_seeds(demo_settings(smoke), out_dir, seeds, workers=workers, progress=progress)
    print("[demo 3/3] executable theory", flush=True)
    extra = run_theory(out_dir) if with_theory else []
    budget = SMOKE_BUDGET if smoke else BUDGET
    note = (
        f"Table 1 optimizers on `{TASK}` at its smoke size (16/32-unit LSTMs, BPTT 10, the "
        f"first 6,000 PTB training tokens): {budget['epochs']} epochs of batch "
        f"{budget['batch_size']}, the authors' PTB hyperparameters, every optimizer from the "
        "same initial weights per seed. The paper's budgets, the other tasks and the claim-by-"
        f"claim comparison are the studies' (`adaptopt study list`; reports in `{STUDIES}/`); "
        "how each task follows the authors' code is in `docs/FIDELITY.md`."
    )
    return make_report(
        [out_dir / "runs"],
        out_dir,
        title="adaptopt demo",
        intro=[note, *smoothness],
        extra=extra,
    )
