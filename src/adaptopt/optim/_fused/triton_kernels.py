# ruff: noqa: SIM108, SIM300  (if/else on constexpr dtypes is compile-time code selection)
r"""Multi-tensor Triton kernels of the fused steps: the CUDA backend of ``fused=True``.

One kernel launch per param group, (parameter, state) dtype pair and pass updates every
tensor of the group. The launch gets two device tables (built on the host once per set of
tensors and cached, so a captured step copies nothing):

* ``tensors``, int64 ``(n, 6)``: the data pointers of x, g and the two state tensors (0 when
  absent), the element count and the coefficient row of each tensor;
* ``items``, int64 ``(m, 2)``: the work items ``(tensor, first element)``, one per ``CHUNK``
  elements of each tensor. Program ``i`` of the grid takes item ``i`` and walks its chunk in
  blocks of ``BLOCK`` elements.

The arithmetic is the one of ``kernels.py`` and ``native.cpp``, on the same coefficient
vectors (``layout.py``; rows of the float64 table, one per tensor or one for all): float32
for bf16/fp16/fp32 parameters, float64 for float64 ones, with round-to-nearest square roots
and divisions (``tl.sqrt_rn``, ``tl.div_rn``); parameters and state are rounded to their own
dtype once, when stored. The hyperparameters are data, never compile-time constants: a
changing learning rate never recompiles.

Global-norm steps (clipping, normalization) make a read-only pass that writes one float64
pair of partial sums per work item (block-wise float32 lanes, summed in float64), then
:func:`reduce_sums_kernel` adds the partials in item order in one program: the sums are the
same bits in every run, and nothing is copied to the host.

Under ``TRITON_INTERPRET=1`` (set before triton is imported) the same kernels run on CPU
tensors; the tests do so (``tests/optim/test_triton.py``). Importing this module imports
triton: ``adaptopt.optim._fused`` imports it only when a Triton step runs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, cast

import torch
import triton
import triton.language as tl
from torch import Tensor

from adaptopt.optim._fused import layout

# Elements per block of a program's loop and per work item (a multiple of BLOCK). Chosen for
# an H100-class GPU without a measurement yet: ~15K programs for GPT-2 small, 16 KB of
# float32 per stream and program.
BLOCK = 1024
CHUNK = 4 * BLOCK
NUM_WARPS = 4
# Device tables kept per set of tensors (each param group and dtype pair has one entry).
TABLE_CACHE_SIZE = 64
TABLE_WIDTH = 6  # x, g, s0, s1 pointers, numel, coefficient row
_WIDTH = tl.constexpr(TABLE_WIDTH)  # kernels may only read constexpr globals

_TL_DTYPES = {
    torch.float32: tl.float32,
    torch.float64: tl.float64,
    torch.bfloat16: tl.bfloat16,
    torch.float16: tl.float16,
}

# Coefficient indices, from the one definition in layout.py.
G_SIGN = tl.constexpr(layout.GSIGNSGD.index("sign"))
G_L2 = tl.constexpr(layout.GSIGNSGD.index("l2"))
G_BETA1 = tl.constexpr(layout.GSIGNSGD.index("beta1"))
G_ONE_MINUS_BETA1 = tl.constexpr(layout.GSIGNSGD.index("one_minus_beta1"))
G_BETA2 = tl.constexpr(layout.GSIGNSGD.index("beta2"))
G_ONE_MINUS_BETA2 = tl.constexpr(layout.GSIGNSGD.index("one_minus_beta2"))
G_INV_SQRT_BC2 = tl.constexpr(layout.GSIGNSGD.index("inv_sqrt_bc2"))
G_EPS = tl.constexpr(layout.GSIGNSGD.index("eps"))
G_DECAY = tl.constexpr(layout.GSIGNSGD.index("decay"))
G_STEP_SIZE = tl.constexpr(layout.GSIGNSGD.index("step_size"))
L_SIGN = tl.constexpr(layout.LION.index("sign"))
L_L2 = tl.constexpr(layout.LION.index("l2"))
L_BETA1 = tl.constexpr(layout.LION.index("beta1"))
L_ONE_MINUS_BETA1 = tl.constexpr(layout.LION.index("one_minus_beta1"))
L_BETA2 = tl.constexpr(layout.LION.index("beta2"))
L_ONE_MINUS_BETA2 = tl.constexpr(layout.LION.index("one_minus_beta2"))
L_DECAY = tl.constexpr(layout.LION.index("decay"))
L_STEP_SIZE = tl.constexpr(layout.LION.index("step_size"))
M_SIGN = tl.constexpr(layout.MOMENTUM_SUMS.index("sign"))
M_L2 = tl.constexpr(layout.MOMENTUM_SUMS.index("l2"))
M_MOMENTUM = tl.constexpr(layout.MOMENTUM_SUMS.index("momentum"))
M_C_D = tl.constexpr(layout.MOMENTUM_SUMS.index("c_d"))
M_C_B = tl.constexpr(layout.MOMENTUM_SUMS.index("c_b"))
U_DECAY = tl.constexpr(layout.MOMENTUM_UPDATE.index("decay"))
U_MOMENTUM_STEP = tl.constexpr(layout.MOMENTUM_UPDATE.index("momentum_step"))
U_GRAD_STEP = tl.constexpr(layout.MOMENTUM_UPDATE.index("grad_step"))


# -- kernels -----------------------------------------------------------------------------------


@triton.jit
def _to_bf16(x):
    """float32/float64 -> bfloat16, rounded to nearest even (NaN stays NaN).

    Written out because Triton's interpreter truncates this conversion where the GPU rounds
    (Triton 3.9): the kernels then round alike on both. float64 goes through float32.
    """
    bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    rounded = tl.where((bits & 0x7FFFFFFF) > 0x7F800000, (bits >> 16) | 0x40, rounded)
    return rounded.to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def _work_item(tensors, items, k_table, k_stride):
    """This program's work item: its tensor's table row, the chunk's first element, the
    tensor's size and its coefficient row (the prologue every kernel shares)."""
    item = tl.program_id(0).to(tl.int64)
    row = tensors + _WIDTH * tl.load(items + 2 * item)
    start = tl.load(items + 2 * item + 1)
    numel = tl.load(row + 4)
    k = k_table + tl.load(row + 5) * k_stride
    return row, start, numel, k


