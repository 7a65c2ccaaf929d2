r"""SGDOL: SGD whose step size is learned online (Zhuang et al., 2019; dissertation ch. 1)."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor

from adaptopt.optim._base import BaseOptimizer, Closure, check_positive, global_dot, implementation
from adaptopt.optim._rounding import GroupRounding
from adaptopt.optim._weight_decay import (
    Scalar,
    WeightDecayMode,
    apply_update,
    descent_gradients,
)


class SGDOL(BaseOptimizer):
    r"""Noise-adaptive SGD: FTRL learns :math:`\eta_t` on a surrogate loss (SPEC.md §1.4).

    Each step draws two independent stochastic gradients :math:`g_t, g'_t` at :math:`x_t` and
    plays the step size learned from the surrogate losses
    :math:`\ell_s(\eta) = -\eta \langle g_s, g'_s\rangle + \tfrac{M}{2}\eta^2\|g_s\|^2`, s < t,
    times the multiplier :math:`\rho_t` = ``lr`` (1 by default; LR schedulers change it):

    .. math::
        \begin{aligned}
        x_{t+1} &= x_t - \rho_t \eta_t g_t \\
        S^{ip}_t &= \alpha + \textstyle\sum_{s \le t} \langle g'_s, g_s\rangle, \qquad
        S^{g}_t = \alpha + \textstyle\sum_{s \le t} \|g_s\|^2 \\
        \eta_{t+1} &= \mathrm{clip}\big(S^{ip}_t / (M S^{g}_t),\ 0,\ 2/M\big),
        \qquad \eta_1 = 1/M
        \end{aligned}

    With :math:`\rho_t = 1` this is the authors' SGDOL (``zhenxun-zhuang/SGDOL``, ``sgdol.py``:
    FTRL-proximal, the step size of a round computed before its gradients are added to the
    sums). The learner never sees :math:`\rho_t`: a schedule scales the steps played, not
    the sums.

    **Two gradients per step.** :meth:`step` requires a closure and calls it twice. Each call
    must compute the loss on a *fresh, independent* minibatch, call ``backward()`` and return
    the loss (zeroing gradients inside the closure is optional: the optimizer clears them
    between the calls)::

        batches = iter(loader)

        def closure():
            x, y = next(batches)
            loss = loss_fn(model(x), y)
            loss.backward()
            return loss

        loss = opt.step(closure)  # returns the first call's loss; consumes two minibatches

    Each param group is its own learner (one group: the single global step size of the
    dissertation). The learned state is kept in the group, so it survives ``state_dict``
    round trips: ``learned_lr`` (:math:`\eta_{t+1}`, the step size the next step plays),
    ``sum_inner_product`` (:math:`S^{ip}`) and ``sum_grad_sq`` (:math:`S^{g}`). ``lr`` is
    only the multiplier :math:`\rho`; the step size applied is ``lr * learned_lr``. A state
    dict saved when ``lr`` held :math:`\eta` (no ``learned_lr`` entry) loads as
    ``learned_lr`` = that value and ``lr`` = 1.

    ``torch.compile(opt.step)`` runs and gives the eager result, but not as one graph: the
    closure's ``backward()`` and the step-size update (Python floats read with ``.item()``)
    break it; the other optimizers compile to one graph on their ``foreach`` path.

    Args:
        smoothness: :math:`M > 0`, an estimate of the smoothness constant (authors: 10).
        alpha: :math:`\alpha > 0`, the initial regulariser of both sums (authors: 10).
        weight_decay, weight_decay_mode: see ``adaptopt.optim._weight_decay`` (in ``"l2"`` mode
            both gradients include :math:`\lambda x_t`; the decoupled and proximal modes use
            the step size :math:`\rho_t \eta_t`).
        lr: the multiplier :math:`\rho \ge 0` of the learned step size (default 1: SGDOL).
        stochastic_rounding, stochastic_rounding_seed: see
            :class:`~adaptopt.optim.GeneralizedSignSGD`.
    """

    def __init__(
        self,
        params: Any,
        smoothness: float = 10.0,
        alpha: float = 10.0,
        weight_decay: float = 0.0,
        weight_decay_mode: WeightDecayMode = "l2",
        *,
        lr: float = 1.0,
        maximize: bool = False,
        foreach: bool | None = None,
        stochastic_rounding: bool = False,
        stochastic_rounding_seed: int | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            smoothness=smoothness,
            alpha=alpha,
            weight_decay=weight_decay,
            weight_decay_mode=weight_decay_mode,
            maximize=maximize,
            foreach=foreach,
            stochastic_rounding=stochastic_rounding,
            stochastic_rounding_seed=stochastic_rounding_seed,
        )
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        check_positive("smoothness", group["smoothness"])
        check_positive("alpha", group["alpha"])
        group.setdefault("sum_inner_product", float(group["alpha"]))
        group.setdefault("sum_grad_sq", float(group["alpha"]))
        group.setdefault("learned_lr", _step_size(group))

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Also the end of ``load_state_dict``: groups saved when ``lr`` held the learned step
        size (no ``learned_lr``) get ``learned_lr = lr`` and the multiplier ``lr = 1``."""
        super().__setstate__(state)
        for group in self.param_groups:
            if "learned_lr" not in group:
                group["learned_lr"], group["lr"] = float(group["lr"]), 1.0

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor | None:  # type: ignore[override]
        """One step; ``closure`` is required and is called twice (see the class docstring).

        Without a closure, a step whose multiplier ``lr`` is 0 in every group is a no-op: that
        is how ``torch.distributed.checkpoint.state_dict`` initializes an optimizer's state
        (zero gradients, ``lr = 0``, ``step()``) before saving or loading it; SGDOL's state
        lives in its param groups and needs no initialization.
        """
        if closure is None and all(group["lr"] == 0 for group in self.param_groups):
            return None
        if closure is None:
            raise RuntimeError(
                "SGDOL.step needs a closure: it is called twice per step, each time computing "
                "the loss on a fresh minibatch, calling backward() and returning the loss"
            )
        with torch.enable_grad():
            loss = closure()
        first = [
            (group, params, [g.clone() for g in grads])
            for group, params, grads in (
                (group, *self._gather(group)) for group in self.param_groups
            )
            if params
        ]
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None
        with torch.enable_grad():
            closure()
        work = []
        for group, params, grads in first:  # every check before any group changes
            second = self._gather(dict(group, params=params))[1]
            if len(second) != len(grads):
                raise RuntimeError("SGDOL: the second closure call left some gradients empty")
            work.append((group, params, grads, second))
        for group, params, grads, second in work:
            self._update(group, params, grads, second)
        return loss

    def _update(  # type: ignore[override]
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], second: list[Tensor]
    ) -> None:
        """Step with the group's learned step size, then learn the next one from both
        gradients (raw: the core applies ``maximize`` and the coupled decay)."""
        step = implementation(group, _single_tensor_sgdol, _multi_tensor_sgdol)
        with GroupRounding(group) as rounding:
            inner_product, grad_sq = step(
                params,
                grads,
                second,
                step_size=group["lr"] * group["learned_lr"],
                weight_decay=group["weight_decay"],
                weight_decay_mode=group["weight_decay_mode"],
                maximize=group["maximize"],
                rounding=rounding,
            )
        group["sum_inner_product"] += inner_product
        group["sum_grad_sq"] += grad_sq
        group["learned_lr"] = _step_size(group)


