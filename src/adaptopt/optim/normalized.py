r"""SGD with normalized momentum (Cutkosky & Mehta 2020; Jin et al. 2021)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from adaptopt.optim._base import check_nonnegative, safe_div
from adaptopt.optim._momentum import GlobalNormSGD
from adaptopt.optim._weight_decay import WeightDecayMode


class NormalizedSGD(GlobalNormSGD):
    r"""SGD momentum normalized by its global norm (SPEC.md §1.2, "SGD-Norm").

    .. math::
        b_t = \mu b_{t-1} + d_t\ (b_1 = d_1), \qquad
        x_{t+1} = x_t - \eta\, \tilde b_t / (\|\tilde b_t\| + \epsilon)

    with :math:`d_t = g_t` (:math:`+\lambda x_t` in l2 mode), :math:`\tilde b_t = b_t` or
    :math:`d_t + \mu b_t` (Nesterov), the norm global over every parameter of every group, and
    :math:`\epsilon = 10^{-10}` as in the authors' code (0/0 := 0 if ``eps=0``).
    ``fused``, ``capturable``, ``state_dtype``: see :class:`~adaptopt.optim.SGDClip`.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        weight_decay_mode: WeightDecayMode = "l2",
        eps: float = 1e-10,
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
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            weight_decay_mode=weight_decay_mode,
            eps=eps,
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
        check_nonnegative("momentum", group["momentum"])
        check_nonnegative("eps", group["eps"])
        if group["nesterov"] and group["momentum"] == 0:
            raise ValueError("Invalid nesterov: Nesterov momentum requires momentum > 0")

    def _terms(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum",)

    def _weights(self, group: dict[str, Any], norms: dict[str, Tensor]) -> dict[str, Tensor]:
        norm = norms["momentum"]
        return {"momentum": safe_div(torch.ones_like(norm), norm + group["eps"])}
