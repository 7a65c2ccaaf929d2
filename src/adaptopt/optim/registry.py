"""``create_optimizer``: every optimizer of the library (and torch's baselines) by name."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from adaptopt.errors import ConfigError
from adaptopt.optim import _rounding
from adaptopt.optim.adam_prox import AdamProx
from adaptopt.optim.clip import SGDClip, SGDClipGrad, SGDClipMomentum
from adaptopt.optim.gsignsgd import GeneralizedSignSGD, SignSGD, Signum
from adaptopt.optim.lion import Lion
from adaptopt.optim.normalized import NormalizedSGD
from adaptopt.optim.sgdol import SGDOL

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "gsignsgd": GeneralizedSignSGD,
    "signum": Signum,
    "signsgd": SignSGD,
    "sgd_clip": SGDClip,
    "sgd_clip_grad": SGDClipGrad,
    "sgd_clip_momentum": SGDClipMomentum,
    "sgd_normalized": NormalizedSGD,
    "sgdol": SGDOL,
    "lion": Lion,
    "adam_prox": AdamProx,
    # torch's optimizers, with adaptopt's stochastic_rounding option (off: torch's own step)
    "sgd": _rounding.SGD,
    "adam": _rounding.Adam,
    "adamw": _rounding.AdamW,
    "adagrad": _rounding.Adagrad,
}


def available_optimizers() -> list[str]:
    """Registry names, sorted."""
    return sorted(OPTIMIZERS)


def hyperparameters(name: str) -> list[str]:
    """The keyword arguments optimizer ``name`` accepts (everything but ``params``)."""
    cls = _lookup(name)
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params")]


def create_optimizer(name: str, params: Any, **hparams: Any) -> torch.optim.Optimizer:
    """Build optimizer ``name`` over ``params`` with ``hparams``.

    Raises:
        ConfigError (a ValueError): for an unknown name or hyperparameter (the message lists the
            valid ones) or a hyperparameter value the optimizer rejects.
    """
    valid = hyperparameters(name)
    unknown = sorted(set(hparams) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown hyperparameter(s) {', '.join(unknown)} for optimizer {name!r}; "
            f"valid: {', '.join(valid)}"
        )
    cls = _lookup(name)
    if hparams:  # values the constructor rejects on a stand-in parameter are the caller's error
        try:
            cls([torch.zeros(1, requires_grad=True)], **hparams)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"optimizer {name!r}: bad hyperparameter value: {err}") from err
    return cls(params, **hparams)


def _lookup(name: str) -> type[torch.optim.Optimizer]:
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; valid: {', '.join(available_optimizers())}")
    return OPTIMIZERS[name]
