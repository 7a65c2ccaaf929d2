"""Optimizers for (L0,L1)-smooth objectives, all ``torch.optim.Optimizer`` subclasses (SPEC.md §1).

``create_optimizer(name, params, **hparams)`` builds any of them (and torch's ``sgd``, ``adam``,
``adamw``, ``adagrad``) by registry name. :mod:`adaptopt.optim.comm_hooks` compresses DDP's
gradient exchange to 1 bit per coordinate (signSGD with majority vote, EF-SignSGD).
"""

from adaptopt.optim.adam_prox import AdamProx
from adaptopt.optim.clip import SGDClip, SGDClipGrad, SGDClipMomentum
from adaptopt.optim.comm_hooks import (
    SignCompressionState,
    register_sign_compression,
    sign_compression_hook,
)
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
    "SignCompressionState",
    "SignSGD",
    "Signum",
    "available_optimizers",
    "create_optimizer",
    "hyperparameters",
    "register_sign_compression",
    "sign_compression_hook",
]
