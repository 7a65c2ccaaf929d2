r"""Builds of the native Generalized SignSGD kernel side by side, against torch's fused Adam.

Times ``adaptopt_fused_step`` (float32 parameters and state, exp_avg_sq, bias correction) of
each given build of ``native.cpp`` on the same tensors, with ``torch._fused_adam_`` (the
kernel of ``torch.optim.Adam(fused=True)``) and a copy of the same size, one call each per
round in a rotating order (load from other processes affects them alike), and prints the
median time, the bandwidth of the 28 bytes per element the step must move, and the ratio to
fused Adam. The builds are loaded with ctypes directly, without the ABI check of
``native.py``, so that a build of an older ``native.cpp`` (same ``layout.py``) can be compared
with the current one in one process: ``--lib NAME=PATH`` loads a built library, ``--source
NAME=PATH`` first compiles a ``native.cpp`` with setup.py's flags (``--portable``: without
its AVX2/FMA ones)::

    git show main:src/adaptopt/optim/_fused/native.cpp > /tmp/old.cpp
    python benchmarks/native_kernel.py --source old=/tmp/old.cpp \
        --lib new=src/adaptopt/optim/_fused/_native_kernels_avx2.so --threads 1
    python benchmarks/native_kernel.py --lib new=... --numel 65536 --tensors 148

``--tensors N`` makes N tensors of ``--numel`` elements, updated in one call."""

from __future__ import annotations

import argparse
import ctypes
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from adaptopt.optim._fused import layout, native

BYTES_PER_ELEMENT = 28  # read x g m v, write x m v (float32)
# setup.py's COMPILE_FLAGS and its AVX2 variant's ISA flags
COMPILE_FLAGS = ["-O3", "-std=c++17", "-fopenmp", "-fno-math-errno", "-fPIC", "-g0"]
AVX2_FLAGS = ["-mavx2", "-mfma"]


def build(source: Path, directory: Path, portable: bool) -> Path:
    """``source`` (a ``native.cpp``) compiled into a shared library in ``directory``."""
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        raise SystemExit("--source needs a C++ compiler (c++ or g++)")
    out = directory / f"{source.stem}-{len(list(directory.iterdir()))}.so"
    flags = [*COMPILE_FLAGS, *([] if portable else AVX2_FLAGS), *layout.defines()]
    abi = layout.abi_key(source.read_bytes())
    command = [compiler, *flags, f'-DADAPTOPT_FUSED_ABI="{abi}"', "-shared", str(source)]
    subprocess.run([*command, "-o", str(out)], check=True)
    return out


def gsignsgd_call(
    lib: ctypes.CDLL, tensors: list[list[torch.Tensor]], threads: int
) -> Callable[[], None]:
    """One ``adaptopt_fused_step`` of the Generalized SignSGD kernel over ``tensors`` (x, g,
    m, v lists), Adam's coefficients (β = 0.9, 0.999, ε = 1e-8, η = 1e-3)."""
    function = lib.adaptopt_fused_step
    function.restype, function.argtypes = native.SIGNATURES["adaptopt_fused_step"]
    n = len(tensors[0])
    pointers = [(ctypes.c_void_p * n)(*(t.data_ptr() for t in column)) for column in tensors]
    steps = [torch.zeros((), dtype=torch.float64) for _ in range(n)]
    counters = (ctypes.c_void_p * n)(*(t.data_ptr() for t in steps))
    numel = (ctypes.c_int64 * n)(*(t.numel() for t in tensors[0]))
    row = layout.GSIGNSGD.row(
        sign=1.0, l2=0.0, beta1=0.9, one_minus_beta1=0.1, beta2=0.999, one_minus_beta2=1e-3,
        inv_sqrt_bc2=1.0, eps=1e-8, decay=1.0, step_size=-1e-3,
    )  # fmt: skip
    k = (ctypes.c_double * len(row))(*row)
    flags = layout.FLAGS["square_gradient"] | layout.FLAGS["bias_correction"]
    f32 = layout.DTYPE_CODES["float32"]

    def step(_alive: object = (tensors, steps)) -> None:  # the kernel writes through pointers
        status = function(
            layout.KERNEL_IDS["gsignsgd"], flags, f32, f32, n, pointers[0], pointers[1],
            pointers[2], pointers[3], counters, numel, k, threads, None,
        )  # fmt: skip
        if status != layout.STATUS["ok"]:
            raise RuntimeError(f"status {status}")

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lib", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--source", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--portable", action="store_true", help="--source without AVX2/FMA")
    parser.add_argument("--numel", type=int, default=1 << 23, help="elements of each tensor")
    parser.add_argument("--tensors", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    specs = [(spec, False) for spec in args.lib] + [(spec, True) for spec in args.source]
    if not specs or any("=" not in spec for spec, _ in specs):
        parser.error("give at least one --lib NAME=PATH or --source NAME=PATH")
    if len({spec.split("=", 1)[0] for spec, _ in specs}) < len(specs):
        parser.error("two builds with one NAME")
    directory = Path(tempfile.mkdtemp(prefix="adaptopt-native-"))
    torch.set_num_threads(args.threads)  # torch (and its libgomp) first: the builds share it
    gen = torch.Generator().manual_seed(0)

    def tensors() -> list[list[torch.Tensor]]:
        shape = (args.tensors, args.numel)
        x, g = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
        m, v = torch.zeros(shape), torch.zeros(shape)
        return [list(t.unbind()) for t in (x, g, m, v)]

    steps: dict[str, Callable[[], object]] = {}
    for spec, compile_it in specs:
        name, path = spec.split("=", 1)
        library = build(Path(path), directory, args.portable) if compile_it else Path(path)
        steps[name] = gsignsgd_call(ctypes.CDLL(str(library.resolve())), tensors(), args.threads)
    shutil.rmtree(directory)  # (the loaded libraries stay mapped)
    x, g, m, v = tensors()
    max_v: list[torch.Tensor] = []
    step_t = [torch.zeros(()) for _ in x]

    def adam() -> None:
        torch._foreach_add_(step_t, 1.0)
        torch._fused_adam_(
            x, g, m, v, max_v, step_t, lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.0,
            eps=1e-8, amsgrad=False, maximize=False,
        )  # fmt: skip

    steps["torch fused adam"] = adam
    src = torch.randn(args.tensors * args.numel, generator=gen)
    dst = torch.empty_like(src)
    steps["copy"] = lambda: dst.copy_(src)
    for step in steps.values():  # warm-up: first touch, thread pool
        step(), step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    total = args.tensors * args.numel
    print(f"# {args.tensors} x {args.numel} float32 elements, {args.threads} threads, "
          f"{args.repeats} rounds, torch {torch.__version__}")  # fmt: skip
    print("| build | step (ms) | GB/s (28 B/element) | vs torch fused Adam |")
    print("|---|---:|---:|---:|")
    for name, seconds in medians.items():
        moved = (8 if name == "copy" else BYTES_PER_ELEMENT) * total
        ratio = seconds / medians["torch fused adam"]
        print(f"| {name} | {seconds * 1e3:.2f} | {moved / seconds / 1e9:.1f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
