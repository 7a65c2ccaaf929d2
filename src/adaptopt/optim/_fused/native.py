"""Native CPU backend of the fused steps: the multi-tensor kernels of ``native.cpp``.

One call per param group and step updates every tensor (no per-tensor dispatch), with
software prefetching; ``benchmarks/RESULTS.md`` compares it with ``torch.optim.Adam(fused=True)``
and with the compiled kernels. The library is built with the system C++ compiler (``$CXX``,
else ``c++``) on first use, for this machine's CPU (``-march=native``), and cached in
``$ADAPTOPT_CACHE`` (default ``~/.cache/adaptopt``) under a key of the source, compiler, flags
and CPU features, so a shared home directory on a heterogeneous cluster stays correct. When
it cannot be built, :func:`library` returns ``None`` after a warning and the fused step uses
the compiled kernels instead.

The kernels run on torch's OpenMP runtime (``libgomp.so.1``, already loaded with torch) with
``torch.get_num_threads()`` threads.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from adaptopt.optim._fused import layout

SOURCE = Path(__file__).with_name("native.cpp")
# The coefficient indices (layout.py) are compile-time constants of the library.
FLAGS = ["-O3", "-std=c++17", "-fopenmp", "-fno-math-errno", "-fPIC", "-shared", *layout.defines()]
# Tried in order: tuned for this CPU, then portable.
ARCH_FLAGS = (["-march=native"], [])
DTYPES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
KERNELS = {"gsignsgd": 0, "lion": 1, "momentum_sums": 2, "momentum_update": 3}
logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    """``$ADAPTOPT_CACHE``, else ``$XDG_CACHE_HOME/adaptopt``, else ``~/.cache/adaptopt``."""
    if "ADAPTOPT_CACHE" in os.environ:
        return Path(os.environ["ADAPTOPT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "adaptopt"


def compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def _cpu_features() -> str:
    """The CPU's feature flags (Linux), so that a ``-march=native`` build is never loaded on
    a CPU that lacks an instruction it uses."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    flags = [line for line in lines if line.startswith(("flags", "Features"))]
    return f"{platform.machine()} {flags[0] if flags else ''}"


def _build(cxx: str, target: Path) -> str | None:
    """Compile ``SOURCE`` to ``target`` (atomically); the last error message, or None."""
    logger.info("building the native fused CPU kernels into %s (once per machine)", target)
    error = None
    for arch in ARCH_FLAGS:
        command = [cxx, *FLAGS, *arch, str(SOURCE), "-o"]
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                output = Path(tmp) / target.name
                result = subprocess.run(
                    [*command, str(output)], capture_output=True, text=True, check=False
                )
                if result.returncode == 0:
                    os.replace(output, target)
                    return None
                error = f"{' '.join(command)}\n{result.stderr[-2000:]}"
        except OSError as failure:  # no such compiler, unwritable cache directory
            return f"{' '.join(command)}\n{failure}"
    return error


@functools.cache
def library() -> Any:
    """``adaptopt_fused_step`` of the built library, or ``None`` if it cannot be built here."""
    cxx = compiler()
    if cxx is None:
        return None
    key = hashlib.sha256(
        b"\0".join(
            part.encode() if isinstance(part, str) else part
            for part in (SOURCE.read_bytes(), cxx, " ".join(FLAGS), _cpu_features())
        )
    ).hexdigest()[:20]
    path = cache_dir() / f"fused_step-{key}.so"
    error = None if path.exists() else _build(cxx, path)
    if error is None:
        try:
            function = ctypes.CDLL(str(path)).adaptopt_fused_step
        except (OSError, AttributeError) as failure:
            error = f"loading {path}: {failure}"
    if error is not None:
        warnings.warn(
            "adaptopt: the native fused CPU kernels could not be built; the fused step "
            f"uses torch.compile kernels instead.\n{error}",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    function.restype = ctypes.c_int
    function.argtypes = [
        *[ctypes.c_int] * 4,
        ctypes.c_int64,
        *[ctypes.c_void_p] * 6,
        ctypes.c_int64,
        ctypes.c_int,
        ctypes.c_void_p,
    ]
    return function


def available() -> bool:
    return library() is not None


def _pointers(tensors: list[Tensor | None]) -> Any:
    """A C array of data pointers, or ``None`` when the input is absent (all ``None``)."""
    if tensors[0] is None:
        return None
    return (ctypes.c_void_p * len(tensors))(*(t.data_ptr() for t in tensors))


def launch(
    name: str,
    params: list[Tensor],
    others: Sequence[Sequence[Tensor | None]],
    table: Tensor,
    *static: Any,
    read_params: bool = True,
    writes: Sequence[int] = (),
) -> list[Any]:
    """``_fused.launch`` for CPU tensors: one native call per (parameter, state) dtype pair.

    Non-contiguous tensors are updated through contiguous copies (copied back when written).
    Returns, for ``momentum_sums``, one ``(Σd², Σb̃²)`` pair of float64 0-d tensors per call.
    """
    function = library()
    rows = list(zip(params, *others))
    calls: dict[tuple[torch.dtype, torch.dtype], list[int]] = {}
    for i, row in enumerate(rows):
        state = next((t for t in row[2:] if t is not None), row[0])
        calls.setdefault((row[0].dtype, state.dtype), []).append(i)
    table = table.to(dtype=torch.float64).contiguous()
    results = []
    for (param_dtype, state_dtype), indices in calls.items():
        columns = [[rows[i][j] for i in indices] for j in range(len(rows[0]))]
        copies = []  # (original, contiguous copy) of written non-contiguous tensors
        for j, column in enumerate(columns):
            for n, t in enumerate(column):
                if t is not None and not t.is_contiguous():
                    column[n] = t.contiguous()
                    if j in writes:
                        copies.append((t, column[n]))
        k = table if table.dim() == 1 else table[indices].contiguous()
        sums = torch.zeros(2, dtype=torch.float64) if name == "momentum_sums" else None
        numel = (ctypes.c_int64 * len(indices))(*(t.numel() for t in columns[0]))
        status = function(
            KERNELS[name],
            int(bool(static and static[0])),
            DTYPES[param_dtype],
            DTYPES[state_dtype],
            len(indices),
            _pointers(columns[0]) if read_params else None,
            *(_pointers(column) for column in columns[1:]),
            *([None] * (4 - len(columns))),
            numel,
            k.data_ptr(),
            0 if k.dim() == 1 else k.shape[1],
            torch.get_num_threads(),
            None if sums is None else sums.data_ptr(),
        )
        if status != 0:
            raise TypeError(f"fused step: unsupported dtypes {param_dtype}, {state_dtype}")
        for original, copy in copies:
            original.copy_(copy)
        if 0 in writes:  # autograd cannot see writes through pointers; the state is private
            for p in columns[0]:
                torch.autograd.graph.increment_version(p)
        if sums is not None:
            results.append((sums[0], sums[1]))
    return results
