r"""One-pass update of one tensor, for each fused optimizer (SPEC.md §1).

Each kernel reads the parameter, its gradient and its state once, updates the state in place
and writes the parameter once. The hyperparameters arrive as a coefficient tensor ``k`` (never
Python numbers, so a changing learning rate never recompiles), already combined in float64 by
the family's ``_fused_<rule>`` function (decay factors from ``_weight_decay.py``) in the order
of :mod:`~adaptopt.optim._fused.layout`: shape
``(K,)``, or ``(numel, K)`` with per-element coefficients when several tensors are updated
as one. The arithmetic runs in the compute dtype of ``k``
(float32 for bf16/fp16/fp32 parameters, float64 for float64 ones); state and parameter are
rounded to their own dtypes only when stored.

Common notation: :math:`d = s\,g + \lambda_2 x` is the gradient with the ``maximize`` sign
:math:`s = \pm 1` and the coupled L2 term (:math:`\lambda_2 = 0` unless
``weight_decay_mode="l2"``); the parameter update
:math:`x \leftarrow (a x - \eta u) / c` of ``_weight_decay.py`` is written
:math:`x \leftarrow (a/c)\,x + (-\eta/c)\,u`.
"""

from __future__ import annotations

from torch import Tensor

from adaptopt.optim._fused import layout


def coupled_gradient(x: Tensor, g: Tensor, sign: Tensor, l2: Tensor) -> Tensor:
    """:math:`d = s\\,g + \\lambda_2 x` in the compute dtype of ``sign``."""
    return g.to(sign.dtype) * sign + x * l2


def gsignsgd(
    p: Tensor, g: Tensor, m: Tensor, v: Tensor | None, k: Tensor, square_gradient: bool
) -> None:
    r"""Generalized SignSGD (Algorithm 1), or Adam with ``square_gradient``.

    ``k``: ``layout.GSIGNSGD`` (s, λ2, β1, 1-β1, β2, 1-β2, 1/sqrt(1-β2^t), ε, a/c,
    -η/((1-β1^t) c)); the
    bias-correction factors are 1 without ``bias_correction``. ``v is None`` when β2 = 0:
    then :math:`\sqrt{v_t} = |m_t|` (or :math:`|g_t|`), and no second state exists.
    """
    c = layout.GSIGNSGD.unpack(k)
    x = p.to(k.dtype)
    d = coupled_gradient(x, g, c["sign"], c["l2"])
    m_t = m.to(k.dtype) * c["beta1"] + d * c["one_minus_beta1"]
    squared = d if square_gradient else m_t
    if v is None:
        root = squared.abs()
    else:
        v_t = v.to(k.dtype) * c["beta2"] + squared * squared * c["one_minus_beta2"]
        v.copy_(v_t)
        root = v_t.sqrt()
    denom = root * c["inv_sqrt_bc2"] + c["eps"]
    u = m_t / denom.masked_fill(denom == 0, 1.0)  # 0/0 := 0, as _base.safe_div
    m.copy_(m_t)
    p.copy_(x * c["decay"] + u * c["step_size"])


def lion(p: Tensor, g: Tensor, m: Tensor, k: Tensor) -> None:
    r"""Lion: ``k``: ``layout.LION`` (s, λ2, β1, 1-β1, β2, 1-β2, a/c, -η/c)."""
    c = layout.LION.unpack(k)
    x = p.to(k.dtype)
    d = coupled_gradient(x, g, c["sign"], c["l2"])
    m_prev = m.to(k.dtype)
    u = (m_prev * c["beta1"] + d * c["one_minus_beta1"]).sign()
    m.copy_(m_prev * c["beta2"] + d * c["one_minus_beta2"])
    p.copy_(x * c["decay"] + u * c["step_size"])


def momentum_direction(
    x: Tensor | None, g: Tensor, b: Tensor | None, k: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    r"""``(d, b_t, b̃)`` of ``_momentum.py``: :math:`b_t = \mu b_{t-1} + d`,
    :math:`\tilde b = c_d\, d + c_b\, b_t` (Nesterov: :math:`c_d = 1, c_b = \mu`; else 0, 1).

    ``k`` starts with ``layout.MOMENTUM_SUMS`` (s, λ2, μ, c_d, c_b); ``x is None`` when
    λ2 = 0 (it is then not read) and ``b is None`` without a momentum buffer (μ = 0,
    :math:`\tilde b = d`).
    """
    c = layout.MOMENTUM_SUMS.unpack(k)
    d = g.to(k.dtype) * c["sign"] if x is None else coupled_gradient(x, g, c["sign"], c["l2"])
    if b is None:
        return d, d, d
    b_t = b.to(k.dtype) * c["momentum"] + d
    return d, b_t, d * c["c_d"] + b_t * c["c_b"]


def momentum_sums(
    p: Tensor | None, g: Tensor, b: Tensor | None, k: Tensor
) -> tuple[Tensor, Tensor]:
    """Pass 1 of clipping/normalization, read-only: ``(Σ d², Σ b̃²)``, returned in float64.

    Summed in the compute dtype: inductor's CPU reductions use cascade summation (relative
    error 3e-7 measured in float32 over 4e7 terms), and float64 arithmetic would make the
    pass compute-bound.
    """
    d, _, b_tilde = momentum_direction(None if p is None else p.to(k.dtype), g, b, k)
    return (d * d).sum().double(), (b_tilde * b_tilde).sum().double()


def momentum_update(p: Tensor, g: Tensor, b: Tensor | None, k: Tensor) -> None:
    r"""Pass 2: :math:`x \leftarrow (a/c)\,x - (\eta/c)(w_b \tilde b + w_d d)`, storing b_t.

    ``k``: ``layout.MOMENTUM_UPDATE`` (s, λ2, μ, c_d, c_b, a/c, -η w_b/c, -η w_d/c), with the
    clipping or normalization weights :math:`w` computed from the global norms of pass 1.
    """
    c = layout.MOMENTUM_UPDATE.unpack(k)
    x = p.to(k.dtype)
    d, b_t, b_tilde = momentum_direction(x, g, b, k)
    if b is not None:
        b.copy_(b_t)
    p.copy_(x * c["decay"] + b_tilde * c["momentum_step"] + d * c["grad_step"])
