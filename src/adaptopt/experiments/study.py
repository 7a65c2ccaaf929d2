"""Studies: a paper claim as a file, run with one command at a named scale (SPEC.md §4).

A study is ``studies/<name>.toml``::

    title = "Table 1, PTB"                  # Markdown title and description of the report
    description = "..."
    tasks = ["ptb-awdlstm"]
    figures = ["table", "curves", "grid"]   # see FIGURES
    seeds = 5                               # test-split seeds (a count or a list)
    grid_seeds = 1                          # seeds per grid point (validation split)
    smoke = false                           # or a list of tasks; optional, as are the tables
    [budget]                                # epochs, batch_size, max_steps_per_epoch
    [budgets.ptb-awdlstm]                   # per task, over [budget]
    [task_options]                          # keyword arguments of the task constructors
    [run]                                   # run settings of TrainConfig: probe, log_every, ...
    [callbacks]                             # update_magnitudes = N: |Δx| per layer every N steps
    [optimizers.adam]                       # one table per *arm*: fixed hyperparameters ...
    optimizer = "adam"                      # registry name (default: the table's name)
    betas = [0.9, 0.999]
    [optimizers.adam.grid]                  # ... swept ones, as in a sweep file ...
    lr = [1e-3, 2e-3, 4e-3]
    [optimizers.adam.run]                   # ... and run settings of this arm only
    clip_grad_norm = 0.25                   # (an arm may also name its `tasks = [...]`)
    [scales.cpu]                            # a named scale overrides the keys above
    note = "why this size"                  # stated in the report
    seeds = 3
    [scales.cpu.budget]
    epochs = 2
    [scales.cpu.optimizers.adam.grid]
    lr = [1e-3, 2e-3]
    [scales.paper]

A scale's tables are merged key by key into the study's (a scale cannot add arms). Two arms may
share an optimizer (Adam with and without clipping) but must differ in a fixed hyperparameter
or a run setting.

``run`` (:func:`run_study`): 1. every arm with a grid is trained at every grid point × grid
seed on the validation split of every task; 2. the best setting per (task, arm) is chosen by the
rule of :mod:`adaptopt.experiments.sweep` (an arm without a grid keeps its one setting);
3. it is retrained with every seed on all training data and evaluated on the test split;
4. the report is written. Runs are identified by the hash of their config and seed, so finished
runs are skipped and an interrupted study resumes where it stopped.

Layout: run directories (checkpoints included) live in ``runs/studies/<name>/<scale>/runs/``
(git-ignored). The records of done runs (every file but the checkpoint) are copied to
``docs/results/<name>/<scale>/runs/`` next to the report, so the report can be rebuilt from the
repository alone, and ``run`` on another machine starts by copying them back: their runs are
done and are not repeated.

A run belongs to the arm whose specification (optimizer, fixed hyperparameters, run settings)
it matches with the most keys, so the report needs nothing but the run directories and the
study file.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import os
import re
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptopt.experiments.config import TrainConfig
from adaptopt.experiments.rundir import CHECKPOINT, CONFIG, DONE, META, Run, find_runs
from adaptopt.experiments.seeds import seed_configs
from adaptopt.experiments.selection import Setting, grid_values, group_settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    from adaptopt.experiments.callbacks import Callback

STUDY_KEYS = {
    "title",
    "description",
    "tasks",
    "figures",
    "seeds",
    "grid_seeds",
    "smoke",
    "budget",
    "budgets",
    "task_options",
    "run",
    "callbacks",
    "optimizers",
    "scales",
}
SCALE_KEYS = STUDY_KEYS - {"title", "description", "figures", "scales"} | {"note"}
BUDGET_KEYS = {"epochs", "batch_size", "max_steps_per_epoch"}
# TrainConfig fields a study may set in [run]: how runs are executed and recorded, and the
# trainer's run settings (clipping, probe preset, averaging).
RUN_KEYS = {
    "eval_every",
    "log_every",
    "checkpoint_every",
    "device",
    "data_dir",
    "probe",
    "probe_preset",
    "probe_batches",
    "clip_grad_norm",
    "iterate_averaging",
}
CALLBACK_KEYS = {"update_magnitudes"}
FIGURES = {
    "table": "final training loss and test metrics per task and arm, mean ± 95% CI",
    "curves": "training loss and test metric curves, mean over seeds with shaded 95% CI",
    "grid": "validation metric of every grid point, the chosen setting per arm",
    "smoothness": "L̂ vs ‖∇F‖ (Fig. 1) and the coordinate-wise version (Fig. 3), fitted (L0, L1)",
    "clipping": "gradient norm against the clipping threshold and how often clipping fires",
    "depth": "test metric and training loss against the ResNet depth per arm",
    "updates": "histogram of update magnitudes |Δx| and their median per layer",
}
SCALES_REQUIRED = ("cpu", "paper")
RESULTS_DIR = Path("docs") / "results"
WORK_DIR = Path("runs") / "studies"


class StudyError(ValueError):
    """A study file that cannot be used, with a message saying why."""


@dataclass(frozen=True)
class Arm:
    """One competitor of a study: an optimizer with fixed hyperparameters, run settings and a
    grid of swept hyperparameters."""

    label: str
    optimizer: str
    fixed: dict[str, Any]
    grid: dict[str, list[Any]]
    run: dict[str, Any]
    tasks: tuple[str, ...] = ()  # the tasks this arm runs on (empty: all of the study's)

    def on(self, task: str) -> bool:
        return not self.tasks or task in self.tasks

    def points(self) -> list[dict[str, Any]]:
        """Hyperparameters of every grid point (one point, the fixed ones, without a grid)."""
        return [
            self.fixed | dict(zip(self.grid, values, strict=True))
            for values in itertools.product(*self.grid.values())
        ]

    def spec(self) -> dict[str, Any]:
        """What identifies the arm's runs: optimizer, fixed hyperparameters, run settings."""
        return {
            "optimizer": self.optimizer,
            **{f"hparams.{k}": _normal(v) for k, v in self.fixed.items()},
            **{k: _normal(v) for k, v in self.run.items()},
        }


