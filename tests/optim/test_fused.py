"""The fused step (``fused=True``, ``adaptopt.optim._fused``) computes the reference's function.

The reference is the single-tensor path (``fused=False``), itself checked against independent
float64 formulas in ``test_reference.py``. Float64 runs must agree to rounding
(``rtol=1e-12``); float32 to the documented tolerance. Every equivalence test runs both CPU
backends (``backend`` fixture): the native kernels and the compiled ones (which are also the
CUDA path). The compiled kernels are shared by all tests (one graph per kernel variant and
dtype), so the file compiles a dozen small graphs once.
"""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from infos import fused, samples

from adaptopt.optim import SGDOL, GeneralizedSignSGD, Lion, _base, _fused
from adaptopt.optim._fused import native
from adaptopt.optim._momentum import fused_momentum_norms

SHAPES = [(5, 3), (4,), (2, 2, 2), (7,)]
STEPS = 12
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
    ),
]


NATIVE = pytest.param(
    "native",
    marks=pytest.mark.skipif(not native.available(), reason="no C++ compiler for native kernels"),
)


@pytest.fixture(params=[NATIVE, "compiled"])
def backend(request, monkeypatch):
    """The CPU backend of the fused steps, for the test's duration."""
    monkeypatch.setattr(_fused, "CPU_BACKEND", request.param)
    return request.param


