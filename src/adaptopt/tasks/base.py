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
        loss_reduction: ``"mean"`` if the objective of :meth:`loss` averages over the batch's
            examples/tokens, ``"sum"`` if it adds them up (the authors' Multi30k scale);
            data-parallel training weights the shards' losses accordingly.
        train_loss_from_evaluation: how the epoch's ``train_loss`` (Table 1) is measured: if
            true, ``evaluate(model, "train")`` in eval mode at the end of the epoch (the
            authors' image tasks); else the running mean of the batches' reported losses
            (:meth:`loss_terms`) during the epoch. The running mean is always recorded too,
            as ``train_loss_running``.
        clip_grad_norm: default global gradient-norm clipping threshold applied by the trainer
            before the optimizer (``None``: no clipping); ``TrainConfig`` may override it.
        iterate_averaging: default ``nonmono`` of the trainer's end-of-epoch iterate averaging
            (the authors' PTB rule; ``None``: off); ``TrainConfig`` may override it.
    """

    batch_dim: ClassVar[int] = 0
    loss_reduction: ClassVar[str] = "mean"
    train_loss_from_evaluation: ClassVar[bool] = False

    name: str
    metric: str
    higher_is_better: bool
    budget: Budget
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    validation: bool = False
    clip_grad_norm: float | None = None
    iterate_averaging: int | None = None

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

    def loss_terms(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(objective, reported)``: the scalar to back-propagate (:meth:`loss`) and the
        batch's training loss as the paper reports it, detached (e.g. per-token cross-entropy
        without AR/TAR or label smoothing terms; default: the objective itself)."""
        objective = self.loss(model, batch)
        return objective, objective.detach()

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
        """Factor for one training batch's learning rate, on top of ``lr_lambda``, and for the
        clipping threshold γ of the clipped SGDs (the authors' AWD-LSTM scales both by segment
        length / BPTT for its random-length segments); 1 by default."""
        return 1.0
