"""Retrain a setting with N seeds on all training data and evaluate on test (SPEC.md §4).

The setting is the best one of a sweep (:func:`best_from_sweep`: its hyperparameters, budget
and task options, selected by :func:`adaptopt.experiments.selection.rank_settings`), or given
explicitly (task defaults = the authors' tuned hyperparameters, overridden by ``hparams``).
Runs land in ``<out>/runs/<run id>`` like a sweep's, so an interrupted study resumes too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adaptopt.experiments.config import TrainConfig
from adaptopt.experiments.rundir import find_runs
from adaptopt.experiments.selection import rank_settings


def best_from_sweep(sweep_dir: str | Path, optimizers: Sequence[str] = ()) -> list[TrainConfig]:
    """The best setting of each optimizer in a sweep directory (only ``optimizers`` if given)."""
    ranked = rank_settings(find_runs([sweep_dir]))
    best = {optimizer: settings[0] for (_, optimizer), settings in ranked.items()}
    missing = sorted(set(optimizers) - set(best))
    if missing:
        raise ValueError(
            f"no finished runs of {', '.join(missing)} in {sweep_dir} "
            f"(it has: {', '.join(sorted(best)) or 'none'})"
        )
    return [
        TrainConfig.from_dict(s.config)
        for optimizer, s in best.items()
        if not optimizers or optimizer in optimizers
    ]


def seed_configs(settings: Sequence[TrainConfig], seeds: int | Sequence[int]) -> list[TrainConfig]:
    """Each setting with each seed, trained on all training data and evaluated on test."""
    seeds = range(seeds) if isinstance(seeds, int) else seeds
    return [
        dataclasses.replace(s, seed=seed, validation=False, eval_splits=("test",))
        for s in settings
        for seed in seeds
    ]


def run_seeds(
    settings: Sequence[TrainConfig],
    out_dir: str | Path,
    seeds: int | Sequence[int] = 5,
    **run_options: Any,
) -> list[str]:
    """Train ``settings`` × ``seeds`` into ``out_dir`` (``run_options`` as for ``run_all``)."""
    from adaptopt.experiments.sweep import run_all  # the training stack, only when training

    return run_all(seed_configs(settings, seeds), out_dir, **run_options)
