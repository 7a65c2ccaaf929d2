r"""The three weight-decay modes shared by every optimizer (SPEC.md §1.3).

For an update direction :math:`u_t`, learning rate :math:`\eta` and decay :math:`\lambda`:

* ``"l2"`` (coupled): :math:`g_t \leftarrow g_t + \lambda x_t` before the direction is formed,
  then :math:`x_{t+1} = x_t - \eta u_t`. Not scale-free.
* ``"decoupled"`` (AdamW, Loshchilov & Hutter 2019):
  :math:`x_{t+1} = (1-\lambda\eta) x_t - \eta u_t`.
* ``"proximal"`` (Zhuang et al., TMLR 2022): :math:`x_{t+1} = (x_t - \eta u_t) / (1 + \lambda\eta)`,
  the exact proximal step of :math:`\tfrac{\lambda}{2}\|x\|^2`; it never flips the sign of a
  weight nor grows it, for any :math:`\eta \ge 0`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

WeightDecayMode = Literal["l2", "decoupled", "proximal"]
WEIGHT_DECAY_MODES: tuple[str, ...] = ("l2", "decoupled", "proximal")


def couple_weight_decay(
    grads: list[Tensor], params: list[Tensor], weight_decay: float, mode: str, foreach: bool
) -> list[Tensor]:
    """``g + λx`` for the coupled ``"l2"`` mode; the gradients unchanged otherwise."""
    if weight_decay == 0 or mode != "l2":
        return grads
    if foreach:
        return list(torch._foreach_add(grads, params, alpha=weight_decay))
    return [g.add(p, alpha=weight_decay) for g, p in zip(grads, params)]


def apply_update(
    params: list[Tensor],
    updates: list[Tensor],
    lr: float | Tensor,
    weight_decay: float,
    mode: str,
    foreach: bool,
) -> None:
    """In place: ``x ← x − η u`` combined with the decoupled or proximal decay of ``mode``."""
    decay = weight_decay != 0 and mode != "l2"
    if foreach:
        if decay and mode == "decoupled":
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        torch._foreach_add_(params, torch._foreach_mul(updates, -lr))
        if decay and mode == "proximal":
            torch._foreach_div_(params, 1 + lr * weight_decay)
        return
    for p, u in zip(params, updates):
        if decay and mode == "decoupled":
            p.mul_(1 - lr * weight_decay)
        p.add_(u * -lr)
        if decay and mode == "proximal":
            p.div_(1 + lr * weight_decay)