@dataclass
class Study:
    """A study file resolved at one scale."""

    name: str
    path: Path
    scale: str
    scales: list[str]
    title: str
    description: str
    note: str
    tasks: list[str]
    figures: list[str]
    seeds: list[int]
    grid_seeds: list[int]
    smoke: bool | list[str]  # all tasks smoke-sized, or those named
    budget: dict[str, int]
    budgets: dict[str, dict[str, int]]  # per task, over ``budget``
    task_options: dict[str, Any]
    run: dict[str, Any]
    callbacks: dict[str, Any]
    arms: list[Arm]
    work_dir: Path = field(default=Path())
    results_dir: Path = field(default=Path())

    # ---- planning ----------------------------------------------------------------------

    def _config(self, task: str, arm: Arm, hparams: dict[str, Any], seed: int) -> TrainConfig:
        try:
            return TrainConfig.from_dict(
                {
                    "task": task,
                    "optimizer": arm.optimizer,
                    "hparams": hparams,
                    "seed": seed,
                    "smoke": self.smoke_for(task),
                    "validation": True,
                    "task_options": self.task_options,
                    **self.budget_for(task),
                    **self.run,
                    **arm.run,
                }
            )
        except (TypeError, ValueError) as e:
            raise StudyError(f"{self.path}: arm {arm.label!r}: {e}") from e

    def grid_configs(self) -> list[TrainConfig]:
        """Phase 1: the grid of every arm that has one, on the validation split."""
        return [
            self._config(task, arm, hparams, seed)
            for task in self.tasks
            for arm in self.arms
            if arm.grid and arm.on(task)
            for hparams in arm.points()
            for seed in self.grid_seeds
        ]

    def chosen(self, runs: Iterable[Run]) -> dict[tuple[str, str], TrainConfig | None]:
        """Phase 2: the setting per (task, arm label) to retrain: the best of the arm's done
        validation runs, or the one setting of an arm without a grid; None while undecided."""
        by_arm = self.assign([r for r in runs if r.config.get("validation")])
        chosen: dict[tuple[str, str], TrainConfig | None] = {}
        for task in self.tasks:
            for arm in self.arms:
                if not arm.on(task):
                    continue
                if not arm.grid:
                    chosen[task, arm.label] = dataclasses.replace(
                        self._config(task, arm, arm.fixed, 0), validation=False
                    )
                    continue
                best = best_setting(by_arm.get((task, arm.label), []))
                chosen[task, arm.label] = (
                    None
                    if best is None
                    else TrainConfig.from_dict(best.config | self.run | arm.run)
                )
        return chosen

    def seed_configs(self, runs: Iterable[Run]) -> list[TrainConfig]:
        """Phase 3: every chosen setting with every seed, on all training data, test split."""
        chosen = [c for c in self.chosen(runs).values() if c is not None]
        return seed_configs(chosen, self.seeds)

    def assign(self, runs: Iterable[Run]) -> dict[tuple[str, str], list[Run]]:
        """Runs per (task, arm label) of this study at this scale: each run goes to the arm
        whose spec it matches with the most keys; runs of another budget, task options,
        grid or seed list (a study file edited since) are left out."""
        out: dict[tuple[str, str], list[Run]] = {}
        for run in runs:
            label = self.arm_of(run.config)
            if label is not None and self._current(run.config, self.arm(label)):
                out.setdefault((run.config["task"], label), []).append(run)
        return out

    def arm(self, label: str) -> Arm:
        return next(a for a in self.arms if a.label == label)

    def _current(self, config: dict[str, Any], arm: Arm) -> bool:
        """Whether a run config is one this study at this scale plans (or may plan)."""
        same = (
            config.get("task") in self.tasks
            and arm.on(config["task"])
            and config.get("smoke") == self.smoke_for(config["task"])
            and _normal(config.get("task_options")) == _normal(self.task_options)
            and all(config.get(k) == v for k, v in self.budget_for(config["task"]).items())
        )
        if not same:
            return False
        hparams = _normal(config.get("hparams", {}))
        if config.get("validation"):
            return config.get("seed") in self.grid_seeds and all(
                hparams.get(k) in _normal(values) for k, values in arm.grid.items()
            )
        return config.get("seed") in self.seeds

    def arm_of(self, config: dict[str, Any]) -> str | None:
        """The label of the arm a run config belongs to (None: no arm)."""
        flat = {
            "optimizer": config.get("optimizer"),
            **{f"hparams.{k}": _normal(v) for k, v in config.get("hparams", {}).items()},
            **{k: _normal(v) for k, v in config.items() if k in RUN_KEYS},
        }
        matches = []
        for arm in self.arms:
            spec = arm.spec()
            if all(flat.get(k) == v for k, v in spec.items()):
                matches.append((len(spec), arm.label))
        return max(matches)[1] if matches else None

    def budget_for(self, task: str) -> dict[str, int]:
        """The budget of ``task``: ``[budget]`` with ``[budgets.<task>]`` over it."""
        return self.budget | self.budgets.get(task, {})

    def smoke_for(self, task: str) -> bool:
        """Whether ``task`` runs in its smoke-sized version at this scale."""
        return task in self.smoke if isinstance(self.smoke, list) else self.smoke

    def callback_objects(self) -> list[Callback]:
        from adaptopt.experiments.callbacks import UpdateMagnitudeCallback  # torch: at run time

        every = self.callbacks.get("update_magnitudes", 0)
        return [UpdateMagnitudeCallback(every)] if every else []

    def describe(self) -> str:
        """One paragraph: scale, tasks, budget, seeds, arms and grid sizes."""
        budget = "; ".join(
            f"{task}: " + (", ".join(f"{k} {v}" for k, v in b.items()) or "the task's default")
            for task in self.tasks
            for b in [self.budget_for(task)]
        )
        grid = sum(len(a.points()) for a in self.arms if a.grid)
        return (
            f"Scale `{self.scale}`: budget {budget}"
            + (
                f" (smoke-sized: {', '.join(t for t in self.tasks if self.smoke_for(t))})"
                if any(map(self.smoke_for, self.tasks))
                else ""
            )
            + (f"; task options {self.task_options}" if self.task_options else "")
            + f"; {len(self.arms)} arms, {grid} grid points × {len(self.grid_seeds)} seed(s) on "
            f"the validation split, then {len(self.seeds)} seeds on the test split."
        )


