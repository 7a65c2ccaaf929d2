r"""Theorem 1 of Crawshaw et al. (NeurIPS 2022) as a calculator (SPEC.md §2.1).

Given the coordinate-wise constants :math:`\mathbf L_0, \mathbf L_1` (Assumption 2), the noise
bound :math:`\boldsymbol\sigma` (Assumption 3), :math:`\Delta \ge F(x_1) - F^*`, the horizon
:math:`T` and :math:`\beta_2`, Theorem 1 sets

.. math::
    \alpha = \min\Big(\frac{\sqrt{\|L_0\|_1 \Delta}}{\|\sigma\|_1 \sqrt T}, 1\Big),\quad
    \beta_1 = 1 - \alpha,\quad \rho = 1 - \frac{\sqrt{\beta_2}}{\beta_1},\quad
    \eta = \frac{\sqrt{\Delta}\,\alpha}{\sqrt{\|L_0\|_1}\sqrt T},

requires :math:`\sqrt{\beta_2}/\beta_1 < 1` and
:math:`T \ge \max\big(\tfrac{100 d \Delta \|L_1\|_\infty^2}{(1-\beta_2)\rho^2\|L_0\|_1},
\tfrac{10^4 d^2 \Delta \|\sigma\|_1^2 \|L_1\|_\infty^4}{(1-\beta_2)^2\rho^4\|L_0\|_1^3}\big)`,
and then guarantees, up to constants and :math:`\log(dT/\delta)` factors,

.. math::
    \min_{t\le T}\|\nabla F(x_t)\|_1 \lesssim
    \frac{\|L_0\|_1^{1/4}\Delta^{1/4}\|\sigma\|_1^{1/2}}{\rho\sqrt{1-\beta_2}\,T^{1/4}}
    + \frac{\sqrt{\|L_0\|_1\Delta}}{\rho\sqrt T}

plus terms that decay exponentially (or like :math:`1/T`). The second term is written as in
the talk, :math:`\sqrt{\|L_0\|_1\Delta}`, which has the units of a gradient like the first
term; the paper's main-text display prints :math:`\sqrt{\|L_0\|_1}\,\Delta`.

With :math:`\beta_2 = 0` the ratio :math:`\sqrt{\beta_2}/\beta_1` is taken as 0 (so
:math:`\rho = 1`) even when :math:`\beta_1 = 0`: that is SignSGD (with momentum when
:math:`\beta_1 > 0`), the case of the theorem's refined guarantee.

Scalars are broadcast to ``dim`` coordinates (default: the length of the vector arguments,
else 1), so a global (L0, L1) pair fitted by the smoothness probe can be passed directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from adaptopt._optional import require
from adaptopt.theory._report import write_table

ArrayLike = float | Sequence[float] | np.ndarray


@dataclass(frozen=True)
class Theorem1Settings:
    """Hyperparameters, horizon conditions and leading bound terms of Theorem 1."""

    d: int
    L0_l1: float  # ‖L0‖₁
    L1_inf: float  # ‖L1‖∞
    sigma_l1: float  # ‖σ‖₁
    Delta: float
    T: int
    beta2: float
    alpha: float
    beta1: float
    rho: float
    eta: float
    T_threshold_smoothness: float  # 100 d Δ ‖L1‖∞² / ((1-β2) ρ² ‖L0‖₁)
    T_threshold_noise: float  # 1e4 d² Δ ‖σ‖₁² ‖L1‖∞⁴ / ((1-β2)² ρ⁴ ‖L0‖₁³)
    noise_term: float
    smoothness_term: float

    @property
    def T_threshold(self) -> float:
        return max(self.T_threshold_smoothness, self.T_threshold_noise)

    @property
    def T_satisfied(self) -> bool:
        """Whether T is at least both lower thresholds of Theorem 1."""
        return self.T_threshold <= self.T

    @property
    def bound(self) -> float:
        """Sum of the two leading terms (constants and log factors dropped)."""
        return self.noise_term + self.smoothness_term

    def as_row(self) -> dict[str, float | int | bool]:
        return {
            **asdict(self),
            "T_threshold": self.T_threshold,
            "T_satisfied": self.T_satisfied,
            "bound": self.bound,
        }


def _as_vector(name: str, value: ArrayLike, dim: int) -> np.ndarray:
    vector = (
        np.broadcast_to(np.asarray(value, dtype=np.float64), (dim,))
        if np.ndim(value) == 0
        else np.asarray(value, dtype=np.float64)
    )
    if vector.shape != (dim,):
        raise ValueError(f"{name} has {vector.size} coordinates, expected {dim} (or a scalar)")
    if not np.all(np.isfinite(vector)) or np.any(vector < 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return vector


def _norms(
    L0: ArrayLike, L1: ArrayLike, sigma: ArrayLike, dim: int | None
) -> tuple[int, float, float, float]:
    """(d, ‖L0‖₁, ‖L1‖∞, ‖σ‖₁) after broadcasting and validation."""
    lengths = {np.size(v) for v in (L0, L1, sigma) if np.ndim(v) > 0}
    if len(lengths) > 1:
        raise ValueError(f"L0, L1 and sigma have different lengths: {sorted(lengths)}")
    d = dim if dim is not None else (lengths.pop() if lengths else 1)
    if not (isinstance(d, int) and d >= 1):
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    L0_l1 = float(_as_vector("L0", L0, d).sum())
    L1_inf = float(_as_vector("L1", L1, d).max())
    sigma_l1 = float(_as_vector("sigma", sigma, d).sum())
    if L0_l1 <= 0:
        raise ValueError("L0 must have a positive coordinate (‖L0‖₁ > 0)")
    return d, L0_l1, L1_inf, sigma_l1


def _momentum(L0_l1: float, sigma_l1: float, Delta: float, T: int) -> float:
    """α = min(√(‖L0‖₁Δ) / (‖σ‖₁√T), 1) (α = 1 without noise)."""
    if sigma_l1 == 0:
        return 1.0
    return min(math.sqrt(L0_l1 * Delta) / (sigma_l1 * math.sqrt(T)), 1.0)


def _sqrt_beta2_over_beta1(beta1: float, beta2: float) -> float:
    """√β2/β1, taken as 0 for β2 = 0 (SignSGD / Signum) and ∞ for β1 = 0 < β2."""
    if beta2 == 0:
        return 0.0
    return math.inf if beta1 == 0 else math.sqrt(beta2) / beta1


def theorem1_settings(
    L0: ArrayLike,
    L1: ArrayLike,
    sigma: ArrayLike,
    Delta: float,
    T: int,
    beta2: float,
    dim: int | None = None,
) -> Theorem1Settings:
    r"""Theorem 1's α, β1, ρ, η, the two thresholds on T and the leading bound terms.

    Raises ``ValueError`` for invalid constants and when :math:`\sqrt{\beta_2}/\beta_1 \ge 1`.
    """
    d, L0_l1, L1_inf, sigma_l1 = _norms(L0, L1, sigma, dim)
    if not (math.isfinite(Delta) and Delta > 0):
        raise ValueError(
            f"Delta must be a finite number > 0 (an upper bound on F(x1) - F*), got {Delta!r}"
        )
    if not (isinstance(T, (int, np.integer)) and T >= 1):
        raise ValueError(f"T must be a positive integer, got {T!r}")
    if not (0 <= beta2 < 1):
        raise ValueError(f"beta2 must be in [0, 1), got {beta2!r}")
    alpha = _momentum(L0_l1, sigma_l1, Delta, T)
    beta1 = 1.0 - alpha
    ratio = _sqrt_beta2_over_beta1(beta1, beta2)
    if ratio >= 1:
        raise ValueError(
            f"beta2={beta2} violates Theorem 1's sqrt(beta2)/beta1 < 1: beta1 = 1 - alpha = "
            f"{beta1:.6g} at T={T}, so beta2 must be < beta1**2 = {beta1**2:.6g} "
            "(or use a larger T, which increases beta1)"
        )
    rho = 1.0 - ratio
    eta = math.sqrt(Delta) * alpha / (math.sqrt(L0_l1) * math.sqrt(T))
    T_smooth = 100 * d * Delta * L1_inf**2 / ((1 - beta2) * rho**2 * L0_l1)
    T_noise = 1e4 * d**2 * Delta * sigma_l1**2 * L1_inf**4 / ((1 - beta2) ** 2 * rho**4 * L0_l1**3)
    noise_term = (
        (L0_l1 * Delta) ** 0.25 * math.sqrt(sigma_l1) / (rho * math.sqrt(1 - beta2) * T**0.25)
    )
    smoothness_term = math.sqrt(L0_l1 * Delta) / (rho * math.sqrt(T))
    return Theorem1Settings(
        d=d,
        L0_l1=L0_l1,
        L1_inf=L1_inf,
        sigma_l1=sigma_l1,
        Delta=Delta,
        T=int(T),
        beta2=beta2,
        alpha=alpha,
        beta1=beta1,
        rho=rho,
        eta=eta,
        T_threshold_smoothness=T_smooth,
        T_threshold_noise=T_noise,
        noise_term=noise_term,
        smoothness_term=smoothness_term,
    )


def _settings_if_valid(
    L0: ArrayLike,
    L1: ArrayLike,
    sigma: ArrayLike,
    Delta: float,
    T: int,
    beta2: float,
    dim: int | None,
) -> Theorem1Settings | None:
    r""":func:`theorem1_settings`, or ``None`` where :math:`\sqrt{\beta_2} \ge \beta_1` at T."""
    _, L0_l1, _, sigma_l1 = _norms(L0, L1, sigma, dim)
    beta1 = 1.0 - _momentum(L0_l1, sigma_l1, Delta, T)
    if _sqrt_beta2_over_beta1(beta1, beta2) >= 1:
        return None
    return theorem1_settings(L0, L1, sigma, Delta, T, beta2, dim)


def min_horizon(
    L0: ArrayLike,
    L1: ArrayLike,
    sigma: ArrayLike,
    Delta: float,
    beta2: float,
    dim: int | None = None,
    T_max: int = 10**18,
) -> int:
    """Smallest T for which Theorem 1 applies (√β2 < β1 and T above both thresholds).

    Both conditions are monotone in T (paper, Remark 4: α falls, so β1 and ρ grow and the
    thresholds fall), so the answer is found by doubling and bisection.
    """

    def ok(T: int) -> bool:
        settings = _settings_if_valid(L0, L1, sigma, Delta, T, beta2, dim)
        return settings is not None and settings.T_satisfied

    noiseless = _norms(L0, L1, sigma, dim)[3] == 0
    high = 1
    while not ok(high):
        if high >= T_max:
            hint = " (without noise beta1 = 0, so only beta2 = 0 works)" if noiseless else ""
            raise ValueError(f"no T <= {T_max} satisfies Theorem 1 with beta2={beta2}{hint}")
        high = min(2 * high, T_max)
    low = high // 2  # fails (or is 0)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if ok(mid) else (mid, high)
    return high


def run_theorem1(
    L0: ArrayLike,
    L1: ArrayLike,
    sigma: ArrayLike,
    Delta: float,
    T: int,
    beta2: float,
    dim: int | None = None,
    out_dir: str | Path | None = None,
) -> Theorem1Settings:
    """Settings for the given T; with ``out_dir``, also ``theorem1.{md,csv,png}``.

    The PNG plots the leading bound terms against T and marks where T meets the thresholds.
    """
    settings = theorem1_settings(L0, L1, sigma, Delta, T, beta2, dim)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        T_min = min_horizon(L0, L1, sigma, Delta, beta2, dim)
        row = {**settings.as_row(), "T_min": T_min}
        write_table(
            [{"quantity": key, "value": value} for key, value in row.items()],
            out / "theorem1",
            title="Theorem 1: hyperparameters, thresholds on T and leading bound terms",
            notes=[
                "T_threshold = max(T_threshold_smoothness, T_threshold_noise); T_min is the "
                "smallest T meeting both (and sqrt(beta2) < beta1).",
                "bound = noise_term + smoothness_term, constants and log(dT/delta) dropped.",
            ],
        )
        Ts = np.geomspace(max(1, min(T, T_min) / 100), max(T, T_min) * 100, 200)
        curve = [
            _settings_if_valid(L0, L1, sigma, Delta, int(t), beta2, dim)
            for t in np.unique(Ts.astype(np.int64))
        ]
        _plot([c for c in curve if c is not None], settings, T_min, out / "theorem1.png")
    return settings


def _plot(rows: list[Theorem1Settings], settings: Theorem1Settings, T_min: int, path: Path) -> None:
    Figure = require("matplotlib.figure", feature="the theory plots").Figure
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.loglog([s.T for s in rows], [s.noise_term for s in rows], label="noise term")
    ax.loglog([s.T for s in rows], [s.smoothness_term for s in rows], label="smoothness term")
    ax.loglog([s.T for s in rows], [s.bound for s in rows], "k", label="leading bound")
    ax.axvspan(
        T_min, rows[-1].T, color="tab:green", alpha=0.12, label=f"T ≥ thresholds ({T_min:.3g})"
    )
    ax.axvline(settings.T, color="tab:red", ls="--", label=f"T = {settings.T}")
    ax.set_xlabel("T")
    ax.set_ylabel(r"$\min_t \|\nabla F(x_t)\|_1$ (up to constants, logs)")
    ax.set_title(rf"Theorem 1, $\beta_2$ = {settings.beta2}")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