@triton.jit
def gsignsgd_kernel(
    tensors,
    items,
    k_table,
    k_stride,
    P: tl.constexpr,
    S: tl.constexpr,
    C: tl.constexpr,
    HAS_V: tl.constexpr,
    SQUARE_GRADIENT: tl.constexpr,
    BLOCK: tl.constexpr,
    CHUNK: tl.constexpr,
    ALIGNED: tl.constexpr,
):
    """Generalized SignSGD, or Adam with ``SQUARE_GRADIENT`` (``kernels.gsignsgd``)."""
    row, start, numel, k = _work_item(tensors, items, k_table, k_stride)
    x_ptr = tl.load(row + 0).to(tl.pointer_type(P))
    g_ptr = tl.load(row + 1).to(tl.pointer_type(P))
    m_ptr = tl.load(row + 2).to(tl.pointer_type(S))
    v_ptr = tl.load(row + 3).to(tl.pointer_type(S))
    if ALIGNED:  # checked by the launcher: 16-byte aligned data, numel % 16 == 0
        numel = tl.multiple_of(numel, 16)
        start = tl.multiple_of(start, 16)
        x_ptr = tl.multiple_of(x_ptr, 16)
        g_ptr = tl.multiple_of(g_ptr, 16)
        m_ptr = tl.multiple_of(m_ptr, 16)
        v_ptr = tl.multiple_of(v_ptr, 16)
    sign = tl.load(k + G_SIGN).to(C)
    l2 = tl.load(k + G_L2).to(C)
    beta1 = tl.load(k + G_BETA1).to(C)
    one_minus_beta1 = tl.load(k + G_ONE_MINUS_BETA1).to(C)
    beta2 = tl.load(k + G_BETA2).to(C)
    one_minus_beta2 = tl.load(k + G_ONE_MINUS_BETA2).to(C)
    inv_sqrt_bc2 = tl.load(k + G_INV_SQRT_BC2).to(C)
    eps = tl.load(k + G_EPS).to(C)
    decay = tl.load(k + G_DECAY).to(C)
    step_size = tl.load(k + G_STEP_SIZE).to(C)
    for offset in tl.range(0, tl.minimum(numel - start, CHUNK), BLOCK):
        i = start + offset + tl.arange(0, BLOCK)
        mask = i < numel
        x = tl.load(x_ptr + i, mask=mask, other=0.0).to(C)
        d = sign * tl.load(g_ptr + i, mask=mask, other=0.0).to(C) + l2 * x
        m_t = beta1 * tl.load(m_ptr + i, mask=mask, other=0.0).to(C) + one_minus_beta1 * d
        if SQUARE_GRADIENT:
            squared = d
        else:
            squared = m_t
        if HAS_V:
            v = tl.load(v_ptr + i, mask=mask, other=0.0).to(C)
            v_t = beta2 * v + one_minus_beta2 * squared * squared
            if S == tl.bfloat16:
                v_out = _to_bf16(v_t)
            else:
                v_out = v_t.to(S)
            tl.store(v_ptr + i, v_out, mask=mask)
            if C == tl.float64:  # float64 sqrt is correctly rounded
                root = tl.sqrt(v_t)
            else:
                root = tl.sqrt_rn(v_t)
        else:
            root = tl.abs(squared)
        denom = root * inv_sqrt_bc2 + eps
        denom = tl.where(denom == 0, 1.0, denom).to(C)  # 0/0 := 0
        if C == tl.float64:  # float64 division is correctly rounded
            u = m_t / denom
        else:
            u = tl.div_rn(m_t, denom)
        if S == tl.bfloat16:
            m_out = _to_bf16(m_t)
        else:
            m_out = m_t.to(S)
        if P == tl.bfloat16:
            x_out = _to_bf16(decay * x + step_size * u)
        else:
            x_out = (decay * x + step_size * u).to(P)
        tl.store(m_ptr + i, m_out, mask=mask)
        tl.store(x_ptr + i, x_out, mask=mask)


