r"""Theorem 2 made executable: GD with any constant step vs sign methods on 1-d functions.

Theorem 2 (Crawshaw et al. 2022, correcting Zhang et al. 2020): fix
:math:`\epsilon, L_0, L_1 > 0`, :math:`M \ge \max(L_0/L_1, \epsilon)`; for every constant step
:math:`h` there is a 1-d :math:`(L_0, L_1)`-smooth :math:`f`, bounded below, with
:math:`\sup\{|f'(x)| : f(x) \le f(x_0)\} \le M`, on which GD needs at least

.. math::
    T_{\rm GD} \ge \frac{M L_1 \big(f(x_0) - f^* - \tfrac{15\epsilon^2}{16 L_0}\big)}
                        {2\epsilon^2 \big(\ln\tfrac{M L_1}{L_0} + 1\big)}

iterations to reach :math:`|f'(x_T)| < \epsilon`. The function may depend on :math:`h`, so
the executable form is a two-member family (both members start at their own :math:`x_0`;
GD and the sign methods are translation invariant, so the theorem's fixed :math:`x_0` is
only a shift):

* :class:`ExponentialWell` — :math:`f(x) = L_0 x^2/2` on :math:`|x| \le 1/L_1` and
  :math:`\tfrac{L_0}{L_1^2}(e^{L_1|x|-1} - \tfrac12)` beyond; :math:`C^2`,
  :math:`f'' = L_1|f'| \le L_0 + L_1|f'|` outside, :math:`f'' = L_0` inside. It starts at
  :math:`x_0 = (1 + \ln\tfrac{M L_1}{L_0})/L_1`, where :math:`|f'| = M`; the sub-level set is
  :math:`[-x_0, x_0]`, so its gradient bound is exactly :math:`M`. GD with
  :math:`h > h_c = 2x_0/M` diverges: if :math:`|x| \ge x_0` and :math:`h|f'(x_0)| > 2x_0` then
  :math:`h|f'(x)| \ge h M e^{L_1(|x|-x_0)} > 2x_0(1 + L_1(|x|-x_0)) \ge 2|x|` (as
  :math:`L_1 x_0 \ge 1`), so :math:`|x_{t+1}| = h|f'(x_t)| - |x_t| > |x_t|` and
  :math:`|f'| \ge M \ge \epsilon` forever.
* :class:`HuberSlope` — :math:`f(x) = L_0 x^2/2` on :math:`|x| \le \epsilon/L_0` and
  :math:`\epsilon|x| - \epsilon^2/(2L_0)` beyond (:math:`f'` is :math:`L_0`-Lipschitz, so it
  is :math:`(L_0, L_1)`-smooth for every :math:`L_1`; :math:`|f'| \le \epsilon \le M`). From
  :math:`f(x_0) - f^* = \Delta`, GD moves :math:`h\epsilon` per step on the slope and needs
  :math:`(\Delta - \epsilon^2/(2L_0))/(h\epsilon^2)` steps to enter :math:`|x| < \epsilon/L_0`.

So GD either diverges on the first member (:math:`h > h_c`) or needs, on the second,
:math:`\ge (\Delta - \epsilon^2/(2L_0))/(h_c\epsilon^2) \ge` the bound above (note
:math:`1/h_c = M L_1/(2(\ln\frac{M L_1}{L_0} + 1))`): linear in :math:`M L_1` up to the log.
A sign method moves a fixed :math:`\eta` per step whatever the gradient size, so on both
members it needs :math:`O(L_0\Delta/\epsilon^2 + L_0 x_0/\epsilon)` steps, only logarithmic
in :math:`M`. :func:`run_gd_lower_bound` measures all of this: for each :math:`M` and method,
the best hyperparameters from a grid of the worst count over the family (inf over steps of
sup over functions, the theorem's order of quantifiers). Each member is also started from
points inside its initial sub-level set (still valid instances): in 1-d one large step can
land next to the minimum by luck, and the worst case over a few starts removes such flukes.

"(L0, L1)-smooth" is eq. (1) of the paper in 1-d: :math:`|f''(x)| \le L_0 + L_1|f'(x)|`
wherever :math:`f''` exists (:class:`HuberSlope` has two kinks in :math:`f''`). In 1-d it
implies, by Grönwall, :math:`|f'(y) - f'(x)| \le (L_0/L_1 + |f'(x)|)(e^{L_1|y-x|} - 1)`, i.e.
eq. (3) with constants :math:`(e-1)(L_0, L_1)` for :math:`|y - x| \le 1/L_1`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from adaptopt._optional import require
from adaptopt.optim import create_optimizer
from adaptopt.theory._report import write_table

OptimizerFactory = Callable[[list[Tensor]], torch.optim.Optimizer]


class Instance1D(ABC):
    """A 1-d test function with its derivatives (float64 tensors in, tensors out) and start."""

    L0: float
    L1: float

    @property
    @abstractmethod
    def x_start(self) -> float:
        """The starting point :math:`x_0`."""

    @abstractmethod
    def value(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def grad(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def hess(self, x: Tensor) -> Tensor:
        """:math:`f''` (one-sided value at kinks)."""

    def smoothness_ratio(self, x: Tensor) -> Tensor:
        """:math:`|f''(x)| / (L_0 + L_1 |f'(x)|)`: at most 1 iff eq. (1) holds at ``x``."""
        return self.hess(x).abs() / (self.L0 + self.L1 * self.grad(x).abs())


@dataclass(frozen=True)
class ExponentialWell(Instance1D):
    """Quadratic core, exponential walls; starts where :math:`|f'| = M` (see module doc)."""

    L0: float
    L1: float
    M: float

    @property
    def x_start(self) -> float:
        return (1 + math.log(self.M * self.L1 / self.L0)) / self.L1

    def _wall(self, x: Tensor) -> Tensor:
        return torch.exp(self.L1 * x.abs() - 1)

    def value(self, x: Tensor) -> Tensor:
        inside = x.abs() <= 1 / self.L1
        wall = self.L0 / self.L1**2 * (self._wall(x) - 0.5)
        return torch.where(inside, self.L0 * x**2 / 2, wall)

    def grad(self, x: Tensor) -> Tensor:
        inside = x.abs() <= 1 / self.L1
        return torch.where(inside, self.L0 * x, torch.sign(x) * self.L0 / self.L1 * self._wall(x))

    def hess(self, x: Tensor) -> Tensor:
        inside = x.abs() <= 1 / self.L1
        return torch.where(inside, torch.full_like(x, self.L0), self.L0 * self._wall(x))


@dataclass(frozen=True)
class HuberSlope(Instance1D):
    """Huber function of slope ε and curvature L0, started at height Δ (see module doc)."""

    L0: float
    L1: float
    eps: float
    Delta: float

    @property
    def x_start(self) -> float:
        return self.Delta / self.eps + self.eps / (2 * self.L0)

    def value(self, x: Tensor) -> Tensor:
        inside = x.abs() <= self.eps / self.L0
        slope = self.eps * x.abs() - self.eps**2 / (2 * self.L0)
        return torch.where(inside, self.L0 * x**2 / 2, slope)

    def grad(self, x: Tensor) -> Tensor:
        return torch.clamp(self.L0 * x, -self.eps, self.eps)

    def hess(self, x: Tensor) -> Tensor:
        return torch.where(x.abs() <= self.eps / self.L0, self.L0, 0.0).to(x)


def _check_constants(M: float, L0: float, L1: float, eps: float, Delta: float) -> None:
    for name, value in (("L0", L0), ("L1", L1), ("eps", eps), ("Delta", Delta), ("M", M)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    floor = max(L0 / L1, eps)
    if floor > M:
        raise ValueError(f"Theorem 2 needs M >= max(L0/L1, eps) = {floor:.6g}, got M={M}")
    if Delta <= 15 * eps**2 / (16 * L0):
        raise ValueError(
            f"Delta must exceed 15 eps^2 / (16 L0) = {15 * eps**2 / (16 * L0):.6g} "
            f"for a non-vacuous bound, got Delta={Delta}"
        )


def hard_family(M: float, L0: float, L1: float, eps: float, Delta: float) -> tuple[Instance1D, ...]:
    """The two members (:class:`ExponentialWell`, :class:`HuberSlope`) for these constants."""
    _check_constants(M, L0, L1, eps, Delta)
    return ExponentialWell(L0, L1, M), HuberSlope(L0, L1, eps, Delta)


def gd_lower_bound(M: float, L0: float, L1: float, eps: float, Delta: float) -> float:
    """Theorem 2's lower bound on GD's iterations (Δ = f(x0) − f*)."""
    _check_constants(M, L0, L1, eps, Delta)
    return M * L1 * (Delta - 15 * eps**2 / (16 * L0)) / (2 * eps**2 * (math.log(M * L1 / L0) + 1))


def gd_critical_step(M: float, L0: float, L1: float) -> float:
    r""":math:`h_c = 2(1 + \ln(M L_1/L_0))/(M L_1)`: GD diverges on the well for :math:`h > h_c`."""
    return 2 * (1 + math.log(M * L1 / L0)) / (M * L1)


class _Run:
    """One optimizer on one instance from a batch of starts (coordinates of one parameter)."""

    def __init__(self, instance: Instance1D, starts: Tensor, optimizer: OptimizerFactory) -> None:
        self.instance = instance
        self.x = torch.nn.Parameter(starts.to(torch.float64).clone())
        self.optimizer = optimizer([self.x])
        self.pending = set(range(len(starts)))

    def advance(self, eps: float) -> bool | None:
        r"""Drop the starts with :math:`|f'(x_t)| < \epsilon` from ``pending``; ``True`` once
        none is left, ``None`` if a pending one overflowed, else step and return ``False``."""
        g = self.instance.grad(self.x.detach())
        values = g.tolist()  # a handful of floats: cheaper than tensor bookkeeping
        if not all(math.isfinite(values[i]) for i in self.pending):
            return None
        self.pending = {i for i in self.pending if abs(values[i]) >= eps}
        if not self.pending:
            return True
        self.x.grad = g
        self.optimizer.step()
        return False


@dataclass(frozen=True)
class Method:
    """An optimizer from the registry with fixed hyperparameters and a grid to search.

    ``coordinatewise``: the update of each coordinate depends on that coordinate only (GD,
    the sign family), so independent 1-d runs share one parameter tensor; otherwise
    (global-norm clipping) every run gets its own optimizer.
    """

    label: str
    optimizer: str
    grid: tuple[dict[str, float], ...]
    fixed: dict[str, Any] = field(default_factory=dict)
    coordinatewise: bool = True

    def runs(self, hparams: dict[str, float], instance: Instance1D, starts: Tensor) -> list[_Run]:
        def factory(params: list[Tensor]) -> torch.optim.Optimizer:
            return create_optimizer(self.optimizer, params, **self.fixed, **hparams)

        batches = [starts] if self.coordinatewise else [s.reshape(1) for s in starts]
        return [_Run(instance, batch, factory) for batch in batches]


def best_on_grid(
    method: Method,
    family: Sequence[Instance1D],
    eps: float,
    max_iter: int,
    start_fractions: Sequence[float] = (1.0,),
) -> tuple[int | None, dict[str, float] | None]:
    r""":math:`\min_{\rm grid} \max_{f, x_0}` of the iterations to reach :math:`|f'| < \epsilon`,
    over the family and the starts ``x_start * start_fractions``, and the minimizing
    hyperparameters (``(None, None)`` if no grid point succeeds within ``max_iter``).

    All grid points advance in lockstep and the first whose runs have all reached
    :math:`|f'| < \epsilon` wins (ties: the earlier grid point), so the search costs
    (grid size) × (best count) steps; overflowing runs drop out.
    """
    fractions = torch.tensor(start_fractions, dtype=torch.float64)
    pending = {
        i: [run for f in family for run in method.runs(hparams, f, f.x_start * fractions)]
        for i, hparams in enumerate(method.grid)
    }
    for t in range(max_iter + 1):
        for i in list(pending):
            states = [run.advance(eps) for run in pending[i]]
            if None in states:
                del pending[i]
            elif all(states):
                return t, method.grid[i]
            else:
                pending[i] = [run for run, done in zip(pending[i], states, strict=True) if not done]
        if not pending:
            break
    return None, None


def default_methods(lrs: Iterable[float], gammas: Iterable[float]) -> tuple[Method, ...]:
    """GD, clipped GD and the sign family on a learning-rate grid; clipped GD searches every
    other learning rate × ``gammas`` (its 2-d grid is the costly one)."""
    lrs = tuple(sorted(lrs, reverse=True))  # ties go to the larger step
    lr_grid = tuple({"lr": lr} for lr in lrs)
    clip_grid = product(lrs[::2], sorted(gammas, reverse=True))
    return (
        Method("GD", "sgd", lr_grid),
        Method(
            "clipped GD",
            "sgd_clip_grad",
            tuple({"lr": lr, "gamma": gamma} for lr, gamma in clip_grid),
            coordinatewise=False,
        ),
        Method("SignSGD", "signsgd", lr_grid),
        Method("Signum", "signum", lr_grid, {"momentum": 0.9}),
        Method("Generalized SignSGD", "gsignsgd", lr_grid, {"betas": (0.9, 0.5), "eps": 0.0}),
    )


@dataclass
class GDLowerBoundResult:
    """One row per M: Theorem 2's bound, GD's critical step and each method's best count."""

    L0: float
    L1: float
    eps: float
    Delta: float
    start_fractions: tuple[float, ...]
    rows: list[dict[str, Any]]

    def counts(self, label: str) -> list[int | None]:
        return [row[label] for row in self.rows]


