r"""Generalized SignSGD (Crawshaw et al., NeurIPS 2022, Algorithm 1) and its special cases.

Signum (Bernstein et al. 2018) is the case :math:`\beta_2 = 0` and SignSGD the case
:math:`\beta_1 = \beta_2 = 0`; with :math:`\epsilon = 0` all of them are scale-free (SPEC.md §3).
"""

from __future__ import annotations

from typing import Any

import torch

from adaptopt.optim._adam_family import AdamFamily
from adaptopt.optim._base import check_unit_interval, preset
from adaptopt.optim._weight_decay import WeightDecayMode


class GeneralizedSignSGD(AdamFamily):
    r"""Generalized SignSGD: Adam's shape with the *momentum* squared in the second moment.

    .. math::
        \begin{aligned}
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2) m_t^2 \\
        x_{t+1} &= x_t - \eta\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)
        \end{aligned}

    with :math:`\hat m_t = m_t/(1-\beta_1^t)`, :math:`\hat v_t = v_t/(1-\beta_2^t)` when
    ``bias_correction`` else :math:`\hat m = m, \hat v = v` (SPEC.md §1.1). The quotient is taken
    as 0 where :math:`m_t = 0` and :math:`\sqrt{\hat v_t} + \epsilon = 0` (zero gradients and
    :math:`\epsilon = 0` never give NaN). With :math:`\beta_2 = 0`, :math:`\sqrt{v_t} = |m_t|` is
    used directly and no ``exp_avg_sq`` state is stored (Signum needs one state buffer only).

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\eta`.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
        eps: :math:`\epsilon`, added after the square root.
        weight_decay: :math:`\lambda`.
        weight_decay_mode: ``"l2"`` (coupled, the authors' choice), ``"decoupled"`` or
            ``"proximal"`` (see ``adaptopt.optim._weight_decay``).
        bias_correction: divide by :math:`1-\beta^t` (authors: off for CIFAR-10, on for PTB).
        maximize: maximize the objective instead.
        foreach: use the multi-tensor path (default: when all parameters are on CUDA).
        fused: one pass over memory per tensor (``adaptopt.optim._fused``: native multi-tensor
            kernels on CPU, multi-tensor Triton kernels on CUDA); default: on CPU
            (``_base.default_fused``; ``foreach`` on CUDA until the Triton step is measured).
            Never for sharded (DTensor) parameters: ``fused=None`` falls back to the
            non-fused step for them and ``fused=True`` raises ``ValueError``.
        capturable: the step may be captured in a CUDA graph (implies ``fused``; ``lr`` may
            be a 0-d tensor on the device).
        state_dtype: dtype of ``exp_avg``/``exp_avg_sq`` (default: the parameter dtype,
            float32 for bf16/fp16 parameters); ``torch.bfloat16`` halves the state memory.
        stochastic_rounding: round bf16/fp16 parameters stochastically (unbiased) instead of
            to nearest after each step, so that updates and decay below half an ulp are kept
            in expectation; float32/float64 parameters ignore it (``adaptopt.optim._rounding``).
        stochastic_rounding_seed: the seed of the group's rounding stream (default: derived
            from ``torch.initial_seed()`` and the group index); its state is in ``state_dict``.

    State per parameter: ``step`` (a float64 0-d tensor: the bias corrections use the exact
    count up to 2^53 steps), ``exp_avg`` (m) and, if :math:`\beta_2 > 0`, ``exp_avg_sq`` (v).
    """

    # v accumulates m_t^2 here; Adam (``AdamProx``) accumulates g_t^2 (``_adam_family.py``).
    second_moment = "momentum"

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        weight_decay_mode: WeightDecayMode = "l2",
        bias_correction: bool = False,
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
            bias_correction=bias_correction,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
            capturable=capturable,
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
            stochastic_rounding_seed=stochastic_rounding_seed,
        )
        super().__init__(params, defaults)


@preset(
    fixed=dict(eps=0.0, bias_correction=False),
    defaults=dict(lr=1e-4),
    replaced=("betas",),
    added=dict(momentum=0.9),
)
class Signum(GeneralizedSignSGD):
    r"""Signum (Bernstein et al. 2018): :math:`x_{t+1} = x_t - \eta\,\mathrm{sign}(m_t)`.

    Generalized SignSGD with :math:`\beta_2 = 0` and :math:`\epsilon = 0`;
    :math:`m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t` with :math:`\beta_1` = ``momentum``.
    Stores a single state buffer (``exp_avg``) per parameter, so its step moves 20 bytes per
    float32 parameter instead of 28; ``momentum`` is a per-group hyperparameter like ``lr``.
    ``fused``, ``capturable``, ``state_dtype``: see :class:`GeneralizedSignSGD`.
    """

    def _betas(self, group: dict[str, Any]) -> tuple[float, float]:
        return (group["momentum"], 0.0)

    def _validate_group(self, group: dict[str, Any]) -> None:
        check_unit_interval("momentum", group["momentum"])


@preset(fixed=dict(momentum=0.0))
class SignSGD(Signum):
    r"""SignSGD (Bernstein et al. 2018): :math:`x_{t+1} = x_t - \eta\,\mathrm{sign}(g_t)`.

    Signum with ``momentum=0``.
    """
