r"""The Adam family: Adam (``AdamProx``) and Generalized SignSGD (and its presets).

Both keep :math:`m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t` and a second moment
:math:`v_t = \beta_2 v_{t-1} + (1-\beta_2) s_t^2`, and step
:math:`x_{t+1} = x_t - \eta\,\hat m_t / (\sqrt{\hat v_t} + \epsilon)`; they differ in
:math:`s_t` (SPEC.md §1.1, §1.2):

* Adam: :math:`s_t = g_t` (``second_moment = "gradient"``);
* Generalized SignSGD: :math:`s_t = m_t` (``second_moment = "momentum"``).

:math:`\hat m, \hat v` are bias-corrected (÷(1−β^t)) with ``bias_correction``. With
:math:`\beta_2 = 0`, :math:`\sqrt{v_t} = |s_t|` is used directly and no ``exp_avg_sq`` is stored.
The quotient is 0 where numerator and denominator are 0 (``_base.safe_div``): a zero gradient
with :math:`\epsilon = 0` never gives NaN.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from adaptopt.optim import _fused
from adaptopt.optim._base import (
    BaseOptimizer,
    check_betas,
    check_nonnegative,
    foreach_safe_div,
    implementation,
    safe_div,
    step_counter,
)
from adaptopt.optim._fused import layout
from adaptopt.optim._rounding import GroupRounding, lifted_fused
from adaptopt.optim._weight_decay import (
    Scalar,
    apply_update,
    descent_gradients,
    l2_coefficient,
    update_coefficients,
)


class AdamFamily(BaseOptimizer):
    """Shell of the family: state, validation and dispatch to the functional core below.

    Subclasses set ``second_moment`` and a constructor whose groups hold ``lr``, ``betas``
    (or override :meth:`_betas`), ``eps``, ``bias_correction`` and the common entries.
    """

    second_moment: ClassVar[Literal["gradient", "momentum"]]
    supports_fused = True

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

    def _update(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> None:
        beta1, beta2 = self._betas(group)
        states = [self._state(group, p) for p in params]
        step = implementation(
            group, _single_tensor_adam_family, _multi_tensor_adam_family, _fused_adam_family
        )
        with GroupRounding(group) as rounding:
            step(
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
                square_gradient=self.second_moment == "gradient",
                rounding=rounding,
                cache=self._fused_cache(group),
            )


def _single_tensor_adam_family(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor] | None,
    steps: list[Tensor],
    *,
    lr: Scalar,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    weight_decay_mode: str,
    bias_correction: bool,
    maximize: bool,
    square_gradient: bool,
    rounding: GroupRounding | None = None,
    cache: dict[str, Any] | None = None,
) -> None:
    """Reference: one parameter at a time, following Algorithm 1 (or Adam) line by line.

    ``exp_avg_sqs`` is ``None`` when β2 = 0; ``square_gradient``: Adam's :math:`s_t = g_t`;
    ``rounding``: how bf16/fp16 parameters are rounded (``_rounding.GroupRounding``; ``None``:
    to nearest); ``cache``: the fused step's native plans, unused here (the arguments of the
    three implementations are the same).
    """
    grads = descent_gradients(
        grads, params, maximize=maximize, weight_decay=weight_decay, mode=weight_decay_mode,
        foreach=False,
    )  # fmt: skip
    updates = []
    for i, (g, m, step) in enumerate(zip(grads, exp_avgs, steps, strict=True)):
        step += 1
        t = step.item()
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        m_hat = m / (1 - beta1**t) if bias_correction else m
        squared = g if square_gradient else m
        if exp_avg_sqs is not None:
            v = exp_avg_sqs[i]
            v.mul_(beta2).addcmul_(squared, squared, value=1 - beta2)
            v_hat = v / (1 - beta2**t) if bias_correction else v
            denom = v_hat.sqrt()
        else:
            denom = squared.abs()  # sqrt(v_t) = |s_t|, without the round trip through s_t^2
        updates.append(safe_div(m_hat, denom.add_(eps)))
    apply_update(
        params, updates, lr, weight_decay, weight_decay_mode, foreach=False, rounding=rounding
    )


def _multi_tensor_adam_family(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor] | None,
    steps: list[Tensor],
    *,
    lr: Scalar,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    weight_decay_mode: str,
    bias_correction: bool,
    maximize: bool,
    square_gradient: bool,
    rounding: GroupRounding | None = None,
    cache: dict[str, Any] | None = None,
) -> None:
    """The same function with ``torch._foreach_*`` kernels over the whole group."""
    grads = descent_gradients(
        grads, params, maximize=maximize, weight_decay=weight_decay, mode=weight_decay_mode,
        foreach=True,
    )  # fmt: skip
    torch._foreach_add_(steps, 1)
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
    ts: list[Any] = []  # the step counts t, one per tensor
    if bias_correction:
        # eagerly the corrections are Python floats (as in the reference); under torch.compile
        # 0-d tensors in the state's precision, so that the graph does not break on .item()
        if torch.compiler.is_compiling():
            dtypes = [torch.promote_types(m.dtype, torch.float32) for m in exp_avgs]
            ts = [s.to(dtype) for s, dtype in zip(steps, dtypes, strict=True)]
        else:
            ts = [s.item() for s in steps]
    m_hat = (
        torch._foreach_div(exp_avgs, [1 - beta1**t for t in ts]) if bias_correction else exp_avgs
    )
    squared = grads if square_gradient else exp_avgs
    if exp_avg_sqs is not None:
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
    updates = foreach_safe_div(list(m_hat), list(denom))
    apply_update(
        params, updates, lr, weight_decay, weight_decay_mode, foreach=True, rounding=rounding
    )


def _fused_adam_family(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor] | None,
    steps: list[Tensor],
    *,
    lr: Scalar,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    weight_decay_mode: str,
    bias_correction: bool,
    maximize: bool,
    square_gradient: bool,
    rounding: GroupRounding | None = None,
    cache: dict[str, Any] | None = None,
) -> None:
    """The same function in one pass per tensor (``_fused.kernels.gsignsgd`` and its native
    and Triton twins); ``steps`` are float64 counters, exact to 2^53, on the parameter
    device. The native call increments them and bias-corrects each tensor itself; the other
    backends get per-tensor coefficients. With stochastic ``rounding``, on float32 copies of
    bf16/fp16 parameters (``_rounding.lifted_fused``)."""
    device = _fused.check_devices(params)
    decay, step_size = update_coefficients(lr, weight_decay, weight_decay_mode)
    coefficients = dict(
        sign=-1.0 if maximize else 1.0,
        l2=l2_coefficient(weight_decay, weight_decay_mode),
        beta1=beta1,
        one_minus_beta1=1 - beta1,
        beta2=beta2,
        one_minus_beta2=1 - beta2,
        eps=eps,
        decay=decay,
    )
    sqs = [None] * len(params) if exp_avg_sqs is None else exp_avg_sqs
    with lifted_fused(params, grads, rounding) as grads:
        if _fused.uses_native(device):
            flags = layout.FLAGS["square_gradient"] * square_gradient
            flags |= layout.FLAGS["bias_correction"] * bias_correction
            row = layout.GSIGNSGD.row(**coefficients, inv_sqrt_bc2=1.0, step_size=step_size)
            _fused.native.launch(
                "gsignsgd", params, [grads, exp_avgs, sqs], row, steps=steps, flags=flags,
                cache=cache,
            )  # fmt: skip
            return
        torch._foreach_add_(steps, 1)
        bc1: Scalar = 1.0
        inv_sqrt_bc2: Scalar = 1.0
        if bias_correction:  # per tensor: each has its own step count
            t = torch.stack(steps).to(device=device, dtype=torch.float64)
            bc1, inv_sqrt_bc2 = 1 - beta1**t, (1 - beta2**t).rsqrt()
        row = layout.GSIGNSGD.row(
            **coefficients, inv_sqrt_bc2=inv_sqrt_bc2, step_size=step_size / bc1
        )
        table = _fused.coefficient_table(row, device)
        _fused.launch("gsignsgd", params, [grads, exp_avgs, sqs], table, square_gradient)
