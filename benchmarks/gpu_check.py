"""The GPU check of the fused Triton steps, in one command: tests, correctness, step times.

On a machine with one NVIDIA GPU (under 5 minutes on an H100/H200):

1. the Triton tests (``tests/optim/test_triton.py``) on the device, CUDA-graph capture and
   recompilation checks included;
2. for each optimizer on the GPT-2-small shapes (124.4M parameters in 148 tensors), float32
   and bfloat16 parameters: the fused (Triton) step's largest relative error after one step
   against a float64 ``foreach`` twin, then its median step time interleaved with its
   ``foreach`` step, ``torch.optim.Adam(fused=True)`` and a device copy of the same size
   (``benchmarks/optimizer_step.py``'s method), giving the fraction of the copy-bandwidth
   roofline;
3. one Markdown table for ``benchmarks/RESULTS.md`` and the targets: Generalized SignSGD at
   least 0.9 of the roofline and 1.6x faster than ``Adam(fused=True)``; Signum at most 0.75x
   Generalized SignSGD's time; the clipped and normalized steps at most 1.15x.

``--dry-run`` runs the same end to end on CPU under Triton's interpreter, with small shapes
and no timing (the test suite does, ``tests/optim/test_triton.py``). Exit status 1 when a
test fails or an error exceeds its tolerance; the speed targets are reported, not enforced.

    benchmarks/gpu_check.sh            # = python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --dry-run
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

DRY_RUN = "--dry-run" in sys.argv[1:]
if DRY_RUN:  # before triton is first imported (torch._dynamo imports it)
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

from adaptopt.optim import _fused, create_optimizer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from optimizer_step import (  # noqa: E402
    HPARAMS,
    bytes_per_param,
    gpt2_small_shapes,
    interleaved,
    make_step,
    random_params,
)

ROOT = Path(__file__).resolve().parents[1]
OPTIMIZERS = ["gsignsgd", "signum", "lion", "sgd_clip_momentum", "sgd_normalized"]


def run_tests(dry_run: bool) -> tuple[bool, str]:
    """pytest on the Triton tests; in the dry run only the CUDA-only ones (they skip)."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += [str(ROOT / "tests" / "optim" / "test_triton.py")]
    if dry_run:
        command += ["-k", "cuda"]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
    if result.returncode != 0:
        print(result.stdout[-5000:], result.stderr[-2000:], sep="\n")
    return result.returncode == 0, summary


def tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance of one step against the float64 twin rounded to ``dtype``:
    the tests' bound (2 eps(param) + 2 eps(state) + 16 eps(float32))."""
    eps32 = torch.finfo(torch.float32).eps
    return 2 * torch.finfo(dtype).eps + 2 * eps32 + 16 * eps32


