r"""Clipped SGD with momentum (Zhang et al., NeurIPS 2020, Algorithm 1) and its two presets."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from adaptopt.optim._base import check_nonnegative, check_positive, preset
from adaptopt.optim._momentum import GlobalNormSGD
from adaptopt.optim._weight_decay import WeightDecayMode


def clip_coefficient(lr: float, gamma: float, norm: Tensor) -> Tensor:
    r""":math:`c = \min(1, \gamma / (\eta \|\cdot\|))`, so that
    :math:`\eta c = \min(\eta, \gamma/\|\cdot\|)`.

    A zero norm or learning rate gives 1 (:math:`\gamma/0 = \infty`), never NaN.
    """
    return torch.clamp(gamma / (lr * norm), max=1.0)


class SGDClip(GlobalNormSGD):
    r"""SGD with global-norm clipping of the gradient and/or the momentum (SPEC.md §1.2).

    .. math::
        \begin{aligned}
        d_t &= g_t\ (+\lambda x_t \text{ in l2 mode}), \qquad
        b_t = \mu b_{t-1} + d_t\ (b_1 = d_1), \quad \tilde b_t = b_t \text{ or } d_t + \mu b_t
        \text{ (Nesterov)} \\
        x_{t+1} &= x_t - \Big[\nu \min\big(\eta, \tfrac{\gamma}{\|\tilde b_t\|}\big) \tilde b_t
          + (1-\nu) \min\big(\eta, \tfrac{\gamma}{\|d_t\|}\big) d_t\Big]
        \end{aligned}

    Norms are global L2 norms over every parameter of every group (of the groups that use the
    term). ``nu=0`` is :class:`SGDClipGrad`, ``nu=1`` :class:`SGDClipMomentum`. With decoupled or
    proximal decay the bracket is the step :math:`\eta u_t` of ``adaptopt.optim._weight_decay``.

    Args:
        lr: :math:`\eta`. gamma: clipping threshold :math:`\gamma > 0`. momentum: :math:`\mu`.
        nu: :math:`\nu \in [0, 1]` mixing the clipped momentum and clipped gradient steps.
        nesterov: use :math:`d_t + \mu b_t`. weight_decay, weight_decay_mode: see GSignSGD.
        fused, capturable, state_dtype: see GSignSGD; the fused step makes a read-only pass
            for the norms, then one update pass.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 0.1,
        gamma: float = 1.0,
        momentum: float = 0.9,
        nu: float = 1.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        weight_decay_mode: WeightDecayMode = "l2",
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        state_dtype: torch.dtype | None = None,
        stochastic_rounding: bool = False,
        stochastic_rounding_seed: int | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            gamma=gamma,
            momentum=momentum,
            nu=nu,
            nesterov=nesterov,
            weight_decay=weight_decay,
            weight_decay_mode=weight_decay_mode,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
            capturable=capturable,
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
            stochastic_rounding_seed=stochastic_rounding_seed,
        )
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        check_positive("gamma", group["gamma"])
        check_nonnegative("momentum", group["momentum"])
        if not 0.0 <= group["nu"] <= 1.0:
            raise ValueError(f"Invalid nu: {group['nu']!r} (must be in [0, 1])")
        if group["nesterov"] and group["momentum"] == 0:
            raise ValueError("Invalid nesterov: Nesterov momentum requires momentum > 0")

    def _terms(self, group: dict[str, Any]) -> tuple[str, ...]:
        used = {"momentum": group["nu"] > 0, "grad": group["nu"] < 1}
        return tuple(name for name, use in used.items() if use)

    def _weights(self, group: dict[str, Any], norms: dict[str, Tensor]) -> dict[str, Tensor]:
        mix = {"momentum": group["nu"], "grad": 1 - group["nu"]}
        return {
            name: mix[name] * clip_coefficient(group["lr"], group["gamma"], norms[name])
            for name in self._terms(group)
        }


@preset(fixed=dict(momentum=0.0, nu=0.0, nesterov=False))
class SGDClipGrad(SGDClip):
    r"""Clipped SGD (Zhang et al. 2020, :math:`\nu = 0`):
    :math:`x_{t+1} = x_t - \min(\eta, \gamma/\|g_t\|)\, g_t`."""


@preset(fixed=dict(nu=1.0))
class SGDClipMomentum(SGDClip):
    r"""SGD with clipped momentum (Zhang et al. 2020, :math:`\nu = 1`):
    :math:`x_{t+1} = x_t - \min(\eta, \gamma/\|b_t\|)\, b_t`."""