@triton.jit
def lion_kernel(
    tensors,
    items,
    k_table,
    k_stride,
    P: tl.constexpr,
    S: tl.constexpr,
    C: tl.constexpr,
    BLOCK: tl.constexpr,
    CHUNK: tl.constexpr,
    ALIGNED: tl.constexpr,
):
    """Lion (``kernels.lion``)."""
    row, start, numel, k = _work_item(tensors, items, k_table, k_stride)
    x_ptr = tl.load(row + 0).to(tl.pointer_type(P))
    g_ptr = tl.load(row + 1).to(tl.pointer_type(P))
    m_ptr = tl.load(row + 2).to(tl.pointer_type(S))
    if ALIGNED:  # checked by the launcher: 16-byte aligned data, numel % 16 == 0
        numel = tl.multiple_of(numel, 16)
        start = tl.multiple_of(start, 16)
        x_ptr = tl.multiple_of(x_ptr, 16)
        g_ptr = tl.multiple_of(g_ptr, 16)
        m_ptr = tl.multiple_of(m_ptr, 16)
    sign = tl.load(k + L_SIGN).to(C)
    l2 = tl.load(k + L_L2).to(C)
    beta1 = tl.load(k + L_BETA1).to(C)
    one_minus_beta1 = tl.load(k + L_ONE_MINUS_BETA1).to(C)
    beta2 = tl.load(k + L_BETA2).to(C)
    one_minus_beta2 = tl.load(k + L_ONE_MINUS_BETA2).to(C)
    decay = tl.load(k + L_DECAY).to(C)
    step_size = tl.load(k + L_STEP_SIZE).to(C)
    for offset in tl.range(0, tl.minimum(numel - start, CHUNK), BLOCK):
        i = start + offset + tl.arange(0, BLOCK)
        mask = i < numel
        x = tl.load(x_ptr + i, mask=mask, other=0.0).to(C)
        d = sign * tl.load(g_ptr + i, mask=mask, other=0.0).to(C) + l2 * x
        m = tl.load(m_ptr + i, mask=mask, other=0.0).to(C)
        c = beta1 * m + one_minus_beta1 * d
        u = tl.where(c > 0, 1.0, tl.where(c < 0, -1.0, c)).to(C)  # sign; NaN stays NaN
        if S == tl.bfloat16:
            m_out = _to_bf16(beta2 * m + one_minus_beta2 * d)
        else:
            m_out = (beta2 * m + one_minus_beta2 * d).to(S)
        if P == tl.bfloat16:
            x_out = _to_bf16(decay * x + step_size * u)
        else:
            x_out = (decay * x + step_size * u).to(P)
        tl.store(m_ptr + i, m_out, mask=mask)
        tl.store(x_ptr + i, x_out, mask=mask)


