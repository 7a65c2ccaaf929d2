"""The coefficient vectors of the fused kernels, and the ids of the native interface: one
definition for every backend.

Each fused kernel reads its hyperparameters from a float64 coefficient vector ``k`` (or one
row per tensor) built by the ``_fused_<rule>`` function of its optimizer family (e.g.
``lion._fused_lion``). The order of its entries is defined
here once and read by name everywhere: by the builders (:meth:`Layout.row`), the compiled
kernels (:meth:`Layout.unpack`), the Triton kernels (constexpr indices from
:meth:`Layout.index`) and the native C++ kernels (preprocessor constants from
:func:`defines`, e.g. ``K_GSIGNSGD_EPS``).

The native library (``native.cpp``) also takes its kernel ids, dtype codes, flag bits and
status codes from here (:data:`KERNEL_IDS`, :data:`DTYPE_CODES`, :data:`FLAGS`,
:data:`STATUS`, as ``-DKERNEL_LION=1`` ...), and is built for one :func:`abi_key`. This module
imports nothing but the standard library: ``setup.py`` reads it to build the library.

Notation (``kernels.py``): :math:`s = \\pm 1` is the ``maximize`` sign, :math:`\\lambda_2` the
coupled L2 coefficient, ``decay`` = :math:`a/c` and ``step_size`` = :math:`-\\eta/c` (times the
bias correction or the clipping weights) of :math:`x \\leftarrow (a x - \\eta u)/c`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any


class Layout:
    """The named entries of one kernel's coefficient vector, in order."""

    def __init__(self, kernel: str, fields: Sequence[str]) -> None:
        if len(set(fields)) != len(fields):
            raise ValueError(f"duplicate coefficient names in {fields}")
        self.kernel = kernel
        self.fields = tuple(fields)

    def __len__(self) -> int:
        return len(self.fields)

    def index(self, field: str) -> int:
        return self.fields.index(field)

    def row(self, **values: Any) -> list[Any]:
        """The values in layout order; every field must be given, and nothing else."""
        if set(values) != set(self.fields):
            missing = sorted(set(self.fields) - set(values))
            unknown = sorted(set(values) - set(self.fields))
            raise ValueError(f"{self.kernel} coefficients: missing {missing}, unknown {unknown}")
        return [values[field] for field in self.fields]

    def unpack(self, k: Any) -> dict[str, Any]:
        """``{field: k[..., i]}`` for a ``(K,)`` or ``(n, K)`` tensor (possibly wider)."""
        columns = k.unbind(-1)
        return {field: columns[i] for i, field in enumerate(self.fields)}


GSIGNSGD = Layout(
    "gsignsgd",
    (
        "sign",
        "l2",
        "beta1",
        "one_minus_beta1",
        "beta2",
        "one_minus_beta2",
        "inv_sqrt_bc2",  # 1/sqrt(1 - β2^t), 1 without bias correction
        "eps",
        "decay",
        "step_size",  # -η/((1 - β1^t) c)
    ),
)
LION = Layout(
    "lion",
    ("sign", "l2", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2", "decay", "step_size"),
)
# Clipping/normalization: the momentum direction d, b_t = μ b + d, b̃ = c_d d + c_b b_t.
MOMENTUM_SUMS = Layout("momentum_sums", ("sign", "l2", "momentum", "c_d", "c_b"))
# The update pass shares the direction prefix, then x <- (a/c) x - (η/c)(w_b b̃ + w_d d).
MOMENTUM_UPDATE = Layout(
    "momentum_update", (*MOMENTUM_SUMS.fields, "decay", "momentum_step", "grad_step")
)
LAYOUTS = {layout.kernel: layout for layout in (GSIGNSGD, LION, MOMENTUM_SUMS, MOMENTUM_UPDATE)}


# The native interface (native.cpp, native.py): kernel ids, element dtype codes (torch dtype
# names), bits of the flags argument, and the status codes the library returns.
KERNEL_IDS = {kernel: i for i, kernel in enumerate(LAYOUTS)}
DTYPE_CODES = {"float32": 0, "float64": 1, "bfloat16": 2, "float16": 3}
FLAGS = {"square_gradient": 1, "bias_correction": 2}  # Generalized SignSGD only
STATUS = {"ok": 0, "unknown_kernel": 1, "unsupported_dtype": 2, "invalid_arguments": 3}
# The arguments each kernel writes, by position in (x, g, s0, s1): x the parameters, g the
# gradients, s0 and s1 the state (exp_avg, exp_avg_sq, or the momentum buffer).
WRITES = {"gsignsgd": (0, 2, 3), "lion": (0, 2), "momentum_sums": (), "momentum_update": (0, 2)}
# The built libraries, next to native.cpp in the package (setup.py names them so): the
# portable build, and on x86-64 one with AVX2 and FMA, loaded where the CPU has them.
LIBRARY = "_native_kernels.so"
LIBRARY_AVX2 = "_native_kernels_avx2.so"


def defines() -> list[str]:
    """The ``-D`` flags of ``native.cpp``: ``-DK_<KERNEL>_<FIELD>=<index>`` for every
    coefficient, ``-DKSIZE_<KERNEL>=<entries>``, and ``-DKERNEL_<KERNEL>``, ``-DDTYPE_<NAME>``,
    ``-DFLAG_<NAME>``, ``-DSTATUS_<NAME>`` for the ids above."""
    flags = [
        f"-DK_{layout.kernel.upper()}_{field.upper()}={i}"
        for layout in LAYOUTS.values()
        for i, field in enumerate(layout.fields)
    ]
    flags += [f"-DKSIZE_{layout.kernel.upper()}={len(layout)}" for layout in LAYOUTS.values()]
    for prefix, ids in (
        ("KERNEL", KERNEL_IDS),
        ("DTYPE", DTYPE_CODES),
        ("FLAG", FLAGS),
        ("STATUS", STATUS),
    ):
        flags += [f"-D{prefix}_{name.upper()}={value}" for name, value in ids.items()]
    return flags


def abi_key(source: bytes) -> str:
    """The key of a library built from ``source`` (``native.cpp``) with :func:`defines`: the
    library returns it (``adaptopt_fused_abi``), and ``native.py`` loads only a library whose
    key is the one of the installed source and layout."""
    digest = hashlib.sha256(source)
    digest.update("\0".join(defines()).encode())
    return digest.hexdigest()[:20]