@contextlib.contextmanager
def num_threads(threads: int):
    """torch's intra-op thread count inside the block."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def gradients(seed: int, dtype: torch.dtype, steps: int = STEPS, shapes=SHAPES, device="cpu"):
    """Per step, one gradient per shape over five orders of magnitude; the second and fourth
    parameters get no gradient on some steps."""
    g = torch.Generator().manual_seed(seed)
    sequence = []
    for _ in range(steps):
        row = []
        for i, shape in enumerate(shapes):
            absent = i in (1, 3) and torch.rand((), generator=g).item() < 0.25
            scale = 10 ** (5 * torch.rand((), generator=g).item() - 3)
            grad = torch.randn(shape, generator=g, dtype=torch.float64) * scale
            row.append(None if absent else grad.to(device=device, dtype=dtype))
        sequence.append(row)
    return sequence


def initial_params(dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(100)
    return [
        torch.randn(s, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
        for s in SHAPES
    ]


def run(cls, groups, common, fused, dtype=torch.float64, device="cpu", steps=STEPS, params=None):
    """Params and optimizer after ``steps`` steps; ``groups`` split the params in two."""
    params = initial_params(dtype, device) if params is None else params
    params = [p.clone().requires_grad_() for p in params]
    half = len(params) // 2
    opt = cls(
        [
            dict(params=params[:half], fused=fused, **groups[0]),
            dict(params=params[half:], fused=fused, **groups[1]),
        ],
        **common,
    )
    for row in gradients(0, dtype, steps, [p.shape for p in params], device):
        for p, grad in zip(params, row, strict=True):
            p.grad = grad
        opt.step()
    return params, opt


def assert_same_state(fused_opt, reference_opt, **tolerance):
    for p_f, p_r in zip(fused_opt.state, reference_opt.state, strict=True):
        s_f, s_r = fused_opt.state[p_f], reference_opt.state[p_r]
        assert s_f.keys() == s_r.keys()
        for key in s_f:
            torch.testing.assert_close(s_f[key].cpu(), s_r[key].cpu(), **tolerance)


# every two-group sample of every fused optimizer in the table (tests/optim/infos.py), by id
CASES = {
    param.id: (info.cls, list(sample.groups), sample.common)
    for param in samples(fused)
    for info, sample in [param.values]
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_matches_reference_float64(case, backend):
    cls, groups, common = CASES[case]
    fused, fused_opt = run(cls, groups, common, fused=True)
    reference, reference_opt = run(cls, groups, common, fused=False)
    assert all(g["fused"] for g in fused_opt.param_groups)
    assert not any(g["fused"] for g in reference_opt.param_groups)
    for a, b in zip(fused, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert_same_state(fused_opt, reference_opt, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "case", ["gsignsgd", "signum", "lion", "sgd_clip_mixed_nesterov", "normalized"]
)
def test_fused_matches_reference_float32(case, device, backend):
    """The documented float32 tolerance: rtol=1e-5, atol=1e-6 after 30 steps."""
    cls, groups, common = CASES[case]
    kwargs = dict(dtype=torch.float32, device=device, steps=30)
    fused, fused_opt = run(cls, groups, common, fused=True, **kwargs)
    reference, reference_opt = run(cls, groups, common, fused=False, **kwargs)
    for a, b in zip(fused, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert_same_state(fused_opt, reference_opt, rtol=1e-5, atol=1e-6)


DISPATCH = [(NATIVE, None), ("compiled", 0), ("compiled", _fused.BATCH_NUMEL)]


@pytest.mark.parametrize("case", ["gsignsgd", "lion", "sgd_clip_mixed_nesterov"])
@pytest.mark.parametrize("cpu_backend,batch_numel", DISPATCH)
def test_non_contiguous_and_0d_parameters(case, cpu_backend, batch_numel, monkeypatch):
    """A transposed (non-contiguous) and a 0-d parameter: through contiguous copies (native),
    and in both compiled dispatch modes (one call per tensor, small tensors batched)."""
    monkeypatch.setattr(_fused, "CPU_BACKEND", cpu_backend)
    if batch_numel is not None:
        monkeypatch.setattr(_fused, "BATCH_NUMEL", batch_numel)
    g = torch.Generator().manual_seed(1)
    base = [torch.randn(3, 5, generator=g, dtype=torch.float64).t(), torch.tensor(0.5).double()]
    params = [*base, *[torch.randn(4, generator=g, dtype=torch.float64) for _ in range(2)]]
    assert not params[0].is_contiguous()
    cls, groups, common = CASES[case]
    fused, fused_opt = run(cls, groups, common, fused=True, params=params)
    reference, reference_opt = run(cls, groups, common, fused=False, params=params)
    for a, b in zip(fused, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert_same_state(fused_opt, reference_opt, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", ["gsignsgd", "gsignsgd_beta2_zero", "lion", "sgd_clip_momentum"])
def test_chunk_boundaries_and_threads(case, threads, backend):
    """Tensors longer than a chunk, odd tails, more elements than the serial threshold."""
    shapes = [(70001,), (333, 301), (5,), (1,)]
    g = torch.Generator().manual_seed(2)
    params = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    cls, groups, common = CASES[case]
    with num_threads(threads):
        fused, fused_opt = run(cls, groups, common, fused=True, params=params, steps=3)
    reference, reference_opt = run(cls, groups, common, fused=False, params=params, steps=3)
    for a, b in zip(fused, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert_same_state(fused_opt, reference_opt, rtol=1e-12, atol=1e-14)


@pytest.mark.skipif(not native.available(), reason="no C++ compiler for native kernels")
def test_native_norms_do_not_depend_on_the_thread_count():
    """Partial sums are added in chunk order: the same bits with 1 and 2 threads."""
    g = torch.Generator().manual_seed(4)
    grads = [torch.randn(300_007, generator=g), torch.randn(77, generator=g)]
    options = dict(momentum=0.0, nesterov=False, weight_decay=0.0, weight_decay_mode="l2")
    norms = []
    for threads in (1, 2):
        with num_threads(threads):
            norms.append(fused_momentum_norms(grads, grads, None, maximize=False, **options))
    assert torch.equal(torch.stack(norms[0]), torch.stack(norms[1]))


def test_float32_global_norms_are_accurate(backend):
    """Pass 1 sums in float32 (partial sums, then float64): 4M-element norms to 1e-6."""
    g = torch.Generator().manual_seed(3)
    params = [torch.randn(1 << 22, generator=g) * 10, torch.randn(1000, generator=g)]
    grads = [torch.rand(p.shape, generator=g) + 1 for p in params]
    bufs = [torch.randn(p.shape, generator=g) for p in params]
    options = dict(nesterov=False, weight_decay=1e-2, weight_decay_mode="l2", maximize=False)
    norm_d, norm_b = fused_momentum_norms(params, grads, bufs, momentum=0.9, **options)
    d = [gr.double() + 1e-2 * p.double() for gr, p in zip(grads, params, strict=True)]
    b = [0.9 * bu.double() + di for bu, di in zip(bufs, d, strict=True)]
    assert norm_d.item() == pytest.approx(torch.cat(d).norm().item(), rel=1e-6)
    assert norm_b.item() == pytest.approx(torch.cat(b).norm().item(), rel=1e-6)


def test_zero_gradients_with_eps_zero_leave_parameters_unchanged(backend):
    x = torch.nn.Parameter(torch.ones(6, dtype=torch.float64))
    opt = GeneralizedSignSGD([x], eps=0.0, bias_correction=True, fused=True)
    for _ in range(3):
        x.grad = torch.zeros_like(x)
        opt.step()
    assert torch.equal(x.detach(), torch.ones(6, dtype=torch.float64))


@pytest.mark.parametrize("cpu_backend,batch_numel", DISPATCH)
def test_fused_step_bumps_the_version_counter(cpu_backend, batch_numel, monkeypatch):
    """In-place updates stay visible to autograd's saved-tensor checks, in all dispatch modes."""
    monkeypatch.setattr(_fused, "CPU_BACKEND", cpu_backend)
    if batch_numel is not None:
        monkeypatch.setattr(_fused, "BATCH_NUMEL", batch_numel)
    x = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = Lion([x], fused=True)
    x.grad = torch.ones_like(x)
    version = x._version
    opt.step()
    assert x._version > version
    state_version = opt.state[x]["exp_avg"]._version
    opt.step()
    assert opt.state[x]["exp_avg"]._version > state_version


