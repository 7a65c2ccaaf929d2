r"""Shared machinery of the adaptopt optimizers: validation, dispatch, global norms, presets.

Every optimizer here is a :class:`BaseOptimizer` shell over a functional core, in the style of
``torch/optim/adam.py``: each family module defines ``_single_tensor_<rule>`` (the readable
reference, one parameter at a time, named after SPEC.md's equations),
``_multi_tensor_<rule>`` (the same function with ``torch._foreach_*`` kernels) and, with
``supports_fused``, ``_fused_<rule>`` (one pass over memory per tensor,
``adaptopt.optim._fused``). All three take the same arguments; :func:`implementation` is the
one place that chooses among them for a param group.

One ``step``:

1. :meth:`BaseOptimizer._gather`: the parameters that have a gradient and their raw gradients
   (sparse or complex → error, before anything changes);
2. :meth:`BaseOptimizer._update_groups`: by default :meth:`BaseOptimizer._update` per group,
   which calls the group's implementation. Every implementation forms
   :math:`d = s\,g + \lambda_2 x` and applies the decay with ``_weight_decay.py``. Besides
   the hyperparameters, the shell hands it the group's ``rounding``
   (``_rounding.GroupRounding``, entered for the step: it writes the random stream back to
   the group) and ``cache`` (the group's native plans, :meth:`BaseOptimizer._fused_cache`).
   The global-norm family (``_momentum.py``) overrides it with two phases: its terms per
   group, their global L2 norms over every group, then the weighted updates.

State tensors have the dtype ``state_dtype`` (default: the parameter dtype, float32 for
bf16/fp16 parameters) in every path. Step counters (``state["step"]``) are float64 0-d tensors
(``STEP_DTYPE``): they count exactly up to 2^53 steps (float32, torch's choice, stops at 2^24),
and bias corrections are computed from the exact count; float32 counters of older state dicts
are converted on loading.

bf16/fp16 parameters: every path computes the new value in float32 (update and decoupled or
proximal decay together) and rounds it once into the parameter, to nearest by default, or
stochastically with ``stochastic_rounding=True`` (a group option of every optimizer; seed,
random stream and its checkpointing: ``_rounding.py``). The fused kernels already compute in
float32; for a rounded group they run on float32 copies of its bf16/fp16 parameters
(``_rounding.lifted_fused``), rounded afterwards with the same function as the other paths.
float32/float64 parameters ignore the option.

Sharded parameters (DTensor: FSDP2's ``fully_shard``, ``distribute_tensor``) take the non-fused
steps: element-wise rules work on each rank's shards as they are, and global norms and inner
products are reduced over the device mesh (:func:`global_norm`, :func:`global_dot`), so every
rank steps as one process holding the whole model would. Their state dicts save and load
through ``torch.distributed.checkpoint`` (resharding included).
"""

from __future__ import annotations

import functools
import inspect
import math
import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

import torch
from torch import Tensor

from adaptopt.optim import _fused, _rounding
from adaptopt.optim._weight_decay import WEIGHT_DECAY_MODES

Closure = Callable[[], Tensor]


def check_nonnegative(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number >= 0)")


def check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number > 0)")


def check_unit_interval(name: str, value: float) -> None:
    """β-style coefficients: 0 <= value < 1."""
    if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
        raise ValueError(f"Invalid {name}: {value!r} (must be in [0, 1))")


def check_betas(betas: Any) -> None:
    """A pair (β1, β2), each in [0, 1)."""
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"Invalid betas: {betas!r} (must be a pair (beta1, beta2))")
    check_unit_interval("beta1 (betas[0])", betas[0])
    check_unit_interval("beta2 (betas[1])", betas[1])


