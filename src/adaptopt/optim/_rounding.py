r"""Stochastic rounding of low-precision (bf16/fp16) parameters, shared by every optimizer.

With ``stochastic_rounding=True`` a group's new parameter value :math:`y` is computed in
float32 and stored in the parameter's dtype as one of its two neighbours
:math:`|a| \le |y| < |b|`, :math:`b` with probability :math:`(|y| - |a|)/(|b| - |a|)`: unbiased,
:math:`\mathbb{E}[\mathrm{SR}(y)] = y`, so updates (and weight decay) below half an ulp are
kept in expectation instead of being rounded away (Gupta et al., "Deep Learning with Limited
Numerical Precision", ICML 2015; Zamirai et al. 2020 for pure-bf16 training).

* **bf16** (the truncation trick, also used by torchao and HeavyBall): add 16 uniform random
  bits to the low half of the float32 bit pattern, then truncate it. The low 16 bits are the
  position of :math:`|y|` between its neighbours in units of :math:`2^{-16}` ulp, so the sum
  carries into the kept half with exactly that probability. Infinities are kept; NaNs stay
  NaN.
* **fp16**: the neighbours are found with ``nextafter`` around the round-to-nearest value and
  :math:`b` is taken when a uniform float32 draw is below the fractional position.
* float32 and float64 parameters are never touched: they ignore the option.

**Randomness.** Each param group has its own random stream, seeded by
``stochastic_rounding_seed`` (an int; ``None`` derives it deterministically from
``torch.initial_seed()`` and the group's index when the group is added, so
``torch.manual_seed(s)`` before building the optimizer fixes it). The stream's state is a
group entry (:data:`RNG_KEY`: device name → the ``torch.Generator`` state of that device),
replaced after every step, so ``state_dict``/``load_state_dict``, ``copy.deepcopy`` and
pickling carry it: a resumed run draws the same bits as an uninterrupted one. On CUDA the
stream is CUDA's Philox generator, on CPU torch's Mersenne twister: the same seed gives
different bits on different devices, each reproducible.

**Paths.** The single-tensor and ``foreach`` cores round in ``_weight_decay.apply_update``
(the optimizer shells hand every core the group's :class:`GroupRounding`). The fused cores
(:func:`lifted_fused`) and torch's optimizers (:func:`with_stochastic_rounding`) run on float32
copies of the group's bf16/fp16 parameters and gradients (:func:`lifted`: a transient 4 + 4
bytes per such element), rounded afterwards by the same :meth:`GroupRounding.store_`, so
every path draws the same bits for the same float32 values. DTensor parameters are rounded shard by
shard; ``capturable=True`` refuses the option (a CUDA graph would replay the same bits);
``torch.compile(opt.step)`` breaks its graph around the generator (not one graph).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch
from torch import Tensor

LOW_PRECISION: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float16)

# Param-group entries: the switch, the seed, and the generator states (device -> uint8 tensor).
ENABLE_KEY = "stochastic_rounding"
SEED_KEY = "stochastic_rounding_seed"
RNG_KEY = "stochastic_rounding_rng"
SEED_LIMIT = 1 << 63


def is_plain(t: Tensor) -> bool:
    """A plain tensor or a parameter over one (not a DTensor or other subclass)."""
    return type(t) in (Tensor, torch.nn.Parameter)


def is_low_precision(t: Tensor) -> bool:
    """Whether ``t`` is a bf16/fp16 tensor, the dtypes the rounding applies to."""
    return t.dtype in LOW_PRECISION


def default_seed(group_index: int) -> int:
    """The seed of group ``group_index`` when none is given: from ``torch.initial_seed()``
    (fixed by ``torch.manual_seed``), mixed with the index (splitmix64 increment)."""
    return (torch.initial_seed() + 0x9E3779B97F4A7C15 * (group_index + 1)) % SEED_LIMIT


def check_options(group: dict[str, Any], group_index: int) -> None:
    """Validate the group's options and resolve a ``None`` seed to :func:`default_seed`."""
    enabled = group[ENABLE_KEY]
    if not isinstance(enabled, bool):
        raise ValueError(f"Invalid stochastic_rounding: {enabled!r} (must be True or False)")
    seed = group[SEED_KEY]
    if seed is None:
        group[SEED_KEY] = default_seed(group_index)
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(
            f"Invalid stochastic_rounding_seed: {seed!r} (must be None or an int in [0, 2^63))"
        )
    group.setdefault(RNG_KEY, {})