def max_error(name: str, shapes, dtype: torch.dtype, device: torch.device) -> float:
    """Largest ``max|fused - reference| / max|reference|`` over the tensors after one step;
    the float64 ``foreach`` reference starts from the same values and is rounded to
    ``dtype`` after its step, as the kernel stores."""
    gen = torch.Generator(device).manual_seed(1)
    init = [torch.randn(s, device=device, generator=gen).to(dtype) for s in shapes]
    grads = [torch.randn(s, device=device, generator=gen).to(dtype) for s in shapes]
    fused = [torch.nn.Parameter(t.clone()) for t in init]
    reference = [torch.nn.Parameter(t.double()) for t in init]
    for p, q, g in zip(fused, reference, grads, strict=True):
        p.grad, q.grad = g, g.double()
    create_optimizer(name, fused, **HPARAMS[name], fused=True).step()
    create_optimizer(name, reference, **HPARAMS[name], foreach=True, fused=False).step()
    worst = 0.0
    for p, q in zip(fused, reference, strict=True):
        expected = q.detach().to(dtype).double()
        scale = expected.abs().max().item() or 1.0
        worst = max(worst, (p.detach().double() - expected).abs().max().item() / scale)
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, interpreter, no timing")
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation)")
    parser.add_argument("--skip-tests", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.dry_run:
        device = torch.device("cpu")
        shapes = gpt2_small_shapes(scale=1e-5, layers=0)  # 4 tensors
        context = _fused.triton_on_cpu()
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device (use --dry-run to rehearse on CPU)")
            return 2
        device = torch.device("cuda")
        shapes = gpt2_small_shapes()
        context = contextlib.nullcontext()
    numel = sum(torch.Size(s).numel() for s in shapes)
    name = "dry run (CPU, Triton interpreter)" if args.dry_run else torch.cuda.get_device_name()
    print(
        f"# gpu_check: {name}; torch {torch.__version__}; {len(shapes)} tensors, "
        f"{numel / 1e6:.2f}M params"
    )
    ok = True
    if not args.skip_tests:
        passed, summary = run_tests(args.dry_run)
        ok &= passed
        print(f"tests/optim/test_triton.py: {summary}")

    rows, times = [], {}
    with context:
        for dtype in (torch.float32, torch.bfloat16):
            dtype_name = str(dtype).removeprefix("torch.")
            for opt_name in OPTIMIZERS:
                error = max_error(opt_name, shapes, dtype, device)
                bound = tolerance(dtype)
                ok &= error <= bound
                timing = ("—",) * 4
                if not args.dry_run:
                    timing = time_step(opt_name, shapes, dtype, device, args, times)
                rows.append((opt_name, dtype_name, *timing, f"{error:.1e} (≤ {bound:.0e})"))
    print()
    print(
        "| optimizer | params | fused step (ms) | roofline | vs Adam fused | foreach (ms) "
        "| max error vs float64 |"
    )
    print("|---|---|---:|---:|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if not args.dry_run:
        print()
        for line in targets(times):
            print(line)
    print(f"\ncorrectness: {'PASS' if ok else 'FAIL'}; {time.perf_counter() - started:.0f} s")
    return 0 if ok else 1


def time_step(name, shapes, dtype, device, args, times) -> tuple[str, ...]:
    """(fused ms, roofline, vs Adam fused, foreach ms) on fresh random data."""
    params, copy = random_params(shapes, dtype, device)
    numel = sum(p.numel() for p in params)
    steps = {
        "fused": make_step(name, "fused", params),
        "foreach": make_step(name, "foreach", params),
        "adam fused": make_step("adam", "fused", params),
        "copy": copy,
    }
    _, medians = interleaved(steps, device, args.warmup, args.repeats)
    bandwidth = 2 * 4 * numel / medians["copy"]
    moved = bytes_per_param(name, dtype, torch.float32) * numel
    times[(name, dtype)] = medians
    fused = medians["fused"]
    return (
        f"{fused * 1e3:.2f}",
        f"{moved / bandwidth / fused:.2f}",
        f"{fused / medians['adam fused']:.2f}x",
        f"{medians['foreach'] * 1e3:.2f}",
    )


def targets(times) -> list[str]:
    """The issue's speed targets, float32, each with PASS/MISS."""
    f32 = torch.float32
    g = times[("gsignsgd", f32)]
    lines = []

    def report(text: str, value: float, good: bool) -> None:
        lines.append(f"- {text}: {value:.2f} {'PASS' if good else 'MISS'}")

    numel_bytes = bytes_per_param("gsignsgd", f32, f32)
    roofline = g["copy"] * numel_bytes / 8 / g["fused"]
    report("gsignsgd roofline fraction (target >= 0.9)", roofline, roofline >= 0.9)
    speedup = g["adam fused"] / g["fused"]
    report("gsignsgd speed-up over Adam(fused=True) (target >= 1.6)", speedup, speedup >= 1.6)
    ratio = times[("signum", f32)]["fused"] / g["fused"]
    report("signum / gsignsgd time (target <= 0.75)", ratio, ratio <= 0.75)
    for name in ("sgd_clip_momentum", "sgd_normalized"):
        ratio = times[(name, f32)]["fused"] / g["fused"]
        report(f"{name} / gsignsgd time (target <= 1.15)", ratio, ratio <= 1.15)
    return lines


if __name__ == "__main__":
    sys.exit(main())
