"""Executable theory (SPEC.md §1.4, §2.1, §3): Theorem 1's settings, Theorem 2's hard
instances (GD vs sign methods), scale-freeness on quadratics and SGDOL's noise adaptivity.

Each ``run_*`` returns a result object and, given an output folder, writes
``<name>.md``, ``<name>.csv`` and ``<name>.png`` there.
"""

from adaptopt.theory.hard_instances import (
    ExponentialWell,
    GDLowerBoundResult,
    HuberSlope,
    gd_critical_step,
    gd_lower_bound,
    hard_family,
    run_gd_lower_bound,
)
from adaptopt.theory.noise import NoisyLeastSquares, SGDOLNoiseResult, run_sgdol_noise
from adaptopt.theory.scale_free import DiagonalQuadratic, ScaleFreeResult, run_scale_free
from adaptopt.theory.theorem1 import Theorem1Settings, min_horizon, run_theorem1, theorem1_settings

__all__ = [
    "DiagonalQuadratic",
    "ExponentialWell",
    "GDLowerBoundResult",
    "HuberSlope",
    "NoisyLeastSquares",
    "SGDOLNoiseResult",
    "ScaleFreeResult",
    "Theorem1Settings",
    "gd_critical_step",
    "gd_lower_bound",
    "hard_family",
    "min_horizon",
    "run_gd_lower_bound",
    "run_scale_free",
    "run_sgdol_noise",
    "run_theorem1",
    "theorem1_settings",
]
