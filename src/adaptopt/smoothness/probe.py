"""Measure (L0,L1) and coordinate-wise (L0,L1) smoothness along a training run.

SPEC.md §2, paper §5.2 (Figures 1 and 3). With d = x_{t+1} − x_t and F the mean loss over a
fixed probe set, a probed step records

- global (Fig. 1): ‖∇F(x_t)‖ and L̂_t = max_{γ∈Γ} ‖∇F(x_t + γd) − ∇F(x_t)‖ / ‖γd‖;
- per layer: the same two numbers restricted to the layer's block B of coordinates,
  ‖∇_B F(x_t)‖ and max_γ ‖∇_B F(x_t + γd) − ∇_B F(x_t)‖ / ‖γ d_B‖ (the whole model moves);
- coordinate-wise (Fig. 3), for a fixed seeded sample of coordinates j in each layer:
  |∂_jF(x_{t+1}) − ∂_jF(x_t)| / |x_{t+1,j} − x_{t,j}| against
  min(|∂_jF(x_t)|, |∂_jF(x_{t+1})|).

Blocks or coordinates that did not move (zero denominator) produce no row.

Usage in any loop (``loss_fn(model, batch)`` returns the scalar loss)::

    probe = SmoothnessProbe(loss_fn, probe_batches, every=100, path="smoothness.jsonl")
    for t, batch in enumerate(loader):
        optimizer.zero_grad()
        loss_fn(model, batch).backward()
        with probe.around_step(model, t):  # or probe.before_step(model, t) ... after_step(model)
            optimizer.step()

Side-effect freedom: gradients are taken with :func:`torch.func.functional_call` at detached
copies of the parameters, so ``.grad`` buffers and parameters are never touched; buffers
(BatchNorm running statistics) are passed as copies; all RNG streams (CPU and accelerator) are
forked, so a probe does not advance the training's random numbers; module ``training`` flags
are restored afterwards. ``loss_fn`` must be a function of the model's parameters and the batch
only (no state carried between calls).

Presets (``presets.py``): ``preset="default"`` (eval mode, γ ∈ {1/6,…,5/6}, every 200 steps)
or ``"paper"`` (the paper's / Zhang et al.'s estimator: train mode, common dropout masks, every
step; its callback probe set is 10% of the training data). Every row records the preset.

Mode: ``"eval"`` evaluates F with dropout off and BatchNorm on running statistics, a
deterministic function of x. ``"train"`` keeps the modules' modes as they are in training
(dropout on, BatchNorm on batch statistics); at probed step t every evaluation of probe batch k
reseeds the RNG streams with a seed derived from (``seed``, t, k), so x_t and all points
x_t + γd see the same dropout masks (common random numbers: L̂_t measures one function),
while different probed steps draw different masks.

Cost per probed step: ``n_evals = 1 + |Γ| + [coords_per_layer > 0 and 1 ∉ Γ]``
forward+backward passes over the P probe examples, i.e. an amortised overhead of about
``n_evals · P / (every · B)`` training steps of batch size B (the defaults, 7 evaluations of 4
training batches every 200 steps, cost ≈ 14%). Memory: the probe keeps x_t and ∇F(x_t) (two
copies of the trainable parameters) and needs two more transiently.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from adaptopt.smoothness.presets import PAPER_GAMMAS, PRESETS, get_preset
from adaptopt.smoothness.records import GLOBAL, append_rows

DEFAULT_GAMMAS = PAPER_GAMMAS  # paper §5.2
DEFAULT_EVERY = PRESETS["default"].every
DEFAULT_COORDS_PER_LAYER = 4
DEFAULT_PROBE_BATCHES = PRESETS["default"].max_batches  # callback: probe set size in batches
MODES = ("eval", "train")
MODIFIED = " (modified)"  # label suffix of a probe whose estimator differs from its preset


class _FromPreset:
    """Sentinel: take the value from the preset."""

    def __repr__(self) -> str:
        return "FROM_PRESET"


FROM_PRESET: Any = _FromPreset()

LossFn = Callable[[nn.Module, Any], Tensor]
Params = dict[str, Tensor]


class _Objective(nn.Module):
    """``forward(batch) = loss_fn(model, batch)``, so that functional_call can rebind the
    model's parameters while ``loss_fn`` calls the model itself."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> Tensor:
        return self.loss_fn(self.model, batch)


