"""Native CPU backend of the fused steps: the multi-tensor kernels of ``native.cpp``.

One call per param group and step updates every tensor (no per-tensor dispatch), with
software prefetching; ``benchmarks/RESULTS.md`` compares it with ``torch.optim.Adam(fused=True)``
and with the compiled kernels.

**Build.** The library (``layout.LIBRARY``, next to this file, built with portable flags;
on x86-64 also ``layout.LIBRARY_AVX2``, loaded instead on CPUs with AVX2 and FMA) is built
when the package is built or installed (``setup.py``: ``pip install .``, ``pip install -e .``,
wheels; in a checkout ``python setup.py build_ext --inplace``), never at run time. When it is
missing (no compiler at install time), stale (built from another ``native.cpp`` or
``layout.py``: its :func:`~adaptopt.optim._fused.layout.abi_key` differs) or cannot be
loaded, :func:`library` returns ``None`` after one warning per process, and fused CPU steps
use the compiled kernels.

**Interface.** ``adaptopt_fused_step`` is called through ctypes with the argument types of
:data:`SIGNATURES`, which ``tests/optim/test_fused.py`` checks against the ``extern "C"``
prototypes of ``native.cpp``. Kernel ids, dtype codes, flag bits and status codes are defined
once, in ``layout.py``, which the build passes to the C++ as ``-D`` flags. A status other than
OK (unknown kernel, unsupported dtype, invalid arguments) raises before anything is written.

**Step counters.** Generalized SignSGD's ``state["step"]`` (float64 scalars) are incremented
inside the call, which also computes each tensor's bias corrections from its count.

**Autograd.** The kernels write through data pointers, which autograd does not see: after a
call, every tensor the kernel writes (:data:`layout.WRITES <adaptopt.optim._fused.layout.WRITES>`:
parameters, state, step counters) gets its version counter incremented, in one
``torch.autograd.graph.increment_version`` call over the plan's list of them. That is torch's
API for kernels writing through data pointers, and the bump torch's own fused optimizers get
from the ``Tensor(a!)`` annotations of their op schemas. A ``torch.library`` custom op with
``mutates_args`` does the same bump, but boxing the step's tensor lists through the dispatcher
measured 0.8-3 ms per call for 148 tensors: more than the rest of the step's Python side.

**Plans.** The pointer tables of a call are kept in a :class:`Plan` per optimizer param
group and kernel (the ``cache`` dict the optimizer passes) and reused while the same tensor
objects (parameters, state, step counters) hold the same memory: each step only compares
identities and data pointers and fills in the gradients' pointers. Any change (new state,
``load_state_dict``, ``p.data = ...``, another parameter set) builds a new plan.
Non-contiguous parameters or state go through contiguous copies (copied back when written),
without a plan.

**OpenMP.** The library needs ``libgomp.so.1``, which torch (imported first) has loaded
already: the loader binds the kernels to torch's OpenMP runtime and thread pool, and they run
with ``torch.get_num_threads()`` threads.
"""

from __future__ import annotations

import ctypes
import functools
import operator
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from adaptopt.optim._fused import layout

SOURCE = Path(__file__).with_name("native.cpp")
PATH = Path(__file__).with_name(layout.LIBRARY)
PATH_AVX2 = Path(__file__).with_name(layout.LIBRARY_AVX2)
DTYPES = {getattr(torch, name): code for name, code in layout.DTYPE_CODES.items()}
STATUS = {code: name for name, code in layout.STATUS.items()}

_POINTERS = ctypes.POINTER(ctypes.c_void_p)
_DOUBLES = ctypes.POINTER(ctypes.c_double)
# (restype, argtypes) of the library's functions: the prototypes of native.cpp, in ctypes.
SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "adaptopt_fused_step": (
        ctypes.c_int,
        [
            ctypes.c_int,  # kernel
            ctypes.c_int,  # flags
            ctypes.c_int,  # param_dtype
            ctypes.c_int,  # state_dtype
            ctypes.c_int64,  # n
            _POINTERS,  # x
            _POINTERS,  # g
            _POINTERS,  # s0
            _POINTERS,  # s1
            _POINTERS,  # steps
            ctypes.POINTER(ctypes.c_int64),  # numel
            _DOUBLES,  # k
            ctypes.c_int,  # threads
            _DOUBLES,  # sums
        ],
    ),
    "adaptopt_fused_abi": (ctypes.c_char_p, []),
    "adaptopt_fused_has_avx2": (ctypes.c_int, []),
    "adaptopt_fused_convert": (
        ctypes.c_int,
        [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64],
    ),
}