def global_norm(tensors: list[Tensor], foreach: bool) -> Tensor:
    """‖(t_1, ..., t_n)‖₂ as a 0-d tensor (0 for an empty list).

    Sharded tensors (DTensor: FSDP2's ``fully_shard``, ``distribute_tensor``) count with their
    *global* value: the squared norms of the local shards are summed over the mesh dimensions
    the tensor is sharded along (:func:`mesh_sum`, one all-reduce per mesh and sharding), so
    every rank gets the norm a single process would compute. A collective then: every rank of
    the mesh must call it (as every rank steps the optimizer under FSDP2).
    """
    if not tensors:
        return torch.zeros(())
    if not any(_is_dtensor(t) for t in tensors):
        norms = (
            torch._foreach_norm(tensors)
            if foreach
            else [torch.linalg.vector_norm(t) for t in tensors]
        )
        return torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]))
    tensors = [_settle_partial(t) for t in tensors]
    local = [_local(t) for t in tensors]
    norms = torch._foreach_norm(local) if foreach else [torch.linalg.vector_norm(t) for t in local]
    squares = [n.to(_accumulation_dtype(n.dtype)).square() for n in norms]
    return mesh_sum(list(zip(tensors, squares, strict=True))).sqrt()


def global_dot(xs: list[Tensor], ys: list[Tensor]) -> Tensor:
    """⟨(x_1, ..., x_n), (y_1, ..., y_n)⟩ = Σ_i ⟨x_i, y_i⟩ as a 0-d tensor (0 for empty lists).

    ``x_i`` and ``y_i`` have the same shape (and, for DTensors, the same mesh and placements);
    a DTensor pair counts with its global inner product (:func:`mesh_sum`): a collective, as
    :func:`global_norm`. SGDOL's surrogate-loss sums (⟨g', g⟩ and ‖g‖²) use it.
    """
    if len(xs) != len(ys):
        raise ValueError(f"global_dot: {len(xs)} tensors against {len(ys)}")
    if not xs:
        return torch.zeros(())
    pairs = []
    for x, y in zip(xs, ys, strict=True):
        x, y = _settle_partial(x), _settle_partial(y)
        if _is_dtensor(x) != _is_dtensor(y) or (
            _is_dtensor(x) and _mesh_and_placements(x) != _mesh_and_placements(y)
        ):
            raise ValueError(
                "global_dot: a sharded tensor (DTensor) needs a partner on the same mesh "
                "with the same placements"
            )
        a, b = _local(x).flatten(), _local(y).flatten()
        dtype = _accumulation_dtype(torch.promote_types(a.dtype, b.dtype))
        dot = torch.vdot(a.to(dtype), b.to(dtype))
        # summed over tensors (and shards) in float64 where the device has it (not MPS)
        pairs.append((x, dot if dot.device.type == "mps" else dot.to(torch.float64)))
    return mesh_sum(pairs)


