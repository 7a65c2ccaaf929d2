"""The multi-tensor Triton kernels of the fused steps (``adaptopt.optim._fused.triton_kernels``).

Without CUDA the kernels run on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``,
set by ``tests/conftest.py`` before triton is first imported); with CUDA they run compiled on
the device (``benchmarks/gpu_check.sh`` runs this file there, CUDA-only tests included).
The tests use small ``BLOCK``/``CHUNK`` sizes, so that a few elements already cross blocks
and chunks.

Reference: the float64 single-tensor path (itself checked against independent formulas in
``test_reference.py``), its parameters and state rounded to their storage dtypes after each
step, as the kernels store them. Tolerance: ``2 eps(param) + 2 eps(state) + 16 steps
eps(compute)`` relative to the tensor's largest entry. Every tolerance check has a negative
control: the reference with ``lr`` (and ``gamma``) scaled by 1.25 must fail it. The
interpreter does not check bounds: tensors of the kernel-level tests live inside buffers
whose guard elements before and after must come out untouched.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from infos import OPTIMIZER_INFOS, fused, samples

from adaptopt.optim import GeneralizedSignSGD, Lion, _base, _fused
from adaptopt.optim._adam_family import _fused_adam_family
from adaptopt.optim._fused import layout
from adaptopt.optim._momentum import fused_momentum_norms, fused_momentum_update
from adaptopt.optim.lion import _fused_lion

ROOT = Path(__file__).resolve().parents[2]
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
BLOCK, CHUNK = 8, 16  # elements per block and per work item in these tests
GUARD = BLOCK  # guard elements on each side of a kernel-level tensor
SENTINEL = 1234.5


def _skip_reason() -> str | None:
    """Why the Triton kernels cannot run here, or None."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install -e '.[dev]' pins it)"
    if CUDA:
        return None
    if os.environ.get("TRITON_INTERPRET") != "1":
        return "no CUDA device, and TRITON_INTERPRET=1 (Triton's CPU interpreter) is not set"
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(tl.zeros, InterpretedFunction):
        return "triton was imported before TRITON_INTERPRET=1 was set (tests/conftest.py sets it)"
    return None


SKIP = _skip_reason()
requires_triton = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))
cuda_only = pytest.mark.skipif(
    not CUDA or SKIP is not None, reason="needs a CUDA device and triton (gpu_check.sh)"
)


@pytest.fixture
def kernels(monkeypatch):
    """The Triton kernels module with the test sizes, used for CPU tensors too."""
    module = importlib.import_module("adaptopt.optim._fused.triton_kernels")
    monkeypatch.setattr(module, "BLOCK", BLOCK)
    monkeypatch.setattr(module, "CHUNK", CHUNK)
    monkeypatch.setattr(_fused, "TRITON_ON_CPU", True)
    return module


def compute_eps(dtype: torch.dtype) -> float:
    return torch.finfo(torch.promote_types(dtype, torch.float32)).eps


def tolerance(param: torch.dtype, state: torch.dtype, steps: int) -> float:
    eps = torch.finfo
    return 2 * eps(param).eps + 2 * eps(state).eps + 16 * steps * compute_eps(param)


