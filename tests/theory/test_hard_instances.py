import math

import numpy as np
import pytest
import torch

from adaptopt.theory import (
    ExponentialWell,
    HuberSlope,
    gd_critical_step,
    gd_lower_bound,
    hard_family,
    run_gd_lower_bound,
)
from adaptopt.theory.hard_instances import Method, best_on_grid

CONSTANTS = [  # (M, L0, L1, eps, Delta)
    (1.0, 1.0, 1.0, 0.25, 1.0),
    (40.0, 1.0, 1.0, 0.25, 1.0),
    (1000.0, 2.0, 0.5, 0.1, 3.0),
]


def _grid(instance, n=50_001):
    reach = 2 * instance.x_start
    return torch.linspace(-reach, reach, n, dtype=torch.float64)


@pytest.mark.parametrize("constants", CONSTANTS)
def test_members_are_L0_L1_smooth_on_a_dense_grid(constants):
    for f in hard_family(*constants):
        x = _grid(f)
        # eq. (1) with the analytic f''
        assert float(f.smoothness_ratio(x).max()) <= 1 + 1e-12
        # eq. (1) with central differences of f', independent of the analytic f''
        delta = 1e-6
        fd = (f.grad(x + delta) - f.grad(x - delta)) / (2 * delta)
        slack = f.L0 + f.L1 * torch.maximum(f.grad(x + delta).abs(), f.grad(x - delta).abs())
        assert float((fd.abs() / slack).max()) <= 1 + 1e-6
        # Grönwall: |f'(y) - f'(x)| <= (e - 1)(L0 + L1|f'(x)|)|y - x| for |y - x| <= 1/L1
        generator = torch.Generator().manual_seed(0)
        xs = x[torch.randint(len(x), (20_000,), generator=generator)]
        ys = xs + (2 * torch.rand(len(xs), generator=generator, dtype=torch.float64) - 1) / f.L1
        lhs = (f.grad(ys) - f.grad(xs)).abs()
        rhs = (math.e - 1) * (f.L0 + f.L1 * f.grad(xs).abs()) * (ys - xs).abs()
        assert bool((lhs <= rhs * (1 + 1e-12) + 1e-15).all())


@pytest.mark.parametrize("constants", CONSTANTS)
def test_derivatives_match_autograd(constants):
    for f in hard_family(*constants):
        x = torch.linspace(-1.5 * f.x_start, 1.5 * f.x_start, 1001, dtype=torch.float64)
        knot = 1 / f.L1 if isinstance(f, ExponentialWell) else f.eps / f.L0
        x = x[((x.abs() - knot).abs() > 1e-6)].requires_grad_()
        (grad,) = torch.autograd.grad(f.value(x).sum(), x)
        (hess,) = torch.autograd.grad(f.grad(x).sum(), x)
        torch.testing.assert_close(grad, f.grad(x.detach()), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(hess, f.hess(x.detach()), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("constants", CONSTANTS)
def test_gradient_bound_on_the_initial_sublevel_set(constants):
    M, _, _, eps, Delta = constants
    well, huber = hard_family(*constants)
    for f, expected in ((well, M), (huber, eps)):
        x = _grid(f)
        inside = f.value(x) <= f.value(torch.tensor(f.x_start, dtype=torch.float64))
        sup = float(f.grad(x)[inside].abs().max())
        assert sup <= M * (1 + 1e-12)
        assert sup == pytest.approx(expected, rel=1e-3)
        assert float(f.value(x).min()) >= 0.0 and float(f.value(torch.zeros(1))) == 0.0
    start = {f: torch.tensor(f.x_start, dtype=torch.float64) for f in (well, huber)}
    assert float(huber.value(start[huber])) == pytest.approx(Delta, rel=1e-14)
    assert float(well.grad(start[well])) == pytest.approx(M, rel=1e-14)


def _gd(lr: float) -> Method:
    return Method("GD", "sgd", ({"lr": lr},))


@pytest.mark.parametrize("M", [10.0, 300.0])
def test_gd_diverges_on_the_well_exactly_above_the_critical_step(M):
    well = ExponentialWell(1.0, 1.0, M)
    h_c = gd_critical_step(M, 1.0, 1.0)
    assert h_c == pytest.approx(2 * well.x_start / M)
    assert best_on_grid(_gd(1.01 * h_c), [well], 0.25, 20_000) == (None, None)
    count, _ = best_on_grid(_gd(0.99 * h_c), [well], 0.25, 20_000)
    assert count is not None


def test_gd_count_on_the_huber_slope_matches_the_formula():
    f = HuberSlope(L0=1.0, L1=1.0, eps=0.25, Delta=1.0)
    for lr in (0.13, 0.7, 1.9):
        count, _ = best_on_grid(_gd(lr), [f], f.eps, 10_000)
        assert count == math.floor((f.x_start - f.eps / f.L0) / (lr * f.eps)) + 1


def test_theorem2_bound_value():
    # M L1 (Δ - 15 ε²/(16 L0)) / (2 ε² (ln(M L1/L0) + 1)) with M = e, L0 = L1 = 1, ε = 1/2, Δ = 1
    assert gd_lower_bound(math.e, 1.0, 1.0, 0.5, 1.0) == pytest.approx(
        math.e * (1 - 15 / 64) / (2 * 0.25 * 2)
    )


@pytest.mark.parametrize(
    ("constants", "message"),
    [
        ((0.5, 1.0, 1.0, 0.1, 1.0), r"M >= max\(L0/L1, eps\)"),
        ((2.0, 1.0, 1.0, 3.0, 10.0), r"M >= max\(L0/L1, eps\)"),
        ((2.0, 1.0, 1.0, 1.0, 0.9), "Delta must exceed 15 eps"),
        ((2.0, -1.0, 1.0, 0.1, 1.0), "L0 must be a finite number > 0"),
    ],
)
def test_invalid_constants(constants, message):
    with pytest.raises(ValueError, match=message):
        hard_family(*constants)


def test_gd_grows_with_M_and_sign_methods_do_not(tmp_path):
    Ms = (1.0, 10.0, 100.0)
    result = run_gd_lower_bound(
        tmp_path, Ms=Ms, lrs=np.logspace(-2, 1, 16), gammas=(0.1, 1.0, 10.0)
    )
    gd = result.counts("GD")
    bounds = [row["theorem2_bound"] for row in result.rows]
    assert all(count >= bound for count, bound in zip(gd, bounds, strict=True))
    assert gd[0] < gd[1] < gd[2] and gd[2] >= 5 * gd[0]
    for label in ("clipped GD", "SignSGD", "Signum", "Generalized SignSGD"):
        counts = result.counts(label)
        assert None not in counts
        assert max(counts) <= 2 * min(counts), label
        assert gd[2] >= 5 * counts[2], label
    for suffix in ("md", "csv", "png"):
        assert (tmp_path / f"gd_lower_bound.{suffix}").stat().st_size > 0
