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
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

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
) -> None:
    """In place: ``x ← (a x − η u) / c`` with the factors of :func:`decay_factors` (each
    applied only in its mode, so that a tensor ``lr`` never needs a host sync)."""
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
