r"""The PyTorch-convention momentum buffer shared by the clipped and normalized SGD variants.

SPEC.md §1.2: :math:`b_t = \mu b_{t-1} + d_t` with :math:`b_1 = d_t` (equivalently :math:`b_0 = 0`),
and the Nesterov direction :math:`d_t + \mu b_t`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def momentum_directions(
    states: list[dict[str, Any]],
    grads: list[Tensor],
    momentum: float,
    nesterov: bool,
    foreach: bool,
) -> list[Tensor]:
    """Update each ``momentum_buffer`` and return b_t (or d_t + μ b_t with ``nesterov``).

    With ``momentum == 0`` no buffer is stored and the direction is d_t itself.
    """
    if momentum == 0:
        return grads
    for state, d in zip(states, grads):
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(d, memory_format=torch.preserve_format)
    bufs = [state["momentum_buffer"] for state in states]
    if foreach:
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, grads)
        return list(torch._foreach_add(grads, bufs, alpha=momentum)) if nesterov else bufs
    directions = []
    for b, d in zip(bufs, grads):
        b.mul_(momentum).add_(d)
        directions.append(d.add(b, alpha=momentum) if nesterov else b)
    return directions
