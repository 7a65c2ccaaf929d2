r"""The PyTorch-convention momentum buffer and the global-norm SGD family built on it.

SPEC.md §1.2: :math:`d_t = s\,g_t + \lambda_2 x_t`, :math:`b_t = \mu b_{t-1} + d_t` with
:math:`b_1 = d_1` (equivalently :math:`b_0 = 0`), and :math:`\tilde b_t = b_t` or the
Nesterov direction :math:`d_t + \mu b_t`. :class:`GlobalNormSGD` is the shared shell of the
clipped (``clip.py``) and normalized (``normalized.py``) variants; its functional core has two
phases, because the weights need global norms over every param group:

1. ``*_momentum_terms``: update the buffers and return the terms :math:`\tilde b_t`
   (``"momentum"``) and :math:`d_t` (``"grad"``) the group uses (the fused phase returns
   their norms instead, from a read-only pass);
2. ``*_weighted_step``: :math:`x_{t+1} = x_t - \eta \sum w_{\text{term}} \cdot \text{term}`
   with the decay of ``_weight_decay.py``.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor

from adaptopt.optim import _fused
from adaptopt.optim._base import BaseOptimizer, global_norm, implementation
from adaptopt.optim._fused import layout
from adaptopt.optim._rounding import GroupRounding, lifted_fused
from adaptopt.optim._weight_decay import (
    Scalar,
    apply_update,
    descent_gradients,
    l2_coefficient,
    update_coefficients,
)

Work = list[tuple[dict[str, Any], list[Tensor], list[Tensor]]]


class GlobalNormSGD(BaseOptimizer):
    r"""SGD momentum whose step weights its terms by functions of their global norms.

    .. math:: x_{t+1} = x_t - \eta \sum_{\text{term}} w_{\text{term}} \cdot \text{term}

    over the terms ``"momentum"`` (:math:`\tilde b_t`: :math:`b_t` or the Nesterov direction)
    and ``"grad"`` (:math:`d_t`), with weights :math:`w` computed from the global norms of the
    terms (before the decoupled or proximal decay of ``_weight_decay.py``). Subclasses name
    their terms and weights; every group has ``momentum`` and ``nesterov``.
    """

    supports_fused = True

    def _terms(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The terms of ``group``'s step, among ``("momentum", "grad")``."""
        raise NotImplementedError

    def _weights(self, group: dict[str, Any], norms: dict[str, Tensor]) -> dict[str, Tensor]:
        """The weight of each of ``group``'s terms, given the global norms of the terms."""
        raise NotImplementedError

    def _buffers(self, group: dict[str, Any], params: list[Tensor]) -> list[Tensor] | None:
        """The momentum buffers (created at zero), or ``None`` when no term uses them."""
        if group["momentum"] == 0 or "momentum" not in self._terms(group):
            return None
        for p in params:
            if "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = self._zeros(group, p)
        return [self.state[p]["momentum_buffer"] for p in params]

    @staticmethod
    def _options(group: dict[str, Any]) -> dict[str, Any]:
        return {
            key: group[key]
            for key in ("momentum", "nesterov", "weight_decay", "weight_decay_mode", "maximize")
        }

    def _update_groups(self, work: Work) -> None:
        buffers = [self._buffers(group, params) for group, params, _ in work]
        terms = [
            implementation(
                group, _single_tensor_momentum_terms, _multi_tensor_momentum_terms,
                _fused_momentum_norms,
            )(
                params, grads, bufs, terms=self._terms(group), cache=self._fused_cache(group),
                **self._options(group),
            )
            for (group, params, grads), bufs in zip(work, buffers, strict=True)
        ]  # fmt: skip
        to_norm: dict[str, list[Tensor]] = {}
        for named in terms:
            for name, tensors in named.items():
                to_norm.setdefault(name, []).extend(tensors)
        foreach = any(group["foreach"] for group, _, _ in work)
        norms = {name: global_norm(tensors, foreach) for name, tensors in to_norm.items()}
        for (group, params, grads), bufs, named in zip(work, buffers, terms, strict=True):
            step = implementation(
                group, _single_tensor_weighted_step, _multi_tensor_weighted_step,
                _fused_weighted_step,
            )  # fmt: skip
            with GroupRounding(group) as rounding:
                step(
                    params, grads, bufs, named, self._weights(group, norms), lr=group["lr"],
                    rounding=rounding, cache=self._fused_cache(group), **self._options(group),
                )  # fmt: skip