def mesh_sum(contributions: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Σ of 0-d local contributions ``(t, c)``, each computed on ``t``'s local data.

    For a plain tensor ``t`` the contribution counts once (every rank holds all of ``t``). For
    a DTensor it is summed over the mesh dimensions along which ``t`` is sharded (``Shard``;
    ``Replicate`` dimensions hold copies and are not summed): one all-reduce for all the
    contributions that share a mesh and a sharding. The result is on the first contribution's
    device, in the promoted dtype of the contributions.
    """
    device = contributions[0][1].device
    dtype = functools.reduce(torch.promote_types, (c.dtype for _, c in contributions))
    plain: list[Tensor] = []
    sharded: dict[tuple[Any, tuple[int, ...]], list[Tensor]] = {}
    for t, c in contributions:
        c = c.reshape(()).to(dtype)
        if _is_dtensor(t):
            mesh, placements = _mesh_and_placements(t)
            dims = tuple(i for i, p in enumerate(placements) if p.is_shard())
            sharded.setdefault((mesh, dims), []).append(c)
        else:
            plain.append(c.to(device))
    parts = [torch.stack(plain).sum()] if plain else []
    for (mesh, dims), values in sharded.items():
        part = torch.stack(values).sum()
        if dims:
            from torch.distributed.tensor import DTensor, Partial, Replicate

            pending = [Partial() if i in dims else Replicate() for i in range(mesh.ndim)]
            part = DTensor.from_local(part, mesh, pending, run_check=False).full_tensor()
        parts.append(part.to(device))
    return torch.stack(parts).sum()


def _is_dtensor(t: Tensor) -> bool:
    """Whether ``t`` is a DTensor (checked by name: ``torch.distributed`` may be absent)."""
    return not is_plain(t) and any(c.__name__ == "DTensor" for c in type(t).__mro__)


def _mesh_and_placements(t: Tensor) -> tuple[Any, tuple[Any, ...]]:
    """A DTensor's device mesh and placements (typed loosely: DTensor may be absent)."""
    dtensor = cast(Any, t)
    return dtensor.device_mesh, tuple(dtensor.placements)


def _local(t: Tensor) -> Tensor:
    """A DTensor's local shard (``to_local``), any other tensor itself."""
    return cast(Any, t).to_local() if _is_dtensor(t) else t


def _settle_partial(t: Tensor) -> Tensor:
    """A DTensor with ``Partial`` (pending-reduction) placements reduced to ``Replicate`` there,
    so that its local data is a shard or a copy of the global value; anything else unchanged."""
    if not _is_dtensor(t):
        return t
    mesh, placements = _mesh_and_placements(t)
    if not any(p.is_partial() for p in placements):
        return t
    from torch.distributed.tensor import Replicate

    settled = [Replicate() if p.is_partial() else p for p in placements]
    return cast(Any, t).redistribute(mesh, settled)


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 at least for summing squares / products across shards (no bf16/fp16 sums)."""
    return torch.promote_types(dtype, torch.float32)


def default_foreach(params: Iterable[Tensor]) -> bool:
    """torch.optim's rule: the multi-tensor path by default when every parameter is on CUDA."""
    params = list(params)
    return bool(params) and all(p.is_cuda for p in params)


# Without the native CPU kernels, below this many elements the compiled fused step's one-time
# compilation (seconds) outweighs what it saves per step (benchmarks/RESULTS.md).
FUSED_MIN_NUMEL = 1 << 22


def is_plain(t: Tensor | None) -> bool:
    """Whether ``t`` is absent, a plain ``torch.Tensor`` or an ``nn.Parameter`` over one.

    Tensor subclasses (DTensor from FSDP2 or ``distribute_tensor``, and any other
    ``__torch_dispatch__``/``__torch_function__`` subclass) are not: a parameter over a
    subclass has the subclass's type. The fused step's native kernels read raw data pointers,
    which a subclass's outer tensor does not have, so it must never see one.
    """
    return t is None or type(t) in (Tensor, torch.nn.Parameter)


_PLAIN_TYPES = frozenset((Tensor, torch.nn.Parameter, type(None)))
_GRAD = operator.attrgetter("grad")
_DTYPE = operator.attrgetter("dtype")


def _any_complex(*tensor_lists: list[Tensor]) -> bool:
    """Whether a tensor of the lists is complex, from the set of their dtypes (no Python
    call per tensor)."""
    dtypes: set[torch.dtype] = set()
    for tensors in tensor_lists:
        dtypes.update(map(_DTYPE, tensors))
    return any(dtype.is_complex for dtype in dtypes)


def subclass_in(params: Iterable[Tensor]) -> Tensor | None:
    """The first parameter (or its gradient) that is a tensor subclass, if any."""
    params = list(params)
    types = set(map(type, params))
    types.update(map(type, map(_GRAD, params)))
    if types <= _PLAIN_TYPES:  # the common case, checked without a Python loop (every step)
        return None
    for p in params:
        if not is_plain(p):
            return p
        if not is_plain(p.grad):
            return p.grad
    return None


def default_fused(params: Iterable[Tensor]) -> bool:
    """``fused=None``: the fused step where it is measured faster than the default path.

    That is every CPU param group when the native kernels are available (faster than the
    loop and ``foreach`` paths from a few hundred parameters up), else CPU groups of at least
    ``FUSED_MIN_NUMEL`` elements when inductor finds a C++ compiler. On CUDA the fused step
    has not been measured: ``foreach`` stays the default there. Never for a group that holds
    a tensor subclass (DTensor ...): :func:`is_plain`.
    """
    params = list(params)
    if not params or any(p.device.type != "cpu" for p in params):
        return False
    if subclass_in(params) is not None:
        return False
    if _fused.native_available():
        return True
    return sum(p.numel() for p in params) >= FUSED_MIN_NUMEL and _fused.cpp_compiler_available()


# dtype of the ``step`` counters: exact integers up to 2^53 (float32 stops at 2^24 = 16,777,216),
# and a float dtype, so that ``beta ** step`` stays a float64 tensor on the device.
STEP_DTYPE = torch.float64


def step_counter(value: Tensor | float | int, device: torch.device | str | None) -> Tensor:
    """A ``step`` counter: a new float64 0-d tensor on ``device`` holding ``value``."""
    return torch.as_tensor(value).to(device=device, dtype=STEP_DTYPE, copy=True).reshape(())


def check_real(p: Tensor, grad: Tensor | None = None) -> None:
    """The one error for complex numbers, raised before anything is changed.

    The update rules of SPEC.md are defined for real coordinates (sign, elementwise squares,
    norms); a complex parameter, or a complex gradient of a real one, is refused.
    """
    for role, t in (("parameter", p), ("gradient", grad)):
        if t is not None and t.is_complex():
            raise ValueError(
                f"complex {role}s are unsupported (got a {role} of dtype {t.dtype}, shape "
                f"{tuple(t.shape)}): the adaptopt optimizers update real tensors only; "
                "optimize torch.view_as_real(parameter) instead"
            )


def implementation(
    group: dict[str, Any],
    single_tensor: Callable[..., Any],
    multi_tensor: Callable[..., Any],
    fused: Callable[..., Any] | None = None,
) -> Callable[..., Any]:
    """The implementation of a family's rule that ``group`` runs: ``fused`` when the group's
    ``fused`` is set, ``multi_tensor`` when its ``foreach`` is, else ``single_tensor``.

    The one place where the choice is made; ``add_param_group`` resolved ``None`` to a value.
    """
    if group["fused"]:
        if fused is None:
            raise ValueError("Invalid fused: this optimizer has no fused step")
        return fused
    return multi_tensor if group["foreach"] else single_tensor


# Group entries that choose how a step is computed, not what it computes: they stay the
# loading optimizer's own in ``load_state_dict``.
IMPLEMENTATION_KEYS = ("foreach", "fused", "capturable", "state_dtype")


class BaseOptimizer(torch.optim.Optimizer):
    """Base class: shared validation and the ``step`` described in the module doc.

    Subclasses set ``defaults`` (every group has ``lr``, ``weight_decay``,
    ``weight_decay_mode``, ``maximize``, ``foreach``, ``fused``, ``capturable``,
    ``state_dtype``, ``stochastic_rounding`` and ``stochastic_rounding_seed``) and implement
    :meth:`_validate_group` and :meth:`_update` (or :meth:`_update_groups`, when the groups
    share global norms). Presets of a subclass are declared with :func:`preset`.
    """

    supports_fused = False

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        defaults.setdefault("maximize", False)
        defaults.setdefault("foreach", None)
        defaults.setdefault("fused", None if self.supports_fused else False)
        defaults.setdefault("capturable", False)
        defaults.setdefault("state_dtype", None)
        defaults.setdefault(_rounding.ENABLE_KEY, False)
        defaults.setdefault(_rounding.SEED_KEY, None)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            for p in group["params"]:
                check_real(p)
            _rounding.check_options(group, len(self.param_groups) - 1)
            self._validate_common(group)
            self._validate_group(group)
        except ValueError:
            self.param_groups.pop()  # an invalid group is not added
            raise
        if not hasattr(self, "_fused_requested"):
            self._fused_requested: list[bool] = []
        self._fused_requested.append(bool(group["fused"]))  # True: the user asked for it
        if group["fused"]:
            self._refuse_subclass(group)
        if group["fused"] is None:
            group["fused"] = group["capturable"] or (
                group["foreach"] is None and default_fused(group["params"])
            )
        if group["foreach"] is None:
            group["foreach"] = not group["fused"] and default_foreach(group["params"])

    def _validate_common(self, group: dict[str, Any]) -> None:
        if "lr" in group:
            lr = group["lr"]
            if isinstance(lr, Tensor):
                if lr.dim() != 0 or not lr.is_floating_point():
                    raise ValueError(f"Invalid lr: a tensor lr must be 0-d floating point: {lr!r}")
                lr = lr.item()
            check_nonnegative("lr", lr)
        check_nonnegative("weight_decay", group["weight_decay"])
        if group["weight_decay_mode"] not in WEIGHT_DECAY_MODES:
            raise ValueError(
                f"Invalid weight_decay_mode: {group['weight_decay_mode']!r} "
                f"(valid: {', '.join(WEIGHT_DECAY_MODES)})"
            )
        state_dtype = group["state_dtype"]
        if state_dtype is not None and not (
            isinstance(state_dtype, torch.dtype) and state_dtype.is_floating_point
        ):
            raise ValueError(
                f"Invalid state_dtype: {state_dtype!r} (must be None or a floating-point "
                "torch.dtype, e.g. torch.bfloat16)"
            )
        if group["fused"] and not self.supports_fused:
            raise ValueError(f"Invalid fused: {type(self).__name__} has no fused step")
        if group["fused"] and group["foreach"]:
            raise ValueError("Invalid fused: fused=True and foreach=True are exclusive")
        if group["capturable"] and group["fused"] is False:
            raise ValueError(
                "Invalid capturable: only the fused step is capturable (use fused=True or None)"
            )
        if group["capturable"] and group[_rounding.ENABLE_KEY]:
            raise ValueError(
                "Invalid stochastic_rounding: not capturable (its random stream lives outside "
                "the CUDA graph); use capturable=False with stochastic_rounding=True"
            )

    def _validate_group(self, group: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming the argument for invalid hyperparameters."""

    def _refuse_subclass(self, group: dict[str, Any]) -> None:
        """``fused=True`` on a tensor subclass: a clear error instead of a crash."""
        found = subclass_in(group["params"])
        if found is not None:
            raise ValueError(
                f"Invalid fused: {type(self).__name__}'s fused step reads raw tensor memory and "
                f"cannot update a {type(found).__name__} (a tensor subclass, e.g. a DTensor "
                "parameter of FSDP2 / distribute_tensor); use fused=False or fused=None (which "
                "falls back to the foreach or single-tensor step for such groups)"
            )

    def _check_fused_groups(self) -> None:
        """Before a step: a fused group that now holds a tensor subclass (parameter or
        gradient) falls back to the non-fused step for good when ``fused`` was the default
        (``None``), and raises when the user asked for ``fused=True``."""
        requested = getattr(self, "_fused_requested", [])
        for i, group in enumerate(self.param_groups):
            if not group["fused"] or subclass_in(group["params"]) is None:
                continue
            if (i < len(requested) and requested[i]) or group["capturable"]:
                self._refuse_subclass(group)
            group["fused"], group["foreach"] = False, default_foreach(group["params"])

    # -- state -----------------------------------------------------------------------------
    @staticmethod
    def _state_dtype(group: dict[str, Any], p: Tensor) -> torch.dtype:
        """``state_dtype``, or the parameter dtype (float32 for bf16/fp16 parameters)."""
        if group["state_dtype"] is not None:
            return group["state_dtype"]
        return torch.float32 if p.dtype in (torch.bfloat16, torch.float16) else p.dtype

    def _zeros(self, group: dict[str, Any], p: Tensor) -> Tensor:
        """A new state tensor for ``p``, in the group's state dtype."""
        return torch.zeros_like(
            p, dtype=self._state_dtype(group, p), memory_format=torch.preserve_format
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's loading, except that this optimizer keeps its own implementation choices
        (``IMPLEMENTATION_KEYS``) and state dtype: torch would cast the state to the
        parameter dtype, here it is restored from ``state_dict`` in the state dtype. The
        stochastic-rounding entries (switch, seed, random stream) are the saved ones; a state
        dict saved without them keeps this optimizer's switch and seed."""
        own = [{key: group[key] for key in IMPLEMENTATION_KEYS} for group in self.param_groups]
        rounding = [
            {key: group[key] for key in (_rounding.ENABLE_KEY, _rounding.SEED_KEY)}
            for group in self.param_groups
        ]
        self.__dict__.pop("_fused_caches", None)  # plans over the state being replaced
        super().load_state_dict(state_dict)
        saved_groups = state_dict["param_groups"]
        for group, choices, saved_group, options in zip(
            self.param_groups, own, saved_groups, rounding, strict=True
        ):
            group.update(choices)
            for key, value in options.items():
                group.setdefault(key, value)
            group.setdefault(_rounding.RNG_KEY, {})
            for p, saved_id in zip(group["params"], saved_group["params"], strict=True):
                self._restore_state(group, p, state_dict["state"].get(saved_id, {}))

    def _restore_state(self, group: dict[str, Any], p: Tensor, saved: dict[str, Any]) -> None:
        """After torch's loading: ``step`` a float64 counter (``STEP_DTYPE``, re-read from
        ``saved``: torch casts it to float32 when the saved group was fused; older state dicts
        hold float32 counters) on the parameter device for fused groups, else on the CPU;
        state tensors in the state dtype (re-read from ``saved``: torch cast them to p's
        dtype)."""
        state, dtype = self.state[p], self._state_dtype(group, p)
        for key, value in list(state.items()):
            if key == "step":
                device = p.device if group["fused"] else "cpu"
                state[key] = step_counter(saved.get(key, value), device)
            elif torch.is_tensor(value) and value.is_floating_point() and value.dtype != dtype:
                state[key] = saved[key].to(device=p.device, dtype=dtype)

    def _fused_cache(self, group: dict[str, Any]) -> dict[str, Any]:
        """The fused step's per-group cache: the native kernels' pointer tables
        (``_fused.native.Plan``, revalidated at every step), dropped by ``load_state_dict``;
        never part of the state dict."""
        caches = self.__dict__.setdefault("_fused_caches", {})
        return caches.setdefault(id(group), {})

    # -- the step ---------------------------------------------------------------------------
    def _gather(self, group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor]]:
        """Parameters with a gradient and their raw gradients: the implementations apply the
        ``maximize`` sign and the coupled decay (``_weight_decay.descent_gradients``).

        Sparse and complex gradients (and complex parameters) raise here, before any state
        or parameter of any group changes.
        """
        params = [p for p in group["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        for g in grads:
            if g.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
        # eagerly per tensor only when a complex dtype is present (this runs every step);
        # under torch.compile per tensor (traced once; attrgetter breaks the graph)
        if torch.compiler.is_compiling() or _any_complex(params, grads):
            for p, g in zip(params, grads, strict=True):
                check_real(p, g)
        return params, grads

    def _update(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> None:
        """One group's step (``params`` have gradients ``grads``, raw): call the group's
        implementation (:func:`implementation`)."""
        raise NotImplementedError

    def _update_groups(self, work: list[tuple[dict[str, Any], list[Tensor], list[Tensor]]]) -> None:
        """The step of every group with gradients; one group at a time unless the rule couples
        the groups (global norms: ``_momentum.GlobalNormSGD``)."""
        for group, params, grads in work:
            self._update(group, params, grads)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor | None:  # type: ignore[override]
        """One optimization step; ``closure`` (optional) re-evaluates and returns the loss."""
        self._accelerator_graph_capture_health_check()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._check_fused_groups()
        work = [(group, *self._gather(group)) for group in self.param_groups]
        self._update_groups([(group, params, grads) for group, params, grads in work if params])
        return loss


def safe_div(numerator: Tensor, denominator: Tensor) -> Tensor:
    """numerator / denominator for denominator >= 0, with x/0 := x (so 0/0 := 0).

    Where the denominator is 0 the numerator is 0 too (m = 0 whenever sqrt(v) + ε = 0), so a
    zero or absent gradient never produces NaN or Inf, even with ε = 0.
    """
    return numerator / denominator.masked_fill(denominator == 0, 1.0)


def foreach_safe_div(numerators: list[Tensor], denominators: list[Tensor]) -> list[Tensor]:
    """:func:`safe_div` over tensor lists: d + (1 − sign d) is d where d > 0 and 1 where d = 0."""
    fill = torch._foreach_sign(denominators)
    torch._foreach_neg_(fill)
    torch._foreach_add_(fill, 1.0)
    return list(torch._foreach_div(numerators, torch._foreach_add(denominators, fill)))


OptimizerType = TypeVar("OptimizerType", bound=type[BaseOptimizer])


def preset(
    *,
    fixed: Mapping[str, Any],
    defaults: Mapping[str, Any] | None = None,
    replaced: tuple[str, ...] = (),
    added: Mapping[str, Any] | None = None,
) -> Callable[[OptimizerType], OptimizerType]:
    """Class decorator: a preset of the parent optimizer, without repeating its signature.

    The preset's constructor takes the parent constructor's parameters minus ``fixed`` (whose
    values it always uses) and minus ``replaced`` (not used at all), with the new
    ``defaults``, plus the ``added`` parameters (name → default, placed where the first
    removed parameter stood): hyperparameters of the preset's own, read by its overridden
    hooks in place of the ``replaced`` ones. Its groups hold the parent's hyperparameters
    with ``fixed`` values, minus ``replaced``, plus ``added``. ``inspect.signature``, ``help()``
    and :func:`adaptopt.optim.hyperparameters` show the resulting parameters.

    The parent constructor must only collect its arguments into the group defaults (as every
    family constructor here does): the preset calls ``BaseOptimizer.__init__`` with them.
    """
    defaults, added = dict(defaults or {}), dict(added or {})

    def decorate(cls: OptimizerType) -> OptimizerType:
        parent = cls.__mro__[1]
        parent_signature = inspect.signature(vars(parent)["__init__"])
        removed = {*fixed, *replaced}
        unknown = (removed | set(defaults)) - set(parent_signature.parameters)
        if unknown or not fixed:
            raise TypeError(f"preset {cls.__name__}: {parent.__name__} has no {sorted(unknown)}")
        parameters: list[inspect.Parameter] = []
        placed = False
        for name, parameter in parent_signature.parameters.items():
            if name not in removed:
                if name in defaults:
                    parameter = parameter.replace(default=defaults[name])
                parameters.append(parameter)
            elif not placed:  # the preset's own parameters take the first fixed one's place
                kind, placed = parameter.kind, True
                parameters.extend(
                    inspect.Parameter(n, kind, default=v, annotation=type(v).__name__)
                    for n, v in added.items()
                )
        signature = parent_signature.replace(parameters=parameters)
        # a preset of a preset also fixes what its parent fixed
        all_fixed = {**parent.__dict__.get("preset_fixed", {}), **fixed}

        def __init__(self: BaseOptimizer, *args: Any, **kwargs: Any) -> None:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            hyperparameters = {k: v for k, v in bound.arguments.items() if k != "self"}
            params = hyperparameters.pop("params")
            BaseOptimizer.__init__(self, params, {**hyperparameters, **all_fixed})

        __init__.__signature__ = signature  # type: ignore[attr-defined]
        __init__.__module__ = cls.__module__
        __init__.__qualname__ = f"{cls.__qualname__}.__init__"
        fixed_text = ", ".join(f"{k}={v!r}" for k, v in all_fixed.items())
        __init__.__doc__ = f"{parent.__name__} with {fixed_text}; see {cls.__name__}."
        cls.__init__ = __init__  # type: ignore[method-assign]
        cls.preset_of = parent  # type: ignore[attr-defined]
        cls.preset_fixed = all_fixed  # type: ignore[attr-defined]
        return cls

    return decorate
