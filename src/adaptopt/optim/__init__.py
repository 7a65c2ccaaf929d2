"""Optimizers for (L0,L1)-smooth objectives, all ``torch.optim.Optimizer`` subclasses (SPEC.md §1).

``create_optimizer(name, params, **hparams)`` builds any of them (and torch's ``sgd``, ``adam``,
``adamw``, ``adagrad``) by registry name.
"""

from adaptopt.optim.adam_prox import AdamProx
from adaptopt.optim.clip import SGDClip, SGDClipGrad, SGDClipMomentum
from adaptopt.optim.gsignsgd import GeneralizedSignSGD, SignSGD, Signum
from adaptopt.optim.lion import Lion
from adaptopt.optim.normalized import NormalizedSGD
from adaptopt.optim.registry import (
    OPTIMIZERS,
    available_optimizers,
    create_optimizer,
    hyperparameters,
)
from adaptopt.optim.sgdol import SGDOL

__all__ = [
    "OPTIMIZERS",
    "SGDOL",
    "AdamProx",
    "GeneralizedSignSGD",
    "Lion",
    "NormalizedSGD",
    "SGDClip",
    "SGDClipGrad",
    "SGDClipMomentum",
    "SignSGD",
    "Signum",
    "available_optimizers",
    "create_optimizer",
    "hyperparameters",
]
