"""The task interface: data + model + loss + metrics + the paper's default budget.

Tasks know nothing of optimizers and the trainer knows nothing of datasets; this contract
is the only thing they share (see ``docs/ARCHITECTURE.md``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

Batch = Any


@dataclass(frozen=True)
class Budget:
    """Default training budget of a task (paper §5 / SPEC.md §4)."""

    epochs: int
    batch_size: int
    max_steps_per_epoch: int | None = None  # None: a full pass over the training data


@dataclass
class Task(abc.ABC):
    """A named training problem.

    Attributes:
        name: registry name, e.g. ``"cifar10-resnet20"``.
        metric: headline evaluation metric reported in tables (``"accuracy"``, ``"perplexity"``,
            ``"bleu"``, ...); ``evaluate`` returns it together with ``"loss"``.
        higher_is_better: direction of ``metric``.
        budget: default epochs / batch size.
        hparams: the authors' tuned hyperparameters per optimizer registry name (SPEC.md §4).
        validation: if true, a seeded held-out part of the training data plays the role of the
            ``"valid"`` split and is removed from training (grid search, SPEC.md §4).
        batch_dim: the dimension of a batch's tensors that indexes examples (data-parallel
            training splits batches along it); 1 for time-major ``[T, B]`` language batches.
    """

    batch_dim: ClassVar[int] = 0

    name: str
    metric: str
    higher_is_better: bool
    budget: Budget
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    validation: bool = False

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model; the caller seeds torch's RNG before calling."""

    @abc.abstractmethod
    def train_batches(
        self, epoch: int, generator: torch.Generator, device: torch.device
    ) -> Iterator[Batch]:
        """One epoch of training batches on ``device``; order drawn from ``generator`` only."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Scalar training objective on ``batch`` (including regularisers such as AR/TAR)."""

    @abc.abstractmethod
    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        """``{"loss": ..., self.metric: ...}`` on ``split`` in {"train", "valid", "test"}."""

    def probe_batches(
        self, generator: torch.Generator, device: torch.device, fraction: float = 0.1
    ) -> Iterable[Batch]:
        """A fixed probe set for smoothness measurements: ``fraction`` of the training data."""
        batches = list(self.train_batches(0, generator, device))
        return batches[: max(1, round(fraction * len(batches)))]

    def start_epoch(self, model: nn.Module) -> None:  # noqa: B027 - optional hook
        """Hook called before each epoch (e.g. to reset recurrent state)."""

    def lr_lambda(self, steps_per_epoch: int) -> Callable[[int], float] | None:
        """Per-step learning-rate multiplier (e.g. Transformer warm-up), or None for constant."""
        return None

    def batch_lr_scale(self, batch: Batch) -> float:
        """Learning-rate factor for one training batch, on top of ``lr_lambda`` (AWD-LSTM
        scales by segment length / BPTT for its random-length segments); 1 by default."""
        return 1.0
