"""Choosing the best setting from run directories (torch-free; SPEC.md §4).

Best setting (:func:`rank_settings`): the runs of one optimizer are grouped by setting (all but
the seed); settings with a diverged seed come last; the rest are ordered by the mean final
value of the task metric on the evaluation split (validation for sweeps) in the task's
direction, ties broken by the lower mean final loss on that split.

Reports and studies read finished runs through this module, the run directories
(:mod:`~adaptopt.experiments.rundir`) and the config (:mod:`~adaptopt.experiments.config`)
only: none of them imports torch, the trainer, the tasks, the models or the optimizers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptopt.errors import ConfigError
from adaptopt.experiments.config import TrainConfig, config_hash
from adaptopt.experiments.rundir import DONE, Run


def grid_values(value: Any, where: str) -> list[Any]:
    """A list as it is; ``{log = [a, b], num = n}`` / ``{linear = [a, b], num = n}`` as ranges."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and len(value) == 2 and "num" in value:
        (kind,) = set(value) - {"num"}
        spaces: dict[str, Callable[..., np.ndarray]] = {"log": np.geomspace, "linear": np.linspace}
        space = spaces.get(kind)
        bounds = value[kind]
        if space is not None and isinstance(bounds, list) and len(bounds) == 2:
            return [float(f"{v:.10g}") for v in space(*bounds, int(value["num"]))]
    raise ConfigError(
        f"{where}: expected a list of values or {{log = [a, b], num = n}} or "
        f"{{linear = [a, b], num = n}}, got {value!r}"
    )


@dataclass
class Setting:
    """One hyperparameter setting of a sweep (its runs differ only in the seed)."""

    config: dict[str, Any]  # the resolved config of its first run, without the seed
    runs: list[Run]
    metric: str  # e.g. "valid_accuracy"
    higher_is_better: bool

    @property
    def diverged(self) -> bool:
        return any(r.status == "diverged" for r in self.runs) or not math.isfinite(self.value)

    @property
    def value(self) -> float:
        """Mean final value of the selection metric over seeds (NaN when missing)."""
        return _mean(r.final.get(self.metric) for r in self.runs)

    @property
    def loss(self) -> float:
        split = self.metric.split("_", 1)[0]
        return _mean(r.final.get(f"{split}_loss") for r in self.runs)

    def sort_key(self) -> tuple[bool, float, float]:
        if self.diverged:
            return (True, 0.0, 0.0)
        return (False, -self.value if self.higher_is_better else self.value, self.loss)


def _mean(values: Iterable[float | None]) -> float:
    floats = [math.nan if v is None else v for v in values]
    return float(np.mean(floats)) if floats else math.nan


def group_settings(runs: Iterable[Run]) -> list[Setting]:
    """Done runs grouped by setting (the resolved config without the seed)."""
    groups: dict[str, Setting] = {}
    for run in runs:
        if run.status not in DONE:
            continue
        config = TrainConfig.from_dict(run.config).identity(with_seed=False)
        metric = run.meta.get("metric", {})
        setting = groups.setdefault(
            config_hash(config),
            Setting(
                config,
                [],
                f"{config['eval_splits'][0]}_{metric.get('name', 'loss')}",
                metric.get("higher_is_better", False),
            ),
        )
        setting.runs.append(run)
    return list(groups.values())


def rank_settings(runs: Iterable[Run]) -> dict[tuple[str, str], list[Setting]]:
    """Settings per (task, optimizer), best first (rule in the module docstring)."""
    ranked: dict[tuple[str, str], list[Setting]] = {}
    for setting in group_settings(runs):
        ranked.setdefault((setting.config["task"], setting.config["optimizer"]), []).append(setting)
    return {k: sorted(v, key=Setting.sort_key) for k, v in sorted(ranked.items())}
