r"""Scale-freeness on quadratics (talk, "Adam Is Scale-Free"; SPEC.md §3).

A method is scale-free if multiplying coordinate :math:`j` of every gradient by
:math:`c_j > 0` leaves its iterates unchanged. Take
:math:`f(x) = \tfrac12 (x - x^*)^\top H (x - x^*)` with :math:`H` diagonal and its twin
:math:`\tilde f` with :math:`\nabla^2 \tilde f = \Lambda \nabla^2 f` (:math:`\Lambda` diagonal,
positive) and the same minimizer: :math:`\nabla \tilde f(x) = \Lambda \nabla f(x)` at every
:math:`x`, so a scale-free method follows the same path on both, and on :math:`f` behaves as
if it had been preconditioned to the best-conditioned :math:`\tilde f` (with
:math:`\Lambda = H^{-1}`, the identity Hessian). Adam, AdaGrad, Lion and Generalized SignSGD
with :math:`\epsilon = 0` are scale-free; GD is not. GD with the Jacobi preconditioner
:math:`\mathrm{diag}(\nabla^2 F)^{-1}` is invariant too, but needs the Hessian.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from adaptopt._optional import require
from adaptopt.optim import create_optimizer
from adaptopt.theory._report import write_table


@dataclass(frozen=True)
class DiagonalQuadratic:
    r""":math:`f(x) = \tfrac12 \sum_j h_j (x_j - x^*_j)^2`."""

    h: Tensor
    x_star: Tensor

    def __post_init__(self) -> None:
        if self.h.shape != self.x_star.shape or self.h.ndim != 1:
            raise ValueError(
                f"h and x_star must be vectors of one shape, got "
                f"{tuple(self.h.shape)} and {tuple(self.x_star.shape)}"
            )
        if not bool((self.h > 0).all()):
            raise ValueError(f"the Hessian diagonal h must be positive, got {self.h.tolist()}")

    def value(self, x: Tensor) -> Tensor:
        return 0.5 * (self.h * (x - self.x_star) ** 2).sum(-1)

    def grad(self, x: Tensor) -> Tensor:
        return self.h * (x - self.x_star)

    def rescaled(self, lam: Tensor) -> DiagonalQuadratic:
        r"""The twin :math:`\tilde f` with :math:`\nabla^2\tilde f = \Lambda \nabla^2 f`,
        :math:`\Lambda = \mathrm{diag}(\lambda)`, same minimizer."""
        if not bool((lam > 0).all()):
            raise ValueError(f"lam must be positive, got {lam.tolist()}")
        return DiagonalQuadratic(self.h * lam, self.x_star)


@dataclass(frozen=True)
class QuadraticMethod:
    """An optimizer from the registry; ``jacobi`` divides gradients by the Hessian diagonal."""

    label: str
    optimizer: str
    hparams: dict[str, Any]
    jacobi: bool = False

    def trajectory(self, problem: DiagonalQuadratic, x0: Tensor, steps: int) -> Tensor:
        r"""Iterates :math:`x_0, \dots, x_{steps}` as a ``(steps + 1, d)`` float64 tensor."""
        x = torch.nn.Parameter(x0.to(torch.float64).clone())
        optimizer = create_optimizer(self.optimizer, [x], **self.hparams)
        path = [x.detach().clone()]
        for _ in range(steps):
            g = problem.grad(x.detach())
            x.grad = g / problem.h if self.jacobi else g
            optimizer.step()
            path.append(x.detach().clone())
        return torch.stack(path)


def default_methods() -> tuple[QuadraticMethod, ...]:
    """The talk's methods; ε = 0 wherever the optimizer has one."""
    return (
        QuadraticMethod("GD", "sgd", {"lr": 0.05}),
        QuadraticMethod("GD + diagonal preconditioning", "sgd", {"lr": 0.3}, jacobi=True),
        QuadraticMethod("Adam", "adam", {"lr": 0.3, "eps": 0.0}),
        QuadraticMethod("AdaGrad", "adagrad", {"lr": 1.0, "eps": 0.0}),
        QuadraticMethod("Lion", "lion", {"lr": 0.15}),
        QuadraticMethod("Generalized SignSGD", "gsignsgd", {"lr": 0.05, "eps": 0.0}),
    )