def stochastic_round(y: Tensor, dtype: torch.dtype, generator: torch.Generator) -> Tensor:
    """``y`` (float32) rounded stochastically to ``dtype`` (bf16 or fp16), unbiased."""
    y = y.float()
    if dtype == torch.bfloat16:
        bits = y.view(torch.int32)
        # 16 uniform bits: the low half of random_()'s uniform [0, 2^31) (twice as fast on CPU
        # as randint(0, 2^16), which reduces each draw modulo its range)
        noise = torch.empty(y.shape, dtype=torch.int32, device=y.device)
        noise.random_(generator=generator).bitwise_and_((1 << 16) - 1)
        # the sum stays below 2^31 unless |y| is NaN (Inf has zero low bits: it stays Inf)
        rounded = bits.add(noise).bitwise_and_(-(1 << 16)).view(torch.float32)
        return torch.where(torch.isnan(y), y, rounded).to(torch.bfloat16)
    if dtype == torch.float16:
        nearest = y.to(torch.float16)
        up = nearest.float() < y  # y lies between nearest and the next value up
        infinity = torch.full_like(nearest, float("inf"))
        other = torch.nextafter(nearest, torch.where(up, infinity, -infinity))
        low, high = torch.where(up, nearest, other), torch.where(up, other, nearest)
        position = (y - low.float()) / (high.float() - low.float())  # NaN only if y is ±Inf/NaN
        draw = torch.rand(y.shape, dtype=torch.float32, device=y.device, generator=generator)
        return torch.where(draw < position, high, torch.where(position.isnan(), nearest, low))
    raise TypeError(f"stochastic rounding is to bfloat16 or float16, not {dtype}")


class GroupRounding:
    """The rounding of one param group for one step: stochastic with the group's stream when
    ``stochastic_rounding`` is on, else round to nearest (torch's cast).

    Use as a context manager: the generators are restored from the group's :data:`RNG_KEY`
    entry on first use per device and their states written back (as a new dict: a
    ``state_dict`` taken earlier keeps the states it saw) on exit.
    """

    def __init__(self, group: dict[str, Any]) -> None:
        self.group = group
        self.stochastic = bool(group.get(ENABLE_KEY, False))
        self._generators: dict[str, torch.Generator] = {}

    def generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            generator = torch.Generator(device=device)
            saved = self.group.get(RNG_KEY, {}).get(key)
            if saved is None:
                generator.manual_seed(self.group[SEED_KEY])
            else:
                generator.set_state(saved.detach().to("cpu", torch.uint8))
            self._generators[key] = generator
        return self._generators[key]

    def store_(self, p: Tensor, y: Tensor) -> None:
        """``p ← round(y)``: ``y`` is ``p``'s new value in float32.

        A DTensor is rounded shard by shard (its local tensors): every process draws from
        the same seed in the same order, so replicated parameters stay identical.
        """
        if not (self.stochastic and is_low_precision(p)):
            p.copy_(y)
            return
        if not is_plain(p):
            if not hasattr(p, "to_local"):
                raise TypeError(
                    f"stochastic_rounding: cannot round a {type(p).__name__} (a tensor subclass "
                    "other than DTensor); use stochastic_rounding=False for it"
                )
            p, y = cast(Any, p).to_local(), cast(Any, y).to_local()
        p.copy_(stochastic_round(y, p.dtype, self.generator(p.device)))

    def __enter__(self) -> GroupRounding:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._generators:
            states = dict(self.group.get(RNG_KEY, {}))
            states.update({key: g.get_state() for key, g in self._generators.items()})
            self.group[RNG_KEY] = states


@contextlib.contextmanager
def lifted(params: list[Tensor], rounding: GroupRounding) -> Iterator[None]:
    """Run a step written for float32 parameters on low-precision ones, with ``rounding``.

    Inside the block each bf16/fp16 parameter holds a float32 copy of its value (``p.data``
    is swapped; the storage of ``p`` is kept); on exit the float32 result is rounded into
    the original storage. The caller hands the step float32 gradients for them (kernels
    read gradients in the parameter dtype). This is how the fused step, and torch's
    optimizers, get one float32 computation and one (stochastic) rounding. If the block
    raises, the parameters get their original values back, unchanged.
    """
    originals = [(p, p.data) for p in params if is_low_precision(p)]
    for p, data in originals:
        p.data = data.float()
    try:
        yield
    except BaseException:
        for p, data in originals:
            p.data = data
        raise
    for p, data in originals:
        value = p.data
        p.data = data
        rounding.store_(p, value)


@contextlib.contextmanager
def lifted_fused(
    params: list[Tensor], grads: list[Tensor], rounding: GroupRounding | None
) -> Iterator[list[Tensor]]:
    """The fused step of a group: yields the gradients its kernels get.

    With stochastic ``rounding`` and bf16/fp16 parameters among ``params``, the block runs on
    float32 copies of those parameters (:func:`lifted`) and gets float32 copies of their
    gradients (the kernels read gradients in the parameter dtype); the float32 result is
    rounded on exit. Otherwise nothing is lifted and ``grads`` are yielded as they are: the
    kernels compute in float32 and round to nearest when they store.
    """
    if rounding is None or not rounding.stochastic or not any(map(is_low_precision, params)):
        yield grads
        return
    wide = [g.float() if is_low_precision(p) else g for p, g in zip(params, grads, strict=True)]
    with lifted(params, rounding):
        yield wide