def _normal(value: Any) -> Any:
    """JSON-normalised value (tuples → lists), as in a run's config.json."""
    return json.loads(json.dumps(value))


def best_setting(runs: Sequence[Run]) -> Setting | None:
    """The best setting among ``runs`` (done runs only) by the sweep's rule, or None."""
    settings = group_settings(runs)
    return min(settings, key=Setting.sort_key) if settings else None


# ---- loading ---------------------------------------------------------------------------


def studies_dir() -> Path:
    """Where study files are looked up: ``$ADAPTOPT_STUDIES``, else ``./studies`` if it
    exists, else the repository's ``studies/`` (source checkouts)."""
    if os.environ.get("ADAPTOPT_STUDIES"):
        return Path(os.environ["ADAPTOPT_STUDIES"])
    local = Path("studies")
    if local.is_dir():
        return local
    return Path(__file__).resolve().parents[3] / "studies"


def available(directory: str | Path | None = None) -> list[str]:
    """Names of the study files in ``directory`` (default :func:`studies_dir`)."""
    directory = Path(directory) if directory is not None else studies_dir()
    return sorted(p.stem for p in directory.glob("*.toml")) if directory.is_dir() else []


def find_study(name: str | Path, directory: str | Path | None = None) -> Path:
    """The file of study ``name`` (or ``name`` itself if it is a path to a TOML file)."""
    path = Path(name)
    if path.suffix == ".toml":
        if not path.exists():
            raise StudyError(f"study file not found: {path}")
        return path
    directory = Path(directory) if directory is not None else studies_dir()
    path = directory / f"{name}.toml"
    if not path.exists():
        names = available(directory)
        raise StudyError(
            f"unknown study {str(name)!r}; available in {directory}: "
            + (", ".join(names) if names else "none")
        )
    return path