@triton.jit
def momentum_sums_kernel(
    tensors,
    items,
    k_table,
    k_stride,
    partials,
    P: tl.constexpr,
    S: tl.constexpr,
    C: tl.constexpr,
    READ_X: tl.constexpr,
    HAS_B: tl.constexpr,
    BLOCK: tl.constexpr,
    CHUNK: tl.constexpr,
    ALIGNED: tl.constexpr,
):
    """Pass 1, read-only: ``partials[item] = (Σ d², Σ b̃²)`` over the item's chunk."""
    row, start, numel, k = _work_item(tensors, items, k_table, k_stride)
    x_ptr = tl.load(row + 0).to(tl.pointer_type(P))
    g_ptr = tl.load(row + 1).to(tl.pointer_type(P))
    b_ptr = tl.load(row + 2).to(tl.pointer_type(S))
    if ALIGNED:  # checked by the launcher: 16-byte aligned data, numel % 16 == 0
        numel = tl.multiple_of(numel, 16)
        start = tl.multiple_of(start, 16)
        x_ptr = tl.multiple_of(x_ptr, 16)
        g_ptr = tl.multiple_of(g_ptr, 16)
        b_ptr = tl.multiple_of(b_ptr, 16)
    sign = tl.load(k + M_SIGN).to(C)
    l2 = tl.load(k + M_L2).to(C)
    momentum = tl.load(k + M_MOMENTUM).to(C)
    c_d = tl.load(k + M_C_D).to(C)
    c_b = tl.load(k + M_C_B).to(C)
    sum_dd = tl.zeros([BLOCK], dtype=C)
    sum_bb = tl.zeros([BLOCK], dtype=C)
    for offset in tl.range(0, tl.minimum(numel - start, CHUNK), BLOCK):
        i = start + offset + tl.arange(0, BLOCK)
        mask = i < numel
        # the momentum direction (kernels.momentum_direction), inlined: the interpreter
        # makes nested @triton.jit calls slow
        d = sign * tl.load(g_ptr + i, mask=mask, other=0.0).to(C)
        if READ_X:
            d += l2 * tl.load(x_ptr + i, mask=mask, other=0.0).to(C)
        b_tilde = d
        if HAS_B:
            b = tl.load(b_ptr + i, mask=mask, other=0.0).to(C)
            b_tilde = c_d * d + c_b * (momentum * b + d)
        sum_dd += d * d  # masked lanes: d = 0
        sum_bb += b_tilde * b_tilde
    item = tl.program_id(0).to(tl.int64)
    tl.store(partials + 2 * item, tl.sum(sum_dd.to(tl.float64), axis=0))
    tl.store(partials + 2 * item + 1, tl.sum(sum_bb.to(tl.float64), axis=0))


@triton.jit
def reduce_sums_kernel(partials, n_items, out, BLOCK: tl.constexpr):
    """One program: ``out = Σ partials`` over the items, in a fixed order (deterministic)."""
    sum_dd = tl.zeros([BLOCK], dtype=tl.float64)
    sum_bb = tl.zeros([BLOCK], dtype=tl.float64)
    for first in tl.range(0, n_items, BLOCK):
        i = first + tl.arange(0, BLOCK)
        mask = i < n_items
        sum_dd += tl.load(partials + 2 * i, mask=mask, other=0.0)
        sum_bb += tl.load(partials + 2 * i + 1, mask=mask, other=0.0)
    tl.store(out, tl.sum(sum_dd, axis=0))
    tl.store(out + 1, tl.sum(sum_bb, axis=0))