# Per argument (x, g, s0, s1, steps), one entry per tensor: tensors, or None when absent.
Columns = list[list[Any]]
_DATA_PTR = Tensor.data_ptr
_IS_CONTIGUOUS = Tensor.is_contiguous


class NativeKernelError(RuntimeError):
    """A call the library refused (its status code says why); nothing was written."""


def _warn(reason: str) -> None:
    warnings.warn(
        f"adaptopt: the native fused CPU kernels are not available ({reason}); fused CPU "
        "steps use the torch.compile kernels instead. They are built when adaptopt is "
        "installed with a C++ compiler (pip install ., pip install -e ., or in a checkout: "
        "python setup.py build_ext --inplace).",
        RuntimeWarning,
        stacklevel=3,
    )


def load(path: Path) -> ctypes.CDLL:
    """The library at ``path`` with its typed functions; ``OSError`` if it cannot be loaded,
    ``ImportError`` if it is stale (another ABI key than this source and layout)."""
    try:
        lib = ctypes.CDLL(str(path))
        for name, (restype, argtypes) in SIGNATURES.items():
            function = getattr(lib, name)
            function.restype, function.argtypes = restype, argtypes
    except AttributeError as missing:
        raise OSError(f"{path}: {missing}") from missing
    expected = layout.abi_key(SOURCE.read_bytes())
    built = lib.adaptopt_fused_abi().decode()
    if built != expected:
        raise ImportError(f"{path.name} is stale: built for ABI {built}, the source is {expected}")
    return lib


@functools.cache
def library() -> ctypes.CDLL | None:
    """The built library (its AVX2 build where the CPU has AVX2 and FMA), or ``None`` after
    one warning when it is missing, stale or cannot be loaded. Never compiles anything."""
    if not PATH.exists():
        _warn(f"{PATH.name} was not built")
        return None
    try:
        lib = load(PATH)
        if lib.adaptopt_fused_has_avx2() and PATH_AVX2.exists():
            lib = load(PATH_AVX2)
    except OSError as failure:
        _warn(f"loading it failed: {failure}")
        return None
    except ImportError as stale:
        _warn(str(stale))
        return None
    return lib


def available() -> bool:
    return library() is not None


def _array(ctype: Any, values: Sequence[Any]) -> Any:
    return (ctype * len(values))(*values)


class _Call:
    """One native call: the tensors ``indices`` of one (parameter, state) dtype pair."""

    __slots__ = ("grads", "indices", "numel", "param_dtype", "pointers", "state_dtype", "whole")

    def __init__(self, columns: Columns, indices: list[int], read_params: bool):
        first = [column[indices[0]] for column in columns]
        state = next((t for t in first[2:4] if t is not None), first[0])
        self.indices, self.whole = indices, indices == list(range(len(columns[0])))
        self.param_dtype, self.state_dtype = DTYPES[first[0].dtype], DTYPES[state.dtype]
        self.numel = _array(ctypes.c_int64, [columns[0][i].numel() for i in indices])
        self.grads: Any = (ctypes.c_void_p * len(indices))()  # filled in at each step
        self.pointers = [
            None if column[indices[0]] is None or (j == 0 and not read_params)
            else _array(ctypes.c_void_p, [column[i].data_ptr() for i in indices])
            for j, column in enumerate(columns)
        ]  # fmt: skip


class Plan:
    """The pointer tables of one kernel over one list of parameters and its state, valid
    while the same tensor objects hold the same memory (:meth:`matches`)."""

    def __init__(self, name: str, columns: Columns, read_params: bool):
        params = columns[0]
        fixed = self.fixed(columns)
        for t in fixed:
            if t.device.type != "cpu" or not t.is_contiguous():
                raise ValueError("native fused step: CPU tensors, contiguous (else copies)")
        for i, t in enumerate(columns[4]):
            if t is not None and (t.dtype != torch.float64 or t.numel() != 1):
                raise TypeError(
                    f"fused step: the step counter of parameter {i} is a {t.dtype} tensor of "
                    f"{t.numel()} elements, not a float64 scalar"
                )
        calls: dict[tuple[torch.dtype, torch.dtype], list[int]] = {}
        for i in range(len(params)):
            row = [column[i] for column in columns]
            state = next((t for t in row[2:4] if t is not None), row[0])
            for t in (row[0], state):
                if t.dtype not in DTYPES:
                    raise TypeError(f"fused step: unsupported dtype {t.dtype} (param {i})")
            calls.setdefault((row[0].dtype, state.dtype), []).append(i)
        self.kernel, self.read_params = layout.KERNEL_IDS[name], read_params
        self.tensors = fixed
        self.pointers = list(map(_DATA_PTR, fixed))
        self.calls = [_Call(columns, indices, read_params) for indices in calls.values()]
        writes = [columns[j] for j in (*layout.WRITES[name], 4) if columns[j][0] is not None]
        self.written: list[Tensor] = [t for column in writes for t in column]

    @staticmethod
    def fixed(columns: Columns) -> list[Tensor]:
        """The tensors of a plan other than the gradients (which change at every step)."""
        return [t for j, column in enumerate(columns) if j != 1 and column[0] is not None
                for t in column]  # fmt: skip

    def matches(self, fixed: list[Tensor]) -> bool:
        """Whether ``fixed`` are this plan's tensor objects, at the same addresses."""
        return (
            len(fixed) == len(self.tensors)
            and all(map(operator.is_, fixed, self.tensors))
            and list(map(_DATA_PTR, fixed)) == self.pointers
        )


