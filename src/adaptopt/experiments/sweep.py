"""Grid search on the validation split (SPEC.md §4) and the machinery to run many runs.

A sweep is a small TOML file::

    task = "ptb-awdlstm"
    seeds = [0]                      # or a count: seeds = 2  →  [0, 1]
    smoke = false                    # optional, as are [budget] and [task_options]
    [budget]
    epochs = 50
    [optimizers.sgd_clip_momentum]   # one table per optimizer: fixed hyperparameters ...
    momentum = 0.9
    [optimizers.sgd_clip_momentum.grid]   # ... and swept ones: lists or ranges
    lr = {log = [1, 100], num = 5}        # 5 log-spaced values (also: linear = [a, b])
    gamma = [1, 2.5, 10]

Every point of the grid × every seed becomes a run in ``<out>/runs/<run id>``, the id hashing
the resolved config and seed (:meth:`TrainConfig.run_id`). Runs already ``finished`` or
``diverged`` are skipped and interrupted ones resume from their checkpoint, so a killed sweep
restarts losing nothing and repeating nothing.

The best setting is chosen by :func:`adaptopt.experiments.selection.rank_settings`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import multiprocessing
import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from adaptopt.errors import ConfigError
from adaptopt.experiments.callbacks import Callback
from adaptopt.experiments.config import config_hash
from adaptopt.experiments.rundir import DONE, find_runs, status, write_json
from adaptopt.experiments.selection import Setting, grid_values, rank_settings
from adaptopt.experiments.trainer import TrainConfig, train

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_SPEC_KEYS = {"task", "seeds", "smoke", "budget", "task_options", "optimizers"}
_BUDGET_KEYS = {"epochs", "batch_size", "max_steps_per_epoch"}


def load_spec(path: str | Path) -> dict[str, Any]:
    """Read a sweep TOML file (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"sweep file not found: {path}")
    with path.open("rb") as f:
        try:
            return tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from e


def expand(spec: dict[str, Any]) -> list[TrainConfig]:
    """All runs of a sweep spec: optimizers × grid points × seeds, on the validation split."""
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise ConfigError(f"unknown sweep key(s) {unknown}; valid: {sorted(_SPEC_KEYS)}")
    if "task" not in spec or not spec.get("optimizers"):
        raise ConfigError("a sweep needs `task = ...` and at least one [optimizers.<name>] table")
    budget = spec.get("budget", {})
    if set(budget) - _BUDGET_KEYS:
        raise ConfigError(f"unknown [budget] key(s) {sorted(set(budget) - _BUDGET_KEYS)}")
    seeds = spec.get("seeds", [0])
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    configs = []
    for optimizer, table in spec["optimizers"].items():
        fixed = {k: v for k, v in table.items() if k != "grid"}
        grid = {
            k: grid_values(v, f"optimizers.{optimizer}.grid.{k}")
            for k, v in table.get("grid", {}).items()
        }
        for point in itertools.product(*grid.values()):
            hparams = fixed | dict(zip(grid, point, strict=True))
            configs += [
                TrainConfig(
                    task=spec["task"],
                    optimizer=optimizer,
                    hparams=hparams,
                    seed=seed,
                    smoke=spec.get("smoke", False),
                    validation=True,
                    task_options=spec.get("task_options", {}),
                    **budget,
                )
                for seed in seeds
            ]
    return configs


def resolve_all(configs: Iterable[TrainConfig]) -> list[TrainConfig]:
    """Resolve configs against their tasks, building each distinct task once."""
    built: dict[str, Any] = {}
    resolved = []
    for config in configs:
        key = config_hash(
            {f: getattr(config, f) for f in ("task", "smoke", "validation", "task_options")}
            | {"data_dir": config.data_dir}
        )
        if key not in built:
            built[key] = config.build_task()
        resolved.append(config.resolve(built[key]))
    return resolved