@triton.jit
def momentum_update_kernel(
    tensors,
    items,
    k_table,
    k_stride,
    P: tl.constexpr,
    S: tl.constexpr,
    C: tl.constexpr,
    HAS_B: tl.constexpr,
    BLOCK: tl.constexpr,
    CHUNK: tl.constexpr,
    ALIGNED: tl.constexpr,
):
    """Pass 2 (``kernels.momentum_update``): x <- (a/c) x - (η/c)(w_b b̃ + w_d d), store b_t."""
    row, start, numel, k = _work_item(tensors, items, k_table, k_stride)
    x_ptr = tl.load(row + 0).to(tl.pointer_type(P))
    g_ptr = tl.load(row + 1).to(tl.pointer_type(P))
    b_ptr = tl.load(row + 2).to(tl.pointer_type(S))
    if ALIGNED:  # checked by the launcher: 16-byte aligned data, numel % 16 == 0
        numel = tl.multiple_of(numel, 16)
        start = tl.multiple_of(start, 16)
        x_ptr = tl.multiple_of(x_ptr, 16)
        g_ptr = tl.multiple_of(g_ptr, 16)
        b_ptr = tl.multiple_of(b_ptr, 16)
    sign = tl.load(k + M_SIGN).to(C)
    l2 = tl.load(k + M_L2).to(C)
    momentum = tl.load(k + M_MOMENTUM).to(C)
    c_d = tl.load(k + M_C_D).to(C)
    c_b = tl.load(k + M_C_B).to(C)
    decay = tl.load(k + U_DECAY).to(C)
    momentum_step = tl.load(k + U_MOMENTUM_STEP).to(C)
    grad_step = tl.load(k + U_GRAD_STEP).to(C)
    for offset in tl.range(0, tl.minimum(numel - start, CHUNK), BLOCK):
        i = start + offset + tl.arange(0, BLOCK)
        mask = i < numel
        x = tl.load(x_ptr + i, mask=mask, other=0.0).to(C)
        d = sign * tl.load(g_ptr + i, mask=mask, other=0.0).to(C) + l2 * x
        b_tilde = d
        if HAS_B:
            b_t = momentum * tl.load(b_ptr + i, mask=mask, other=0.0).to(C) + d
            if S == tl.bfloat16:
                b_out = _to_bf16(b_t)
            else:
                b_out = b_t.to(S)
            tl.store(b_ptr + i, b_out, mask=mask)
            b_tilde = c_d * d + c_b * b_t
        x_t = decay * x + momentum_step * b_tilde + grad_step * d
        if P == tl.bfloat16:
            x_out = _to_bf16(x_t)
        else:
            x_out = x_t.to(P)
        tl.store(x_ptr + i, x_out, mask=mask)


# -- host side ---------------------------------------------------------------------------------

_tables: OrderedDict[tuple[Any, ...], tuple[Tensor, bool]] = OrderedDict()
_items: OrderedDict[tuple[Any, ...], Tensor] = OrderedDict()


def _cached(cache: OrderedDict, key: tuple[Any, ...], build: Any, device: torch.device) -> Any:
    """``cache[key]``, built on a miss (never during CUDA graph capture: a miss copies a
    host buffer to the device, which a graph cannot replay)."""
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            "fused step: new tensors during CUDA graph capture; run the step once before "
            "capturing it (its device tables are built then) and capture the same tensors"
        )
    cache[key] = build()
    while len(cache) > TABLE_CACHE_SIZE:
        cache.popitem(last=False)
    return cache[key]