def _single_tensor_momentum_terms(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor] | None,
    *,
    terms: tuple[str, ...],
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    weight_decay_mode: str,
    maximize: bool,
    cache: dict[str, Any] | None = None,
) -> dict[str, list[Tensor]]:
    """Phase 1, one tensor at a time: b_t = μ b + d in place; the terms ``terms``.

    Without buffers (μ = 0) :math:`\\tilde b_t = d_t`. ``cache``: the fused phase's native
    plans, unused here (the arguments of the three implementations are the same).
    """
    d = descent_gradients(
        grads, params, maximize=maximize, weight_decay=weight_decay, mode=weight_decay_mode,
        foreach=False,
    )  # fmt: skip
    named = {"grad": d}
    if "momentum" in terms:
        if bufs is None:
            named["momentum"] = d
        else:
            directions = []
            for b, d_i in zip(bufs, d, strict=True):
                b.mul_(momentum).add_(d_i)
                directions.append(d_i.add(b, alpha=momentum) if nesterov else b)
            named["momentum"] = directions
    return {name: named[name] for name in terms}


def _multi_tensor_momentum_terms(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor] | None,
    *,
    terms: tuple[str, ...],
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    weight_decay_mode: str,
    maximize: bool,
    cache: dict[str, Any] | None = None,
) -> dict[str, list[Tensor]]:
    """Phase 1 with ``torch._foreach_*`` kernels over the whole group."""
    d = descent_gradients(
        grads, params, maximize=maximize, weight_decay=weight_decay, mode=weight_decay_mode,
        foreach=True,
    )  # fmt: skip
    named = {"grad": d}
    if "momentum" in terms:
        if bufs is None:
            named["momentum"] = d
        else:
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, d)
            named["momentum"] = (
                list(torch._foreach_add(d, bufs, alpha=momentum)) if nesterov else bufs
            )
    return {name: named[name] for name in terms}


def _momentum_prefix(
    momentum: float, nesterov: bool, weight_decay: float, weight_decay_mode: str, maximize: bool
) -> dict[str, float]:
    """The ``layout.MOMENTUM_SUMS`` entries (s, λ2, μ, c_d, c_b) of
    ``kernels.momentum_direction``: :math:`\\tilde b = c_d d + c_b b_t`."""
    c_d, c_b = (1.0, momentum) if nesterov else (0.0, 1.0)
    return dict(
        sign=-1.0 if maximize else 1.0,
        l2=l2_coefficient(weight_decay, weight_decay_mode),
        momentum=momentum,
        c_d=c_d,
        c_b=c_b,
    )


def _fused_momentum_norms(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor] | None,
    *,
    terms: tuple[str, ...],
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    weight_decay_mode: str,
    maximize: bool,
    cache: dict[str, Any] | None = None,
) -> dict[str, list[Tensor]]:
    """Phase 1 of the fused step, read-only: the group's norms ``‖d‖`` and ``‖b̃‖`` (float64
    0-d tensors, as one-element lists: their global norm is the norm over every group), where
    b̃ is the momentum direction that :func:`_fused_weighted_step` will store and use."""
    grad_norm, momentum_norm = fused_momentum_norms(
        params, grads, bufs, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
        weight_decay_mode=weight_decay_mode, maximize=maximize, cache=cache,
    )  # fmt: skip
    group_norms = {"momentum": momentum_norm, "grad": grad_norm}
    return {name: [group_norms[name]] for name in terms}


def fused_momentum_norms(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor] | None,
    *,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    weight_decay_mode: str,
    maximize: bool,
    cache: dict[str, Any] | None = None,
) -> tuple[Tensor, Tensor]:
    """The fused read-only pass: ``(‖d‖, ‖b̃‖)`` of one group as float64 0-d tensors
    (``cache``: the group's native plans)."""
    prefix = _momentum_prefix(momentum, nesterov, weight_decay, weight_decay_mode, maximize)
    buffers = [None] * len(params) if bufs is None else bufs
    coupled = prefix["l2"] != 0
    sums = _fused.launch_row(
        "momentum_sums", params, [grads, buffers], layout.MOMENTUM_SUMS.row(**prefix),
        read_params=coupled, cache=cache,
    )  # fmt: skip
    return tuple(torch.stack([s for pair in sums for s in pair]).view(-1, 2).sum(0).sqrt())


