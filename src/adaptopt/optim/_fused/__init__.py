r"""Fused optimizer steps: one pass over memory per parameter per step.

A step of Generalized SignSGD reads :math:`x, g, m, v` and writes :math:`x, m, v`: 28 bytes per
float32 parameter, like Adam, and nothing else. The single-tensor and ``foreach`` paths of
the optimizer classes make one pass per elementary operation; here every tensor is updated in
one pass, by one of two backends computing the same functions:

* **native** (CPU, the default there): the multi-tensor C++ kernels of ``native.cpp``, built
  when the package is installed and loaded by :mod:`~adaptopt.optim._fused.native`. One call
  per param group updates all its tensors (no per-tensor dispatch), with software
  prefetching; Generalized SignSGD's step counters are incremented in the same call.
* **triton** (CUDA): the multi-tensor Triton kernels of
  :mod:`~adaptopt.optim._fused.triton_kernels`, one launch per param group and pass over a
  device table of pointers and work items. triton is imported only when such a step runs.
  With :func:`triton_on_cpu` (and ``TRITON_INTERPRET=1``) they run on CPU tensors under
  Triton's interpreter: that is how they are tested without a GPU.
* **compiled** (CPU when the native kernels were not built): the per-tensor functions of
  :mod:`~adaptopt.optim._fused.kernels`, compiled by ``torch.compile`` (inductor C++) with
  ``fullgraph=True`` and dynamic sizes, so one compiled kernel serves every tensor shape of
  every model. A call costs tens of microseconds of dispatch: tensors of at most
  ``BATCH_NUMEL`` elements (biases, norms) are concatenated into one call and copied back,
  which costs less than their calls would.

All three read the same coefficient vectors, whose layout is defined once in
:mod:`~adaptopt.optim._fused.layout`.

Global-norm optimizers (clipping, normalization) make two passes: a read-only pass for the
norms, then the update pass. ``CPU_BACKEND`` chooses the CPU backend (the test suite runs
both).

Design:

* **Coefficients as tensors.** Hyperparameters are combined in float64 into a coefficient
  tensor on the parameter device (per tensor for Generalized SignSGD, whose bias correction
  depends on each tensor's ``step``), so changing ``lr`` never recompiles, and nothing is
  copied from the host: the step can be captured in a CUDA graph (``capturable=True``;
  ``lr`` may then be a 0-d tensor on the device, updated in place by the LR schedulers).
  The native kernels take the same row as a C array of doubles, one per group: they compute
  the per-tensor bias corrections themselves, from the step counters they increment.
* **Mixed precision.** The arithmetic runs in float32 for bf16/fp16/fp32 parameters (float64
  for float64 ones); the state has its own dtype (``state_dtype``), rounded once on store.
* **Threads.** The native kernels use ``torch.get_num_threads()`` threads; the compiled ones
  are built with ``cpp.dynamic_threads`` (the OpenMP runtime picks the thread count,
  whatever the size of the tensor that triggered the compilation).

The optimizer families call :func:`launch_row` from their ``_fused_<rule>`` functions (e.g.
``lion._fused_lion``) with the coefficient row in the kernel's layout, the decay factors
coming from ``_weight_decay.update_coefficients``: one native call on CPU, else
:func:`launch` with the table built by :func:`coefficient_table`. Their results equal the
single-tensor reference within floating-point rounding (the coefficients are folded, e.g.
:math:`\eta/(1-\beta_1^t)` is one factor): ``tests/optim/test_fused.py`` checks, for both
CPU backends, float64 to ``rtol=1e-12`` and float32 to ``rtol=1e-5, atol=1e-6`` after 30
steps; ``tests/optim/test_triton.py`` checks the Triton kernels (under
Triton's interpreter without a GPU).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from adaptopt.optim._fused import kernels, layout, native

# "native" or "compiled": the backend of fused steps on CPU (native falls back to compiled
# when the library was not built).
CPU_BACKEND = "native"

# Run the Triton kernels on CPU tensors (Triton's interpreter; see triton_on_cpu).
TRITON_ON_CPU = False

# Tensors of at most this many elements are updated together (gathered, then scattered):
# a compiled call costs tens of microseconds of dispatch, copying them costs less.
BATCH_NUMEL = 1 << 13

# Distinct compiled graphs per kernel: dtype combinations, absent state, size-1 tensors.
# torch's default limit (8) could be reached by a test suite mixing all of them.
RECOMPILE_LIMIT = 64

Scalar = float | Tensor


@functools.cache
def compiled(name: str) -> Callable[..., Any]:
    """``kernels.<name>`` compiled once per process (lazily: importing is free)."""
    return torch.compile(
        getattr(kernels, name), fullgraph=True, dynamic=True, options={"cpp.dynamic_threads": True}
    )


@functools.cache
def cpp_compiler_available() -> bool:
    """Whether inductor finds the C++ compiler it needs for CPU kernels."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception:
        return False
    return True


