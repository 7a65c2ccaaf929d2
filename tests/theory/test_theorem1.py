import csv
from fractions import Fraction

import pytest

from adaptopt.theory import min_horizon, run_theorem1, theorem1_settings

# Hand-computed case: L0 = (1, 3), L1 = (1/2, 2), sigma = (1, 1), Delta = 9, T = 10^4, beta2 = 1/4.
# ‖L0‖₁ = 4, ‖L1‖∞ = 2, ‖σ‖₁ = 2; alpha = sqrt(4*9)/(2*100) = 3/100, beta1 = 97/100,
# rho = 1 - (1/2)/(97/100) = 47/97, eta = 3*(3/100)/(2*100) = 9/20000.
CASE = dict(L0=[1.0, 3.0], L1=[0.5, 2.0], sigma=[1.0, 1.0], Delta=9.0, T=10_000, beta2=0.25)
RHO = Fraction(47, 97)


def test_hand_computed_values():
    s = theorem1_settings(**CASE)
    assert (s.d, s.L0_l1, s.L1_inf, s.sigma_l1) == (2, 4.0, 2.0, 2.0)
    assert s.alpha == pytest.approx(0.03, rel=1e-14)
    assert s.beta1 == pytest.approx(0.97, rel=1e-14)
    assert s.rho == pytest.approx(float(RHO), rel=1e-14)
    assert s.eta == pytest.approx(9 / 20000, rel=1e-14)
    # 100 d Δ ‖L1‖∞² / ((1-β2) ρ² ‖L0‖₁) = 100*2*9*4 / (3/4 * 4 * ρ²) = 2400 / ρ²
    assert s.T_threshold_smoothness == pytest.approx(float(2400 / RHO**2), rel=1e-12)
    # 1e4 d² Δ ‖σ‖₁² ‖L1‖∞⁴ / ((1-β2)² ρ⁴ ‖L0‖₁³) = 1e4*4*9*4*16 / (9/16 * 64 * ρ⁴) = 640000 / ρ⁴
    assert s.T_threshold_noise == pytest.approx(float(640000 / RHO**4), rel=1e-12)
    assert not s.T_satisfied  # 10^4 < 640000 / ρ⁴ ≈ 1.16e7
    # (4*9)^(1/4) sqrt(2) / (ρ sqrt(3/4) 10) and sqrt(36) / (ρ 100)
    assert s.noise_term == pytest.approx(12**0.5 / (float(RHO) * 0.75**0.5 * 10), rel=1e-12)
    assert s.smoothness_term == pytest.approx(6 / (float(RHO) * 100), rel=1e-12)
    assert s.bound == pytest.approx(s.noise_term + s.smoothness_term)


def test_scalars_broadcast_to_dim():
    vector = theorem1_settings([2.0] * 3, [0.5] * 3, [1.0] * 3, Delta=4.0, T=900, beta2=0.0)
    scalar = theorem1_settings(2.0, 0.5, 1.0, Delta=4.0, T=900, beta2=0.0, dim=3)
    assert vector == scalar
    assert scalar.L0_l1 == 6.0 and scalar.sigma_l1 == 3.0 and scalar.L1_inf == 0.5


def test_noiseless_signsgd_case():
    # sigma = 0: alpha = 1, beta1 = 0; beta2 = 0 is SignSGD with rho = 1.
    s = theorem1_settings(1.0, 1.0, 0.0, Delta=1.0, T=100, beta2=0.0)
    assert (s.alpha, s.beta1, s.rho, s.T_threshold_noise) == (1.0, 0.0, 1.0, 0.0)
    assert s.eta == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"sqrt\(beta2\)/beta1"):
        theorem1_settings(1.0, 1.0, 0.0, Delta=1.0, T=100, beta2=0.01)


def test_rejects_beta2_violating_the_condition():
    # alpha = sqrt(1)/(1*sqrt(10)) = 0.316..., beta1 = 0.683..., beta1² = 0.4675...
    with pytest.raises(ValueError, match=r"beta2=0.9 .* must be < beta1\*\*2 = 0.4675"):
        theorem1_settings(1.0, 1.0, 1.0, Delta=1.0, T=10, beta2=0.9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(L0=[1.0, 2.0], L1=[1.0, 1.0, 1.0]), "different lengths"),
        (dict(L0=[1.0, 2.0], dim=3), "L0 has 2 coordinates, expected 3"),
        (dict(L0=0.0), r"‖L0‖₁ > 0"),
        (dict(sigma=-1.0), "sigma must be finite and >= 0"),
        (dict(Delta=0.0), "Delta must be"),
        (dict(T=0), "T must be a positive integer"),
        (dict(beta2=1.0), r"beta2 must be in \[0, 1\)"),
    ],
)
def test_invalid_input(kwargs, message):
    args = dict(L0=1.0, L1=1.0, sigma=1.0, Delta=1.0, T=100, beta2=0.0) | kwargs
    with pytest.raises(ValueError, match=message):
        theorem1_settings(**args)


def _applies(**kwargs) -> bool:
    try:
        return theorem1_settings(**kwargs).T_satisfied
    except ValueError as error:
        assert "sqrt(beta2)/beta1" in str(error)
        return False


@pytest.mark.parametrize(
    "case",
    [CASE, dict(L0=1.0, L1=1.0, sigma=1.0, Delta=1.0, beta2=0.9)],  # 2nd: beta2 > beta1² early
)
def test_min_horizon_is_the_first_admissible_T(case):
    constants = {k: v for k, v in case.items() if k != "T"}
    T = min_horizon(**constants)
    assert _applies(**constants, T=T)
    assert not _applies(**constants, T=T - 1)
    assert not _applies(**constants, T=T // 2)


def test_min_horizon_without_noise_needs_beta2_zero():
    with pytest.raises(ValueError, match="without noise"):
        min_horizon(1.0, 1.0, 0.0, Delta=1.0, beta2=0.5, T_max=2**10)


def test_report_files(tmp_path):
    settings = run_theorem1(**CASE, out_dir=tmp_path)
    assert (tmp_path / "theorem1.png").stat().st_size > 0
    assert "| rho |" in (tmp_path / "theorem1.md").read_text()
    with (tmp_path / "theorem1.csv").open() as handle:
        values = {row["quantity"]: row["value"] for row in csv.DictReader(handle)}
    assert float(values["eta"]) == settings.eta
    assert int(values["T_min"]) == min_horizon(
        CASE["L0"], CASE["L1"], CASE["sigma"], CASE["Delta"], CASE["beta2"]
    )