@pytest.mark.skipif(not native.available(), reason="native kernels not built")
def test_native_step_bumps_every_written_version_counter(monkeypatch):
    """Parameters, state and step counters written through pointers are seen by autograd:
    a tensor saved for backward and then stepped makes backward fail, as with torch's ops."""
    monkeypatch.setattr(_fused, "CPU_BACKEND", "native")
    x = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = GeneralizedSignSGD([x], fused=True)
    x.grad = torch.ones_like(x)
    opt.step()
    state = opt.state[x]
    before = {key: t._version for key, t in state.items()}
    loss = (x * x).sum()  # saves x for backward
    opt.step()
    assert all(state[key]._version > version for key, version in before.items())
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


# -- precision -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_parameters_keep_float32_state(dtype, backend):
    """bf16/fp16 parameters, float32 state and arithmetic, one rounding per step: the float32
    reference with its parameters rounded to the dtype after each step, within one ulp
    (eps of the dtype, relative). Negative controls: the do-nothing optimizer and the
    reference one step short fail the same check."""
    cls, groups, common = CASES["gsignsgd"]
    fused, fused_opt = run(cls, groups, common, fused=True, dtype=dtype)
    params = [p.float().requires_grad_() for p in initial_params(dtype)]
    x0 = [p.detach().clone() for p in params]
    reference_opt = cls(
        [
            dict(params=params[:2], fused=False, **groups[0]),
            dict(params=params[2:], fused=False, **groups[1]),
        ],
        **common,
    )
    for row in gradients(0, dtype):
        one_short = [p.detach().clone() for p in params]
        for p, grad in zip(params, row, strict=True):
            p.grad = None if grad is None else grad.float()
        reference_opt.step()
        with torch.no_grad():
            for p in params:
                p.copy_(p.to(dtype))
    for state in fused_opt.state.values():
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32

    def within_one_ulp(actual) -> bool:
        return all(
            torch.allclose(a.float(), b.detach(), rtol=torch.finfo(dtype).eps, atol=1e-5)
            for a, b in zip(actual, params, strict=True)
        )

    assert all(a.dtype == dtype for a in fused)
    assert within_one_ulp(fused)
    assert not within_one_ulp(x0)
    assert not within_one_ulp(one_short)
    assert_same_state(fused_opt, reference_opt, rtol=1e-5, atol=1e-7)
    # torch's load_state_dict casts state to the parameter dtype; ours keeps float32 exactly
    params = [p.detach().clone().requires_grad_() for p in fused]
    restored = cls([dict(params=params[:2], **groups[0]), dict(params=params[2:], **groups[1])])
    restored.load_state_dict(fused_opt.state_dict())
    for saved, loaded in zip(fused_opt.state.values(), restored.state.values(), strict=True):
        assert loaded["exp_avg"].dtype == torch.float32
        assert torch.equal(saved["exp_avg"], loaded["exp_avg"])


def test_bfloat16_state_is_float32_arithmetic_rounded_once_per_step(backend):
    """``state_dtype=torch.bfloat16``: 2-byte state; the fused step equals the float32
    reference whose state is rounded to bf16 after each step. The state stays bf16 through
    the reference path and a state_dict round trip."""
    cls, groups, common = CASES["gsignsgd"]
    bf16 = dict(common, state_dtype=torch.bfloat16)
    fused, fused_opt = run(cls, groups, bf16, fused=True, dtype=torch.float32)
    params = [p.requires_grad_() for p in initial_params(torch.float32)]
    reference_opt = cls(
        [
            dict(params=params[:2], fused=False, **groups[0]),
            dict(params=params[2:], fused=False, **groups[1]),
        ],
        **common,
    )
    for row in gradients(0, torch.float32):
        for p, grad in zip(params, row, strict=True):
            p.grad = grad
        reference_opt.step()
        for state in reference_opt.state.values():
            for key in ("exp_avg", "exp_avg_sq"):
                state[key].copy_(state[key].bfloat16())
    for state in fused_opt.state.values():
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.bfloat16
    for a, b in zip(fused, params, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)
    assert_same_state(fused_opt, reference_opt, rtol=2**-8, atol=1e-6, check_dtype=False)

    unfused, unfused_opt = run(cls, groups, bf16, fused=False, dtype=torch.float32)
    halves = (unfused[:2], unfused[2:])
    restored = cls([dict(params=h, **g) for h, g in zip(halves, groups, strict=True)], **bf16)
    restored.load_state_dict(unfused_opt.state_dict())  # torch alone would cast to float32
    for opt in (unfused_opt, restored):
        for state in opt.state.values():
            assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.bfloat16


