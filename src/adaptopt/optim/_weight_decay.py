r"""The three weight-decay modes shared by every optimizer and every path (SPEC.md §1.3).

For an update direction :math:`u_t`, learning rate :math:`\eta` and decay :math:`\lambda`:

* ``"l2"`` (coupled): :math:`g_t \leftarrow g_t + \lambda x_t` before the direction is formed,
  then :math:`x_{t+1} = x_t - \eta u_t`. Not scale-free.
* ``"decoupled"`` (AdamW, Loshchilov & Hutter 2019):
  :math:`x_{t+1} = (1-\lambda\eta) x_t - \eta u_t`.
* ``"proximal"`` (Zhuang et al., TMLR 2022): :math:`x_{t+1} = (x_t - \eta u_t) / (1 + \lambda\eta)`,
  the exact proximal step of :math:`\tfrac{\lambda}{2}\|x\|^2`; it never flips the sign of a
  weight nor grows it, for any :math:`\eta \ge 0`.

All three are :math:`d_t = s\,g_t + \lambda_2 x_t` (:func:`l2_coefficient`; :math:`s = \pm 1`
the ``maximize`` sign) before the direction, and :math:`x_{t+1} = (a x_t - \eta u_t) / c`
after it (:func:`decay_factors`). The single-tensor and ``foreach`` paths apply them with
:func:`descent_gradients` and :func:`apply_update`; the fused kernels read the same factors
folded into coefficients by :func:`update_coefficients`.

bf16/fp16 parameters: the step (update and decay) is computed in float32 and rounded once,
to nearest or stochastically (``stochastic_rounding``, ``_rounding.py``), in every path.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from adaptopt.optim._rounding import GroupRounding, is_low_precision

# Round to nearest: what a group without stochastic rounding gets.
_NEAREST = GroupRounding({})

WeightDecayMode = Literal["l2", "decoupled", "proximal"]
WEIGHT_DECAY_MODES: tuple[str, ...] = ("l2", "decoupled", "proximal")

Scalar = float | Tensor


def l2_coefficient(weight_decay: float, mode: str) -> float:
    r""":math:`\lambda_2` of :math:`d = s\,g + \lambda_2 x`: λ in ``"l2"`` mode, else 0."""
    return weight_decay if mode == "l2" else 0.0


def decay_factors(lr: Scalar, weight_decay: float, mode: str) -> tuple[Scalar, Scalar]:
    r"""``(a, c)`` of :math:`x \leftarrow (a x - \eta u) / c`: :math:`a = 1 - \lambda\eta`
    when ``"decoupled"``, :math:`c = 1 + \lambda\eta` when ``"proximal"``, else 1."""
    a = 1 - lr * weight_decay if mode == "decoupled" else 1.0
    c = 1 + lr * weight_decay if mode == "proximal" else 1.0
    return a, c


def update_coefficients(lr: Scalar, weight_decay: float, mode: str) -> tuple[Scalar, Scalar]:
    r"""``(a/c, -η/c)``: the update :math:`x \leftarrow (a/c)\,x + (-\eta/c)\,u` as the fused
    kernels compute it (``decay`` and ``step_size`` of ``_fused/layout.py``)."""
    a, c = decay_factors(lr, weight_decay, mode)
    return a / c, -lr * (1 / c)


def descent_gradients(
    grads: list[Tensor],
    params: list[Tensor],
    *,
    maximize: bool,
    weight_decay: float,
    mode: str,
    foreach: bool,
) -> list[Tensor]:
    r""":math:`d = s\,g + \lambda_2 x`: ``-g`` with ``maximize``, plus :math:`\lambda x` in
    ``"l2"`` mode; the gradients themselves (not copies) when neither applies."""
    if maximize:
        grads = list(torch._foreach_neg(grads)) if foreach else [-g for g in grads]
    l2 = l2_coefficient(weight_decay, mode)
    if l2 == 0:
        return grads
    if foreach:
        return list(torch._foreach_add(grads, params, alpha=l2))
    return [g.add(p, alpha=l2) for g, p in zip(grads, params, strict=True)]


def apply_update(
    params: list[Tensor],
    updates: list[Tensor],
    lr: Scalar,
    weight_decay: float,
    mode: str,
    foreach: bool,
    rounding: GroupRounding | None = None,
) -> None:
    r"""In place: ``x ← (a x − η u) / c`` with the factors of :func:`decay_factors`.

    float32/float64 parameters are updated in place. For bf16/fp16 parameters the same
    operations run on a float32 copy of ``x`` (and of ``u``), and the result is rounded once
    into ``x``: to nearest, or stochastically when ``rounding`` says so (``_rounding.py``).
    In bf16 arithmetic a decay :math:`x(1-\eta\lambda)` with :math:`\eta\lambda` below
    half an ulp (2^-9 relative) rounds back to ``x`` whatever the update; here the decay and
    the update are one float32 value rounded once, and with stochastic rounding that value is
    the parameter's new value in expectation.
    """
    low = [i for i, p in enumerate(params) if is_low_precision(p)]
    if low:
        rounding = rounding if rounding is not None else _NEAREST
        wide = [params[i].float() for i in low]
        _update(wide, [updates[i].float() for i in low], lr, weight_decay, mode, foreach)
        for i, value in zip(low, wide, strict=True):
            rounding.store_(params[i], value)
        kept = sorted(set(range(len(params))) - set(low))
        params, updates = [params[i] for i in kept], [updates[i] for i in kept]
    if params:
        _update(params, updates, lr, weight_decay, mode, foreach)


def _update(
    params: list[Tensor],
    updates: list[Tensor],
    lr: Scalar,
    weight_decay: float,
    mode: str,
    foreach: bool,
) -> None:
    """``apply_update`` on tensors of one precision, in place in their dtype; each factor is
    applied only in its mode, so that a tensor ``lr`` never needs a host sync."""
    a, c = decay_factors(lr, weight_decay, mode)
    decoupled = weight_decay != 0 and mode == "decoupled"
    proximal = weight_decay != 0 and mode == "proximal"
    if foreach:
        if decoupled:
            torch._foreach_mul_(params, a)
        torch._foreach_add_(params, torch._foreach_mul(updates, -lr))
        if proximal:
            torch._foreach_div_(params, c)
        return
    for p, u in zip(params, updates, strict=True):
        if decoupled:
            p.mul_(a)
        p.add_(u * -lr)
        if proximal:
            p.div_(c)