def load_study(
    name: str | Path,
    scale: str = "cpu",
    *,
    directory: str | Path | None = None,
    work_dir: str | Path | None = None,
    results_dir: str | Path | None = None,
) -> Study:
    """Read and validate a study file at ``scale`` (errors: :class:`StudyError`).

    ``work_dir`` (run directories) defaults to ``<root>/runs/studies/<name>/<scale>`` and
    ``results_dir`` (report and records) to ``<root>/docs/results/<name>/<scale>``, with
    ``<root>`` the folder above the study file's folder.
    """
    path = find_study(name, directory)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"{path} is not valid TOML: {e}") from e
    study = parse_study(raw, path, scale)
    root = path.resolve().parent.parent
    study.work_dir = Path(work_dir) if work_dir else root / WORK_DIR / study.name / scale
    study.results_dir = (
        Path(results_dir) if results_dir else root / RESULTS_DIR / study.name / scale
    )
    return study


def parse_study(raw: dict[str, Any], path: Path, scale: str) -> Study:
    """Validate a parsed study file and resolve it at ``scale``."""
    where = str(path)

    def fail(message: str) -> StudyError:
        return StudyError(f"{where}: {message}")

    _check_keys(raw, STUDY_KEYS, "top level", fail)
    scales = raw.get("scales", {})
    if not isinstance(scales, dict) or not scales:
        raise fail("needs [scales.<name>] tables (at least: cpu, paper)")
    missing = [s for s in SCALES_REQUIRED if s not in scales]
    if missing:
        raise fail(f"missing scale(s) {missing}; every study has {list(SCALES_REQUIRED)}")
    if scale not in scales:
        raise fail(f"unknown scale {scale!r}; this study has: {', '.join(scales)}")
    for name, table in scales.items():
        if not isinstance(table, dict):
            raise fail(f"[scales.{name}] must be a table")
        _check_keys(table, SCALE_KEYS, f"[scales.{name}]", fail)
        for label in table.get("optimizers", {}):
            if label not in raw.get("optimizers", {}):
                raise fail(f"[scales.{name}.optimizers.{label}]: no such arm in [optimizers]")
    merged = _merge({k: v for k, v in raw.items() if k != "scales"}, scales[scale])

    tasks = merged.get("tasks")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise fail("`tasks` must be a non-empty list of task names")
    from adaptopt import tasks as registry

    unknown = [t for t in tasks if t not in registry.available()]
    if unknown:
        raise fail(f"unknown task(s) {unknown}; available: {', '.join(registry.available())}")
    figures = merged.get("figures", ["table", "curves", "grid"])
    bad = [f for f in figures if f not in FIGURES]
    if bad:
        raise fail(f"unknown figure(s) {bad}; valid: {sorted(FIGURES)}")
    budget = merged.get("budget", {})
    budgets = merged.get("budgets", {})
    _check_keys(budgets, set(tasks), "[budgets] (one table per task of the study)", fail)
    for where, table in [("[budget]", budget)] + [
        (f"[budgets.{t}]", b) for t, b in budgets.items()
    ]:
        _check_keys(table, BUDGET_KEYS, where, fail)
        for k, v in table.items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise fail(f"{where} {k} must be a positive integer, got {v!r}")
    run = merged.get("run", {})
    _check_keys(run, RUN_KEYS, "[run]", fail)
    callbacks = merged.get("callbacks", {})
    _check_keys(callbacks, CALLBACK_KEYS, "[callbacks]", fail)
    task_options = merged.get("task_options", {})
    if not isinstance(task_options, dict):
        raise fail("[task_options] must be a table")

    arms = [_arm(label, table, fail) for label, table in merged.get("optimizers", {}).items()]
    if not arms:
        raise fail("needs at least one [optimizers.<arm>] table")
    specs: dict[str, str] = {}
    for arm in arms:
        stray = sorted(set(arm.tasks) - set(tasks))
        if stray:
            raise fail(f"[optimizers.{arm.label}] tasks {stray} are not among the study's tasks")
        key = json.dumps(arm.spec(), sort_keys=True)
        if key in specs:
            raise fail(
                f"arms {specs[key]!r} and {arm.label!r} are the same optimizer with the same "
                "fixed hyperparameters and run settings: make them differ"
            )
        specs[key] = arm.label

    study = Study(
        name=path.stem,
        path=path,
        scale=scale,
        scales=list(scales),
        title=str(merged.get("title", path.stem)),
        description=str(merged.get("description", "")).strip(),
        note=str(scales[scale].get("note", "")).strip(),
        tasks=tasks,
        figures=list(figures),
        seeds=_seeds(merged.get("seeds", 3), "seeds", fail),
        grid_seeds=_seeds(merged.get("grid_seeds", 1), "grid_seeds", fail),
        smoke=_smoke(merged.get("smoke", False), tasks, fail),
        budget=budget,
        budgets=budgets,
        task_options=task_options,
        run=run,
        callbacks=callbacks,
        arms=arms,
    )
    for arm in arms:  # every grid point must be recognised as its own arm's run
        for hparams in arm.points():
            config = {"optimizer": arm.optimizer, "hparams": hparams, **run, **arm.run}
            if study.arm_of(config) != arm.label:
                raise fail(
                    f"the runs of arm {arm.label!r} would be taken for arm "
                    f"{study.arm_of(config)!r}: give it a distinguishing fixed setting"
                )
    return study


