"""Probe + fit against functions with known smoothness (SPEC.md §2, issue "known answers")."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from adaptopt.smoothness import (
    GLOBAL,
    SmoothnessFit,
    SmoothnessProbe,
    SmoothnessRecords,
    fit_records,
)


@pytest.fixture(autouse=True)
def float64():
    """Exactness is asserted below: compute in float64."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


class Params(nn.Module):
    """A bag of named parameters; the loss is a function of them only."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        super().__init__()
        for name, t in tensors.items():
            self.register_parameter(name, nn.Parameter(t.clone()))


def walk(probe: SmoothnessProbe, model: nn.Module, points: list[dict[str, torch.Tensor]]) -> None:
    """Move the model through x_0, x_1, ... in place of an optimizer, probing each step."""

    def load(point: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(point[name])

    for t in range(len(points) - 1):
        load(points[t])
        probe.before_step(model, t)
        load(points[t + 1])
        probe.after_step(model)


def constants(fit: SmoothnessFit) -> tuple[float, float]:
    return fit.L0, fit.L1


def quadratic(seed: int = 0, n: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """H = Q diag(λ) Qᵀ with known eigenpairs."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
    lam = torch.linspace(0.5, 7.0, n)
    return q @ torch.diag(lam) @ q.T, lam, q


def quad_loss(h: torch.Tensor):
    return lambda model, batch: 0.5 * model.x @ h @ model.x


def test_quadratic_local_smoothness_is_rayleigh_quotient_of_update():
    h, lam, _ = quadratic()
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(6, generator=g) * 3 for _ in range(10)]
    ds = [torch.randn(6, generator=g) * 10.0 ** -(k % 5) for k in range(10)]  # steps 1 .. 1e-4
    probe = SmoothnessProbe(quad_loss(h), [None], every=1, coords_per_layer=0, layers=())
    model = Params(x=torch.zeros(6))
    for t, (x, d) in enumerate(zip(xs, ds, strict=True)):
        walk(probe, model, [{"x": x}, {"x": x + d}])
        row = probe.rows[-1]
        assert row["step"] == 0 and row["layer"] == GLOBAL  # a fresh step-0 pair per walk
        assert row["grad"] == pytest.approx(torch.linalg.norm(h @ x).item(), rel=1e-13)
        expected = (torch.linalg.norm(h @ d) / torch.linalg.norm(d)).item()
        assert row["smoothness"] == pytest.approx(expected, rel=1e-9), t
        assert row["smoothness"] <= lam.max().item() * (1 + 1e-9)
        assert row["update"] == pytest.approx(torch.linalg.norm(d).item(), rel=1e-13)
    fit = fit_records(SmoothnessRecords.from_rows(probe.rows))[GLOBAL]
    ys = [r["smoothness"] for r in probe.rows]
    mean_x = sum(r["grad"] for r in probe.rows) / len(ys)
    # the flat line at the largest observed curvature covers everything, so the optimal line
    # is no higher than it on average and never claims more curvature at x = 0
    assert fit.covered == 1.0
    l0, _ = constants(fit)
    assert l0 <= max(ys) * (1 + 1e-9)
    assert fit(mean_x) <= max(ys) * (1 + 1e-9)


def test_quadratic_top_eigenvector_gives_lambda_max():
    h, lam, q = quadratic()
    v = q[:, -1]  # eigenvector of λmax = 7
    g = torch.Generator().manual_seed(2)
    points = [{"x": torch.randn(6, generator=g)}]
    for k in range(15):
        points.append({"x": points[-1]["x"] + (-1) ** k * 0.3 * (k + 1) * v})
    probe = SmoothnessProbe(quad_loss(h), [None], every=1, coords_per_layer=0, layers=())
    walk(probe, Params(x=torch.zeros(6)), points)
    fit = fit_records(SmoothnessRecords.from_rows(probe.rows))[GLOBAL]
    assert fit.n == 15
    assert constants(fit) == pytest.approx((lam.max().item(), 0.0), rel=1e-6, abs=1e-9)


def test_exponential_has_l0_zero_l1_one():
    # f(w) = e^w: |f''| = |f'|, so L̂_t ≈ |f'(w_t)| for small steps (L0 = 0, L1 = 1)
    h = 1e-6
    points = []
    for w in torch.linspace(-4, 3, 30):
        points += [{"w": w.reshape(1)}, {"w": (w + h).reshape(1)}]
    probe = SmoothnessProbe(lambda m, b: m.w.exp().sum(), [None], every=1, coords_per_layer=1)
    model = Params(w=torch.zeros(1))
    for t in range(0, len(points), 2):
        walk(probe, model, points[t : t + 2])
    fits = fit_records(SmoothnessRecords.from_rows(probe.rows))
    coord = fit_records(SmoothnessRecords.from_rows(probe.rows), "coord")["w"]
    for fit in (fits[GLOBAL], fits["w"], coord):
        assert fit.n == 30
        assert constants(fit) == pytest.approx((0.0, 1.0), rel=1e-5, abs=1e-5)


def test_separable_blocks_recover_their_own_constants():
    # F(a, b, c) = 3/2‖a‖² + e^{2b} + 1/8‖c‖²: blocks (L0, L1) = (3, 0), (0, 2), (1/4, 0)
    def loss(m, batch):
        return 1.5 * m.a.square().sum() + (2 * m.b).exp().sum() + 0.125 * m.c.square().sum()

    g = torch.Generator().manual_seed(3)
    model = Params(a=torch.zeros(3), b=torch.zeros(1), c=torch.zeros(2, 2))
    probe = SmoothnessProbe(loss, [None], every=1, coords_per_layer=2)
    for t in range(25):
        start = {"a": torch.randn(3, generator=g), "c": torch.randn(2, 2, generator=g)}
        start["b"] = torch.full((1,), -2.0 + 0.3 * t)  # e^{2b} sweeps [e^-4, e^10.4]
        end = {
            "a": start["a"] + torch.randn(3, generator=g),
            "b": start["b"] + 1e-7,  # small step: the finite difference of e^{2b} ≈ its f''
            "c": start["c"] + torch.randn(2, 2, generator=g),
        }
        walk(probe, model, [start, end])
    records = SmoothnessRecords.from_rows(probe.rows)
    norm, coord = fit_records(records), fit_records(records, "coord")
    assert constants(norm["a"]) == pytest.approx((3.0, 0.0), rel=1e-9, abs=1e-9)
    assert constants(norm["c"]) == pytest.approx((0.25, 0.0), rel=1e-9, abs=1e-9)
    assert constants(norm["b"]) == pytest.approx((0.0, 2.0), rel=1e-5, abs=1e-4)
    # the coordinate-wise view sees the same constants (the Hessian is diagonal)
    assert constants(coord["a"]) == pytest.approx((3.0, 0.0), rel=1e-9, abs=1e-9)
    assert constants(coord["c"]) == pytest.approx((0.25, 0.0), rel=1e-9, abs=1e-9)
    assert constants(coord["b"]) == pytest.approx((0.0, 2.0), rel=1e-5, abs=1e-4)
    sampled = {r["index"] for r in probe.rows if r["layer"] == "a" and r["quantity"] == "coord"}
    assert len(sampled) == 2  # the same two coordinates at every step
    assert math.isfinite(norm[GLOBAL].L0)