def _contiguous(
    columns: Columns, writes: Sequence[int]
) -> tuple[Columns, list[tuple[Tensor, Tensor]]]:
    """``columns`` with contiguous copies of non-contiguous tensors, and the (original, copy)
    pairs of the written ones."""
    copies: list[tuple[Tensor, Tensor]] = []
    out: Columns = []
    for j, column in enumerate(columns):
        if column[0] is None or all(map(_IS_CONTIGUOUS, column)):
            out.append(column)
            continue
        column = list(column)
        for n, t in enumerate(column):
            if not t.is_contiguous():
                column[n] = t.contiguous()
                if j in writes:
                    copies.append((t, column[n]))
        out.append(column)
    return out, copies


def launch(
    name: str,
    params: list[Tensor],
    others: Sequence[Sequence[Tensor | None]],
    row: Sequence[float | Tensor],
    *,
    steps: Sequence[Tensor] | None = None,
    flags: int = 0,
    read_params: bool = True,
    cache: dict[str, Plan] | None = None,
) -> list[tuple[Tensor, Tensor]]:
    """Kernel ``name`` on ``(params, *others)`` (gradients, then up to two state lists of
    tensors or ``None``), with the coefficient ``row`` (``layout.LAYOUTS[name]``) and, for
    Generalized SignSGD, the step counters ``steps``: one native call per (parameter,
    state) dtype pair. ``cache`` keeps the :class:`Plan`. Returns, for ``momentum_sums``,
    one ``(Σd², Σb̃²)`` pair of float64 0-d tensors per call."""
    lib = library()
    if lib is None:
        raise RuntimeError("the native fused CPU kernels are not available")
    if not params:
        return []
    n = len(params)
    columns: Columns = [list(params), *(list(c) for c in others)]
    columns += [[None] * n] * (4 - len(columns))
    columns.append([None] * n if steps is None else list(steps))
    if not all(map(_IS_CONTIGUOUS, columns[1])):
        columns[1] = [g.contiguous() for g in columns[1]]  # read only: no copy back
    grads = list(map(_DATA_PTR, columns[1]))
    fixed = Plan.fixed(columns)
    plan = None if cache is None else cache.get(name)
    copies: list[tuple[Tensor, Tensor]] = []
    if plan is None or plan.read_params != read_params or not plan.matches(fixed):
        if cache is not None:
            cache.pop(name, None)  # releases the old tensors
        if all(map(_IS_CONTIGUOUS, fixed)):
            plan = Plan(name, columns, read_params)
            if cache is not None:
                cache[name] = plan
        else:  # through contiguous copies, without a plan
            columns, copies = _contiguous(columns, layout.WRITES[name])
            plan = Plan(name, columns, read_params)
    k = _array(ctypes.c_double, [float(v) for v in row])
    threads = torch.get_num_threads()
    results = []
    for call in plan.calls:
        call.grads[:] = grads if call.whole else [grads[i] for i in call.indices]
        x, _, s0, s1, counters = call.pointers
        sums = (ctypes.c_double * 2)() if name == "momentum_sums" else None
        status = lib.adaptopt_fused_step(
            plan.kernel,
            flags,
            call.param_dtype,
            call.state_dtype,
            len(call.indices),
            x,
            call.grads,
            s0,
            s1,
            counters,
            call.numel,
            k,
            threads,
            sums,
        )
        if status != layout.STATUS["ok"]:
            raise NativeKernelError(
                f"native fused step {name!r}: {STATUS.get(status, f'status {status}')}"
            )
        if sums is not None:
            pair = torch.tensor([sums[0], sums[1]], dtype=torch.float64)
            results.append((pair[0], pair[1]))
    for original, copy in copies:
        original.copy_(copy)
    torch.autograd.graph.increment_version(plan.written)
    return results