def run_gd_lower_bound(
    out_dir: str | Path | None = None,
    Ms: Sequence[float] = (1, 3, 10, 30, 100, 300, 1000),
    L0: float = 1.0,
    L1: float = 1.0,
    eps: float = 0.25,
    Delta: float = 1.0,
    lrs: Sequence[float] = tuple(np.logspace(-3, 1, 41)),
    gammas: Sequence[float] = tuple(np.logspace(-2, 1, 7)),
    start_fractions: Sequence[float] = (1.0, 0.85, 0.7),
    max_iter: int = 100_000,
) -> GDLowerBoundResult:
    """For each M: Theorem 2's bound and the best grid count of every method on the family.

    Members start at ``x_start * start_fractions``; runs give up after ``max_iter`` steps.
    With ``out_dir``, writes ``gd_lower_bound.{md,csv,png}``.
    """
    methods = default_methods(lrs, gammas)
    rows = []
    for M in Ms:
        family = hard_family(M, L0, L1, eps, Delta)
        row: dict[str, Any] = {
            "M": float(M),
            "M*L1/L0": M * L1 / L0,
            "theorem2_bound": gd_lower_bound(M, L0, L1, eps, Delta),
            "gd_critical_step": gd_critical_step(M, L0, L1),
        }
        for method in methods:
            count, hparams = best_on_grid(method, family, eps, max_iter, start_fractions)
            row[method.label] = count
            row[f"{method.label} best"] = _format_hparams(hparams)
        row["GD / bound"] = np.nan if row["GD"] is None else row["GD"] / row["theorem2_bound"]
        rows.append(row)
    result = GDLowerBoundResult(L0, L1, eps, Delta, tuple(start_fractions), rows)
    if out_dir is not None:
        _write(result, methods, Path(out_dir))
    return result


