r"""Clipped SGD with momentum (Zhang et al., NeurIPS 2020, Algorithm 1) and its two presets."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from adaptopt.optim._base import BaseOptimizer, check_nonnegative, check_positive
from adaptopt.optim._momentum import momentum_directions
from adaptopt.optim._weight_decay import WeightDecayMode


def clip_coefficient(lr: float, gamma: float, norm: Tensor) -> Tensor:
    r""":math:`c = \min(1, \gamma / (\eta \|\cdot\|))`, so that
    :math:`\eta c = \min(\eta, \gamma/\|\cdot\|)`.

    A zero norm or learning rate gives 1 (:math:`\gamma/0 = \infty`), never NaN.
    """
    return torch.clamp(gamma / (lr * norm), max=1.0)


class SGDClip(BaseOptimizer):
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
        )
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        check_positive("gamma", group["gamma"])
        check_nonnegative("momentum", group["momentum"])
        if not 0.0 <= group["nu"] <= 1.0:
            raise ValueError(f"Invalid nu: {group['nu']!r} (must be in [0, 1])")
        if group["nesterov"] and group["momentum"] == 0:
            raise ValueError("Invalid nesterov: Nesterov momentum requires momentum > 0")

    def _prepare(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]
    ) -> dict[str, list[Tensor]]:
        prepared = {}
        if group["nu"] > 0:
            states = [self.state[p] for p in params]
            prepared["momentum"] = momentum_directions(
                states, grads, group["momentum"], group["nesterov"], group["foreach"]
            )
        if group["nu"] < 1:
            prepared["grad"] = grads
        return prepared

    def _direction(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        prepared: dict[str, list[Tensor]],
        norms: dict[str, Tensor],
    ) -> list[Tensor]:
        weights = {"momentum": group["nu"], "grad": 1 - group["nu"]}
        terms = [
            (tensors, weights[name] * clip_coefficient(group["lr"], group["gamma"], norms[name]))
            for name, tensors in prepared.items()
        ]
        if group["foreach"]:
            scaled = [torch._foreach_mul(tensors, c) for tensors, c in terms]
            return list(scaled[0]) if len(scaled) == 1 else list(torch._foreach_add(*scaled))
        return [sum(tensors[i] * c for tensors, c in terms) for i in range(len(params))]


class SGDClipGrad(SGDClip):
    r"""Clipped SGD (Zhang et al. 2020, :math:`\nu = 0`):
    :math:`x_{t+1} = x_t - \min(\eta, \gamma/\|g_t\|)\, g_t`."""

    def __init__(
        self,
        params: Any,
        lr: float = 0.1,
        gamma: float = 1.0,
        weight_decay: float = 0.0,
        weight_decay_mode: WeightDecayMode = "l2",
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            gamma=gamma,
            momentum=0.0,
            nu=0.0,
            weight_decay=weight_decay,
            weight_decay_mode=weight_decay_mode,
            maximize=maximize,
            foreach=foreach,
        )


class SGDClipMomentum(SGDClip):
    r"""SGD with clipped momentum (Zhang et al. 2020, :math:`\nu = 1`):
    :math:`x_{t+1} = x_t - \min(\eta, \gamma/\|b_t\|)\, b_t`."""

    def __init__(
        self,
        params: Any,
        lr: float = 0.1,
        gamma: float = 1.0,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        weight_decay_mode: WeightDecayMode = "l2",
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            gamma=gamma,
            momentum=momentum,
            nu=1.0,
            nesterov=nesterov,
            weight_decay=weight_decay,
            weight_decay_mode=weight_decay_mode,
            maximize=maximize,
            foreach=foreach,
        )
