"""Fit (L0, L1) to smoothness measurements: the line y = L0 + L1·x above the points.

SPEC.md §2: (L0,L1)-smoothness bounds the local smoothness y (L̂_t, or a coordinate's
|Δ∂_jF| / |Δx_j|) by L0 + L1·x (x = ‖∇F(x_t)‖, or min |∂_jF|). Among the lines with L0, L1 ≥ 0,

- ``coverage = 1`` (default): the line above *all* points with the smallest mean height over the
  points, min Σ_i (L0 + L1·x_i) s.t. L0 + L1·x_i ≥ y_i — a linear program;
- ``coverage = q < 1``: linear quantile regression at level q, min Σ_i ρ_q(y_i − L0 − L1·x_i)
  with the pinball loss ρ_q(r) = max(q·r, (q − 1)·r). Its solution has at most (1 − q)·n
  points strictly above the line, so it covers at least a fraction q of them; as q → 1 it
  becomes the coverage-1 program above.

Both are solved by :func:`scipy.optimize.linprog` (HiGHS) on rescaled data. Without scipy (the
core install), coverage 1 is solved exactly from the upper convex hull of the points (the LP has
two unknowns, so its optimum is at a hull edge's slope, a root of the hull's height, or
L1 = 0); quantile fits need scipy (``pip install 'adaptopt[experiments]'``). The coverage-1
line touches the upper convex hull of the points at their mean x: points on one line give
that line (e^x: L0 = 0, L1 = 1); a largest y at or left of the mean x gives the flat line
L0 = max y, L1 = 0 (a quadratic's curvature); few points can make it pivot on one extreme.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Literal

import numpy as np

from adaptopt._optional import require
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


def fit_l0_l1(
    grad: np.ndarray,
    smoothness: np.ndarray,
    coverage: float = 1.0,
    *,
    method: Literal["auto", "linprog", "hull"] = "auto",
) -> SmoothnessFit:
    """Fit L0, L1 ≥ 0 to the points (x = ``grad``, y = ``smoothness``), non-finite ones dropped.

    ``method``: ``"linprog"`` (scipy's HiGHS, any coverage), ``"hull"`` (numpy only, coverage 1)
    or ``"auto"`` (linprog when scipy is installed, else hull).
    """
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    if method not in ("auto", "linprog", "hull"):
        raise ValueError(f"method must be 'auto', 'linprog' or 'hull', got {method!r}")
    if method == "hull" and coverage != 1:
        raise ValueError("method='hull' solves coverage=1 only; quantile fits need 'linprog'")
    if method == "auto":
        have_scipy = importlib.util.find_spec("scipy") is not None
        method = "linprog" if have_scipy or coverage != 1 else "hull"
    x, y = np.asarray(grad, dtype=np.float64), np.asarray(smoothness, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"grad and smoothness must be 1-d, equally long; got {x.shape}, {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    if n == 0:
        raise ValueError("no finite (grad, smoothness) points to fit")
    sx, sy = np.max(np.abs(x)) or 1.0, np.max(np.abs(y)) or 1.0
    xs, ys = x / sx, y / sy
    a, b = _cover_all_hull(xs, ys) if method == "hull" else _linprog(xs, ys, coverage)
    a, b = (v if v > 1e-12 else 0.0 for v in (a, b))  # drop solver noise around 0
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


def _linprog(xs: np.ndarray, ys: np.ndarray, coverage: float) -> tuple[float, float]:
    """(L0, L1) on scaled data by scipy's HiGHS linear program (module doc)."""
    feature = "the linear program of fit_l0_l1 (coverage < 1)"
    scipy_optimize = require("scipy.optimize", feature=feature)
    sparse = require("scipy.sparse", feature=feature)
    n = len(xs)
    # variables (a, b, u_1..u_n, v_1..v_n): a + b·x_i − u_i + v_i = y_i on scaled data;
    # u_i ≥ 0 is the line's excess over point i, v_i ≥ 0 its shortfall (0 when covering all)
    eye = sparse.identity(n, format="csr")
    a_eq = sparse.hstack([np.ones((n, 1)), xs[:, None], -eye, eye], format="csr")
    v_bounds: tuple[int, int | None]
    if coverage == 1:
        cost_u, cost_v, v_bounds = 1.0, 0.0, (0, 0)
    else:
        cost_u, cost_v, v_bounds = 1.0 - coverage, coverage, (0, None)
    cost = np.concatenate([[0.0, 0.0], np.full(n, cost_u), np.full(n, cost_v)])
    bounds = [(0, None)] * (2 + n) + [v_bounds] * n
    res = scipy_optimize.linprog(cost, A_eq=a_eq, b_eq=ys, bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"linear program failed: {res.message}")
    return float(res.x[0]), float(res.x[1])


def _cover_all_hull(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
    """min a + b·mean(x) s.t. a + b·x_i ≥ y_i, a, b ≥ 0, exactly, without an LP solver.

    For fixed b the best a is max(0, h(b)) with h(b) = max_i (y_i − b·x_i), which only depends
    on the upper convex hull of the points. The objective is convex and piecewise linear in b,
    so its minimum lies at b = 0, at a kink of h (the slope of a hull edge) or where h crosses
    0 (y_k / x_k of a hull vertex): evaluate it at each candidate and take the best.
    """
    order = np.lexsort((ys, xs))
    px, py = xs[order], ys[order]
    last = np.r_[px[1:] != px[:-1], True]  # per distinct x keep the largest y (sorted last)
    hull: list[tuple[float, float]] = []
    for point in zip(px[last].tolist(), py[last].tolist(), strict=True):
        while len(hull) >= 2 and _turn(hull[-2], hull[-1], point) >= 0:
            hull.pop()  # not a right turn: hull[-1] lies on or below the upper hull
        hull.append(point)
    hx, hy = np.array(hull).T
    with np.errstate(divide="ignore", invalid="ignore"):
        candidates = np.concatenate([[0.0], np.diff(hy) / np.diff(hx), hy / hx])
    candidates = candidates[np.isfinite(candidates) & (candidates >= 0)]
    height = np.maximum(0.0, np.max(hy[None, :] - candidates[:, None] * hx[None, :], axis=1))
    k = int(np.argmin(height + candidates * np.mean(xs)))
    return float(height[k]), float(candidates[k])


def _turn(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    """Cross product (a − o) × (b − o): > 0 for a left turn o → a → b."""
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
