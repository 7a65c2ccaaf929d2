"""A seconds-scale synthetic task: a 2-layer MLP learning a random teacher's labels.

Used by tests and smoke runs of the experiment harness; no files needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from adaptopt.tasks.base import Budget, Task


@dataclass
class SyntheticTask(Task):
    """Gaussian inputs in ``dim`` dimensions labelled by a fixed random linear teacher."""

    dim: int = 16
    classes: int = 4
    n_train: int = 512
    n_test: int = 256
    hidden: int = 32
    data_seed: int = 0

    def __post_init__(self) -> None:
        g = torch.Generator().manual_seed(self.data_seed)
        teacher = torch.randn(self.dim, self.classes, generator=g)
        x = torch.randn(self.n_train + self.n_test, self.dim, generator=g)
        y = (x @ teacher).argmax(dim=1)
        n_valid = self.n_train // 5 if self.validation else 0
        n_fit = self.n_train - n_valid
        self._splits = {
            "train": (x[:n_fit], y[:n_fit]),
            "valid": (x[n_fit : self.n_train], y[n_fit : self.n_train]),
            "test": (x[self.n_train :], y[self.n_train :]),
        }
        if not self.validation:
            self._splits["valid"] = self._splits["test"]

    def build_model(self) -> nn.Module:
        return nn.Sequential(
            nn.Linear(self.dim, self.hidden), nn.Tanh(), nn.Linear(self.hidden, self.classes)
        )

    def train_batches(
        self, epoch: int, generator: torch.Generator, device: torch.device
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self._splits["train"]
        order = torch.randperm(len(x), generator=generator)
        bs = self.budget.batch_size
        n_batches = len(x) // bs
        if self.budget.max_steps_per_epoch is not None:
            n_batches = min(n_batches, self.budget.max_steps_per_epoch)
        for i in range(n_batches):
            idx = order[i * bs : (i + 1) * bs]
            yield x[idx].to(device), y[idx].to(device)

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        x, y = (t.to(device) for t in self._splits[split])
        logits = model(x)
        return {
            "loss": F.cross_entropy(logits, y).item(),
            "accuracy": (logits.argmax(1) == y).float().mean().item(),
        }


def synthetic(
    validation: bool = False, smoke: bool = False, data_dir: str | None = None
) -> SyntheticTask:
    """Registry constructor for ``"synthetic"`` (generated in memory: ``data_dir`` is unused)."""
    return SyntheticTask(
        name="synthetic",
        metric="accuracy",
        higher_is_better=True,
        budget=Budget(epochs=2 if smoke else 20, batch_size=32),
        hparams={"gsignsgd": {"lr": 1e-2}, "sgd": {"lr": 0.1, "momentum": 0.9}},
        validation=validation,
    )