def within_rounding_of(actual, reference, x0, eps: float, steps: int) -> bool:
    """Whether every tensor of ``actual`` is within ``eps · steps · max|reference − x0|`` of
    ``reference``, element-wise: one rounding of relative size eps per step, relative to the
    size of the change from x_0 (which the do-nothing optimizer misses by all of it)."""
    for a, r, x in zip(actual, reference, x0, strict=True):
        bound = eps * steps * (r - x).abs().max()
        if not bool(((a.float() - r).abs() <= bound).all()):
            return False
    return True


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("case", ["gsignsgd", "sgd_clip_momentum", "lion"])
def test_reference_paths_keep_low_precision_state_and_parameters(case, foreach):
    """``state_dtype`` and bf16 parameters in the single-tensor and foreach paths: the dtypes
    hold and the result is the float32 one within bf16 rounding, eps(bf16) = 2^-7 per step
    relative to the change from x_0. x_0 is small (bf16-exact, ~1e-3), so that a step spans
    many ulps of x, as the bound assumes. Negative controls: the do-nothing optimizer and the
    float32 run without its last step fail the same bound."""
    cls, groups, common = CASES[case]
    steps, eps = 6, torch.finfo(torch.bfloat16).eps
    x0 = [(1e-3 * p).bfloat16().float() for p in initial_params()]
    options = dict(common, foreach=foreach)
    full, _ = run(cls, groups, options, False, dtype=torch.float32, steps=steps, params=x0)
    half_state, opt = run(
        cls,
        groups,
        dict(options, state_dtype=torch.bfloat16),
        False,
        dtype=torch.float32,
        steps=steps,
        params=x0,
    )
    assert all(
        t.dtype == torch.bfloat16 for s in opt.state.values() for t in s.values() if t.dim() > 0
    )
    bf16_x0 = [p.bfloat16() for p in x0]
    bf16_params, opt = run(
        cls, groups, options, False, dtype=torch.bfloat16, steps=steps, params=bf16_x0
    )
    assert all(p.dtype == torch.bfloat16 for p in bf16_params)
    assert all(
        s["exp_avg" if "exp_avg" in s else "momentum_buffer"].dtype == torch.float32
        for s in opt.state.values()
    )
    assert within_rounding_of(half_state, full, x0, eps, steps)
    assert within_rounding_of(bf16_params, full, x0, eps, steps)
    # negative controls
    assert not within_rounding_of(x0, full, x0, eps, steps)
    one_short, _ = run(cls, groups, options, False, dtype=torch.float32, steps=steps - 1, params=x0)
    assert not within_rounding_of(one_short, full, x0, eps, steps)


# -- state_dict interchange --------------------------------------------------------------------


@pytest.mark.parametrize("case", ["gsignsgd", "signum", "lion", "sgd_clip_mixed_nesterov"])
def test_state_dict_moves_between_fused_and_reference(case, backend):
    """Same state names and values: 6 steps with one path, 6 more with either path after a
    save/load, all four combinations end at the same point."""
    cls, groups, common = CASES[case]
    finals = []
    for fused_before in (False, True):
        first, first_opt = run(cls, groups, common, fused=fused_before, steps=6)
        buffer = io.BytesIO()
        torch.save(first_opt.state_dict(), buffer)
        for fused_after in (False, True):
            params = [p.detach().clone().requires_grad_() for p in first]
            halves = (params[:2], params[2:])
            opt = cls(
                [
                    dict(params=h, fused=fused_after, **g)
                    for h, g in zip(halves, groups, strict=True)
                ],
                **common,
            )
            buffer.seek(0)
            opt.load_state_dict(torch.load(buffer))
            assert all(g["fused"] == fused_after for g in opt.param_groups)
            for row in gradients(seed=7, dtype=torch.float64, steps=6):
                for p, grad in zip(params, row, strict=True):
                    p.grad = grad
                opt.step()
            finals.append(params)
    for other in finals[1:]:
        for a, b in zip(other, finals[0], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


# -- compilation -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["gsignsgd_bias_correction_l2_maximize", "sgd_clip_momentum"])
def test_changing_lr_never_recompiles_nor_breaks_the_graph(case, monkeypatch):
    """Compiled kernels, 100 steps under a LambdaLR schedule: no new graph, no graph break
    (fullgraph=True)."""
    monkeypatch.setattr(_fused, "CPU_BACKEND", "compiled")
    cls, groups, common = CASES[case]
    counters = torch._dynamo.utils.counters
    params, opt = run(cls, groups, common, fused=True, steps=1)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 / (1 + t))
    graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    with torch._dynamo.config.patch(error_on_recompile=True):
        for row in gradients(seed=3, dtype=torch.float64, steps=100):
            for p, grad in zip(params, row, strict=True):
                p.grad = grad
            opt.step()
            schedule.step()
    assert counters["stats"]["unique_graphs"] == graphs
    assert sum(counters["graph_break"].values()) == breaks
    assert opt.param_groups[0]["lr"] == pytest.approx(groups[0]["lr"] / 101)