@dataclass
class ScaleFreeResult:
    """Trajectories of each method on f and on its twin f̃, and how far apart they are."""

    problem: DiagonalQuadratic
    twin: DiagonalQuadratic
    paths: dict[str, tuple[Tensor, Tensor]]  # label -> (path on f, path on f̃)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def max_deviation(self, label: str) -> float:
        r""":math:`\max_t \|x_t - \tilde x_t\|_\infty` between the two trajectories."""
        on_f, on_twin = self.paths[label]
        return float((on_f - on_twin).abs().max())


def run_scale_free(
    out_dir: str | Path | None = None,
    h: Sequence[float] = (1.0, 20.0),
    lam: Sequence[float] | None = None,
    x_star: Sequence[float] = (1.0, 0.5),
    x0: Sequence[float] = (-3.0, 2.5),
    steps: int = 60,
    methods: Sequence[QuadraticMethod] | None = None,
    rtol: float = 1e-10,
) -> ScaleFreeResult:
    """Run every method on f and f̃ (``lam`` defaults to 1/h: f̃ has the identity Hessian).

    A method's row says ``identical`` when the two trajectories agree to ``rtol`` relative to
    the largest coordinate visited. With ``out_dir``, writes ``scale_free.{md,csv,png}``.
    """
    problem = DiagonalQuadratic(
        torch.tensor(h, dtype=torch.float64), torch.tensor(x_star, dtype=torch.float64)
    )
    if out_dir is not None and problem.h.numel() != 2:
        raise ValueError(f"the contour plot needs a 2-d problem, got h={list(h)}")
    scale = 1 / problem.h if lam is None else torch.tensor(lam, dtype=torch.float64)
    twin = problem.rescaled(scale)
    start = torch.tensor(x0, dtype=torch.float64)
    result = ScaleFreeResult(problem, twin, {})
    for method in methods or default_methods():
        on_f = method.trajectory(problem, start, steps)
        on_twin = method.trajectory(twin, start, steps)
        result.paths[method.label] = (on_f, on_twin)
        deviation = result.max_deviation(method.label)
        size = float(torch.cat([on_f, on_twin]).abs().max())
        result.rows.append(
            {
                "method": method.label,
                "hyperparameters": " ".join(f"{k}={v}" for k, v in method.hparams.items()),
                "max_t max_j deviation": deviation,
                "identical": deviation <= rtol * size,
                "final f - f*": float(problem.value(on_f[-1])),
                "final f~ - f~*": float(twin.value(on_twin[-1])),
            }
        )
    if out_dir is not None:
        _write(result, Path(out_dir), steps)
    return result


def _write(result: ScaleFreeResult, out: Path, steps: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_table(
        result.rows,
        out / "scale_free",
        title="Scale-freeness: the same method on f and on its diagonally rescaled twin f~",
        notes=[
            f"f = 1/2 sum_j h_j (x_j - x*_j)^2 with h = {result.problem.h.tolist()}; "
            f"f~ has Hessian diagonal {result.twin.h.tolist()}, same minimizer "
            f"{result.problem.x_star.tolist()}; {steps} steps from the same start.",
            "identical: the trajectories agree up to floating-point rounding.",
        ],
    )
    labels = list(result.paths)
    Figure = require("matplotlib.figure", feature="the theory plots").Figure
    fig = Figure(figsize=(3.0 * len(labels), 4.2), layout="constrained")
    axes = fig.subplots(2, len(labels), squeeze=False)
    for row, (problem, name) in enumerate(((result.problem, "f"), (result.twin, "f~"))):
        paths = [result.paths[label][row] for label in labels]
        points = torch.cat([*paths, problem.x_star[None]])
        low, high = points.min(0).values.numpy(), points.max(0).values.numpy()
        pad = 0.15 * (high - low) + 0.1
        u = np.linspace(low[0] - pad[0], high[0] + pad[0], 200)
        v = np.linspace(low[1] - pad[1], high[1] + pad[1], 200)
        grid = torch.tensor(np.stack(np.meshgrid(u, v), -1))
        levels = problem.value(grid).numpy()
        for ax, label, path in zip(axes[row], labels, paths, strict=True):
            ax.contour(
                u,
                v,
                levels,
                levels=np.geomspace(levels.min() + 1e-3, levels.max(), 12),
                colors="0.7",
                linewidths=0.7,
            )
            ax.plot(path[:, 0], path[:, 1], ".-", color="tab:blue", ms=3, lw=1)
            ax.plot(*problem.x_star.tolist(), "r*", ms=10)
            same = next(r["identical"] for r in result.rows if r["method"] == label)
            ax.set_title(
                f"{label}\non {name}" + (" (identical)" if same and row else ""), fontsize=9
            )
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.savefig(out / "scale_free.png", dpi=110)
