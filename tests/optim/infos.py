"""The one table of the library's optimizers that drives the optim tests (``OPTIMIZER_INFOS``).

In the style of torch's ``torch/testing/_internal/common_optimizers.py``: one
:class:`OptimizerInfo` per registry name says how to build the optimizer, which samples of
constructor arguments the reference, ``foreach`` and fused tests run, the independent float64
twin of its update (:class:`Twin`: formulas of SPEC.md §1, one line each, sharing no code with
``adaptopt.optim``), the inputs it must refuse, and the hyperparameters of short training
runs. ``test_reference.py``, ``test_properties.py``, ``test_fused.py``, ``test_triton.py``,
``test_compile.py``, ``test_tensor_subclass.py``, ``test_step_count.py``,
``test_rounding.py``, ``test_native.py`` and ``test_sharded.py`` read their optimizers from
this table; adding an optimizer adds one entry here (CONTRIBUTING.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from adaptopt.optim import (
    SGDOL,
    AdamProx,
    GeneralizedSignSGD,
    Lion,
    NormalizedSGD,
    SGDClip,
    SGDClipGrad,
    SGDClipMomentum,
    SignSGD,
    Signum,
)

# -- float64 twins: ``direction(hp, x, d, state, norms) -> step (= η u_t)`` ------------------
# ``d`` is the gradient with the maximize sign and the coupled l2 term already applied (the
# runner in test_reference.py does it, then the decay step of SPEC.md §1.3).


def gsignsgd_twin(hp, x, g, st, norms, square_gradient=False):
    b1, b2 = hp["betas"]
    st["t"] = st.get("t", 0) + 1
    st["m"] = b1 * st.get("m", torch.zeros_like(x)) + (1 - b1) * g
    squared = g if square_gradient else st["m"]
    st["v"] = b2 * st.get("v", torch.zeros_like(x)) + (1 - b2) * squared**2
    m_hat, v_hat = st["m"], st["v"]
    if hp["bias_correction"]:
        m_hat = m_hat / (1 - b1 ** st["t"])
        v_hat = v_hat / (1 - b2 ** st["t"])
    denom = torch.sqrt(v_hat) + hp["eps"]
    u = torch.where(denom == 0, torch.zeros_like(x), m_hat / denom)
    return hp["lr"] * u


def adam_twin(hp, x, g, st, norms):
    return gsignsgd_twin(hp, x, g, st, norms, square_gradient=True)


def signum_twin(hp, x, g, st, norms):
    st["m"] = hp["momentum"] * st.get("m", torch.zeros_like(x)) + (1 - hp["momentum"]) * g
    return hp["lr"] * torch.sign(st["m"])


def lion_twin(hp, x, g, st, norms):
    b1, b2 = hp["betas"]
    m = st.get("m", torch.zeros_like(x))
    u = torch.sign(b1 * m + (1 - b1) * g)
    st["m"] = b2 * m + (1 - b2) * g
    return hp["lr"] * u


def momentum_twin(hp, x, d, st):
    """PyTorch convention: b_1 = d_1, b_t = μ b_{t-1} + d_t; Nesterov d_t + μ b_t."""
    st["b"] = d.clone() if "b" not in st else hp["momentum"] * st["b"] + d
    return d + hp["momentum"] * st["b"] if hp.get("nesterov") else st["b"]


def momentum_norms_twin(xs, ds, states, hps):
    """(‖d‖, ‖b̃‖) over every parameter of every group."""
    grad_sq, mom_sq = 0.0, 0.0
    for x, d, st, hp in zip(xs, ds, states, hps, strict=True):
        if d is None:
            continue
        st["b_tilde"] = momentum_twin(hp, x, d, st)
        grad_sq += float((d**2).sum())
        mom_sq += float((st["b_tilde"] ** 2).sum())
    return math.sqrt(grad_sq), math.sqrt(mom_sq)


def clip_twin(hp, x, d, st, norms):
    grad_norm, mom_norm = norms
    lr, gamma, nu = hp["lr"], hp["gamma"], hp["nu"]
    clipped_mom = min(lr, gamma / mom_norm) * st["b_tilde"] if mom_norm > 0 else lr * st["b_tilde"]
    clipped_grad = min(lr, gamma / grad_norm) * d if grad_norm > 0 else lr * d
    return nu * clipped_mom + (1 - nu) * clipped_grad


def normalized_twin(hp, x, d, st, norms):
    return hp["lr"] * st["b_tilde"] / (norms[1] + hp["eps"])


@dataclass(frozen=True)
class Twin:
    """The float64 twin: ``direction`` per parameter, ``norms`` (global, once per step) if
    the rule needs them, and the hyperparameters the class fixes (presets) that the twin
    reads."""

    direction: Callable[..., torch.Tensor]
    norms: Callable[..., tuple[float, float]] | None = None
    fixed: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """Constructor arguments: two param groups (``groups``) and the shared ``common`` ones."""

    id: str
    groups: tuple[dict[str, Any], dict[str, Any]]
    common: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimizerInfo:
    name: str  # registry name (create_optimizer)
    cls: type[torch.optim.Optimizer]
    family: str  # functional core: "adam", "lion", "global_norm" or "sgdol"
    supports_fused: bool = False
    # arguments the generic tests pass to create_optimizer (default: lr=1e-2)
    hparams: dict[str, Any] = field(default_factory=dict)
    # arguments of short training runs of a small model (test_sharded.py: sharded against
    # one process), chosen so that the rule's own part acts at every step (clipping fires)
    train_hparams: dict[str, Any] = field(default_factory=dict)
    # two-group samples: float64 twin, foreach == single tensor, fused == single tensor
    samples: tuple[Sample, ...] = ()
    # one-group options with steps large enough for the low-precision kernel tests
    kernel_samples: tuple[Sample, ...] = ()
    reference: Twin | None = None
    # options under which the iterates ignore coordinate-wise gradient scaling (SPEC.md §3)
    scale_free: tuple[dict[str, Any], ...] = ()
    # (constructor arguments, message of the ValueError they raise)
    error_inputs: tuple[tuple[dict[str, Any], str], ...] = ()
    closure_calls: int = 1  # gradient evaluations per step (SGDOL: two)
    lr_is_step_size: bool = True  # SGDOL: lr multiplies the learned step size
    one_graph: bool = True  # torch.compile(step) on foreach is one graph

    def make(self, params: Any, **overrides: Any) -> torch.optim.Optimizer:
        from adaptopt.optim import create_optimizer

        return create_optimizer(self.name, params, **{"lr": 1e-2, **self.hparams, **overrides})


GSIGN_GROUPS = (
    dict(lr=3e-3, weight_decay=1e-2, weight_decay_mode="decoupled", betas=(0.8, 0.99)),
    dict(lr=1e-2, weight_decay=1e-1, weight_decay_mode="proximal"),
)
CLIP_GROUPS = (
    dict(lr=0.5, gamma=0.3, nu=0.3, weight_decay=1e-3, weight_decay_mode="l2"),
    dict(lr=0.1, gamma=2.0, nu=0.7, weight_decay=1e-2, weight_decay_mode="proximal"),
)

OPTIMIZER_INFOS: tuple[OptimizerInfo, ...] = (
    OptimizerInfo(
        "gsignsgd",
        GeneralizedSignSGD,
        "adam",
        train_hparams=dict(lr=0.01, weight_decay=0.01),
        supports_fused=True,
        samples=(
            Sample(
                "gsignsgd",
                GSIGN_GROUPS,
                dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, weight_decay_mode="l2"),
            ),
            Sample(
                "gsignsgd_bc_l2_eps0",
                (dict(lr=1e-3, weight_decay=1e-3), dict(lr=2e-3, weight_decay=1e-2)),
                dict(betas=(0.9, 0.999), eps=0.0, weight_decay_mode="l2", bias_correction=True),
            ),
            Sample(
                "gsignsgd_bias_correction_l2_maximize",
                (dict(lr=1e-3, weight_decay=1e-3), dict(lr=2e-3, weight_decay=1e-2, eps=0.0)),
                dict(bias_correction=True, maximize=True),
            ),
            Sample(
                "gsignsgd_beta2_zero",
                (dict(lr=1e-3, betas=(0.9, 0.0)), dict(lr=2e-3, betas=(0.5, 0.0), eps=0.0)),
                dict(bias_correction=True, eps=1e-3),
            ),
        ),
        kernel_samples=(
            Sample("gsignsgd", (dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-8), {})),
            Sample(
                "gsignsgd_bias_correction_maximize",
                (dict(lr=1e-2, bias_correction=True, maximize=True, eps=0.0), {}),
            ),
        ),
        reference=Twin(gsignsgd_twin),
        scale_free=(
            dict(lr=1e-2, eps=0.0),
            dict(
                lr=1e-2,
                eps=0.0,
                bias_correction=True,
                weight_decay=0.1,
                weight_decay_mode="decoupled",
            ),
        ),
        error_inputs=(
            (dict(lr=-1.0), "Invalid lr"),
            (dict(betas=(1.0, 0.9)), "Invalid beta1"),
            (dict(betas=(0.9, -0.1)), "Invalid beta2"),
            (dict(betas=0.9), "Invalid betas"),
            (dict(eps=-1e-8), "Invalid eps"),
            (dict(weight_decay=-1.0), "Invalid weight_decay"),
            (dict(weight_decay_mode="adamw"), "Invalid weight_decay_mode"),
            (dict(fused=True, foreach=True), "Invalid fused"),
        ),
    ),
    OptimizerInfo(
        "signum",
        Signum,
        "adam",
        train_hparams=dict(lr=0.01, weight_decay=0.1, weight_decay_mode="decoupled"),
        supports_fused=True,
        samples=(Sample("signum", (GSIGN_GROUPS[1], dict(lr=1e-2, momentum=0.5))),),
        kernel_samples=(Sample("signum", (dict(lr=5e-2, momentum=0.5), {})),),
        reference=Twin(signum_twin),
        scale_free=(dict(lr=1e-2, momentum=0.9),),
        error_inputs=(
            (dict(momentum=1.5), "Invalid momentum"),
            (dict(state_dtype=torch.int8), "Invalid state_dtype"),
        ),
    ),
    OptimizerInfo(
        "signsgd",
        SignSGD,
        "adam",
        train_hparams=dict(lr=0.01),
        supports_fused=True,
        samples=(Sample("signsgd", (dict(lr=1e-2), dict(lr=3e-3, weight_decay=0.1))),),
        kernel_samples=(Sample("signsgd", (dict(lr=5e-2), {})),),
        reference=Twin(signum_twin, fixed=dict(momentum=0.0)),
        scale_free=(dict(lr=1e-2),),
    ),
    OptimizerInfo(
        "adam_prox",
        AdamProx,
        "adam",
        train_hparams=dict(lr=0.01, weight_decay=0.1),
        supports_fused=True,
        samples=(
            Sample(
                "adam_prox",
                GSIGN_GROUPS,
                dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, weight_decay_mode="l2"),
            ),
        ),
        kernel_samples=(Sample("adam_prox", (dict(lr=5e-2), {})),),
        reference=Twin(adam_twin, fixed=dict(bias_correction=True)),
        scale_free=(dict(lr=1e-2, eps=0.0, weight_decay=0.1, weight_decay_mode="proximal"),),
        error_inputs=((dict(lr=float("nan")), "Invalid lr"),),
    ),
    OptimizerInfo(
        "lion",
        Lion,
        "lion",
        train_hparams=dict(lr=0.01, weight_decay=0.1),
        supports_fused=True,
        samples=(
            Sample(
                "lion",
                (
                    dict(lr=1e-3, weight_decay=0.1, weight_decay_mode="decoupled"),
                    dict(lr=3e-4, weight_decay=0.5, weight_decay_mode="proximal", betas=(0.5, 0.9)),
                ),
                dict(betas=(0.9, 0.99), maximize=True),
            ),
            Sample(
                "lion_l2",
                (dict(lr=1e-3), dict(lr=2e-3)),
                dict(weight_decay=0.1, weight_decay_mode="l2"),
            ),
        ),
        kernel_samples=(Sample("lion", (dict(lr=5e-2, betas=(0.5, 0.9), maximize=True), {})),),
        reference=Twin(lion_twin),
        scale_free=(dict(lr=1e-2, weight_decay=0.1, weight_decay_mode="proximal"),),
        error_inputs=(
            (dict(betas=(0.9, 1.0)), "Invalid beta2"),
            (dict(capturable=True, fused=False), "Invalid capturable"),
        ),
    ),
    OptimizerInfo(
        "sgd_clip",
        SGDClip,
        "global_norm",
        # gamma < lr·‖g‖ in every train_hparams of the clipped family: clipping fires
        train_hparams=dict(lr=0.1, gamma=0.01, nu=0.5),
        supports_fused=True,
        samples=(
            Sample("sgd_clip_mixed_nesterov", CLIP_GROUPS, dict(momentum=0.9, nesterov=True)),
        ),
        kernel_samples=(
            Sample(
                "sgd_clip_nesterov",
                (dict(lr=0.5, gamma=0.3, nu=0.3, momentum=0.9, nesterov=True), {}),
            ),
        ),
        reference=Twin(clip_twin, momentum_norms_twin),
        error_inputs=(
            (dict(gamma=0.0), "Invalid gamma"),
            (dict(nu=1.5), "Invalid nu"),
            (dict(state_dtype="bfloat16"), "Invalid state_dtype"),
        ),
    ),
    OptimizerInfo(
        "sgd_clip_grad",
        SGDClipGrad,
        "global_norm",
        train_hparams=dict(lr=0.1, gamma=0.01),
        supports_fused=True,
        samples=(
            Sample(
                "sgd_clip_grad",
                (dict(lr=0.5, gamma=1.0), dict(lr=0.2, gamma=0.05, weight_decay=1e-2)),
                dict(weight_decay_mode="decoupled", maximize=True),
            ),
        ),
        kernel_samples=(Sample("sgd_clip_grad", (dict(lr=0.5, gamma=1.0), {})),),
        reference=Twin(clip_twin, momentum_norms_twin, fixed=dict(nu=0.0, momentum=0.0)),
        error_inputs=((dict(gamma=-1.0), "Invalid gamma"),),
    ),
    OptimizerInfo(
        "sgd_clip_momentum",
        SGDClipMomentum,
        "global_norm",
        train_hparams=dict(lr=0.1, gamma=0.01, nesterov=True),
        supports_fused=True,
        samples=(
            Sample(
                "sgd_clip_momentum",
                (
                    dict(lr=10.0, gamma=0.1, weight_decay=1e-4, weight_decay_mode="l2"),
                    dict(lr=1.0, gamma=0.5, weight_decay=1e-2, weight_decay_mode="decoupled"),
                ),
                dict(momentum=0.9),
            ),
        ),
        kernel_samples=(Sample("sgd_clip_momentum", (dict(lr=1.0, gamma=0.5), {})),),
        reference=Twin(clip_twin, momentum_norms_twin, fixed=dict(nu=1.0, nesterov=False)),
        error_inputs=((dict(momentum=-0.1), "Invalid momentum"),),
    ),
    OptimizerInfo(
        "sgd_normalized",
        NormalizedSGD,
        "global_norm",
        train_hparams=dict(lr=0.01),
        supports_fused=True,
        samples=(
            Sample(
                "normalized",
                (
                    dict(lr=0.1, weight_decay=1e-4, weight_decay_mode="l2"),
                    dict(lr=0.05, weight_decay=1e-2, weight_decay_mode="proximal", momentum=0.5),
                ),
                dict(momentum=0.9, nesterov=False, eps=1e-10),
            ),
        ),
        kernel_samples=(Sample("normalized", (dict(lr=0.2, momentum=0.9), {})),),
        reference=Twin(normalized_twin, momentum_norms_twin),
        error_inputs=(
            (dict(nesterov=True, momentum=0.0), "Invalid nesterov"),
            (dict(lr=torch.ones(2)), "Invalid lr"),
        ),
    ),
    # SGDOL's float64 twin needs two gradient sequences: test_reference.py, sgdol_* tests
    OptimizerInfo(
        "sgdol",
        SGDOL,
        "sgdol",
        train_hparams=dict(smoothness=2.0, alpha=1.0),
        hparams=dict(lr=1.0),  # lr multiplies the learned step size: 1 is SGDOL itself
        error_inputs=(
            (dict(smoothness=0.0), "Invalid smoothness"),
            (dict(alpha=-1.0), "Invalid alpha"),
        ),
        closure_calls=2,
        lr_is_step_size=False,
        one_graph=False,
    ),
)

INFOS = {info.name: info for info in OPTIMIZER_INFOS}
# torch's optimizers in the registry: baselines, not part of the table
TORCH_BASELINES = ("sgd", "adam", "adamw", "adagrad")


def names(predicate: Callable[[OptimizerInfo], bool] = lambda info: True) -> list[str]:
    """Registry names of the optimizers with ``predicate``, in table order."""
    return [info.name for info in OPTIMIZER_INFOS if predicate(info)]


def samples(
    predicate: Callable[[OptimizerInfo], bool] = lambda info: True, kernel: bool = False
) -> list[Any]:
    """``pytest.param(info, sample, id=sample.id)`` for the samples (or kernel samples) of
    every optimizer with ``predicate``."""
    return [
        pytest.param(info, sample, id=sample.id)
        for info in OPTIMIZER_INFOS
        if predicate(info)
        for sample in (info.kernel_samples if kernel else info.samples)
    ]


def sample(sample_id: str, kernel: bool = False) -> tuple[OptimizerInfo, Sample]:
    """The (info, sample) of the sample named ``sample_id``."""
    for info in OPTIMIZER_INFOS:
        for s in info.kernel_samples if kernel else info.samples:
            if s.id == sample_id:
                return info, s
    raise KeyError(sample_id)


def fused(info: OptimizerInfo) -> bool:
    return info.supports_fused
