"""Optimizer step time on the GPT-2-small parameter shapes, against the memory roofline.

An optimizer step is pure memory traffic, so its physical limit is the bytes it must move
divided by the measured copy bandwidth. For each optimizer and implementation this prints the
median step time, the achieved bandwidth (minimal bytes / time), the fraction of the copy
roofline and the ratio to ``torch.optim.Adam(fused=True)``. The implementations of one
optimizer, Adam fused and a copy of the same size are timed interleaved, one step each per
round in a rotating order, so that load from other processes affects them alike.

Implementations: ``loop`` (single-tensor reference), ``foreach`` (multi-tensor), ``fused``
(``adaptopt.optim._fused`` with the device's backend: the native multi-tensor kernels on CPU,
the multi-tensor Triton kernels on CUDA), ``fused_compiled`` (the compiled per-tensor kernels,
the CPU fallback; CPU only), ``compiled`` (``torch.compile`` of the ``foreach`` step, as a
user would write it). Compilation happens in the warm-up steps, reported separately; the
native kernels are built when adaptopt is installed. On CPU, copy moves more
than the 8 bytes per element counted (the destination is read before it is written), so
in-place steps can exceed a "roofline" of 1.

    python benchmarks/optimizer_step.py                      # CPU, full size (124.4M params)
    python benchmarks/optimizer_step.py --scale 0.05 --repeats 5
    python benchmarks/optimizer_step.py --layers 6 --optimizers gsignsgd --impls fused --threads 2
    python benchmarks/optimizer_step.py --device cuda [--dtype bfloat16|float16]

``benchmarks/gpu_check.py`` runs the CUDA rows with correctness checks and the targets.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

import torch

from adaptopt.optim import _fused, create_optimizer
from adaptopt.optim._base import default_fused

# Minimal bytes per float32 parameter of one step (reads + writes of x, g and the state;
# the clipped/normalized steps add a read-only norm pass over g and the buffer).
BYTES_PER_PARAM = {
    "adam": 28,  # read x g m v, write x m v
    "gsignsgd": 28,  # same traffic as Adam
    "signum": 20,  # read x g m, write x m
    "lion": 20,
    "sgd_clip_momentum": 28,  # norms: read g b; update: read x g b, write x b
    "sgd_normalized": 28,
}
HPARAMS = {
    "adam": dict(lr=1e-3),
    "gsignsgd": dict(lr=1e-3),
    "signum": dict(lr=1e-4),
    "lion": dict(lr=1e-4, weight_decay=0.1),
    "sgd_clip_momentum": dict(lr=1.0, gamma=0.5),
    "sgd_normalized": dict(lr=0.1),
}
IMPLEMENTATIONS = {
    "loop": dict(foreach=False, fused=False),
    "foreach": dict(foreach=True, fused=False),
    "fused": dict(fused=True),
    "fused_compiled": dict(fused=True),
    "compiled": dict(foreach=True, fused=False),
}


# Streams of one step: (parameter-sized ones: x read and written, g read, plus the norm pass's
# g read; state-sized ones), so that the minimal traffic follows the parameter and state dtypes.
STREAMS = {
    "adam": (3, 4),
    "gsignsgd": (3, 4),
    "signum": (3, 2),
    "lion": (3, 2),
    "sgd_clip_momentum": (4, 3),
    "sgd_normalized": (4, 3),
}


def bytes_per_param(name: str, dtype: torch.dtype, state_dtype: torch.dtype) -> int:
    """Minimal bytes one step of ``name`` moves per parameter (BYTES_PER_PARAM for float32)."""
    param_streams, state_streams = STREAMS[name]
    return param_streams * dtype.itemsize + state_streams * state_dtype.itemsize


def gpt2_small_shapes(scale: float = 1.0, layers: int = 12) -> list[tuple[int, ...]]:
    """The 148 parameter shapes of GPT-2 small (124.4M, tied embeddings); ``scale`` shrinks
    every width by sqrt(scale), so the parameter count is about ``scale`` times as large;
    ``layers`` transformer blocks (12 in GPT-2 small)."""
    s = scale**0.5
    d, vocab, ctx = max(8, round(768 * s)), max(8, round(50257 * s)), max(8, round(1024 * s))
    shapes: list[tuple[int, ...]] = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,)]  # ln_1, attn
        shapes += [(d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]  # ln_2, mlp
    return [*shapes, (d,), (d,)]  # ln_f


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def make_step(name: str, impl: str, params: list[torch.nn.Parameter]) -> Callable[[], object]:
    """The ``step`` of optimizer ``name`` (its implementation ``impl``) over ``params``."""
    if name == "adam":
        flags = {"fused": dict(fused=True)}.get(impl, IMPLEMENTATIONS[impl])
        opt = torch.optim.Adam(params, **HPARAMS[name], **flags)
    else:
        opt = create_optimizer(name, params, **HPARAMS[name], **IMPLEMENTATIONS[impl])
    if impl == "fused_compiled":

        def step() -> None:
            with _fused.cpu_backend("compiled"):
                opt.step()

        return step
    return torch.compile(opt.step) if impl == "compiled" else opt.step


def interleaved(
    steps: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int
) -> tuple[dict[str, float], dict[str, float]]:
    """(warm-up seconds, median step seconds) of each step, timed round-robin. Round r starts
    with the r-th step, so that no step always follows the same one (a step that allocates
    and frees gigabytes slows down the next one)."""
    warmups = {
        name: sum(timed(step, device) for _ in range(warmup)) for name, step in steps.items()
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(timed(steps[name], device))
    return warmups, {name: statistics.median(t) for name, t in times.items()}


def random_params(
    shapes: list[tuple[int, ...]], dtype: torch.dtype, device: torch.device
) -> tuple[list[torch.nn.Parameter], Callable[[], torch.Tensor]]:
    """Seeded random parameters of ``shapes`` with gradients, and a device copy of as many
    float32 elements (the copy-bandwidth baseline)."""
    gen = torch.Generator(device).manual_seed(0)
    params = [
        torch.nn.Parameter(torch.randn(s, device=device, generator=gen).to(dtype)) for s in shapes
    ]
    for p in params:
        p.grad = torch.randn(p.shape, device=device, generator=gen).to(dtype)
    src = torch.randn(sum(p.numel() for p in params), device=device, generator=gen)
    dst = torch.empty_like(src)
    return params, lambda: dst.copy_(src)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of GPT-2 size")
    parser.add_argument("--layers", type=int, default=12, help="transformer blocks (GPT-2: 12)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--optimizers", nargs="+", default=list(BYTES_PER_PARAM))
    parser.add_argument("--impls", nargs="+", default=list(IMPLEMENTATIONS))
    args = parser.parse_args()
    unknown = sorted(set(args.optimizers) - set(BYTES_PER_PARAM))
    unknown += sorted(set(args.impls) - set(IMPLEMENTATIONS))
    if unknown:
        parser.error(f"unknown optimizer/implementation {unknown}")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch._logging.set_logs(dynamo=logging.ERROR)  # the compiled steps' graph-break notes
    device = torch.device(args.device)

    dtype = getattr(torch, args.dtype)
    params, copy = random_params(gpt2_small_shapes(args.scale, args.layers), dtype, device)
    numel = sum(p.numel() for p in params)
    adam_fused = make_step("adam", "fused", params)
    default = "fused" if default_fused(params) else "foreach" if device.type == "cuda" else "loop"
    print(
        f"# {len(params)} tensors, {numel / 1e6:.1f}M {args.dtype} params, device {device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"default implementation (fused=None): {default}\n"
    )
    print(
        "| optimizer | implementation | step (ms) | GB/s | roofline | vs Adam fused | warm-up (s) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    bandwidths = []
    for name in args.optimizers:
        # torch's Adam has one fused step; the compiled per-tensor kernels are the CPU fallback
        skip = "fused_compiled" if name == "adam" or device.type == "cuda" else None
        impls = [impl for impl in args.impls if impl != skip]
        steps = {
            impl: adam_fused if (name, impl) == ("adam", "fused") else make_step(name, impl, params)
            for impl in impls
        }
        if adam_fused not in steps.values():
            steps["adam fused"] = adam_fused
        steps["copy"] = copy
        warmups, medians = interleaved(steps, device, args.warmup, args.repeats)
        bandwidth = 2 * 4 * numel / medians["copy"]
        bandwidths.append(bandwidth)
        reference = medians["fused" if "adam fused" not in medians else "adam fused"]
        for impl in impls:
            # adaptopt keeps float32 state for bf16/fp16 parameters; torch's Adam keeps theirs
            state = dtype if name == "adam" else torch.float32
            moved, seconds = bytes_per_param(name, dtype, state) * numel, medians[impl]
            print(
                f"| {name} | {impl} | {seconds * 1e3:.1f} | {moved / seconds / 1e9:.1f} | "
                f"{moved / bandwidth / seconds:.2f} | {seconds / reference:.2f}x | "
                f"{warmups[impl]:.1f} |",
                flush=True,
            )
        del steps
        torch._dynamo.reset()  # compiled steps hold on to their optimizer's state
    print(
        f"\ncopy bandwidth (median per optimizer): {[round(b / 1e9, 1) for b in bandwidths]} GB/s"
    )


if __name__ == "__main__":
    main()