def _to_device(host: Tensor, device: torch.device) -> Tensor:
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def _device_tables(
    columns: Sequence[Sequence[Tensor | None]],
    k_rows: Sequence[int],
    chunk: int,
    device: torch.device,
) -> tuple[Tensor, Tensor, bool]:
    """The ``tensors`` and ``items`` tables of ``columns`` (x, g, s0, s1; ``None`` = absent)
    whose coefficients are rows ``k_rows``, cached: the pointer table per set of tensors (a
    new gradient tensor costs one small copy), the work items per set of sizes. The flag:
    whether every data pointer is 16-byte aligned and every element count a multiple of 16
    (the kernels' ``ALIGNED``).
    """
    n = len(columns[0])
    by_column = tuple(  # column-major: one comprehension per input, absent ones are 0
        (0,) * n if column[0] is None else tuple(cast(Tensor, t).data_ptr() for t in column)
        for column in columns
    )
    numels = tuple(cast(Tensor, g).numel() for g in columns[1])  # gradients are never absent

    def tensors() -> tuple[Tensor, bool]:
        pointers = list(zip(*by_column, strict=True))
        rows = [
            [*p, *[0] * (4 - len(p)), numel, k_row]
            for p, numel, k_row in zip(pointers, numels, k_rows, strict=True)
        ]
        aligned = all(p % 16 == 0 for row in pointers for p in row)
        aligned &= all(numel % 16 == 0 for numel in numels)
        return _to_device(torch.tensor(rows, dtype=torch.int64), device), aligned

    def items() -> Tensor:
        counts = (torch.tensor(numels, dtype=torch.int64) + chunk - 1) // chunk
        tensor = torch.repeat_interleave(torch.arange(n), counts)
        first = torch.cumsum(counts, 0) - counts  # first item of each tensor
        start = (torch.arange(len(tensor)) - first[tensor]) * chunk
        return _to_device(torch.stack([tensor, start], dim=1).contiguous(), device)

    table, aligned = _cached(_tables, (device, by_column, numels, tuple(k_rows)), tensors, device)
    work = _cached(_items, (device, chunk, numels), items, device)
    return table, work, aligned


def clear_cache() -> None:
    """Forget the device tables (they hold no tensor, only addresses and sizes)."""
    _tables.clear()
    _items.clear()


def launch(
    name: str,
    params: list[Tensor],
    others: Sequence[Sequence[Tensor | None]],
    table: Tensor,
    *static: Any,
    read_params: bool = True,
    writes: Sequence[int] = (),
    block: int | None = None,
    chunk: int | None = None,
) -> list[Any]:
    """``_fused.launch`` with the Triton kernels: one launch per (parameter, state) dtype pair.

    Non-contiguous tensors are updated through contiguous copies (copied back when written).
    Returns, for ``momentum_sums``, one ``(Σd², Σb̃²)`` pair of float64 0-d tensors per
    launch. ``block``/``chunk`` override ``BLOCK``/``CHUNK`` (small values in tests).
    """
    block = BLOCK if block is None else block
    chunk = CHUNK if chunk is None else chunk
    if chunk % block != 0:
        raise ValueError(f"chunk ({chunk}) must be a multiple of block ({block})")
    device = params[0].device
    if device.type == "cuda" and device.index not in (None, torch.cuda.current_device()):
        with torch.cuda.device(device):  # Triton launches on the current device
            return launch(
                name, params, others, table, *static, read_params=read_params, writes=writes,
                block=block, chunk=chunk,
            )  # fmt: skip
    rows = list(zip(params, *others, strict=True))
    calls: dict[tuple[torch.dtype, torch.dtype], list[int]] = {}
    for i, row in enumerate(rows):
        state = next((t for t in row[2:] if t is not None), row[0])
        calls.setdefault((row[0].dtype, state.dtype), []).append(i)
    table = table.to(dtype=torch.float64).contiguous()
    results = []
    for (param_dtype, state_dtype), indices in calls.items():
        if param_dtype not in _TL_DTYPES or state_dtype not in _TL_DTYPES:
            raise TypeError(f"fused step: unsupported dtypes {param_dtype}, {state_dtype}")
        columns = [[rows[i][j] for i in indices] for j in range(len(rows[0]))]
        copies = []  # (original, contiguous copy) of written non-contiguous tensors
        for j, column in enumerate(columns):
            for n, t in enumerate(column):
                if t is not None and not t.is_contiguous():
                    column[n] = t.contiguous()
                    if j in writes:
                        copies.append((t, column[n]))
        pointer_columns = [columns[0] if read_params else [None] * len(indices), *columns[1:]]
        k_stride = 0 if table.dim() == 1 else table.shape[1]
        k_rows = indices if k_stride else [0] * len(indices)
        tensors, items, aligned = _device_tables(pointer_columns, k_rows, chunk, device)
        P, S = _TL_DTYPES[param_dtype], _TL_DTYPES[state_dtype]
        C = tl.float64 if param_dtype == torch.float64 else tl.float32
        grid = (items.shape[0],)
        common = dict(P=P, S=S, C=C, BLOCK=block, CHUNK=chunk, ALIGNED=aligned, num_warps=NUM_WARPS)
        has_s0 = columns[2][0] is not None
        if grid[0] == 0:  # only empty tensors
            if name == "momentum_sums":
                zero = torch.zeros((), dtype=torch.float64, device=device)
                results.append((zero, zero.clone()))
            continue
        if name == "gsignsgd":
            has_v = columns[3][0] is not None
            gsignsgd_kernel[grid](
                tensors,
                items,
                table,
                k_stride,
                HAS_V=has_v,
                SQUARE_GRADIENT=bool(static[0]),
                **common,
            )
        elif name == "lion":
            lion_kernel[grid](tensors, items, table, k_stride, **common)
        elif name == "momentum_sums":
            partials = torch.empty((grid[0], 2), dtype=torch.float64, device=device)
            momentum_sums_kernel[grid](
                tensors,
                items,
                table,
                k_stride,
                partials,
                READ_X=read_params,
                HAS_B=has_s0,
                **common,
            )
            sums = torch.empty(2, dtype=torch.float64, device=device)
            reduce_sums_kernel[(1,)](partials, grid[0], sums, BLOCK=block, num_warps=NUM_WARPS)
            results.append((sums[0], sums[1]))
        elif name == "momentum_update":
            momentum_update_kernel[grid](tensors, items, table, k_stride, HAS_B=has_s0, **common)
        else:
            raise ValueError(f"unknown fused kernel {name!r}")
        for original, copy in copies:
            original.copy_(copy)
        if 0 in writes:  # autograd cannot see writes through pointers; the state is private
            for p in columns[0]:
                torch.autograd.graph.increment_version(p)
    return results