def _format_hparams(hparams: dict[str, float] | None) -> str:
    if hparams is None:
        return "none converged"
    return " ".join(f"{k}={v:.3g}" for k, v in hparams.items())


def _write(result: GDLowerBoundResult, methods: Sequence[Method], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_table(
        result.rows,
        out / "gd_lower_bound",
        title="Theorem 2: iterations to |f'| < eps, best hyperparameters on a grid",
        notes=[
            f"L0={result.L0}, L1={result.L1}, eps={result.eps}, Delta={result.Delta} "
            "(f(x0) - f* of the Huber member).",
            "Each count is min over the grid of max over the family (exponential well, "
            f"Huber slope, each from x0 times {result.start_fractions}); GD / bound >= 1 is "
            "what Theorem 2 predicts.",
            "GD diverges on the well for steps above gd_critical_step.",
        ],
    )
    Figure = require("matplotlib.figure", feature="the theory plots").Figure
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    Ms = [row["M"] for row in result.rows]
    bounds = [row["theorem2_bound"] for row in result.rows]
    ax.loglog(Ms, bounds, "k--", label="Theorem 2 bound (GD)")
    for method, style in zip(methods, ("o-", "s-", "^-", "v--", "D-"), strict=True):
        counts = result.counts(method.label)
        ax.loglog(Ms, [np.nan if c is None else c for c in counts], style, label=method.label)
    ax.set_xlabel("M (gradient bound on the initial sub-level set)")
    ax.set_ylabel(r"iterations to $|f'| < \epsilon$ (best on grid)")
    ax.set_title(
        rf"GD vs sign methods, $L_0$={result.L0}, $L_1$={result.L1}, $\epsilon$={result.eps}"
    )
    ax.legend(fontsize=8)
    fig.savefig(out / "gd_lower_bound.png", dpi=120)
