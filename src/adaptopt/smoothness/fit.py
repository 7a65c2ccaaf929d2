"""Fit (L0, L1) to smoothness measurements: the line y = L0 + L1·x above the points.

SPEC.md §2: (L0,L1)-smoothness bounds the local smoothness y (L̂_t, or a coordinate's
|Δ∂_jF| / |Δx_j|) by L0 + L1·x (x = ‖∇F(x_t)‖, or min |∂_jF|). Among the lines with L0, L1 ≥ 0,

- ``coverage = 1`` (default): the line above *all* points with the smallest mean height over the
  points, min Σ_i (L0 + L1·x_i) s.t. L0 + L1·x_i ≥ y_i — a linear program;
- ``coverage = q < 1``: linear quantile regression at level q, min Σ_i ρ_q(y_i − L0 − L1·x_i)
  with the pinball loss ρ_q(r) = max(q·r, (q − 1)·r). Its solution has at most (1 − q)·n
  points strictly above the line, so it covers at least a fraction q of them; as q → 1 it
  becomes the coverage-1 program above.

Both are solved by :func:`scipy.optimize.linprog` (HiGHS) on rescaled data. The coverage-1
line touches the upper convex hull of the points at their mean x: points on one line give
that line (e^x: L0 = 0, L1 = 1); a largest y at or left of the mean x gives the flat line
L0 = max y, L1 = 0 (a quadratic's curvature); few points can make it pivot on one extreme.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from adaptopt.smoothness.records import QUANTITIES, SmoothnessRecords

_RTOL = 1e-9  # a point within this relative distance of the line counts as covered


@dataclass(frozen=True)
class SmoothnessFit:
    """Fitted constants of y ≤ L0 + L1·x."""

    L0: float
    L1: float
    coverage: float  # requested fraction of points below the line
    covered: float  # achieved fraction
    n: int  # number of (finite) points used

    def __call__(self, x: np.ndarray | float) -> np.ndarray | float:
        return self.L0 + self.L1 * np.asarray(x)


def fit_l0_l1(grad: np.ndarray, smoothness: np.ndarray, coverage: float = 1.0) -> SmoothnessFit:
    """Fit L0, L1 ≥ 0 to the points (x = ``grad``, y = ``smoothness``), non-finite ones dropped."""
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    x, y = np.asarray(grad, dtype=np.float64), np.asarray(smoothness, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"grad and smoothness must be 1-d, equally long; got {x.shape}, {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    if n == 0:
        raise ValueError("no finite (grad, smoothness) points to fit")
    sx, sy = np.max(np.abs(x)) or 1.0, np.max(np.abs(y)) or 1.0
    # variables (a, b, u_1..u_n, v_1..v_n): a + b·x_i − u_i + v_i = y_i on scaled data;
    # u_i ≥ 0 is the line's excess over point i, v_i ≥ 0 its shortfall (0 when covering all)
    eye = sparse.identity(n, format="csr")
    a_eq = sparse.hstack([np.ones((n, 1)), (x / sx)[:, None], -eye, eye], format="csr")
    if coverage == 1:
        cost_u, cost_v, v_bounds = 1.0, 0.0, (0, 0)
    else:
        cost_u, cost_v, v_bounds = 1.0 - coverage, coverage, (0, None)
    cost = np.concatenate([[0.0, 0.0], np.full(n, cost_u), np.full(n, cost_v)])
    bounds = [(0, None)] * (2 + n) + [v_bounds] * n
    res = linprog(cost, A_eq=a_eq, b_eq=y / sy, bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"linear program failed: {res.message}")
    a, b = (v if v > 1e-12 else 0.0 for v in res.x[:2])  # drop solver noise around 0
    l0, l1 = a * sy, b * sy / sx
    if coverage == 1:  # lift the line by any excess beyond the solver's feasibility tolerance
        l0 += max(0.0, float(np.max(_excess(x, y, l0, l1))))
    covered = float(np.mean(_excess(x, y, l0, l1) <= 0))
    return SmoothnessFit(L0=float(l0), L1=float(l1), coverage=coverage, covered=covered, n=n)


def _excess(x: np.ndarray, y: np.ndarray, l0: float, l1: float) -> np.ndarray:
    """How far each point lies above the line, beyond a relative tolerance of ``_RTOL``."""
    line = l0 + l1 * x
    return y - line - _RTOL * np.maximum(np.abs(y), np.abs(line))


def fit_records(
    records: SmoothnessRecords, quantity: str = "norm", coverage: float = 1.0
) -> dict[str, SmoothnessFit]:
    """One fit per layer (``"__global__"`` included) of the rows of ``quantity``."""
    if quantity not in QUANTITIES:
        raise ValueError(f"quantity must be one of {QUANTITIES}, got {quantity!r}")
    rows = records.select(quantity=quantity)
    if not len(rows):
        raise ValueError(f"no {quantity!r} rows in the records")
    fits = {}
    for layer in rows.layers():
        sel = rows.select(layer=layer)
        fits[layer] = fit_l0_l1(sel.grad, sel.smoothness, coverage)
    return fits