def compile_ahead(
    arch: int = 90,
    dtypes: Sequence[tuple[torch.dtype, torch.dtype]] = (),
    aligned: Sequence[bool] = (True, False),
) -> dict[str, str]:
    """Compile every kernel variant for NVIDIA ``sm_<arch>`` without a device (no
    ``TRITON_INTERPRET``): catches what only the compiler checks. Returns ``{name: PTX}``.

    ``aligned``: the ``ALIGNED`` variants; ``dtypes``: (parameter, state) pairs, by default
    float32, bf16 and fp16 parameters with float32 state, float32 parameters with bf16 state,
    and float64.
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    pairs = dtypes or [
        (torch.float32, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float16, torch.float32),
        (torch.float32, torch.bfloat16),
        (torch.float64, torch.float64),
    ]
    target = GPUTarget("cuda", arch, 32)
    base = {"tensors": "*i64", "items": "*i64", "k_table": "*fp64", "k_stride": "i64"}
    flags: dict[Any, list[dict[str, bool]]] = {
        gsignsgd_kernel: [
            dict(HAS_V=v, SQUARE_GRADIENT=s) for v in (True, False) for s in (True, False)
        ],
        lion_kernel: [{}],
        momentum_sums_kernel: [
            dict(READ_X=r, HAS_B=b) for r in (True, False) for b in (True, False)
        ],
        momentum_update_kernel: [dict(HAS_B=True), dict(HAS_B=False)],
    }
    ptx = {}
    for param, state in pairs:
        P, S = _TL_DTYPES[param], _TL_DTYPES[state]
        C = tl.float64 if param == torch.float64 else tl.float32
        for kernel, variants in flags.items():
            for variant in (dict(v, ALIGNED=a) for v in variants for a in aligned):
                constants = dict(P=P, S=S, C=C, BLOCK=BLOCK, CHUNK=CHUNK, **variant)
                signature = dict(base, **dict.fromkeys(constants, "constexpr"))
                if kernel is momentum_sums_kernel:
                    signature = {**base, "partials": "*fp64", **signature}
                source = ASTSource(fn=kernel, signature=signature, constexprs=constants)
                compiled = triton.compile(source, target=target, options={"num_warps": NUM_WARPS})
                ptx[f"{kernel.__name__}[{param},{state},{variant}]"] = compiled.asm["ptx"]
    source = ASTSource(
        fn=reduce_sums_kernel,
        signature={"partials": "*fp64", "n_items": "i32", "out": "*fp64", "BLOCK": "constexpr"},
        constexprs={"BLOCK": BLOCK},
    )
    ptx["reduce_sums_kernel"] = triton.compile(source, target=target).asm["ptx"]
    return ptx