def native_available() -> bool:
    """Whether fused CPU steps use the native kernels (``CPU_BACKEND`` and a built library)."""
    return CPU_BACKEND == "native" and native.available()


def uses_native(device: torch.device) -> bool:
    """Whether fused steps on ``device`` run the native kernels."""
    return device.type == "cpu" and not TRITON_ON_CPU and native_available()


@contextlib.contextmanager
def cpu_backend(name: str) -> Iterator[None]:
    """Run fused CPU steps with backend ``name`` ("native" or "compiled") in this block."""
    global CPU_BACKEND
    if name not in ("native", "compiled"):
        raise ValueError(f"unknown fused CPU backend {name!r} (native or compiled)")
    previous, CPU_BACKEND = CPU_BACKEND, name
    try:
        yield
    finally:
        CPU_BACKEND = previous


@contextlib.contextmanager
def triton_on_cpu() -> Iterator[None]:
    """Run fused CPU steps with the Triton kernels in this block: Triton's interpreter, which
    needs ``TRITON_INTERPRET=1`` in the environment before triton is first imported (tests,
    ``benchmarks/gpu_check.py --dry-run``)."""
    global TRITON_ON_CPU
    previous, TRITON_ON_CPU = TRITON_ON_CPU, True
    try:
        yield
    finally:
        TRITON_ON_CPU = previous


def uses_triton(device: torch.device) -> bool:
    """Whether fused steps on ``device`` run the Triton kernels."""
    return device.type == "cuda" or (device.type == "cpu" and TRITON_ON_CPU)


def triton_backend() -> Any:
    """The :mod:`~adaptopt.optim._fused.triton_kernels` module (imports triton)."""
    try:
        module = importlib.import_module("adaptopt.optim._fused.triton_kernels")
    except ImportError as error:
        raise RuntimeError(
            "fused=True on CUDA runs Triton kernels, and triton cannot be imported "
            f"({error}); install it (pip install triton) or use fused=False"
        ) from error
    return module


def compute_dtype(p: Tensor) -> torch.dtype:
    """float32 for bf16/fp16/fp32 parameters, float64 for float64 ones."""
    return torch.promote_types(p.dtype, torch.float32)


def coefficient_table(values: Sequence[Scalar], device: torch.device) -> Tensor:
    """float64 coefficients on ``device``: shape ``(len(values),)``, or ``(n, len(values))``
    when some value is a per-tensor ``(n,)`` tensor. Floats become ``torch.full`` fills, so
    no host-to-device copy happens (CUDA-graph capturable)."""
    if device.type == "cpu" and not any(isinstance(v, Tensor) for v in values):
        return torch.tensor(values, dtype=torch.float64)  # one op instead of one per value
    columns = [
        v.to(device=device, dtype=torch.float64)
        if isinstance(v, Tensor)
        else torch.full((), v, dtype=torch.float64, device=device)
        for v in values
    ]
    return torch.stack(torch.broadcast_tensors(*columns), dim=-1)


def _flat(tensors: tuple[Tensor | None, ...]) -> tuple[Tensor | None, ...]:
    """1-d aliases when every tensor is contiguous (one graph for all shapes), else as is.

    The aliases are detached: no view base for the compiler to guard on, while in-place
    updates still bump the parameter's version counter. (Sizes 0 and 1 get their own graph:
    marking sizes unbacked would avoid it but stops inductor from fusing the loops.)
    """
    if not all(t is None or t.is_contiguous() for t in tensors):
        return tensors
    return tuple(None if t is None else t.view(-1).detach() for t in tensors)


