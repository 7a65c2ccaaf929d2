r"""Noise adaptivity of SGDOL (dissertation ch. 1, Mechanism 1; SPEC.md §1.4).

Least squares :math:`F(x) = \tfrac1{2n}\|A x - b\|^2` with :math:`b = A x^*` (:math:`F^* = 0`) and
Gaussian gradient noise: every stochastic gradient is :math:`\nabla F(x) + \sigma\xi`,
:math:`\xi \sim N(0, I_d)` drawn afresh. For each :math:`\sigma` (several orders of magnitude)
we compare, at an equal budget of stochastic gradients, SGDOL with its default
:math:`M = \alpha = 10` and no retuning against constant-step SGD with the step tuned on a
grid for that :math:`\sigma` (SGDOL draws two gradients per step, so it takes half as many
steps). The score is the root-mean-square over seeds of the final true gradient norm
:math:`\|\nabla F(x_T)\|`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from adaptopt._optional import require
from adaptopt.optim import create_optimizer
from adaptopt.theory._report import write_table


@dataclass(frozen=True)
class NoisyLeastSquares:
    r""":math:`F(x) = \tfrac12 (x - x^*)^\top H (x - x^*)`, :math:`H = A^\top A / n`, with
    stochastic gradients :math:`\nabla F(x) + \sigma\xi`; leading dimensions of ``x`` index
    independent copies (step sizes, seeds)."""

    H: Tensor
    x_star: Tensor
    sigma: float

    @classmethod
    def random(
        cls, n: int, d: int, smoothness: float, sigma: float, seed: int = 0
    ) -> NoisyLeastSquares:
        r"""Gaussian design :math:`A \in R^{n \times d}`, rescaled so that
        :math:`\lambda_{\max}(H)` = ``smoothness``; Gaussian minimizer."""
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma!r}")
        if not smoothness > 0:
            raise ValueError(f"smoothness must be > 0, got {smoothness!r}")
        generator = torch.Generator().manual_seed(seed)
        A = torch.randn(n, d, generator=generator, dtype=torch.float64)
        H = A.T @ A / n
        H *= smoothness / torch.linalg.eigvalsh(H).max()
        return cls(H, torch.randn(d, generator=generator, dtype=torch.float64), sigma)

    def value(self, x: Tensor) -> Tensor:
        y = x - self.x_star
        return 0.5 * ((y @ self.H) * y).sum(-1)

    def grad(self, x: Tensor) -> Tensor:
        return (x - self.x_star) @ self.H

    def closure(self, params: Sequence[Tensor], generator: torch.Generator) -> Callable[[], Tensor]:
        r"""A closure that sets every ``p.grad`` to a fresh stochastic gradient (independent
        :math:`\xi` for every call and every row) and returns the summed loss."""

        def closure() -> Tensor:
            x = torch.stack([p.detach() for p in params])
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            for p, g in zip(params, self.grad(x) + self.sigma * noise, strict=True):
                p.grad = g
            return self.value(x).sum()

        return closure


def _final_grad_rms(problem: NoisyLeastSquares, x: Tensor) -> float:
    r"""RMS over rows of :math:`\|\nabla F(x)\|` (``inf`` if any row diverged)."""
    norms = problem.grad(x).norm(dim=-1)
    return float(norms.square().mean().sqrt()) if bool(torch.isfinite(norms).all()) else np.inf


def sgd_final_grads(
    problem: NoisyLeastSquares, x0: Tensor, lrs: Sequence[float], steps: int, seeds: int, seed: int
) -> list[float]:
    """Constant-step SGD (torch's) for every step size at once: one param group per step
    size, holding ``seeds`` independent copies as rows."""
    params = [torch.nn.Parameter(x0.expand(seeds, -1).clone()) for _ in lrs]
    optimizer = create_optimizer(
        "sgd", [{"params": [p], "lr": lr} for p, lr in zip(params, lrs, strict=True)]
    )
    closure = problem.closure(params, torch.Generator().manual_seed(seed))
    for _ in range(steps):
        # torch annotates the closure as returning a float; its optimizers take any loss
        optimizer.step(closure)  # type: ignore[arg-type]
    return [_final_grad_rms(problem, p.detach()) for p in params]


def sgdol_final_grad(
    problem: NoisyLeastSquares, x0: Tensor, steps: int, seeds: int, seed: int
) -> float:
    """SGDOL with its defaults M = α = 10; one param group, hence one learner, per seed."""
    params = [torch.nn.Parameter(x0.clone()) for _ in range(seeds)]
    optimizer = create_optimizer("sgdol", [{"params": [p]} for p in params])
    closure = problem.closure(params, torch.Generator().manual_seed(seed))
    for _ in range(steps):
        # torch annotates the closure as returning a float; its optimizers take any loss
        optimizer.step(closure)  # type: ignore[arg-type]
    return _final_grad_rms(problem, torch.stack([p.detach() for p in params]))


@dataclass
class SGDOLNoiseResult:
    """One row per σ: tuned SGD's best step and score, SGDOL's score and their ratio, and
    the score of SGD with ``fixed_lr`` (the step tuned at the smallest σ) at every σ."""

    smoothness: float
    gradients: int
    seeds: int
    fixed_lr: float
    rows: list[dict[str, Any]]

    def ratios(self) -> list[float]:
        return [row["SGDOL / tuned SGD"] for row in self.rows]


def run_sgdol_noise(
    out_dir: str | Path | None = None,
    sigmas: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0, 10.0),
    n: int = 200,
    d: int = 20,
    smoothness: float = 1.0,
    gradients: int = 1000,
    lrs: Sequence[float] = tuple(np.logspace(-4, np.log10(2), 27)),
    seeds: int = 5,
    seed: int = 0,
) -> SGDOLNoiseResult:
    """SGDOL (defaults) vs grid-tuned SGD per σ, each with ``gradients`` stochastic gradients.

    With ``out_dir``, writes ``sgdol_noise.{md,csv,png}``.
    """
    rows, sgd_scores = [], []
    for sigma in sigmas:
        problem = NoisyLeastSquares.random(n, d, smoothness, sigma, seed)
        x0 = torch.zeros(d, dtype=torch.float64)
        sgd_scores.append(sgd_final_grads(problem, x0, lrs, gradients, seeds, seed + 1))
        best = int(np.argmin(sgd_scores[-1]))
        sgdol = sgdol_final_grad(problem, x0, gradients // 2, seeds, seed + 2)
        rows.append(
            {
                "sigma": sigma,
                "initial grad norm": float(problem.grad(x0).norm()),
                "tuned SGD lr": float(lrs[best]),
                "tuned SGD grad norm": sgd_scores[-1][best],
                "SGDOL grad norm": sgdol,
                "SGDOL / tuned SGD": sgdol / sgd_scores[-1][best],
            }
        )
    fixed = int(np.argmin(sgd_scores[int(np.argmin(sigmas))]))
    for row, scores in zip(rows, sgd_scores, strict=True):
        row["untuned SGD grad norm"] = scores[fixed]
    result = SGDOLNoiseResult(smoothness, gradients, seeds, float(lrs[fixed]), rows)
    if out_dir is not None:
        _write(result, Path(out_dir))
    return result


def _write(result: SGDOLNoiseResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_table(
        result.rows,
        out / "sgdol_noise",
        title="SGDOL (M = alpha = 10, untuned) vs constant-step SGD tuned per noise level",
        notes=[
            f"Least squares with smoothness L = {result.smoothness}, Gaussian gradient noise of "
            f"std sigma per coordinate; {result.gradients} stochastic gradients per run "
            f"(SGDOL: {result.gradients // 2} steps of two), RMS over {result.seeds} seeds of the "
            "final true gradient norm.",
            f"untuned SGD: lr={result.fixed_lr:.3g}, the step tuned at the smallest sigma, "
            "used at every sigma.",
        ],
    )
    sigmas = [row["sigma"] for row in result.rows]
    Figure = require("matplotlib.figure", feature="the theory plots").Figure
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.loglog(
        sigmas,
        [row["tuned SGD grad norm"] for row in result.rows],
        "o-",
        label="SGD, step tuned for each sigma",
    )
    ax.loglog(
        sigmas,
        [row["SGDOL grad norm"] for row in result.rows],
        "s-",
        label="SGDOL, defaults (M = alpha = 10)",
    )
    ax.loglog(
        sigmas,
        [row["untuned SGD grad norm"] for row in result.rows],
        "^:",
        color="0.5",
        label=f"SGD, lr={result.fixed_lr:.3g} (tuned at the smallest sigma)",
    )
    ax.set_xlabel(r"gradient noise $\sigma$")
    ax.set_ylabel(r"final $\|\nabla F(x_T)\|$ (RMS over seeds)")
    ax.set_title("Noise adaptivity at an equal gradient budget")
    ax.legend(fontsize=8)
    fig.savefig(out / "sgdol_noise.png", dpi=120)
