r"""The PyTorch-convention momentum buffer and the global-norm SGD family built on it.

SPEC.md §1.2: :math:`b_t = \mu b_{t-1} + d_t` with :math:`b_1 = d_t` (equivalently :math:`b_0 = 0`),
and the Nesterov direction :math:`d_t + \mu b_t`. :class:`GlobalNormSGD` is the shared step of
the clipped (``clip.py``) and normalized (``normalized.py``) variants.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor

from adaptopt.optim import _fused
from adaptopt.optim._base import BaseOptimizer


def momentum_directions(
    bufs: list[Tensor] | None,
    grads: list[Tensor],
    momentum: float,
    nesterov: bool,
    foreach: bool,
) -> list[Tensor]:
    """Update each buffer in place and return b_t (or d_t + μ b_t with ``nesterov``).

    Without buffers (``momentum == 0``) the direction is d_t itself.
    """
    if bufs is None:
        return grads
    if foreach:
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, grads)
        return list(torch._foreach_add(grads, bufs, alpha=momentum)) if nesterov else bufs
    directions = []
    for b, d in zip(bufs, grads):
        b.mul_(momentum).add_(d)
        directions.append(d.add(b, alpha=momentum) if nesterov else b)
    return directions


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

    def _prepare(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]
    ) -> dict[str, list[Tensor]]:
        terms, bufs = self._terms(group), self._buffers(group, params)
        if group["fused"]:  # read-only pass: the group's norms, as one-element lists
            grad_norm, momentum_norm = _fused.momentum_norms(
                params,
                grads,
                bufs,
                momentum=group["momentum"],
                nesterov=group["nesterov"],
                weight_decay=group["weight_decay"],
                weight_decay_mode=group["weight_decay_mode"],
                maximize=group["maximize"],
                cache=self._fused_cache(group),
            )
            group_norms = {"momentum": momentum_norm, "grad": grad_norm}
            return {name: [group_norms[name]] for name in terms}
        prepared = {}
        if "momentum" in terms:
            prepared["momentum"] = momentum_directions(
                bufs, grads, group["momentum"], group["nesterov"], group["foreach"]
            )
        if "grad" in terms:
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
        terms = [(prepared[name], w) for name, w in self._weights(group, norms).items()]
        if group["foreach"]:
            scaled = [torch._foreach_mul(tensors, w) for tensors, w in terms]
            return list(scaled[0]) if len(scaled) == 1 else list(torch._foreach_add(*scaled))
        return [
            cast(Tensor, sum(tensors[i] * w for tensors, w in terms)) for i in range(len(params))
        ]

    def _fused_step(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        prepared: dict[str, list[Tensor]],
        norms: dict[str, Tensor],
    ) -> None:
        weights = self._weights(group, norms)
        _fused.momentum_step(
            params,
            grads,
            self._buffers(group, params),
            lr=group["lr"],
            momentum=group["momentum"],
            nesterov=group["nesterov"],
            weight_decay=group["weight_decay"],
            weight_decay_mode=group["weight_decay_mode"],
            maximize=group["maximize"],
            momentum_weight=weights.get("momentum", 0.0),
            grad_weight=weights.get("grad", 0.0),
            cache=self._fused_cache(group),
        )
