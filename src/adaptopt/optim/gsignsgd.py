r"""Generalized SignSGD (Crawshaw et al., NeurIPS 2022, Algorithm 1) and its special cases.

Signum (Bernstein et al. 2018) is the case :math:`\beta_2 = 0` and SignSGD the case
:math:`\beta_1 = \beta_2 = 0`; with :math:`\epsilon = 0` all of them are scale-free (SPEC.md §3).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from adaptopt.optim import _fused
from adaptopt.optim._base import (
    BaseOptimizer,
    check_betas,
    check_nonnegative,
    check_unit_interval,
    foreach_safe_div,
    safe_div,
    step_counter,
)
from adaptopt.optim._weight_decay import WeightDecayMode


class GeneralizedSignSGD(BaseOptimizer):
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

    # v accumulates m_t^2 here; Adam (``AdamProx``) accumulates g_t^2 with the same machinery.
    _square_gradient = False
    supports_fused = True

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

    def _betas(self, group: dict[str, Any]) -> tuple[float, float]:
        return group["betas"]

    def _validate_group(self, group: dict[str, Any]) -> None:
        check_betas(self._betas(group))
        check_nonnegative("eps", group["eps"])

    def _state(self, group: dict[str, Any], p: Tensor) -> dict[str, Any]:
        """The state of ``p``; the fused step keeps ``step`` (float64, exact to 2^53 steps) on
        the parameter device."""
        state = self.state[p]
        if not state:
            state["step"] = step_counter(0, p.device if group["fused"] else "cpu")
            state["exp_avg"] = self._zeros(group, p)
        if self._betas(group)[1] > 0 and "exp_avg_sq" not in state:
            state["exp_avg_sq"] = self._zeros(group, p)
        return state

    def _direction(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        prepared: dict[str, list[Tensor]],
        norms: dict[str, Tensor],
    ) -> list[Tensor]:
        betas = self._betas(group)
        states = [self._state(group, p) for p in params]
        impl = _multi_tensor_direction if group["foreach"] else _single_tensor_direction
        return impl(
            states, grads, betas, group["eps"], group["bias_correction"], self._square_gradient
        )

    def _fused_step(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        prepared: dict[str, list[Tensor]],
        norms: dict[str, Tensor],
    ) -> None:
        beta1, beta2 = self._betas(group)
        states = [self._state(group, p) for p in params]
        _fused.gsignsgd(
            params,
            grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states] if beta2 > 0 else None,
            [s["step"] for s in states],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            weight_decay_mode=group["weight_decay_mode"],
            bias_correction=group["bias_correction"],
            maximize=group["maximize"],
            square_gradient=self._square_gradient,
            cache=self._fused_cache(group),
        )


def _single_tensor_direction(
    states: list[dict[str, Any]],
    grads: list[Tensor],
    betas: tuple[float, float],
    eps: float,
    bias_correction: bool,
    square_gradient: bool,
) -> list[Tensor]:
    """Reference: one parameter at a time, following Algorithm 1 line by line."""
    beta1, beta2 = betas
    updates = []
    for state, g in zip(states, grads):
        state["step"] += 1
        t = state["step"].item()
        exp_avg = state["exp_avg"]
        exp_avg.mul_(beta1).add_(g, alpha=1 - beta1)
        m_hat = exp_avg / (1 - beta1**t) if bias_correction else exp_avg
        squared = g if square_gradient else exp_avg
        if beta2 > 0:
            exp_avg_sq = state["exp_avg_sq"]
            exp_avg_sq.mul_(beta2).addcmul_(squared, squared, value=1 - beta2)
            v_hat = exp_avg_sq / (1 - beta2**t) if bias_correction else exp_avg_sq
            denom = v_hat.sqrt()
        else:
            denom = squared.abs()  # sqrt(v_t) = |m_t|, without the round trip through m_t^2
        updates.append(safe_div(m_hat, denom.add_(eps)))
    return updates


def _multi_tensor_direction(
    states: list[dict[str, Any]],
    grads: list[Tensor],
    betas: tuple[float, float],
    eps: float,
    bias_correction: bool,
    square_gradient: bool,
) -> list[Tensor]:
    """The same function with ``torch._foreach_*`` kernels over the whole group."""
    beta1, beta2 = betas
    steps = [s["step"] for s in states]
    exp_avgs = [s["exp_avg"] for s in states]
    torch._foreach_add_(steps, 1)
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
    if bias_correction:
        # eagerly the corrections are Python floats (as in the reference); under torch.compile
        # 0-d tensors in the state's precision, so that the graph does not break on .item()
        if torch.compiler.is_compiling():
            dtypes = [torch.promote_types(m.dtype, torch.float32) for m in exp_avgs]
            ts = [s.to(dtype) for s, dtype in zip(steps, dtypes)]
        else:
            ts = [s.item() for s in steps]
    m_hat = (
        torch._foreach_div(exp_avgs, [1 - beta1**t for t in ts]) if bias_correction else exp_avgs
    )
    squared = grads if square_gradient else exp_avgs
    if beta2 > 0:
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, squared, squared, value=1 - beta2)
        v_hat = (
            torch._foreach_div(exp_avg_sqs, [1 - beta2**t for t in ts])
            if bias_correction
            else exp_avg_sqs
        )
        denom = torch._foreach_sqrt(v_hat)
    else:
        denom = torch._foreach_abs(squared)
    torch._foreach_add_(denom, eps)
    return foreach_safe_div(list(m_hat), list(denom))


class Signum(GeneralizedSignSGD):
    r"""Signum (Bernstein et al. 2018): :math:`x_{t+1} = x_t - \eta\,\mathrm{sign}(m_t)`.

    Generalized SignSGD with :math:`\beta_2 = 0` and :math:`\epsilon = 0`;
    :math:`m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t` with :math:`\beta_1` = ``momentum``.
    Stores a single state buffer (``exp_avg``) per parameter, so its step moves 20 bytes per
    float32 parameter instead of 28; ``momentum`` is a per-group hyperparameter like ``lr``.
    ``fused``, ``capturable``, ``state_dtype``: see :class:`GeneralizedSignSGD`.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        momentum: float = 0.9,
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
            momentum=momentum,
            eps=0.0,
            weight_decay=weight_decay,
            weight_decay_mode=weight_decay_mode,
            bias_correction=False,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
            capturable=capturable,
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
            stochastic_rounding_seed=stochastic_rounding_seed,
        )
        BaseOptimizer.__init__(self, params, defaults)

    def _betas(self, group: dict[str, Any]) -> tuple[float, float]:
        return (group["momentum"], 0.0)

    def _validate_group(self, group: dict[str, Any]) -> None:
        check_unit_interval("momentum", group["momentum"])


class SignSGD(Signum):
    r"""SignSGD (Bernstein et al. 2018): :math:`x_{t+1} = x_t - \eta\,\mathrm{sign}(g_t)`.

    Signum with ``momentum=0``.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
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
        super().__init__(
            params,
            lr=lr,
            momentum=0.0,
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
