"""End-of-epoch iterate averaging (the authors' PTB protocol, after Merity et al.'s NT-ASGD)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


class IterateAverage:
    """End-of-epoch iterate averaging, triggered by the validation loss (the authors' PTB rule).

    With ``nonmono = N``: after an epoch whose validation loss (of the current weights) is worse
    than the best of all but the last N recorded ones, averaging starts; from the next epoch
    on, every end-of-epoch weight enters a running mean, which all later evaluations use.
    ``nonmono=None`` disables it. ``state_dict`` holds everything a resumed run needs.
    """

    def __init__(self, model: nn.Module, nonmono: int | None) -> None:
        self.model, self.nonmono = model, nonmono
        self.history: list[float] = []  # validation losses before averaging started
        self.started_epoch: int | None = None  # the epoch after which the rule fired
        self.count = 0
        self.average: dict[str, torch.Tensor] = {}

    @property
    def active(self) -> bool:
        """Whether evaluations use the average (it holds at least one iterate)."""
        return self.count > 0

    def end_epoch(self) -> None:
        """Add the current weights to the running mean, if averaging has started."""
        if self.started_epoch is None:
            return
        self.count += 1
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if self.count == 1:
                    self.average[name] = p.detach().clone()
                else:
                    self.average[name].add_(p.detach() - self.average[name], alpha=1 / self.count)

    def observe(self, epoch: int, valid_loss: float) -> bool:
        """Record the current weights' validation loss; true if averaging starts now."""
        if self.nonmono is None or self.started_epoch is not None:
            return False
        n = self.nonmono
        fire = len(self.history) > n and valid_loss > min(self.history[:-n])
        self.history.append(valid_loss)
        if fire:
            self.started_epoch = epoch
        return fire

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model holds the average inside the block (if active), its own weights after."""
        if not self.active:
            yield
            return
        params = dict(self.model.named_parameters())
        own = {name: p.detach().clone() for name, p in params.items()}
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(self.average[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(own[name])

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": list(self.history),
            "started_epoch": self.started_epoch,
            "count": self.count,
            "average": {k: v.clone() for k, v in self.average.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])
        self.started_epoch = state["started_epoch"]
        self.count = state["count"]
        device = next(self.model.parameters()).device
        self.average = {k: v.to(device) for k, v in state["average"].items()}