@functools.lru_cache(maxsize=64)
def _owners(indices: tuple[int, ...], sizes: tuple[int, ...], device: torch.device) -> Tensor:
    """For each element of the concatenation of tensors ``indices`` (of ``sizes``), the index
    of its tensor. Cached: built once per parameter set (before any CUDA-graph capture)."""
    owners = torch.tensor(indices).repeat_interleave(torch.tensor(sizes))
    return owners.to(device)


def launch(
    name: str,
    params: list[Tensor],
    others: Sequence[Sequence[Tensor | None]],
    table: Tensor,
    *static: Any,
    read_params: bool = True,
) -> list[Any]:
    """Call kernel ``name`` on ``(p, *others)`` with each tensor's coefficients (the native
    kernels are called through ``native.launch``: :func:`launch_row`).

    ``table`` is ``(K,)`` (shared) or ``(n, K)`` (row ``i`` for tensor ``i``), cast to each
    tensor's compute dtype; ``static`` are Python arguments the graph specializes on; the
    arguments at positions ``layout.WRITES[name]`` are updated in place. On CUDA this is one
    Triton launch per dtype pair (``triton_kernels.launch``). Otherwise large tensors get one
    compiled call each; contiguous tensors of at most ``BATCH_NUMEL`` elements are
    concatenated per dtype into one call (a per-tensor table becomes per-element rows
    ``(numel, K)``) and copied back.
    """
    writes = layout.WRITES[name]
    if uses_triton(params[0].device):
        return triton_backend().launch(
            name, params, others, table, *static, read_params=read_params, writes=writes
        )
    kernel = compiled(name)
    rows = list(zip([p if read_params else None for p in params], *others, strict=True))
    tables: dict[torch.dtype, Tensor] = {}
    batches: dict[tuple[Any, ...], list[int]] = {}
    results = []
    with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
        for i, row in enumerate(rows):
            dtype = compute_dtype(params[i])
            if dtype not in tables:
                tables[dtype] = table.to(dtype)
            contiguous = all(t is None or t.is_contiguous() for t in row)
            if contiguous and params[i].numel() <= BATCH_NUMEL:
                key = (dtype, *(None if t is None else t.dtype for t in row))
                batches.setdefault(key, []).append(i)
                continue
            k = tables[dtype][i].detach() if table.dim() == 2 else tables[dtype]
            results.append(kernel(*_flat(row), k, *static))
        for (dtype, *_), indices in batches.items():
            tensors = [[rows[i][j] for i in indices] for j in range(len(rows[0]))]
            columns = [None if ts[0] is None else _flatten_dense_tensors(ts) for ts in tensors]
            k = tables[dtype]
            if table.dim() == 2:  # per-element coefficients (numel, K)
                sizes = tuple(params[i].numel() for i in indices)
                owners = _owners(tuple(indices), sizes, k.device)
                k = k.index_select(0, owners)
            results.append(kernel(*columns, k, *static))
            for j in (j for j in writes if columns[j] is not None):
                unflat = _unflatten_dense_tensors(columns[j], tensors[j])
                torch._foreach_copy_(tensors[j], list(unflat))
    return results


def check_devices(params: list[Tensor]) -> torch.device:
    """The one device of a fused group's parameters."""
    devices = {p.device for p in params}
    if len(devices) != 1:
        raise ValueError(
            f"fused=True needs all parameters of a param group on one device, got {devices}; "
            "split the parameters into one param group per device"
        )
    return devices.pop()


def launch_row(
    name: str,
    params: list[Tensor],
    others: Sequence[Sequence[Tensor | None]],
    row: Sequence[Scalar],
    *,
    read_params: bool = True,
    cache: dict[str, Any] | None = None,
) -> list[Any]:
    """Kernel ``name`` with one coefficient ``row`` for the whole group (in the order of
    ``layout.LAYOUTS[name]``): one native call on CPU (``native.launch``, reusing the group's
    plan in ``cache``), else :func:`launch` with the row as a table on the group's device.
    Generalized SignSGD, whose native call also increments the step counters, calls
    ``native.launch`` itself (``_adam_family._fused_adam_family``)."""
    device = check_devices(params)
    if uses_native(device):
        return native.launch(name, params, others, row, read_params=read_params, cache=cache)
    return launch(name, params, others, coefficient_table(row, device), read_params=read_params)
