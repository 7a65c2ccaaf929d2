"""(L0, L1) fits against an independent brute-force reference and known invariances."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from adaptopt.smoothness import SmoothnessFit, fit_l0_l1


def constants(fit: SmoothnessFit) -> tuple[float, float]:
    return fit.L0, fit.L1


def pinball(y: np.ndarray, line: np.ndarray, q: float) -> float:
    r = y - line
    return float(np.sum(np.maximum(q * r, (q - 1) * r)))


def brute_force(x: np.ndarray, y: np.ndarray, q: float) -> float:
    """Optimal objective by enumeration: a linear program's optimum is attained at a vertex, i.e.
    a line through two points, through one point with L0 = 0 or L1 = 0, or L0 = L1 = 0."""
    candidates = (
        [(0.0, 0.0)]
        + [(yi, 0.0) for yi in y]
        + [(0.0, yi / xi) for xi, yi in zip(x, y, strict=True)]
    )
    for i, j in itertools.combinations(range(len(x)), 2):
        if x[i] != x[j]:
            l1 = (y[j] - y[i]) / (x[j] - x[i])
            candidates.append((y[i] - l1 * x[i], l1))
    best = np.inf
    for l0, l1 in candidates:
        line = l0 + l1 * x
        if l0 < -1e-12 or l1 < -1e-12:
            continue
        if q == 1:
            if np.all(y <= line + 1e-12):
                best = min(best, float(np.sum(line)))
        else:
            best = min(best, pinball(y, line, q))
    return best


@pytest.fixture
def points() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.lognormal(0, 1, 40)
    return x, (0.5 + 2 * x) * rng.uniform(0.3, 1.0, 40)


@pytest.mark.parametrize("q", [1.0, 0.95, 0.8, 0.5])
def test_matches_brute_force_optimum(points, q):
    x, y = points
    fit = fit_l0_l1(x, y, coverage=q)
    line = fit(x)
    objective = float(np.sum(line)) if q == 1 else pinball(y, line, q)
    assert objective == pytest.approx(brute_force(x, y, q), rel=1e-9)
    assert fit.covered >= q
    assert fit.covered == np.mean(y <= line * (1 + 1e-9))
    assert fit.n == 40 and fit.coverage == q


def test_known_lines():
    x = np.geomspace(1e-3, 1e3, 50)
    assert constants(fit_l0_l1(x, 2 + 3 * x)) == pytest.approx((2, 3), rel=1e-9)
    assert constants(fit_l0_l1(x, x)) == pytest.approx((0, 1), abs=1e-12, rel=1e-9)
    # flat data whose largest value sits at a small x: L1 = 0, L0 = max y
    y = np.full(50, 1.0)
    y[3] = 5.0
    assert constants(fit_l0_l1(x, y)) == pytest.approx((5, 0), abs=1e-12, rel=1e-12)


def test_scale_invariance(points):
    x, y = points
    base = fit_l0_l1(x, y)
    scaled = fit_l0_l1(1e4 * x, 1e-3 * y)
    assert constants(scaled) == pytest.approx((1e-3 * base.L0, 1e-7 * base.L1), rel=1e-8)


def test_drops_non_finite_points_and_rejects_bad_input():
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    y = np.array([1.0, 2.0, 3.0, np.inf, 5.0])
    assert fit_l0_l1(x, y).n == 3
    with pytest.raises(ValueError, match="no finite"):
        fit_l0_l1(np.array([np.nan]), np.array([1.0]))
    with pytest.raises(ValueError, match="coverage"):
        fit_l0_l1(x, y, coverage=0)
    with pytest.raises(ValueError, match="equally long"):
        fit_l0_l1(x, y[:2])


@pytest.mark.parametrize("seed", range(5))
def test_hull_solver_matches_brute_force_and_linprog(seed):
    """The scipy-free solver (core install) reaches the LP optimum of coverage 1."""
    rng = np.random.default_rng(seed)
    x = rng.lognormal(0, 1.5, 30)
    y = (rng.uniform(0, 2) + rng.uniform(0, 3) * x) * rng.uniform(0.2, 1.0, 30)
    hull = fit_l0_l1(x, y, method="hull")
    assert float(np.sum(hull(x))) == pytest.approx(brute_force(x, y, 1.0), rel=1e-9)
    assert hull.covered == 1.0
    assert constants(hull) == pytest.approx(constants(fit_l0_l1(x, y, method="linprog")), rel=1e-7)


def test_hull_solver_known_lines_and_errors():
    x = np.geomspace(1e-3, 1e3, 50)
    assert constants(fit_l0_l1(x, 2 + 3 * x, method="hull")) == pytest.approx((2, 3), rel=1e-9)
    assert constants(fit_l0_l1(x, x, method="hull")) == pytest.approx((0, 1), abs=1e-12, rel=1e-9)
    y = np.full(50, 1.0)
    y[3] = 5.0
    assert constants(fit_l0_l1(x, y, method="hull")) == pytest.approx((5, 0), abs=1e-12)
    # ties in x, a single distinct x, and a line that would need L0 < 0 (clamped to 0)
    assert constants(fit_l0_l1(np.array([1.0, 1.0]), np.array([2.0, 3.0]), method="hull")) == (
        pytest.approx(3.0),
        pytest.approx(0.0),
    )
    steep = fit_l0_l1(np.array([1.0, 2.0]), np.array([0.0, 4.0]), method="hull")
    assert constants(steep) == pytest.approx((0.0, 2.0), abs=1e-12)
    with pytest.raises(ValueError, match="coverage=1 only"):
        fit_l0_l1(x, x, coverage=0.9, method="hull")
    with pytest.raises(ValueError, match="method must be"):
        fit_l0_l1(x, x, method="simplex")