def _sgdol_step(
    params: list[Tensor],
    grads: list[Tensor],
    second_grads: list[Tensor],
    *,
    step_size: Scalar,
    weight_decay: float,
    weight_decay_mode: str,
    maximize: bool,
    foreach: bool,
    rounding: GroupRounding | None = None,
) -> tuple[float, float]:
    r"""x ← x − ρη g (with the decay); returns this step's :math:`(\langle g', g\rangle,
    \|g\|^2)` for the FTRL sums. ``foreach``: ``torch._foreach_*`` kernels over the whole
    group instead of one tensor at a time (the rest of the step is the same code);
    ``rounding``: how bf16/fp16 parameters are rounded (``_rounding.GroupRounding``; ``None``:
    to nearest)."""
    g, g2 = (
        descent_gradients(
            gs, params, maximize=maximize, weight_decay=weight_decay, mode=weight_decay_mode,
            foreach=foreach,
        )
        for gs in (grads, second_grads)
    )  # fmt: skip
    inner_product, grad_sq = _surrogate_sums(g, g2)
    apply_update(
        params, g, step_size, weight_decay, weight_decay_mode, foreach=foreach, rounding=rounding
    )
    return inner_product, grad_sq


_single_tensor_sgdol = partial(_sgdol_step, foreach=False)
_multi_tensor_sgdol = partial(_sgdol_step, foreach=True)


def _surrogate_sums(grads: list[Tensor], second_grads: list[Tensor]) -> tuple[float, float]:
    r""":math:`\sum \langle g', g\rangle` and :math:`\sum \|g\|^2` over the tensors (host
    floats: the learned step size is a Python number), accumulated in float64
    (``_base.global_dot``). Global over shards: for DTensor parameters (FSDP2) every rank
    gets the sums of the whole model and learns the same step size."""
    return global_dot(second_grads, grads).item(), global_dot(grads, grads).item()


def _step_size(group: dict[str, Any]) -> float:
    """η = clip(S_ip / (M S_g), 0, 2/M), the FTRL minimiser of the summed surrogate losses."""
    m = group["smoothness"]
    return min(max(group["sum_inner_product"] / (m * group["sum_grad_sq"]), 0.0), 2.0 / m)