def run_all(
    configs: Sequence[TrainConfig],
    out_dir: str | Path,
    *,
    workers: int = 1,
    executor: str = "local",
    slurm: dict[str, Any] | None = None,
    progress: bool | None = None,
    callbacks: Sequence[Callback] = (),
) -> list[str]:
    """Run every config not done yet under ``<out_dir>/runs/<run id>``; returns the ids run.

    ``executor="local"`` runs ``workers`` processes (in this process when 1; with several
    GPUs, runs are spread over them round-robin, several per GPU when workers > GPUs);
    ``progress`` shows a bar per run (one worker) or over runs (default: stderr is a TTY);
    ``executor="slurm"`` submits one SLURM array job through submitit (:func:`submit_slurm`,
    ``slurm`` holds its parameters) and waits for it. ``callbacks`` (picklable, e.g.
    :class:`~adaptopt.experiments.callbacks.UpdateMagnitudeCallback`) go to every run.
    """
    runs_dir = Path(out_dir) / "runs"
    todo = [(c, runs_dir / c.run_id()) for c in resolve_all(configs)]
    todo = [(c, d) for c, d in todo if status(d) not in DONE]
    todo = list({d: (c, d) for c, d in todo}.values())  # duplicates in the grid run once
    if executor == "slurm":
        configs, run_dirs = [c for c, _ in todo], [d for _, d in todo]
        folder = Path(out_dir) / "slurm"
        for job in submit_slurm(configs, run_dirs, folder, callbacks=callbacks, **(slurm or {})):
            job.result()
    elif executor != "local":
        raise ValueError(f"executor must be 'local' or 'slurm', got {executor!r}")
    elif workers <= 1:
        for config, run_dir in todo:
            run_one(config, run_dir, progress, callbacks)
    else:
        gpus = torch.cuda.device_count()
        if gpus > 1:
            todo = [(_on_device(c, f"cuda:{i % gpus}"), d) for i, (c, d) in enumerate(todo)]
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(
            workers, multiprocessing.get_context("spawn"), torch.set_num_threads, (threads,)
        ) as pool:
            futures = [pool.submit(run_one, c, d, False, callbacks) for c, d in todo]
            show = sys.stderr.isatty() if progress is None else progress
            for future in tqdm(as_completed(futures), "runs", len(futures), disable=not show):
                future.result()
    return [d.name for _, d in todo]


def run_one(
    config: TrainConfig,
    run_dir: Path,
    progress: bool | None = False,
    callbacks: Sequence[Callback] = (),
) -> str:
    """Train (or resume) one run of a sweep; its status."""
    return train(config, run_dir, resume=True, progress=progress, callbacks=callbacks).status


def _on_device(config: TrainConfig, device: str) -> TrainConfig:
    return config if config.device != "auto" else dataclasses.replace(config, device=device)


def submit_slurm(
    configs: Sequence[TrainConfig],
    run_dirs: Sequence[Path],
    folder: Path,
    *,
    cluster: str = "slurm",
    callbacks: Sequence[Callback] = (),
    **parameters: Any,
) -> list[Any]:
    """Submit the runs as one SLURM array job (one task per run) with submitit.

    ``parameters`` go to ``submitit.AutoExecutor.update_parameters`` (e.g. ``timeout_min``,
    ``gpus_per_node``, ``slurm_partition``, ``slurm_array_parallelism``). ``cluster="debug"``
    runs the jobs in this process instead, for testing.
    """
    try:
        import submitit
    except ImportError as e:
        raise ImportError("SLURM sweeps need `pip install submitit`") from e
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(name="adaptopt-sweep", **parameters)
    run = functools.partial(run_one, progress=False, callbacks=tuple(callbacks))
    return executor.map_array(run if callbacks else run_one, configs, run_dirs)


def sweep(
    spec: dict[str, Any] | str | Path,
    out_dir: str | Path,
    *,
    workers: int = 1,
    executor: str = "local",
    slurm: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> dict[tuple[str, str], Setting]:
    """Run a sweep (spec dict or TOML path) into ``out_dir``; the best setting per optimizer.

    Also writes ``<out_dir>/best.json``.
    """
    spec = spec if isinstance(spec, dict) else load_spec(spec)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = expand(spec)
    run_all(configs, out_dir, workers=workers, executor=executor, slurm=slurm, progress=progress)
    best = {key: settings[0] for key, settings in rank_settings(find_runs([out_dir])).items()}
    summary = [
        {
            "task": task,
            "optimizer": optimizer,
            "hparams": s.config["hparams"],
            s.metric: s.value,
            "loss": s.loss,
            "diverged": s.diverged,
            "runs": [r.path.name for r in s.runs],
        }
        for (task, optimizer), s in best.items()
    ]
    write_json(out_dir / "best.json", summary)
    return best


def print_settings(best: dict[tuple[str, str], Setting], file: Any = None) -> None:
    for (task, optimizer), s in best.items():
        verdict = "diverged" if s.diverged else f"{s.metric} {s.value:.4g}, loss {s.loss:.4g}"
        print(f"{task} {optimizer}: {s.config['hparams']} → {verdict}", file=file)