def with_stochastic_rounding(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """A subclass of a ``torch.optim`` optimizer with the ``stochastic_rounding`` and
    ``stochastic_rounding_seed`` keywords of adaptopt's optimizers.

    With the option off (the default) it is ``cls`` exactly. On, bf16/fp16 parameters are
    lifted to float32 for ``cls``'s step (:func:`lifted`), so their state is float32 too
    (torch would keep it in the parameter dtype), and the result is rounded stochastically.
    The closure, if any, runs before the parameters are lifted.
    """

    class Rounded(cls):  # type: ignore[valid-type, misc]
        def __init__(
            self,
            params: Any,
            *args: Any,
            stochastic_rounding: bool = False,
            stochastic_rounding_seed: int | None = None,
            **kwargs: Any,
        ) -> None:
            self._rounding_defaults = {
                ENABLE_KEY: stochastic_rounding,
                SEED_KEY: stochastic_rounding_seed,
            }
            super().__init__(params, *args, **kwargs)
            self.defaults.update(self._rounding_defaults)
            for group in self._rounded_groups():  # state made eagerly (Adagrad): float32
                for p in filter(is_low_precision, group["params"]):
                    state = self.state.get(p, {})
                    for key, value in state.items():
                        if torch.is_tensor(value) and value.dtype == p.dtype:
                            state[key] = value.float()

        def add_param_group(self, param_group: dict[str, Any]) -> None:
            # during __init__ the keywords; after unpickling (torch keeps only ``defaults``,
            # ``state`` and ``param_groups``) the defaults, which hold them
            source: dict[str, Any] = self.__dict__.get("_rounding_defaults") or self.defaults
            param_group.setdefault(ENABLE_KEY, source.get(ENABLE_KEY, False))
            param_group.setdefault(SEED_KEY, source.get(SEED_KEY))
            super().add_param_group(param_group)
            check_options(self.param_groups[-1], len(self.param_groups) - 1)

        def _rounded_groups(self) -> list[dict[str, Any]]:
            return [g for g in self.param_groups if g.get(ENABLE_KEY)]

        @torch.no_grad()
        def step(self, closure: Callable[[], Any] | None = None) -> Any:
            # torch's step without its step hooks (they run once, around this call)
            step: Any = cls.step
            if getattr(step, "hooked", False):
                step = step.__wrapped__
            groups = self._rounded_groups()
            if not groups:
                return step(self, closure)
            for group in groups:
                found = next((p for p in group["params"] if not is_plain(p)), None)
                if found is not None:
                    raise TypeError(
                        f"stochastic_rounding on torch.optim.{cls.__name__} needs plain tensors, "
                        f"not a {type(found).__name__}; adaptopt's optimizers round DTensors"
                    )
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            with contextlib.ExitStack() as stack:
                for group in groups:
                    rounding = stack.enter_context(GroupRounding(group))
                    for p in group["params"]:  # bf16 gradients back after the parameters
                        if p.grad is not None and is_low_precision(p):
                            stack.callback(setattr, p, "grad", p.grad)
                    stack.enter_context(lifted(group["params"], rounding))
                    for p in group["params"]:  # torch reads gradients in the parameter dtype
                        if p.grad is not None and p.grad.dtype != p.dtype:
                            p.grad = p.grad.float()
                step(self)
            return loss

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            """torch casts the state to the parameter dtype: loaded onto lifted parameters,
            the float32 state of rounded groups stays float32."""
            own = [{key: g[key] for key in (ENABLE_KEY, SEED_KEY)} for g in self.param_groups]
            saved = state_dict["param_groups"]
            rounded = [
                g for g, s in zip(self.param_groups, saved, strict=True) if s.get(ENABLE_KEY)
            ]
            with contextlib.ExitStack() as stack:
                for group in rounded:
                    originals = [(p, p.data) for p in group["params"] if is_low_precision(p)]
                    for p, data in originals:
                        p.data = data.float()
                        stack.callback(setattr, p, "data", data)
                super().load_state_dict(state_dict)
            for group, defaults in zip(self.param_groups, own, strict=True):
                for key, value in defaults.items():
                    group.setdefault(key, value)
                group.setdefault(RNG_KEY, {})

    init = inspect.signature(cls.__init__)
    extra = [
        inspect.Parameter(ENABLE_KEY, inspect.Parameter.KEYWORD_ONLY, default=False),
        inspect.Parameter(SEED_KEY, inspect.Parameter.KEYWORD_ONLY, default=None),
    ]
    kept = [p for p in init.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    Rounded.__init__.__signature__ = init.replace(parameters=[*kept, *extra])  # type: ignore
    Rounded.__name__ = Rounded.__qualname__ = cls.__name__
    Rounded.__module__ = __name__  # picklable: defined below under the same name
    Rounded.__doc__ = f"``{cls.__module__}.{cls.__qualname__}`` with stochastic rounding.\n\n" + (
        with_stochastic_rounding.__doc__ or ""
    )
    return Rounded


# torch's optimizers of the registry, with the option (``adaptopt.optim.OPTIMIZERS``).
SGD = with_stochastic_rounding(torch.optim.SGD)
Adam = with_stochastic_rounding(torch.optim.Adam)
AdamW = with_stochastic_rounding(torch.optim.AdamW)
Adagrad = with_stochastic_rounding(torch.optim.Adagrad)
