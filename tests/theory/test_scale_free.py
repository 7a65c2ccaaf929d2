import pytest
import torch

from adaptopt.theory import DiagonalQuadratic, run_scale_free
from adaptopt.theory.scale_free import QuadraticMethod, default_methods

SCALE_FREE = {"GD + diagonal preconditioning", "Adam", "AdaGrad", "Lion", "Generalized SignSGD"}


def test_twin_gradients_are_rescaled_and_share_the_minimizer():
    f = DiagonalQuadratic(torch.tensor([1.0, 4.0, 9.0]), torch.tensor([1.0, -2.0, 0.5]))
    lam = torch.tensor([0.3, 2.0, 1e-3], dtype=torch.float64)
    twin = f.rescaled(lam)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(twin.grad(x), lam * f.grad(x), rtol=1e-15, atol=0)
    assert float(twin.grad(f.x_star).abs().max()) == 0.0


@pytest.mark.parametrize(
    ("h", "lam"),
    [((1.0, 20.0), None), ((1.0, 50.0, 0.2), (3.0, 1e-2, 40.0))],
)
def test_scale_free_methods_have_identical_iterates_and_gd_does_not(h, lam):
    d = len(h)
    result = run_scale_free(
        h=h, lam=lam, x_star=(1.0,) * d, x0=tuple(-3.0 + j for j in range(d)), steps=40
    )
    rows = {row["method"]: row for row in result.rows}
    assert set(rows) == SCALE_FREE | {"GD"}
    for label in SCALE_FREE:
        on_f, on_twin = result.paths[label]
        torch.testing.assert_close(on_f, on_twin, rtol=1e-12, atol=1e-12)
        assert rows[label]["identical"]
        assert float((on_f[-1] - on_f[0]).abs().max()) > 0.5  # the methods do move
    assert not rows["GD"]["identical"]
    assert result.max_deviation("GD") > 0.1


def test_epsilon_breaks_scale_freeness():
    # Adam's eps sets a gradient scale: on a twin with tiny gradients it no longer matches.
    adam = QuadraticMethod("Adam eps", "adam", {"lr": 0.1, "eps": 1e-3})
    result = run_scale_free(lam=(1e-4, 1e-4), steps=20, methods=[adam])
    assert not result.rows[0]["identical"]


def test_report_files_and_2d_requirement(tmp_path):
    run_scale_free(tmp_path, steps=5, methods=default_methods()[:2])
    for suffix in ("md", "csv", "png"):
        assert (tmp_path / f"scale_free.{suffix}").stat().st_size > 0
    with pytest.raises(ValueError, match="needs a 2-d problem"):
        run_scale_free(tmp_path, h=(1.0, 2.0, 3.0), x_star=(0.0,) * 3, x0=(1.0,) * 3)
    with pytest.raises(ValueError, match="must be positive"):
        DiagonalQuadratic(torch.tensor([1.0, -1.0]), torch.zeros(2))