def test_capturable_with_tensor_lr_follows_the_schedule(backend):
    """capturable: step counters on the parameter device and a 0-d tensor lr that the
    scheduler updates in place; same trajectory as the reference with a float lr."""
    cls, groups, common = CASES["gsignsgd_bias_correction_l2_maximize"]
    trajectories = []
    for capturable in (False, True):
        tensor_groups = [
            dict(g, lr=torch.tensor(g["lr"], dtype=torch.float64)) if capturable else g
            for g in groups
        ]
        fused = None if capturable else False  # capturable implies fused
        params, opt = run(
            cls, tensor_groups, dict(common, capturable=capturable), fused=fused, steps=0
        )
        assert all(g["fused"] == capturable for g in opt.param_groups)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.9**t)
        for row in gradients(seed=4, dtype=torch.float64, steps=8):
            for p, grad in zip(params, row, strict=True):
                p.grad = grad
            opt.step()
            schedule.step()
        trajectories.append(params)
        if capturable:
            assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)
            assert all(s["step"].device == p.device for p, s in opt.state.items())
    for a, b in zip(*trajectories, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


# -- dispatch and errors -----------------------------------------------------------------------


def test_default_is_fused_on_cpu_with_native_kernels(monkeypatch):
    small = [torch.nn.Parameter(torch.zeros(8))]
    monkeypatch.setattr(native, "available", lambda: True)
    chosen = {
        "default": GeneralizedSignSGD(small),
        "foreach": GeneralizedSignSGD(small, foreach=True),
        "explicit": GeneralizedSignSGD(small, fused=False),
        "sgdol": SGDOL(small),
        "meta": GeneralizedSignSGD([torch.nn.Parameter(torch.zeros(8, device="meta"))]),
    }
    expected = {"default": True, "foreach": False, "explicit": False, "sgdol": False, "meta": False}
    assert {k: o.param_groups[0]["fused"] for k, o in chosen.items()} == expected
    assert not chosen["default"].param_groups[0]["foreach"]


def test_default_without_native_kernels_is_fused_only_for_large_groups(monkeypatch):
    monkeypatch.setattr(_fused, "CPU_BACKEND", "compiled")
    small = [torch.nn.Parameter(torch.zeros(8))]
    assert not GeneralizedSignSGD(small).param_groups[0]["fused"]
    monkeypatch.setattr(_base, "FUSED_MIN_NUMEL", 8)
    assert GeneralizedSignSGD(small).param_groups[0]["fused"] == _fused.cpp_compiler_available()


def test_cpu_backend_context_restores_the_backend():
    before = _fused.CPU_BACKEND
    with _fused.cpu_backend("compiled"):
        assert not _fused.native_available()
    assert before == _fused.CPU_BACKEND
    with (
        pytest.raises(ValueError, match="unknown fused CPU backend 'triton'"),
        _fused.cpu_backend("triton"),
    ):
        pass


def test_optimizers_without_a_fused_step_refuse_fused():
    """The other fused-argument errors are error inputs of the table (test_properties.py)."""
    with pytest.raises(ValueError, match="SGDOL has no fused step"):
        SGDOL([{"params": [torch.nn.Parameter(torch.ones(2))], "fused": True}])


def test_fused_group_on_two_devices_is_rejected():
    params = [torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2, device="meta"))]
    opt = GeneralizedSignSGD(params, fused=True)
    for p in params:
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match="all parameters of a param group on one device"):
        opt.step()
