r"""The three weight-decay modes shared by every optimizer (SPEC.md §1.3).

For an update direction :math:`u_t`, learning rate :math:`\eta` and decay :math:`\lambda`:

* ``"l2"`` (coupled): :math:`g_t \leftarrow g_t + \lambda x_t` before the direction is formed,
  then :math:`x_{t+1} = x_t - \eta u_t`. Not scale-free.
* ``"decoupled"`` (AdamW, Loshchilov & Hutter 2019):
  :math:`x_{t+1} = (1-\lambda\eta) x_t - \eta u_t`.
* ``"proximal"`` (Zhuang et al., TMLR 2022): :math:`x_{t+1} = (x_t - \eta u_t) / (1 + \lambda\eta)`,
  the exact proximal step of :math:`\tfrac{\lambda}{2}\|x\|^2`; it never flips the sign of a
  weight nor grows it, for any :math:`\eta \ge 0`.

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
    rounding: GroupRounding | None = None,
) -> None:
    r"""In place: ``x ← x − η u`` combined with the decoupled or proximal decay of ``mode``.

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
        for i, value in zip(low, wide):
            rounding.store_(params[i], value)
        kept = sorted(set(range(len(params))) - set(low))
        params, updates = [params[i] for i in kept], [updates[i] for i in kept]
    if params:
        _update(params, updates, lr, weight_decay, mode, foreach)


def _update(
    params: list[Tensor],
    updates: list[Tensor],
    lr: float | Tensor,
    weight_decay: float,
    mode: str,
    foreach: bool,
) -> None:
    """``apply_update`` on tensors of one precision, in place in their dtype."""
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