def close(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> bool:
    """``max |actual - expected| <= rel * max |expected|`` (exactly equal when all zero)."""
    actual, expected = actual.detach().cpu().double(), expected.detach().cpu().double()
    assert actual.shape == expected.shape
    if actual.numel() == 0:
        return True
    error = (actual - expected).abs().max().item()
    return error <= rel * expected.abs().max().item()


# -- optimizer-level equivalence ---------------------------------------------------------------

# the one-group kernel samples of every fused optimizer in the table (tests/optim/infos.py)
CASES = {
    param.id: (info.cls, {**sample.groups[0], **sample.common})
    for param in samples(fused, kernel=True)
    for info, sample in [param.values]
}
MODES = ("l2", "decoupled", "proximal")
STEPS = 2


def initial_params(dtype: torch.dtype) -> list[torch.Tensor]:
    """A non-contiguous matrix, a 0-d tensor and 17 elements (two chunks)."""
    g = torch.Generator().manual_seed(100)
    matrix = torch.randn(3, 5, generator=g, dtype=torch.float64).t()
    others = [torch.randn(s, generator=g, dtype=torch.float64) for s in [(), (17,)]]
    return [t.to(dtype) for t in (matrix, *others)]


def gradients(shapes, dtype: torch.dtype, steps: int = STEPS) -> list[list[torch.Tensor]]:
    """Per step, one gradient per shape, scales over five orders of magnitude."""
    g = torch.Generator().manual_seed(0)
    sequence = []
    for _ in range(steps):
        scales = [10 ** (5 * torch.rand((), generator=g).item() - 3) for _ in shapes]
        sequence.append(
            [
                (torch.randn(s, generator=g, dtype=torch.float64) * scale).to(dtype)
                for s, scale in zip(shapes, scales, strict=True)
            ]
        )
    return sequence


def run_fused(cls, options, dtype, state_dtype=None):
    params = [p.to(DEVICE) for p in initial_params(dtype)]
    params[0] = params[0].t().contiguous().t()  # keep the matrix non-contiguous on the device
    params = [torch.nn.Parameter(p) for p in params]
    assert not params[0].is_contiguous()
    opt = cls(params, fused=True, state_dtype=state_dtype, **options)
    for row in gradients([p.shape for p in params], dtype):
        for p, grad in zip(params, row, strict=True):
            p.grad = grad.to(DEVICE)
        opt.step()
    return params, opt


def run_reference(cls, options, dtype, state_dtype, scale=1.0):
    """The float64 reference, rounded to the storage dtypes after each step; ``scale``
    multiplies ``lr`` and ``gamma`` (the negative control)."""
    options = dict(options)
    for key in ("lr", "gamma"):
        if key in options:
            options[key] *= scale
    params = [torch.nn.Parameter(p.double()) for p in initial_params(dtype)]
    opt = cls(params, fused=False, foreach=False, **options)
    for row in gradients([p.shape for p in params], dtype):
        for p, grad in zip(params, row, strict=True):
            p.grad = grad.double()
        opt.step()
        with torch.no_grad():
            for p in params:
                p.copy_(p.to(dtype))
                for key, value in opt.state[p].items():
                    if key != "step":
                        value.copy_(value.to(state_dtype))
    return params, opt


def check_against_reference(case, mode, dtype, state_dtype=None):
    cls, options = CASES[case]
    options = dict(options, weight_decay=0.1, weight_decay_mode=mode)
    stored_state = state_dtype or (torch.float32 if dtype.itemsize == 2 else dtype)
    fused, fused_opt = run_fused(cls, options, dtype, state_dtype)
    reference, reference_opt = run_reference(cls, options, dtype, stored_state)
    rel = tolerance(dtype, stored_state, STEPS)
    for a, b in zip(fused, reference, strict=True):
        assert a.dtype == dtype
        assert close(a, b, rel), (a, b)
    for p_f, p_r in zip(fused, reference, strict=True):
        s_f, s_r = fused_opt.state[p_f], reference_opt.state[p_r]
        assert s_f.keys() == s_r.keys()
        for key in s_f:
            if key != "step":
                assert s_f[key].dtype == stored_state
            assert close(s_f[key], s_r[key], rel), key
    # negative control: a 25% larger step must fail the same check
    perturbed, _ = run_reference(cls, options, dtype, stored_state, scale=1.25)
    assert not all(close(a, b, rel) for a, b in zip(fused, perturbed, strict=True))


@requires_triton
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_float32_matches_reference(case, mode, kernels):
    check_against_reference(case, mode, torch.float32)


PRECISION_CASES = ["gsignsgd_bias_correction_maximize", "signum", "lion", "sgd_clip_nesterov"]


@requires_triton
@pytest.mark.parametrize("case", sorted(CASES))
def test_bfloat16_parameters_match_reference(case, kernels):
    mode = MODES[sorted(CASES).index(case) % 3]
    check_against_reference(case, mode, torch.bfloat16)


@requires_triton
@pytest.mark.parametrize(
    "dtype,state_dtype",
    [(torch.float64, None), (torch.float16, None), (torch.float32, torch.bfloat16)],
    ids=["float64", "float16", "bfloat16_state"],
)
@pytest.mark.parametrize("case", [*PRECISION_CASES, "normalized"])
def test_other_precisions_match_reference(case, dtype, state_dtype, kernels):
    mode = MODES[([*PRECISION_CASES, "normalized"].index(case) + 1) % 3]
    check_against_reference(case, mode, dtype, state_dtype)


# -- kernel level: sizes, guards, many tensors -------------------------------------------------


def guarded(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(buffer, view): ``values`` copied into the middle of a buffer of SENTINEL guards."""
    buffer = torch.full((values.numel() + 2 * GUARD,), SENTINEL, dtype=values.dtype)
    buffer = buffer.to(DEVICE)
    view = buffer[GUARD : GUARD + values.numel()].view(values.shape)
    view.copy_(values)
    return buffer, view


def assert_guards_untouched(buffers: list[torch.Tensor]) -> None:
    for buffer in buffers:
        guards = torch.cat([buffer[:GUARD], buffer[-GUARD:]]).cpu()
        assert torch.equal(guards, torch.full_like(guards, SENTINEL))


SIZES = [(), (1,), (17,), (BLOCK - 1,), (BLOCK,), (BLOCK + 1,), (CHUNK + 1,), (0,)]


def random_tensors(shapes, seed, dtype=torch.float32, positive=False):
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    if positive:
        tensors = [t.abs() for t in tensors]
    return [t.to(dtype) for t in tensors]


@requires_triton
@pytest.mark.parametrize("square_gradient", [False, True])
def test_gsignsgd_kernel_sizes_and_guards(square_gradient, kernels):
    """One launch over 0-d, 1, 17, BLOCK±1, CHUNK+1 and empty tensors, each with its own
    step count (per-tensor bias corrections), against the float64 formulas."""
    x0, g, m0, v0 = (random_tensors(SIZES, seed, positive=seed == 3) for seed in range(4))
    buffers, views = zip(*[guarded(t) for t in (*x0, *g, *m0, *v0)], strict=True)
    n = len(SIZES)
    x, grads, m, v = (list(views[i * n : (i + 1) * n]) for i in range(4))
    steps = [torch.tensor(float(i), device=DEVICE) for i in range(n)]
    lr, beta1, beta2, eps, wd = 1e-2, 0.8, 0.99, 1e-3, 0.1
    _fused_adam_family(
        x, grads, m, v, steps, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=wd,
        weight_decay_mode="proximal", bias_correction=True, maximize=True,
        square_gradient=square_gradient,
    )  # fmt: skip
    rel = tolerance(torch.float32, torch.float32, 1)
    for i in range(n):
        t = i + 1
        d = -g[i].double()
        m_t = beta1 * m0[i].double() + (1 - beta1) * d
        squared = d if square_gradient else m_t
        v_t = beta2 * v0[i].double() + (1 - beta2) * squared**2
        u = (m_t / (1 - beta1**t)) / ((v_t / (1 - beta2**t)).sqrt() + eps)
        x_t = (x0[i].double() - lr * u) / (1 + lr * wd)
        for actual, expected in ((x[i], x_t), (m[i], m_t), (v[i], v_t)):
            assert close(actual, expected, rel)
        assert steps[i].item() == t
        if x_t.numel():  # negative control: the update 1% off
            assert not close(x[i], x_t - 0.01 * lr * u, rel)
    assert_guards_untouched(list(buffers))


@requires_triton
def test_lion_kernel_sizes_and_guards(kernels):
    x0, g, m0 = (random_tensors(SIZES, seed) for seed in range(3))
    buffers, views = zip(*[guarded(t) for t in (*x0, *g, *m0)], strict=True)
    n = len(SIZES)
    x, grads, m = (list(views[i * n : (i + 1) * n]) for i in range(3))
    lr, beta1, beta2, wd = 0.1, 0.5, 0.9, 0.3
    _fused_lion(
        x, grads, m, lr=lr, beta1=beta1, beta2=beta2, weight_decay=wd,
        weight_decay_mode="decoupled", maximize=False,
    )  # fmt: skip
    rel = tolerance(torch.float32, torch.float32, 1)
    for i in range(n):
        d, m_prev = g[i].double(), m0[i].double()
        u = (beta1 * m_prev + (1 - beta1) * d).sign()
        x_t = (1 - lr * wd) * x0[i].double() - lr * u
        assert close(x[i], x_t, rel)
        assert close(m[i], beta2 * m_prev + (1 - beta2) * d, rel)
        if x_t.numel():
            assert not close(x[i], x_t - 0.01 * lr * u, rel)
    assert_guards_untouched(list(buffers))


@requires_triton
@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_norms_and_update_sizes_and_guards(nesterov, kernels):
    """Pass 1 (sums, reduction) and pass 2 of the clipped/normalized steps, coupled L2."""
    x0, g, b0 = (random_tensors(SIZES, seed) for seed in range(3))
    buffers, views = zip(*[guarded(t) for t in (*x0, *g, *b0)], strict=True)
    n = len(SIZES)
    x, grads, b = (list(views[i * n : (i + 1) * n]) for i in range(3))
    mu, wd = 0.9, 0.05
    options = dict(momentum=mu, nesterov=nesterov, weight_decay=wd, weight_decay_mode="l2")
    norm_d, norm_b = fused_momentum_norms(x, grads, b, maximize=False, **options)
    d = [gi.double() + wd * xi.double() for gi, xi in zip(g, x0, strict=True)]
    b_t = [mu * bi.double() + di for bi, di in zip(b0, d, strict=True)]
    b_tilde = [di + mu * bt for di, bt in zip(d, b_t, strict=True)] if nesterov else b_t
    expected_d = torch.cat([t.reshape(-1) for t in d]).norm()
    expected_b = torch.cat([t.reshape(-1) for t in b_tilde]).norm()
    rel = tolerance(torch.float32, torch.float32, 1)
    assert close(norm_d, expected_d, rel) and close(norm_b, expected_b, rel)
    assert not close(norm_d, expected_d * 1.001, rel)
    # the reduction is deterministic: the same bits again
    again = fused_momentum_norms(x, grads, b, maximize=False, **options)
    assert torch.equal(torch.stack(again), torch.stack([norm_d, norm_b]))
    lr, w_b, w_d = 0.5, 0.7, 0.2
    fused_momentum_update(
        x, grads, b, lr=lr, maximize=False, momentum_weight=w_b, grad_weight=w_d, **options
    )
    for i in range(n):
        step = w_b * b_tilde[i] + w_d * d[i]
        x_t = x0[i].double() - lr * step
        assert close(x[i], x_t, rel)
        assert close(b[i], b_t[i], rel)
        if x_t.numel():
            assert not close(x[i], x_t - 0.01 * lr * step, rel)
    assert_guards_untouched(list(buffers))


@requires_triton
def test_many_tensors_of_mixed_sizes_and_dtypes(kernels):
    """30 tensors of 0 to 3 CHUNK elements, float32 and bf16 in one group (two launches with
    per-tensor coefficient rows), different step counts: each equals its own one-tensor step."""
    g = torch.Generator().manual_seed(5)
    sizes = torch.randint(0, 3 * CHUNK + 1, (30,), generator=g).tolist()
    dtypes = [torch.bfloat16 if i % 3 == 0 else torch.float32 for i in range(len(sizes))]
    x0 = [torch.randn(s, generator=g).to(dt) for s, dt in zip(sizes, dtypes, strict=True)]
    grads = [torch.randn(s, generator=g).to(dt) for s, dt in zip(sizes, dtypes, strict=True)]
    m0 = [torch.randn(s, generator=g) for s in sizes]
    buffers, x = zip(*[guarded(t) for t in x0], strict=True)
    m = [t.clone().to(DEVICE) for t in m0]
    steps = [torch.tensor(float(i % 7), device=DEVICE) for i in range(len(sizes))]
    options = dict(
        lr=1e-2, beta1=0.9, beta2=0.0, eps=1e-3, weight_decay=0.0,
        weight_decay_mode="decoupled", bias_correction=True, maximize=False, square_gradient=False,
    )  # fmt: skip
    _fused_adam_family(list(x), [t.to(DEVICE) for t in grads], m, None, steps, **options)
    for i in range(len(sizes)):
        t = i % 7 + 1
        m_t = 0.9 * m0[i].double() + 0.1 * grads[i].double()
        u = (m_t / (1 - 0.9**t)) / (m_t.abs() + 1e-3)
        x_t = (x0[i].double() - 1e-2 * u).to(dtypes[i])  # rounded once, like the kernel
        rel = tolerance(dtypes[i], torch.float32, 1)
        assert x[i].dtype == dtypes[i]
        assert close(x[i], x_t, rel)
        assert close(m[i], m_t, rel)
    assert_guards_untouched(list(buffers))


@requires_triton
def test_zero_gradients_with_eps_zero_leave_parameters_unchanged(kernels):
    x = torch.nn.Parameter(torch.ones(5, device=DEVICE))
    opt = GeneralizedSignSGD([x], eps=0.0, bias_correction=True, fused=True)
    for _ in range(2):
        x.grad = torch.zeros_like(x)
        opt.step()
    assert torch.equal(x.detach().cpu(), torch.ones(5))


@requires_triton
def test_step_bumps_the_version_counter(kernels):
    x = torch.nn.Parameter(torch.ones(3, device=DEVICE))
    opt = Lion([x], fused=True)
    x.grad = torch.ones_like(x)
    version = x._version
    opt.step()
    assert x._version > version


@requires_triton
def test_capturable_tensor_lr_follows_the_schedule(kernels):
    """A 0-d tensor lr updated in place by a scheduler: the float-lr trajectory."""
    trajectories = []
    for capturable in (False, True):
        params = [torch.nn.Parameter(p.to(DEVICE)) for p in initial_params(torch.float64)[1:]]
        lr = torch.tensor(0.05, dtype=torch.float64, device=DEVICE) if capturable else 0.05
        opt = GeneralizedSignSGD(
            params, lr=lr, bias_correction=True, fused=True, capturable=capturable
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5**t)
        for row in gradients([p.shape for p in params], torch.float64):
            for p, grad in zip(params, row, strict=True):
                p.grad = grad.to(DEVICE)
            opt.step()
            schedule.step()
        trajectories.append(params)
    for a, b in zip(*trajectories, strict=True):
        assert close(a, b, 1e-14)


@requires_triton
def test_aligned_flag_requires_aligned_pointers_and_sizes(kernels):
    """Vector accesses (ALIGNED) only when every pointer is 16-byte aligned and every size a
    multiple of 16 elements; a view at an odd offset or a size of 17 turns them off."""
    flat = torch.zeros(64 + 1, device=DEVICE)
    cases = {
        (0, 32): True,  # flat[0:32]
        (1, 33): False,  # misaligned view
        (0, 17): False,  # size
    }
    for (begin, end), expected in cases.items():
        x = flat[begin:end]
        *_, aligned = kernels._device_tables([[x], [x]], [0], CHUNK, x.device)
        assert aligned is expected


def test_coefficient_layout_is_one_definition():
    """Builders fill every field by name; the native constants are the same indices."""
    with pytest.raises(ValueError, match="missing"):
        layout.LION.row(sign=1.0)
    assert layout.MOMENTUM_UPDATE.fields[: len(layout.MOMENTUM_SUMS)] == (
        layout.MOMENTUM_SUMS.fields
    )
    defines = layout.defines()
    assert f"-DK_GSIGNSGD_EPS={layout.GSIGNSGD.index('eps')}" in defines
    coefficients = [d for d in defines if d.startswith("-DK_")]
    assert len(coefficients) == sum(len(lay) for lay in layout.LAYOUTS.values())


def test_constructors_and_cpu_steps_do_not_import_the_triton_kernels(monkeypatch):
    """triton is imported only when a Triton step runs: not by constructing a fused optimizer
    (no compilation either) nor by the native CPU step."""
    monkeypatch.setitem(sys.modules, "adaptopt.optim._fused.triton_kernels", None)  # blocked
    monkeypatch.setattr(_fused, "TRITON_ON_CPU", False)
    x = torch.nn.Parameter(torch.ones(3))
    for info in OPTIMIZER_INFOS:
        if not info.supports_fused:
            continue
        opt = info.cls([x], fused=True)
        x.grad = torch.ones(3)
        opt.step()
    monkeypatch.setattr(_fused, "TRITON_ON_CPU", True)
    with pytest.raises(RuntimeError, match="triton cannot be imported"):
        opt.step()


@pytest.mark.skipif(SKIP is not None and "not installed" in SKIP, reason=str(SKIP))
def test_kernels_compile_for_an_nvidia_gpu_without_one():
    """What the interpreter cannot check: the kernels compile to PTX for sm_90 (no device
    needed), with round-to-nearest square roots and divisions, and 128-bit vector accesses
    for aligned tensors. bf16 parameters and state (the explicit rounding) and float64 (its
    own branches); gpu_check compiles and runs the rest."""
    code = textwrap.dedent(
        """
        import re, torch
        from adaptopt.optim._fused import triton_kernels as tk
        pairs = [(torch.bfloat16, torch.bfloat16), (torch.float64, torch.float64)]
        ptx = tk.compile_ahead(dtypes=pairs, aligned=(True,))
        assert len(ptx) == 23, len(ptx)
        bf16 = [t for n, t in ptx.items() if "bfloat16" in n and "'ALIGNED': True" in n]
        assert len(bf16) == 11 and all("ld.global.v4" in t for t in bf16)  # 128-bit accesses
        approximate = re.compile(r"sqrt[.]approx|div[.]full|div[.]approx")
        assert not [name for name, text in ptx.items() if approximate.search(text)]
        with_v = [t for n, t in ptx.items() if n.startswith("gsignsgd") and "'HAS_V': True" in n]
        assert len(with_v) == 4 and all("sqrt.rn" in t and "div.rn" in t for t in with_v)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT / "src")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if "ptxas" in result.stderr and "not found" in result.stderr:
        pytest.skip("triton's CUDA backend (ptxas) is not available here")
    assert result.returncode == 0, result.stderr[-3000:]


# -- CUDA only ---------------------------------------------------------------------------------


@cuda_only
def test_cuda_default_stays_foreach_until_measured():
    params = [torch.nn.Parameter(torch.zeros(4, device="cuda"))]
    group = GeneralizedSignSGD(params).param_groups[0]
    assert not group["fused"] and group["foreach"]
    assert not _base.default_fused(params)


@cuda_only
@pytest.mark.parametrize("case", ["gsignsgd_bias_correction_maximize", "sgd_clip_nesterov"])
def test_cuda_graph_capture_replays_the_step(case, kernels):
    """capturable: warm-up, capture one step, replay it; the eager fused trajectory."""
    cls, options = CASES[case]
    options = dict(options, lr=torch.tensor(options["lr"], device="cuda"))
    shapes = [(64, 33), (), (1000,)]
    rows = gradients(shapes, torch.float32, steps=6)
    results = []
    for graphed in (False, True):
        params = [torch.nn.Parameter(torch.ones(s, device="cuda")) for s in shapes]
        for p in params:
            p.grad = torch.zeros_like(p)
        opt = cls(params, capturable=True, **options)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up: state and device tables
            for p, grad in zip(params, rows[0], strict=True):
                p.grad.copy_(grad)
            opt.step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph() if graphed else None
        if graphed:
            with torch.cuda.graph(graph):
                opt.step()
        for row in rows[1:]:
            for p, grad in zip(params, row, strict=True):
                p.grad.copy_(grad)
            graph.replay() if graphed else opt.step()
        torch.cuda.synchronize()
        results.append([p.detach().cpu() for p in params])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@cuda_only
def test_cuda_lr_changes_never_recompile(kernels):
    params = [torch.nn.Parameter(torch.randn(100, device="cuda"))]
    opt = GeneralizedSignSGD(params, fused=True, bias_correction=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 / (1 + t))

    def compiled() -> int:
        caches = getattr(kernels.gsignsgd_kernel, "device_caches", {})
        return sum(len(cache[0]) for cache in caches.values())

    params[0].grad = torch.randn_like(params[0])
    opt.step()
    before = compiled()
    for _ in range(20):
        params[0].grad = torch.randn_like(params[0])
        opt.step()
        schedule.step()
    assert compiled() == before >= 1


# -- the GPU check's dry run -------------------------------------------------------------------


@requires_triton
@pytest.mark.skipif(CUDA, reason="the dry run is the CPU-only rehearsal of gpu_check.sh")
def test_gpu_check_dry_run_runs_end_to_end():
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TRITON_INTERPRET="1")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    names = {line.split("|")[1].strip() for line in table[2:]}
    assert {"gsignsgd", "signum", "lion", "sgd_clip_momentum", "sgd_normalized"} <= names
    assert "max error vs float64" in table[0]
    assert "dry run" in result.stdout
