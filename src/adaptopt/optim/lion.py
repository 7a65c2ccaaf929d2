r"""Lion (Chen et al., "Symbolic Discovery of Optimization Algorithms", 2023)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from adaptopt.optim import _fused
from adaptopt.optim._base import BaseOptimizer, check_betas, implementation
from adaptopt.optim._fused import layout
from adaptopt.optim._rounding import GroupRounding, lifted_fused
from adaptopt.optim._weight_decay import (
    Scalar,
    WeightDecayMode,
    apply_update,
    descent_gradients,
    l2_coefficient,
    update_coefficients,
)


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

    def _update(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> None:
        beta1, beta2 = group["betas"]
        step = implementation(group, _single_tensor_lion, _multi_tensor_lion, _fused_lion)
        with GroupRounding(group) as rounding:
            step(
                params,
                grads,
                self._exp_avgs(group, params),
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                weight_decay_mode=group["weight_decay_mode"],
                maximize=group["maximize"],
                rounding=rounding,
                cache=self._fused_cache(group),
            )


def _single_tensor_lion(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    *,
    lr: Scalar,
    beta1: float,
    beta2: float,
    weight_decay: float,
    weight_decay_mode: str,
    maximize: bool,
    rounding: GroupRounding | None = None,
    cache: dict[str, Any] | None = None,
) -> None:
    """Reference: u_t = sign(β1 m + (1-β1) g), then m_t = β2 m + (1-β2) g, one tensor at a time.

    ``rounding``: how bf16/fp16 parameters are rounded (``_rounding.GroupRounding``; ``None``:
    to nearest); ``cache``: the fused step's native plans, unused here (the arguments of the
    three implementations are the same).
    """
    grads = descent_gradients(
        grads, params, maximize=maximize, weight_decay=weight_decay, mode=weight_decay_mode,
        foreach=False,
    )  # fmt: skip
    signs: list[Tensor] = []
    for m, g in zip(exp_avgs, grads, strict=True):
        signs.append(m.mul(beta1).add_(g, alpha=1 - beta1).sign_())
        m.mul_(beta2).add_(g, alpha=1 - beta2)
    apply_update(
        params, signs, lr, weight_decay, weight_decay_mode, foreach=False, rounding=rounding
    )


def _multi_tensor_lion(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    *,
    lr: Scalar,
    beta1: float,
    beta2: float,
    weight_decay: float,
    weight_decay_mode: str,
    maximize: bool,
    rounding: GroupRounding | None = None,
    cache: dict[str, Any] | None = None,
) -> None:
    """The same function with ``torch._foreach_*`` kernels over the whole group."""
    grads = descent_gradients(
        grads, params, maximize=maximize, weight_decay=weight_decay, mode=weight_decay_mode,
        foreach=True,
    )  # fmt: skip
    updates = torch._foreach_mul(exp_avgs, beta1)
    torch._foreach_add_(updates, grads, alpha=1 - beta1)
    torch._foreach_sign_(updates)
    torch._foreach_mul_(exp_avgs, beta2)
    torch._foreach_add_(exp_avgs, grads, alpha=1 - beta2)
    apply_update(
        params, list(updates), lr, weight_decay, weight_decay_mode, foreach=True, rounding=rounding
    )


def _fused_lion(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    *,
    lr: Scalar,
    beta1: float,
    beta2: float,
    weight_decay: float,
    weight_decay_mode: str,
    maximize: bool,
    rounding: GroupRounding | None = None,
    cache: dict[str, Any] | None = None,
) -> None:
    """The same function in one pass per tensor (``_fused.kernels.lion``, native, Triton);
    with stochastic ``rounding``, on float32 copies of bf16/fp16 parameters
    (``_rounding.lifted_fused``)."""
    decay, step_size = update_coefficients(lr, weight_decay, weight_decay_mode)
    row = layout.LION.row(
        sign=-1.0 if maximize else 1.0,
        l2=l2_coefficient(weight_decay, weight_decay_mode),
        beta1=beta1,
        one_minus_beta1=1 - beta1,
        beta2=beta2,
        one_minus_beta2=1 - beta2,
        decay=decay,
        step_size=step_size,
    )
    with lifted_fused(params, grads, rounding) as grads:
        _fused.launch_row("lion", params, [grads, exp_avgs], row, cache=cache)
