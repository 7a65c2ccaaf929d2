"""The coefficient vectors of the fused kernels: one definition for every backend.

Each fused kernel reads its hyperparameters from a float64 coefficient vector ``k`` (or one
row per tensor) built by the ``_fused_<rule>`` function of its optimizer family (e.g.
``lion._fused_lion``). The order of its entries is defined
here once and read by name everywhere: by the builders (:meth:`Layout.row`), the compiled
kernels (:meth:`Layout.unpack`), the Triton kernels (constexpr indices from
:meth:`Layout.index`) and the native C++ kernels (preprocessor constants from
:func:`defines`, e.g. ``K_GSIGNSGD_EPS``).

Notation (``kernels.py``): :math:`s = \\pm 1` is the ``maximize`` sign, :math:`\\lambda_2` the
coupled L2 coefficient, ``decay`` = :math:`a/c` and ``step_size`` = :math:`-\\eta/c` (times the
bias correction or the clipping weights) of :math:`x \\leftarrow (a x - \\eta u)/c`.
"""

from __future__ import annotations

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


def defines() -> list[str]:
    """``-DK_<KERNEL>_<FIELD>=<index>`` for every entry: the indices of ``native.cpp``."""
    return [
        f"-DK_{layout.kernel.upper()}_{field.upper()}={i}"
        for layout in LAYOUTS.values()
        for i, field in enumerate(layout.fields)
    ]
