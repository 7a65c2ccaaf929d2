r"""Lion (Chen et al., "Symbolic Discovery of Optimization Algorithms", 2023)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from adaptopt.optim import _fused
from adaptopt.optim._base import BaseOptimizer, check_betas
from adaptopt.optim._weight_decay import WeightDecayMode


class Lion(BaseOptimizer):
    r"""Lion: the sign of an interpolated momentum; scale-free (talk §2).

    .. math::
        \begin{aligned}
        u_t &= \mathrm{sign}\big(\beta_1 m_{t-1} + (1-\beta_1) g_t\big) \\
        m_t &= \beta_2 m_{t-1} + (1-\beta_2) g_t, \qquad x_{t+1} = x_t - \eta u_t
        \end{aligned}

    Weight decay is decoupled by default, as in the Lion paper.
    State per parameter: ``exp_avg`` (m). ``fused``, ``capturable``, ``state_dtype``: see
    :class:`~adaptopt.optim.GeneralizedSignSGD`.
    """

    supports_fused = True

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        weight_decay_mode: WeightDecayMode = "decoupled",
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
            betas=betas,
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
        check_betas(group["betas"])

    def _exp_avgs(self, group: dict[str, Any], params: list[Tensor]) -> list[Tensor]:
        for p in params:
            if not self.state[p]:
                self.state[p]["exp_avg"] = self._zeros(group, p)
        return [self.state[p]["exp_avg"] for p in params]

    def _direction(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        prepared: dict[str, list[Tensor]],
        norms: dict[str, Tensor],
    ) -> list[Tensor]:
        beta1, beta2 = group["betas"]
        exp_avgs = self._exp_avgs(group, params)
        if group["foreach"]:
            updates = torch._foreach_mul(exp_avgs, beta1)
            torch._foreach_add_(updates, grads, alpha=1 - beta1)
            torch._foreach_sign_(updates)
            torch._foreach_mul_(exp_avgs, beta2)
            torch._foreach_add_(exp_avgs, grads, alpha=1 - beta2)
            return list(updates)
        signs: list[Tensor] = []
        for m, g in zip(exp_avgs, grads):
            signs.append(m.mul(beta1).add_(g, alpha=1 - beta1).sign_())
            m.mul_(beta2).add_(g, alpha=1 - beta2)
        return signs

    def _fused_step(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        prepared: dict[str, list[Tensor]],
        norms: dict[str, Tensor],
    ) -> None:
        beta1, beta2 = group["betas"]
        _fused.lion(
            params,
            grads,
            self._exp_avgs(group, params),
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            weight_decay_mode=group["weight_decay_mode"],
            maximize=group["maximize"],
            cache=self._fused_cache(group),
        )