@dataclass
class _Snapshot:
    """State kept from ``before_step`` (at x_t) to ``after_step`` (at x_{t+1})."""

    step: int
    x: Params  # x_t
    grad: Params  # ∇F(x_t)
    buffers: Params
    batches: list[Any]


def _trainable(model: nn.Module) -> Params:
    params: Params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True): nothing to probe")
    return params


def _rows(
    step: int,
    quantity: str,
    layers: Sequence[str],
    grad: Tensor,
    smoothness: Tensor,
    update: Tensor,
    preset: str,
    index: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Record rows (see ``records.py``) of the points that moved (update > 0)."""
    rows = []
    values = (t.double().tolist() for t in (grad, smoothness, update))
    for i, (g, s, u) in enumerate(zip(*values, strict=True)):
        if u > 0 and math.isfinite(s):
            row = {"step": step, "layer": layers[i], "quantity": quantity}
            if index is not None:
                row["index"] = index[i]
            rows.append(row | {"grad": g, "smoothness": s, "update": u, "preset": preset})
    return rows


def _mask_seed(seed: int, step: int, batch: int) -> int:
    """The RNG seed of probe batch ``batch`` at probed step ``step`` (a 63-bit mix)."""
    mixed = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + batch) % (1 << 64)
    mixed ^= mixed >> 31
    return (mixed * 0x94D049BB133111EB) % (1 << 63)


def fork_rngs() -> contextlib.AbstractContextManager[None]:
    """Fork the CPU and every accelerator RNG stream (restored on exit)."""
    acc = torch.accelerator.current_accelerator()
    devices = range(torch.accelerator.device_count())
    return torch.random.fork_rng(devices, device_type=acc.type if acc else None)


def _sq_norms(tensors: Iterable[Tensor]) -> Tensor:
    """Squared L2 norm of each tensor, in float64, as one vector."""
    return torch.stack([torch.linalg.vector_norm(t, dtype=torch.float64) ** 2 for t in tensors])


class SmoothnessProbe:
    """Records global, per-layer and coordinate-wise smoothness every ``every`` steps.

    Args:
        loss_fn: ``loss_fn(model, batch) -> scalar``; F is its mean over the probe batches.
        batches: the fixed probe set (materialised once); None to pass batches per step.
            The probe set is the caller's (the trainer's ``SmoothnessCallback`` in
            ``adaptopt.experiments.callbacks`` draws the preset's).
        preset: ``"default"`` or ``"paper"`` (``presets.py``): the defaults of ``every``,
            ``gammas`` and ``mode``; recorded in every row (with `` (modified)`` when
            ``gammas`` or ``mode`` are overridden).
        every: probe steps t with ``t % every == 0`` (default: the preset's).
        gammas: the sample locations Γ ⊂ (0, 1] of L̂_t (both presets: {1/6, …, 5/6}).
        coords_per_layer: coordinates sampled (once, seeded) per layer; 0 disables them.
        layers: glob patterns of parameter names that get per-layer and coordinate rows
            (default: every trainable parameter; ``()``: global rows only).
        mode: ``"eval"`` (all modules in eval mode) or ``"train"`` (modes left as they are)
            while probing (default: the preset's).
        seed: seeds the coordinate sample and, in train mode, the probe's dropout masks.
        path: JSONL file the rows are appended to (they are always kept in ``self.rows``).
    """

    def __init__(
        self,
        loss_fn: LossFn,
        batches: Iterable[Any] | None = None,
        *,
        preset: str = "default",
        every: int | None = None,
        gammas: Sequence[float] | None = None,
        coords_per_layer: int = DEFAULT_COORDS_PER_LAYER,
        layers: Sequence[str] | None = None,
        mode: str | None = None,
        seed: int = 0,
        path: str | Path | None = None,
    ) -> None:
        spec = get_preset(preset)
        every = spec.every if every is None else every
        gammas = spec.gammas if gammas is None else gammas
        mode = spec.mode if mode is None else mode
        if every < 1:
            raise ValueError(f"every must be a positive number of steps, got {every}")
        if not gammas or any(not 0 < g <= 1 for g in gammas):
            raise ValueError(f"gammas must be a non-empty set of values in (0, 1], got {gammas}")
        if coords_per_layer < 0:
            raise ValueError(f"coords_per_layer must be >= 0, got {coords_per_layer}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.loss_fn = loss_fn
        self.batches = None if batches is None else self._check_batches(batches)
        self.preset = preset
        self.every = every
        self.gammas = tuple(sorted(set(gammas)))
        same = self.gammas == tuple(sorted(set(spec.gammas))) and mode == spec.mode
        self.label = preset if same else preset + MODIFIED  # recorded in every row
        self.coords_per_layer = coords_per_layer
        self.layers = layers
        self.mode = mode
        self.seed = seed
        self.path = None if path is None else Path(path)
        self.rows: list[dict[str, Any]] = []
        self._coords: dict[str, Tensor] | None = None  # layer -> sampled flat indices
        self._pending: _Snapshot | None = None

    @staticmethod
    def _check_batches(batches: Iterable[Any]) -> list[Any]:
        batches = list(batches)
        if not batches:
            raise ValueError("the probe set is empty: pass at least one batch in `batches`")
        return batches

    def before_step(
        self, model: nn.Module, step: int, batches: Iterable[Any] | None = None
    ) -> None:
        """Call before ``optimizer.step()`` (parameters x_t); ``step`` = t, steps taken so far.

        ``batches`` replaces the fixed probe set for this step (e.g. ``[training_batch]``).
        """
        self._pending = None
        if step % self.every:
            return
        if batches is not None:
            batches = self._check_batches(batches)
        elif self.batches is not None:
            batches = self.batches
        else:
            raise ValueError("no probe set: pass `batches` to SmoothnessProbe or to before_step")
        x = {n: p.detach().clone() for n, p in _trainable(model).items()}
        buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        with self._probing(model):
            grad = self._gradient(model, x, buffers, batches, step)
        self._pending = _Snapshot(step, x, grad, buffers, batches)

    def after_step(self, model: nn.Module) -> list[dict[str, Any]]:
        """Call after ``optimizer.step()`` (parameters x_{t+1}); returns this step's rows."""
        snap, self._pending = self._pending, None
        if snap is None:
            return []
        x_next = {n: p.detach() for n, p in _trainable(model).items()}
        if x_next.keys() != snap.x.keys():
            raise ValueError("the set of trainable parameters changed between before/after_step")
        names = list(snap.x)
        selected = self._selected(names)
        if self._coords is None:
            self._coords = self._sample_coords(snap.x, selected)

        smooth = torch.full((len(names),), float("nan"), dtype=torch.float64)
        smooth_global = torch.tensor(float("nan"), dtype=torch.float64)
        grad_next = None
        points = set(self.gammas) | ({1.0} if self._coords else set())
        with self._probing(model):
            for gamma in sorted(points):
                shifted = (
                    x_next
                    if gamma == 1
                    else {n: torch.lerp(snap.x[n], x_next[n], gamma) for n in names}
                )
                grad = self._gradient(model, shifted, snap.buffers, snap.batches, snap.step)
                if gamma == 1:
                    grad_next = grad
                if gamma not in self.gammas:
                    continue
                dg = _sq_norms(grad[n] - snap.grad[n] for n in names).cpu()
                dx = _sq_norms(shifted[n] - snap.x[n] for n in names).cpu()
                smooth = torch.fmax(smooth, (dg / dx).sqrt())  # 0/0 = nan: block did not move
                smooth_global = torch.fmax(smooth_global, (dg.sum() / dx.sum()).sqrt())

        grad_sq = _sq_norms(snap.grad.values()).cpu()
        update_sq = _sq_norms(x_next[n] - snap.x[n] for n in names).cpu()
        layers = [GLOBAL, *names]
        keep = [i for i, n in enumerate(layers) if n == GLOBAL or n in selected]
        rows = _rows(
            snap.step,
            "norm",
            [layers[i] for i in keep],
            torch.cat([grad_sq.sum()[None], grad_sq])[keep].sqrt(),
            torch.cat([smooth_global[None], smooth])[keep],
            torch.cat([update_sq.sum()[None], update_sq])[keep].sqrt(),
            self.label,
        )
        if grad_next is not None:
            rows += self._coord_rows(self._coords, snap, x_next, grad_next)
        self.rows += rows
        if self.path is not None:
            append_rows(self.path, rows)
        return rows

    @contextlib.contextmanager
    def around_step(
        self, model: nn.Module, step: int, batches: Iterable[Any] | None = None
    ) -> Iterator[None]:
        """``with probe.around_step(model, t): optimizer.step()``."""
        self.before_step(model, step, batches)
        yield
        self.after_step(model)

    def _selected(self, names: list[str]) -> set[str]:
        if self.layers is None:
            return set(names)
        return {n for n in names if any(fnmatch.fnmatchcase(n, pat) for pat in self.layers)}

    def _sample_coords(self, x: Params, selected: set[str]) -> dict[str, Tensor]:
        """A reproducible sample of ``coords_per_layer`` flat indices per selected layer."""
        if not self.coords_per_layer:
            return {}
        gen = torch.Generator().manual_seed(self.seed)
        return {
            n: torch.randperm(t.numel(), generator=gen)[: self.coords_per_layer].sort().values
            for n, t in x.items()
            if n in selected
        }

    def _coord_rows(
        self, coords: dict[str, Tensor], snap: _Snapshot, x_next: Params, grad_next: Params
    ) -> list[dict[str, Any]]:
        rows = []
        for n, idx in coords.items():
            on = idx.to(x_next[n].device)
            g0, g1 = snap.grad[n].flatten()[on], grad_next[n].flatten()[on]
            dx = (x_next[n].flatten()[on] - snap.x[n].flatten()[on]).abs()
            grad, ratio = torch.minimum(g0.abs(), g1.abs()), (g1 - g0).abs() / dx
            rows += _rows(
                snap.step, "coord", [n] * len(idx), grad, ratio, dx, self.label, idx.tolist()
            )
        return rows

    @contextlib.contextmanager
    def _probing(self, model: nn.Module) -> Iterator[None]:
        """Probe-mode flags, forked RNG streams and grad mode; everything restored on exit."""
        flags = [(m, m.training) for m in model.modules()]
        if self.mode == "eval":
            model.eval()
        try:
            with fork_rngs(), torch.enable_grad():
                yield
        finally:
            for m, training in flags:
                m.training = training

    def _gradient(
        self, model: nn.Module, x: Params, buffers: Params, batches: list[Any], step: int
    ) -> Params:
        """∇F at parameters ``x``, accumulated over the probe batches (F = mean batch loss);
        batch k of probed step ``step`` always draws the same random numbers (dropout masks)."""
        objective = _Objective(model, self.loss_fn)
        leaves = {n: t.detach().requires_grad_() for n, t in x.items()}
        total = {n: torch.zeros_like(t) for n, t in x.items()}
        for k, batch in enumerate(batches):
            torch.manual_seed(_mask_seed(self.seed, step, k))  # CPU and every accelerator
            state = {f"model.{n}": t for n, t in leaves.items()}
            # train mode updates BatchNorm statistics in place: give each pass fresh copies
            fresh = self.mode == "train"
            state.update({f"model.{n}": b.clone() if fresh else b for n, b in buffers.items()})
            loss = functional_call(objective, state, (batch,)) / len(batches)
            grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
            for buf, g in zip(total.values(), grads, strict=True):
                if g is not None:
                    buf.add_(g)
        return total
