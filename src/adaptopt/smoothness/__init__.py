"""(L0,L1)-smoothness probes, fits and plots (SPEC.md §2; paper §5.2, Figures 1 and 3).

The trainer runs a probe through ``adaptopt.experiments.callbacks.SmoothnessCallback``.
"""

from adaptopt.smoothness.fit import SmoothnessFit, fit_l0_l1, fit_records
from adaptopt.smoothness.plot import plot_records
from adaptopt.smoothness.presets import PRESET_NAMES, PRESETS, ProbePreset
from adaptopt.smoothness.probe import SmoothnessProbe
from adaptopt.smoothness.records import GLOBAL, SmoothnessRecords, read_records

__all__ = [
    "GLOBAL",
    "PRESETS",
    "PRESET_NAMES",
    "ProbePreset",
    "SmoothnessFit",
    "SmoothnessProbe",
    "SmoothnessRecords",
    "fit_l0_l1",
    "fit_records",
    "plot_records",
    "read_records",
]
