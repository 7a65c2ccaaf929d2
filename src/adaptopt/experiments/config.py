"""The definition of one run: :class:`TrainConfig` and its run id (torch-free).

A config names a task and an optimizer and overrides their defaults; :meth:`TrainConfig.resolve`
fills in the task's tuned hyperparameters, budget and protocol settings, and the hash of the
resolved fields that determine the result is the run id (equal ids ⇔ the same run).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adaptopt.errors import ConfigError

if TYPE_CHECKING:
    from adaptopt.tasks.base import Budget, Task

# Fields that change how a run is executed or recorded, but not its result: not in the run id.
# TrainConfig.compress values (adaptopt.optim.comm_hooks.MODES; this module stays torch-free).
COMPRESSIONS = ("sign-mv", "ef-sign")

RUNTIME_FIELDS = (
    "device",
    "data_dir",
    "log_every",
    "checkpoint_every",
    "probe",
    "probe_preset",
    "probe_batches",
)


@dataclass
class TrainConfig:
    """Everything that defines one run. ``None`` fields are filled in by :meth:`resolve`.

    ``hparams`` override the task's tuned values for ``optimizer`` (``task.hparams``);
    ``validation=True`` trains on the training data minus a held-out validation split (grid
    search); ``eval_splits`` defaults to ``("valid",)`` then and to ``("test",)`` otherwise.
    ``clip_grad_norm`` and ``iterate_averaging`` default to the task's (``None``); 0 turns
    them off. ``compress`` replaces DDP's gradient all-reduce by a 1-bit sign exchange
    (``"sign-mv"``: majority vote of the workers' Signum momenta, to pair with ``signsgd``;
    ``"ef-sign"``: error-feedback scaled sign, to pair with ``sgd``; see
    :mod:`adaptopt.optim.comm_hooks`); it needs ``torchrun`` with two or more processes.
    """

    task: str
    optimizer: str
    hparams: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    init_seed: int | None = None  # draw x_0 from this seed (the authors reuse one x_0) not ``seed``
    epochs: int | None = None
    batch_size: int | None = None
    max_steps_per_epoch: int | None = None
    smoke: bool = False
    validation: bool = False
    eval_splits: tuple[str, ...] | None = None
    eval_every: int = 1  # evaluate every this many epochs (and always after the last)
    task_options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    data_dir: str | None = None
    log_every: int = 1
    checkpoint_every: int = 0  # also checkpoint every this many steps (0: at epoch ends only)
    probe: int = 0  # measure (L0,L1)-smoothness (SPEC.md §2) every this many steps (0: never)
    probe_preset: str = "default"  # "default" (cheap) or "paper" (adaptopt.smoothness)
    probe_batches: int | None = None  # cap the probe set at this many batches (None: preset's)
    clip_grad_norm: float | None = None  # global gradient-norm threshold before the optimizer
    iterate_averaging: int | None = None  # nonmono of the end-of-epoch averaging (0: off)
    compress: str | None = None  # DDP gradient exchange: "sign-mv" | "ef-sign" (comm_hooks)

    def __post_init__(self) -> None:
        if self.eval_splits is not None:
            self.eval_splits = tuple(self.eval_splits)
        for name in ("log_every", "checkpoint_every", "eval_every", "probe"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.probe_batches is not None and self.probe_batches < 1:
            raise ConfigError(f"probe_batches must be >= 1 or None, got {self.probe_batches}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm >= 0:
            raise ConfigError(f"clip_grad_norm must be >= 0, got {self.clip_grad_norm}")
        if self.iterate_averaging is not None and self.iterate_averaging < 0:
            raise ConfigError(f"iterate_averaging must be >= 0, got {self.iterate_averaging}")
        if self.compress is not None and self.compress not in COMPRESSIONS:
            raise ConfigError(
                f"compress must be None or one of {', '.join(COMPRESSIONS)} (sign-compressed "
                f"data parallelism, adaptopt.optim.comm_hooks), got {self.compress!r}"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            names = ", ".join(unknown)
            raise ConfigError(f"unknown run setting(s) {names}; valid: {sorted(known)}")
        return cls(**d)

    def build_task(self) -> Task:
        from adaptopt import tasks

        return tasks.get(
            self.task,
            validation=self.validation,
            smoke=self.smoke,
            data_dir=self.data_dir,
            **self.task_options,
        )

    def resolve(self, task: Task) -> TrainConfig:
        """Explicit copy: the task's hparams merged under ours, the budget and splits filled in."""
        b = task.budget
        return dataclasses.replace(
            self,
            hparams={**task.hparams.get(self.optimizer, {}), **self.hparams},
            epochs=b.epochs if self.epochs is None else self.epochs,
            batch_size=b.batch_size if self.batch_size is None else self.batch_size,
            max_steps_per_epoch=self.max_steps_per_epoch or b.max_steps_per_epoch,
            eval_splits=self.eval_splits or (("valid",) if self.validation else ("test",)),
            clip_grad_norm=_default(self.clip_grad_norm, task.clip_grad_norm),
            iterate_averaging=_default(self.iterate_averaging, task.iterate_averaging),
        )

    @property
    def budget(self) -> Budget:
        """The budget of a resolved config (:meth:`resolve` fills in epochs and batch size)."""
        from adaptopt.tasks.base import Budget

        if self.epochs is None or self.batch_size is None:
            raise ValueError("the budget of an unresolved TrainConfig: call resolve(task) first")
        return Budget(self.epochs, self.batch_size, self.max_steps_per_epoch)

    def identity(self, *, with_seed: bool = True) -> dict[str, Any]:
        """The fields that determine the result (JSON-normalised), optionally without the seed."""
        d = json.loads(json.dumps(dataclasses.asdict(self)))
        for name in RUNTIME_FIELDS + (() if with_seed else ("seed",)):
            d.pop(name)
        if d["compress"] is None:  # added later: runs without it keep their ids
            d.pop("compress")
        return d

    def run_id(self) -> str:
        """Hash of the resolved config and seed: equal ids ⇔ the same run."""
        return config_hash(self.identity())


def _default(value: Any, task_default: Any) -> Any:
    """The config's value, else the task's default (0, "off", is kept as 0)."""
    return task_default if value is None else value


def config_hash(d: dict[str, Any]) -> str:
    """Short, stable hash of a JSON-able dict (key order does not matter)."""
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def hparam_kwargs(hparams: dict[str, Any]) -> dict[str, Any]:
    """JSON/TOML lists back to tuples (``betas=[0.9, 0.999]`` → ``(0.9, 0.999)``)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in hparams.items()}