def _single_tensor_weighted_step(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor] | None,
    terms: dict[str, list[Tensor]],
    weights: dict[str, Tensor],
    *,
    lr: Scalar,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    weight_decay_mode: str,
    maximize: bool,
    rounding: GroupRounding | None = None,
    cache: dict[str, Any] | None = None,
) -> None:
    """Phase 2, one tensor at a time: u = Σ w · term from phase 1's ``terms``, then the decay
    step (``grads``, ``bufs`` and the momentum options are phase 1's, already applied).
    ``rounding``: how bf16/fp16 parameters are rounded (``_rounding.GroupRounding``; ``None``:
    to nearest); ``cache``: the fused step's native plans, unused here."""
    weighted = [(terms[name], w) for name, w in weights.items()]
    updates = [
        cast(Tensor, sum(tensors[i] * w for tensors, w in weighted)) for i in range(len(params))
    ]
    apply_update(
        params, updates, lr, weight_decay, weight_decay_mode, foreach=False, rounding=rounding
    )


def _multi_tensor_weighted_step(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor] | None,
    terms: dict[str, list[Tensor]],
    weights: dict[str, Tensor],
    *,
    lr: Scalar,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    weight_decay_mode: str,
    maximize: bool,
    rounding: GroupRounding | None = None,
    cache: dict[str, Any] | None = None,
) -> None:
    """Phase 2 with ``torch._foreach_*`` kernels over the whole group."""
    scaled = [torch._foreach_mul(terms[name], w) for name, w in weights.items()]
    updates = list(scaled[0])
    for more in scaled[1:]:
        torch._foreach_add_(updates, more)
    apply_update(
        params, updates, lr, weight_decay, weight_decay_mode, foreach=True, rounding=rounding
    )


def _fused_weighted_step(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor] | None,
    terms: dict[str, list[Tensor]],
    weights: dict[str, Tensor],
    *,
    lr: Scalar,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    weight_decay_mode: str,
    maximize: bool,
    rounding: GroupRounding | None = None,
    cache: dict[str, Any] | None = None,
) -> None:
    """Phase 2 in one pass per tensor: :math:`x \\leftarrow (a/c)\\,x - (\\eta/c)(w_b \\tilde b
    + w_d d)`, recomputing d and b̃ from the raw gradients and storing b_t (``terms`` holds
    phase 1's norms only)."""
    fused_momentum_update(
        params, grads, bufs, lr=lr, momentum=momentum, nesterov=nesterov,
        weight_decay=weight_decay, weight_decay_mode=weight_decay_mode, maximize=maximize,
        momentum_weight=weights.get("momentum", 0.0), grad_weight=weights.get("grad", 0.0),
        rounding=rounding, cache=cache,
    )  # fmt: skip


def fused_momentum_update(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor] | None,
    *,
    lr: Scalar,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    weight_decay_mode: str,
    maximize: bool,
    momentum_weight: Scalar,
    grad_weight: Scalar,
    rounding: GroupRounding | None = None,
    cache: dict[str, Any] | None = None,
) -> None:
    """The fused update pass with the weights :math:`w_b, w_d` given; with stochastic
    ``rounding``, on float32 copies of bf16/fp16 parameters (``_rounding.lifted_fused``)."""
    prefix = _momentum_prefix(momentum, nesterov, weight_decay, weight_decay_mode, maximize)
    decay, step_size = update_coefficients(lr, weight_decay, weight_decay_mode)
    row = layout.MOMENTUM_UPDATE.row(
        **prefix,
        decay=decay,
        momentum_step=step_size * momentum_weight,
        grad_step=step_size * grad_weight,
    )
    buffers = [None] * len(params) if bufs is None else bufs
    with lifted_fused(params, grads, rounding) as grads:
        _fused.launch_row("momentum_update", params, [grads, buffers], row, cache=cache)
