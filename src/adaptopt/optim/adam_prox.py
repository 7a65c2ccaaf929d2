r"""Adam with an exact proximal weight-decay step (Zhuang et al., TMLR 2022; talk §3)."""

from __future__ import annotations

from typing import Any

import torch

from adaptopt.optim._adam_family import AdamFamily
from adaptopt.optim._weight_decay import WeightDecayMode


class AdamProx(AdamFamily):
    r"""Adam (Kingma & Ba 2015) with selectable weight decay, proximal by default.

    .. math::
        \begin{aligned}
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        u_t &= \frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}, \qquad
        x_{t+1} = \frac{x_t - \eta u_t}{1 + \lambda\eta}
        \end{aligned}

    ``weight_decay_mode="l2"`` is ``torch.optim.Adam``, ``"decoupled"`` is ``torch.optim.AdamW``
    and ``"proximal"`` (default) is the exact proximal step of :math:`\tfrac{\lambda}{2}\|x\|^2`
    that AdamW approximates to :math:`O(\eta^2)`. Shares the Adam-family core
    (``_adam_family.py``) with Generalized SignSGD, with :math:`g_t^2` instead of
    :math:`m_t^2` in the second moment. ``fused``, ``capturable``, ``state_dtype``: see
    :class:`~adaptopt.optim.GeneralizedSignSGD`.

    State per parameter: ``step``, ``exp_avg`` (m) and, if :math:`\beta_2 > 0`,
    ``exp_avg_sq`` (v).
    """

    second_moment = "gradient"

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        weight_decay_mode: WeightDecayMode = "proximal",
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
            eps=eps,
            weight_decay=weight_decay,
            weight_decay_mode=weight_decay_mode,
            bias_correction=True,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
            capturable=capturable,
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
            stochastic_rounding_seed=stochastic_rounding_seed,
        )
        super().__init__(params, defaults)