def _check_keys(table: Any, valid: set[str], where: str, fail: Any) -> None:
    if not isinstance(table, dict):
        raise fail(f"{where} must be a table")
    unknown = sorted(set(table) - valid)
    if unknown:
        raise fail(f"unknown key(s) {unknown} in {where}; valid: {sorted(valid)}")


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in, tables key by key, other values replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key == "note":
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _smoke(value: Any, tasks: list[str], fail: Any) -> bool | list[str]:
    if isinstance(value, bool):
        return value
    if isinstance(value, list) and all(t in tasks for t in value):
        return list(value)
    raise fail(f"`smoke` must be true, false or a list of the study's tasks, got {value!r}")


def _seeds(value: Any, key: str, fail: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return list(value)
    raise fail(f"`{key}` must be a positive count or a non-empty list of integers, got {value!r}")


def _arm(label: str, table: Any, fail: Any) -> Arm:
    where = f"[optimizers.{label}]"
    if not isinstance(table, dict):
        raise fail(f"{where} must be a table")
    from adaptopt.optim.registry import available_optimizers as optimizers
    from adaptopt.optim.registry import hyperparameters

    optimizer = table.get("optimizer", label)
    if optimizer not in optimizers():
        raise fail(
            f"{where}: unknown optimizer {optimizer!r}"
            + ("" if "optimizer" in table else " (set `optimizer = ...` for a custom arm name)")
            + f"; available: {', '.join(optimizers())}"
        )
    grid_table = table.get("grid", {})
    run = table.get("run", {})
    _check_keys(run, RUN_KEYS, f"{where}.run", fail)
    if not isinstance(grid_table, dict):
        raise fail(f"{where}.grid must be a table")
    try:
        grid = {k: grid_values(v, f"optimizers.{label}.grid.{k}") for k, v in grid_table.items()}
    except ValueError as e:
        raise fail(str(e)) from e
    empty = [k for k, v in grid.items() if not v]
    if empty:
        raise fail(f"{where}.grid: empty value list for {empty}")
    fixed = {k: v for k, v in table.items() if k not in ("optimizer", "grid", "run", "tasks")}
    tasks = table.get("tasks", [])
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise fail(f"{where}: `tasks` must be a list of task names")
    both = sorted(set(fixed) & set(grid))
    if both:
        raise fail(f"{where}: {both} both fixed and in the grid")
    valid = hyperparameters(optimizer)
    unknown = sorted((set(fixed) | set(grid)) - set(valid))
    if unknown:
        raise fail(f"{where}: unknown hyperparameter(s) {unknown} of {optimizer}; valid: {valid}")
    return Arm(label, optimizer, fixed, grid, run, tuple(tasks))


# ---- running ---------------------------------------------------------------------------


@dataclass
class Plan:
    """What a ``run`` would do now: runs per phase, how many are done."""

    grid: list[TrainConfig]
    seeds: list[TrainConfig]  # empty until the grid phase is done
    undecided: list[tuple[str, str]]  # (task, arm) whose grid is not finished


def plan(study: Study, runs: Sequence[Run] | None = None) -> Plan:
    """The study's runs given the runs done so far (``runs``: default, read from disk)."""
    runs = list(study_runs(study)) if runs is None else runs
    done = [r for r in runs if r.status in DONE]
    chosen = study.chosen(done)
    grid = study.grid_configs()
    undecided = [key for key, c in chosen.items() if c is None]
    return Plan(grid, study.seed_configs(done) if not undecided else [], undecided)


def study_runs(study: Study) -> Iterable[Run]:
    """Run directories of the study: the work dir's, plus records not in it."""
    seen: set[str] = set()
    for root in (study.work_dir / "runs", study.results_dir / "runs"):
        if root.exists():
            for run in find_runs([root]):
                if run.path.name not in seen:
                    seen.add(run.path.name)
                    yield run


def run_study(
    study: Study,
    *,
    workers: int = 1,
    executor: str = "local",
    slurm: dict[str, Any] | None = None,
    progress: bool | None = None,
    report: bool = True,
    log: Any = print,
) -> Path | None:
    """Grid → best setting per arm → seeds → report (see the module docstring).

    Returns the report's path (None with ``report=False``).
    """
    restored = restore_records(study)
    if restored:
        log(f"restored {restored} finished runs from {study.results_dir / 'runs'}")
    options: dict[str, Any] = dict(
        workers=workers, executor=executor, slurm=slurm, progress=progress
    )
    callbacks = study.callback_objects()
    from adaptopt.experiments.sweep import run_all  # the training stack, only when training

    grid = study.grid_configs()
    if grid:
        log(f"[{study.name}/{study.scale}] grid search: {len(grid)} runs (validation split)")
        ran = run_all(grid, study.work_dir, callbacks=callbacks, **options)
        log(f"  trained {len(ran)}, {len(grid) - len(ran)} already done")
        save_records(study)
    done = [r for r in study_runs(study) if r.status in DONE]
    for (task, label), config in study.chosen(done).items():
        if config is None:
            raise RuntimeError(f"{task}, {label}: the grid search left no finished run")
        log(f"  {task}, {label}: {config.hparams}")
    seeds = study.seed_configs(done)
    log(f"[{study.name}/{study.scale}] seeds: {len(seeds)} runs (test split)")
    ran = run_all(seeds, study.work_dir, callbacks=callbacks, **options)
    log(f"  trained {len(ran)}, {len(seeds) - len(ran)} already done")
    save_records(study)
    if not report:
        return None
    from adaptopt.experiments.study_report import write_report

    return write_report(study)


def _is_record(path: Path) -> bool:
    return path.is_file() and path.name != CHECKPOINT and not path.name.endswith(".tmp")


def save_records(study: Study) -> int:
    """Copy the records of the work dir's done runs to ``results_dir/runs``; how many new."""
    source = study.work_dir / "runs"
    if not source.exists():
        return 0
    copied = 0
    for run in find_runs([source]):
        if run.status not in DONE:
            continue
        target = study.results_dir / "runs" / run.path.name
        if (target / META).exists() and (target / META).read_bytes() == (
            run.path / META
        ).read_bytes():
            continue
        target.mkdir(parents=True, exist_ok=True)
        for f in filter(_is_record, run.path.iterdir()):
            shutil.copy2(f, target / f.name)
        copied += 1
    return copied


def restore_records(study: Study) -> int:
    """Copy done runs' records from ``results_dir/runs`` into the work dir where it has no
    such run (a study continued on another machine); how many."""
    source = study.results_dir / "runs"
    if not source.exists():
        return 0
    restored = 0
    for config in sorted(source.glob(f"*/{CONFIG}")):
        target = study.work_dir / "runs" / config.parent.name
        if target.exists():
            continue
        shutil.copytree(config.parent, target)
        restored += 1
    return restored


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)


def finite(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]
