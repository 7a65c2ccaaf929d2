"""bf16/fp16 parameters: stochastic rounding on every optimizer, decay computed in float32.

Statistical tests use fixed seeds and a tolerance of Z = 5 standard deviations of the tested
statistic, derived from the Bernoulli/binomial variance of the rounding decisions (a correct
implementation fails such a check with probability about 6e-7; the seeds are fixed, so the
outcome is reproducible); each has the negative control of round to nearest, which misses by
far more than the tolerance.
"""

from __future__ import annotations

import copy
import io
import math
import os
import pickle

import pytest
import torch
from infos import INFOS, TORCH_BASELINES, fused, names

from adaptopt.optim import OPTIMIZERS, SignSGD, _fused, create_optimizer, hyperparameters
from adaptopt.optim._rounding import RNG_KEY, SEED_KEY, stochastic_round

Z = 5.0
# every optimizer of the table (tests/optim/infos.py) and torch's optimizers of the registry,
# which have the option too (``_rounding.with_stochastic_rounding``)
TORCH = TORCH_BASELINES
NAMES = sorted([*names(), *TORCH])
BF16_ULP_1_2 = 2.0**-7  # spacing of bf16 in [1, 2)
MANTISSA_BITS = {torch.bfloat16: 7, torch.float16: 10}


def paths(name: str) -> list[dict]:
    """The step paths of optimizer ``name``: single-tensor, foreach and (if any) fused."""
    options = [{"foreach": False}, {"foreach": True}]
    if name in INFOS and INFOS[name].supports_fused:
        options.append({"fused": True})
    return options


PATHS = [(name, path) for name in NAMES for path in paths(name)]
PATH_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in path.items())}" for name, path in PATHS]


def make(name: str, params, **hp):
    if name in INFOS and INFOS[name].supports_fused:
        hp.setdefault("fused", False)
    return create_optimizer(name, params, **hp)


def constant_gradient_closure(params, grads):
    """Sets each parameter's gradient to a fixed tensor (SGDOL calls it twice per step)."""

    def closure():
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        return torch.zeros(())

    return closure


def run(name, x0, grad, steps, **hp):
    """``steps`` steps of ``name`` from ``x0`` with the constant gradient ``grad``."""
    x = torch.nn.Parameter(x0.clone())
    opt = make(name, [x], **hp)
    closure = constant_gradient_closure([x], [grad.to(x.dtype)])
    for _ in range(steps):
        opt.step(closure)
    return x.detach(), opt


def neighbours(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bf16 values ``(a, b)`` around float32 ``y`` with ``|a| <= |y| < |b|`` (float64)."""
    bits = y.float().view(torch.int32)
    low = bits.bitwise_and(-(1 << 16))
    return low.view(torch.float32).double(), (low + (1 << 16)).view(torch.float32).double()


# -- the rounding function -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_stochastic_round_is_unbiased_and_picks_a_neighbour(dtype):
    """64 float32 values of both signs and many magnitudes, each rounded R = 4000 times: the
    result is always one of its two neighbours in ``dtype``, and the frequency of the upper
    one (in magnitude) is the fractional position p, within Z binomial standard deviations
    sqrt(p (1-p) / R). Negative control: round to nearest is off by more for some values."""
    gen = torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, (64,), generator=gen) * 2.0 - 1
    values = signs * (1 + torch.rand(64, generator=gen)) * torch.logspace(-3, 3, 64)
    repeats = 4000
    y = values.repeat_interleave(repeats)
    result = stochastic_round(y, dtype, torch.Generator().manual_seed(1)).double()
    nearest = y.to(dtype).double()
    y = y.double()
    # neighbours in float64: multiples of the spacing 2^(e - mantissa bits) at |y| in [2^e, 2^e+1)
    spacing = 2.0 ** (torch.floor(torch.log2(y.abs())) - MANTISSA_BITS[dtype])
    low = torch.sign(y) * torch.floor(y.abs() / spacing) * spacing
    high = low + torch.sign(y) * spacing
    assert bool(((result == low) | (result == high)).all())
    p = ((y - low) / (high - low)).view(64, repeats)[:, 0]
    frequency = (result == high).double().view(64, repeats).mean(1)
    tolerance = Z * torch.sqrt(p * (1 - p) / repeats) + 1 / repeats
    assert bool(((frequency - p).abs() <= tolerance).all())
    nearest_frequency = (nearest == high).double().view(64, repeats).mean(1)
    assert not bool(((nearest_frequency - p).abs() <= tolerance).all())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_stochastic_round_keeps_representable_and_special_values(dtype):
    exact = torch.tensor([0.0, -0.0, 1.0, -2.5, 0.375, 1024.0])
    special = torch.tensor([float("inf"), float("-inf"), float("nan")])
    y = torch.cat([exact, special]).repeat(100)
    result = stochastic_round(y, dtype, torch.Generator().manual_seed(0))
    assert result.dtype == dtype
    assert torch.equal(result.float()[:6], exact)
    assert torch.equal(result.float().view(100, 9)[:, :8], y.view(100, 9)[:, :8])
    assert bool(result.float().view(100, 9)[:, 8].isnan().all())


def test_stochastic_round_is_reproducible_from_the_generator():
    y = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 1e-2 + 1
    a = stochastic_round(y, torch.bfloat16, torch.Generator().manual_seed(5))
    b = stochastic_round(y, torch.bfloat16, torch.Generator().manual_seed(5))
    c = stochastic_round(y, torch.bfloat16, torch.Generator().manual_seed(6))
    assert torch.equal(a.view(torch.int16), b.view(torch.int16))
    assert not torch.equal(a.view(torch.int16), c.view(torch.int16))


# -- updates below half an ulp ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name,dtype,path",
    [
        *[("signsgd", torch.bfloat16, p) for p in paths("signsgd")],
        *[("signsgd", torch.float16, p) for p in paths("signsgd")],
        ("sgd", torch.bfloat16, {"foreach": True}),
        ("adam", torch.bfloat16, {"foreach": False}),
    ],
)
def test_update_below_half_an_ulp_moves_the_weight_in_expectation(name, dtype, path):
    """x_0 = 1.5 (M = 4096 coordinates), gradient 1, lr = ulp/8: each step's exact value is
    1/8 of an ulp below a grid point, so with stochastic rounding each step moves the weight
    down one ulp with probability 1/8, independently: after N = 64 steps x_0 − x_N = K ulp,
    K ~ Binomial(N, 1/8). Checked: the mean of K is N/8 = 8 within Z sqrt(N p (1-p) / M)
    = 0.21, and its variance N p (1-p) = 7 within 12% (Z standard deviations
    sqrt(2/M) ≈ 2.2% of the sample variance). Round to nearest (negative control) leaves
    the weight frozen, 8 ulps from the expected position."""
    ulp = 2.0 ** -MANTISSA_BITS[dtype]  # spacing in [1, 2)
    lr, steps, m, p = ulp / 8, 64, 4096, 1 / 8
    hp = dict(lr=lr, **path)
    if name == "adam":
        hp["eps"] = 0.0  # u = m̂ / sqrt(v̂) = 1 exactly
    x0 = torch.full((m,), 1.5, dtype=dtype)
    grad = torch.ones(m, dtype=dtype)
    x, _ = run(name, x0, grad, steps, stochastic_rounding=True, stochastic_rounding_seed=3, **hp)
    assert x.dtype == dtype
    k = (1.5 - x.double()) / ulp
    assert torch.equal(k, k.round())  # on the grid, never beyond it
    mean, variance = steps * p, steps * p * (1 - p)
    assert abs(k.mean().item() - mean) <= Z * math.sqrt(variance / m)
    assert abs(k.var().item() / variance - 1) <= 0.12
    nearest, _ = run(name, x0, grad, steps, **hp)
    assert torch.equal(nearest, x0)  # frozen: each step rounds back
    assert abs(0.0 - mean) > Z * math.sqrt(variance / m)


@pytest.mark.parametrize("name,path", PATHS, ids=PATH_IDS)
def test_every_optimizer_rounds_its_float32_step_unbiasedly(name, path):
    """One step of every optimizer on every path from bf16 x_0 in [1.25, 1.75) (M = 4096
    coordinates, positive gradients), lr scaled so that every step is below half an ulp.
    The float32 twin (same optimizer, float32 copies of x_0 and the gradient) gives the
    exact new value y. With stochastic rounding each coordinate is a neighbour of y and the
    mean of x_1 − y is 0 within Z sqrt(Σ p(1−p) δ²)/M (p: position of y between its
    neighbours, δ: their spacing). Without it x_1 is y rounded to nearest (here: x_0, frozen),
    whose mean error, the mean step, exceeds that tolerance (negative control)."""
    gen = torch.Generator().manual_seed(0)
    m = 4096
    x0 = (1.25 + 0.5 * torch.rand(m, generator=gen)).bfloat16()
    grad = (torch.rand(m, generator=gen) + 0.5).bfloat16()
    # the float32 twin: pick lr so that the largest step is 0.4 ulp
    probe, _ = run(name, x0.float(), grad.float(), 1, lr=1e-4, **path)
    lr = 1e-4 * 0.4 * BF16_ULP_1_2 / (probe.double() - x0.double()).abs().max().item()
    y, _ = run(name, x0.float(), grad.float(), 1, lr=lr, **path)
    step = y.double() - x0.double()
    assert step.abs().max() < BF16_ULP_1_2 / 2 and step.abs().mean() > BF16_ULP_1_2 / 10

    x1, _ = run(name, x0, grad, 1, lr=lr, stochastic_rounding=True, **path)
    low, high = neighbours(y)
    assert x1.dtype == torch.bfloat16
    assert bool(((x1.double() == low) | (x1.double() == high)).all())
    p = (y.double() - low) / (high - low)
    tolerance = Z * torch.sqrt((p * (1 - p) * (high - low) ** 2).sum()).item() / m
    assert abs((x1.double() - y.double()).mean().item()) <= tolerance

    nearest, _ = run(name, x0, grad, 1, lr=lr, **path)
    assert torch.equal(nearest, y.bfloat16())
    assert torch.equal(nearest, x0)
    assert abs((nearest.double() - y.double()).mean().item()) > tolerance


def triton_interpreter() -> str | None:
    """Why the Triton kernels cannot run on CPU tensors here, or None (tests/conftest.py)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return "TRITON_INTERPRET=1 is not set"
    try:
        import triton.language as tl
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:
        return "triton is not installed"
    if not isinstance(tl.zeros, InterpretedFunction):
        return "triton was imported before TRITON_INTERPRET=1 was set"
    return None


@pytest.mark.skipif(triton_interpreter() is not None, reason=str(triton_interpreter()))
def test_triton_fused_step_rounds_stochastically(monkeypatch):
    """The fused step with the Triton kernels (the CUDA backend, here under Triton's CPU
    interpreter): with lr = ulp/4 each of N = 16 steps moves x_0 = 1.5 (M = 1024) down one
    ulp with probability 1/4: K ~ Binomial(16, 1/4), mean 4 within Z sqrt(3/M) = 0.27.
    Round to nearest (negative control) stays frozen."""
    monkeypatch.setattr(_fused, "TRITON_ON_CPU", True)
    launches = []
    backend = _fused.triton_backend
    monkeypatch.setattr(_fused, "triton_backend", lambda: launches.append(1) or backend())
    m, steps, p = 1024, 16, 0.25
    x0 = torch.full((m,), 1.5, dtype=torch.bfloat16)
    grad = torch.ones(m, dtype=torch.bfloat16)
    hp = dict(lr=BF16_ULP_1_2 * p, fused=True)
    x, _ = run("signsgd", x0, grad, steps, stochastic_rounding=True, **hp)
    assert len(launches) == steps
    k = (1.5 - x.double()) / BF16_ULP_1_2
    assert torch.equal(k, k.round())
    assert abs(k.mean().item() - steps * p) <= Z * math.sqrt(steps * p * (1 - p) / m)
    nearest, _ = run("signsgd", x0, grad, steps, **hp)
    assert torch.equal(nearest, x0)


# -- weight decay in float32 -----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["decoupled", "proximal"])
@pytest.mark.parametrize("path", paths("signsgd"), ids=lambda p: "-".join(map(str, p.items())))
def test_decay_below_half_an_ulp_is_kept_in_expectation(mode, path):
    """bf16 weights x_0 = ±1.5 (M = 4096), zero gradient (the update u is 0), ηλ = 2^-16, N =
    500 steps: float64 reference x_0 (1−ηλ)^N or x_0/(1+ηλ)^N, a decay D of 1.46 ulps.
    Each step changes x by ηλ|x| ≈ 0.003 ulp, far below half an ulp.

    * Stochastic rounding: the mean of x_N is the reference within Z sqrt(δ D / M) + N 2^-24
      |x_0|: conditionally on x_t, x_{t+1} is one of the neighbours of the float32 value y_t,
      unbiased, with variance p(1−p) δ² <= δ (x_t − y_t) (δ: the spacing); summed over the
      steps, <= δ D. The last term bounds the float32 rounding of y_t, one half-ulp of
      float32 per step.
    * Round to nearest: the weights never move: each float32 step rounds back to x_t. This is
      exactly what holds without stochastic rounding: the decay is computed in float32 and
      the step rounded once, so a step smaller than half an ulp is lost.
    * Negative control, decay computed in bf16 (x.mul_(1 − ηλ) on the bf16 tensor, the trap):
      lost as well, with or without stochastic rounding of the (zero) update.
    """
    m, steps, lr, wd = 4096, 500, 2.0**-6, 2.0**-10
    x0 = torch.full((m,), 1.5, dtype=torch.bfloat16)
    x0[::2] = -1.5
    factor = (1 - lr * wd) if mode == "decoupled" else 1 / (1 + lr * wd)
    reference = x0.double() * factor**steps
    decay = (x0.double() - reference).abs().mean().item()
    ulp = BF16_ULP_1_2
    assert 1.4 * ulp < decay < 1.5 * ulp
    tolerance = Z * math.sqrt(ulp * decay / m) + steps * 2.0**-24 * 1.5

    hp = dict(lr=lr, weight_decay=wd, weight_decay_mode=mode, **path)
    zero = torch.zeros(m)
    x, _ = run("signsgd", x0, zero, steps, stochastic_rounding=True, **hp)
    error = (x.double() - reference) * torch.sign(reference)
    assert abs(error.mean().item()) <= tolerance
    assert tolerance < 0.1 * decay

    nearest, _ = run("signsgd", x0, zero, steps, **hp)
    assert torch.equal(nearest, x0)
    bf16_decay = x0.clone()
    for _ in range(steps):
        if mode == "decoupled":
            bf16_decay.mul_(1 - lr * wd)
        else:
            bf16_decay.div_(1 + lr * wd)
    assert torch.equal(bf16_decay, x0)
    assert (nearest.double() - reference).abs().mean().item() > tolerance


OURS = [(case, i) for case, i in zip(PATHS, PATH_IDS, strict=True) if case[0] not in TORCH]


@pytest.mark.parametrize("name,path", [c for c, _ in OURS], ids=[i for _, i in OURS])
def test_decay_and_update_are_rounded_once_together(name, path):
    """Without stochastic rounding the float32 step (update and decay together) is rounded
    once: the bf16 result equals the float32 twin's step from the same x_0 rounded to nearest,
    bit for bit, for every optimizer and path. In bf16 arithmetic a decay of 0.3 ulp would
    round back first, and an update of 0.3 ulp after it too (negative control below).
    (torch's optimizers keep torch's own bf16 arithmetic when the option is off.)"""
    gen = torch.Generator().manual_seed(1)
    m = 1024
    x0 = (1.25 + 0.5 * torch.rand(m, generator=gen)).bfloat16()
    grad = (torch.rand(m, generator=gen) + 0.5).bfloat16()
    mode = "proximal" if name == "adam_prox" else "decoupled"
    lr = 1e-2 if name == "sgdol" else 1e-3  # SGDOL's lr multiplies its learned 1/M = 0.1
    hp = dict(lr=lr, weight_decay=4.0, weight_decay_mode=mode, **path)
    x, _ = run(name, x0, grad, 1, **hp)
    twin, _ = run(name, x0.float(), grad.float(), 1, **hp)
    assert torch.equal(x, twin.bfloat16())
    assert not torch.equal(x, x0)  # the step is not lost


def test_bf16_arithmetic_would_lose_a_decay_and_an_update_of_0_3_ulp_each():
    """The case the float32 computation fixes: decay then update, each 0.3 ulp, in bf16 leave
    x unchanged; the same step computed in float32 and rounded once moves x by one ulp."""
    x = torch.full((4,), 1.5, dtype=torch.bfloat16)
    lr, wd, u = 2.0**-8, 0.3 * BF16_ULP_1_2 / 1.5 / 2.0**-8, 0.3 * BF16_ULP_1_2 / 2.0**-8
    in_bf16 = x.clone().mul_(1 - lr * wd).add_(torch.full_like(x, u) * -lr)
    assert torch.equal(in_bf16, x)
    param = torch.nn.Parameter(x.clone())
    opt = create_optimizer(
        "sgd_clip_grad", [param], lr=lr, gamma=1e9, weight_decay=wd, weight_decay_mode="decoupled"
    )
    param.grad = torch.full_like(x, u)
    opt.step()
    assert torch.equal(param.detach().double(), torch.full((4,), 1.5 - BF16_ULP_1_2).double())


# -- float32 parameters, seeds, checkpoints ---------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_float32_parameters_ignore_the_option(name):
    """A float32 and a bf16 parameter in one group: the float32 one gets the same bits as
    without stochastic rounding, and the rounding stream is used for the bf16 one only."""
    gen = torch.Generator().manual_seed(2)
    a0, b0 = torch.randn(50, generator=gen), torch.randn(50, generator=gen).bfloat16()
    results = []
    for sr in (False, True):
        a, b = torch.nn.Parameter(a0.clone()), torch.nn.Parameter(b0.clone())
        opt = make(name, [a, b], lr=1e-2, stochastic_rounding=sr)
        closure = constant_gradient_closure([a, b], [a0.sin(), b0.cos().bfloat16()])
        for _ in range(3):
            opt.step(closure)
        results.append((a.detach().clone(), opt))
    assert torch.equal(results[0][0], results[1][0])
    assert results[0][1].param_groups[0][RNG_KEY] == {}
    assert list(results[1][1].param_groups[0][RNG_KEY]) == ["cpu"]

    only_fp32 = torch.nn.Parameter(a0.clone())
    opt = make(name, [only_fp32], lr=1e-2, stochastic_rounding=True)
    opt.step(constant_gradient_closure([only_fp32], [a0.sin()]))
    assert opt.param_groups[0][RNG_KEY] == {}  # nothing drawn


@pytest.mark.parametrize("name", NAMES)
def test_seeded_rounding_is_deterministic(name):
    """Same seed → the same bits; another seed → other bits; the default seed follows
    ``torch.manual_seed``."""
    gen = torch.Generator().manual_seed(3)
    x0 = (1 + torch.rand(2000, generator=gen)).bfloat16()
    grad = torch.randn(2000, generator=gen)

    def bits(**hp):
        x, opt = run(name, x0, grad, 4, lr=1e-3, stochastic_rounding=True, **hp)
        return x.view(torch.int16), opt

    first, _ = bits(stochastic_rounding_seed=7)
    again, _ = bits(stochastic_rounding_seed=7)
    other, _ = bits(stochastic_rounding_seed=8)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    torch.manual_seed(11)
    default, opt = bits()
    torch.manual_seed(11)
    default_again, opt_again = bits()
    torch.manual_seed(12)
    default_other, _ = bits()
    assert opt.param_groups[0][SEED_KEY] == opt_again.param_groups[0][SEED_KEY]
    assert torch.equal(default, default_again)
    assert not torch.equal(default, default_other)


CHECKPOINT_CASES = [(name, path) for name, path in PATHS if path.get("foreach") is not False]


CHECKPOINT_IDS = [i for i, case in zip(PATH_IDS, PATHS, strict=True) if case in CHECKPOINT_CASES]


@pytest.mark.parametrize("name,path", CHECKPOINT_CASES, ids=CHECKPOINT_IDS)
def test_checkpoint_resume_is_bitwise(name, path):
    """6 steps, ``state_dict`` through ``torch.save``, 6 more steps; a new optimizer on the
    saved weights loads the checkpoint and takes the same 6 steps: the same bits. Two
    groups, one with a bf16 and a float32 parameter, one with its own seed."""
    gen = torch.Generator().manual_seed(4)
    x0 = [(1 + torch.rand(300, generator=gen)).bfloat16() for _ in range(2)]
    w0 = torch.randn(30, generator=gen)
    grads = [torch.randn(300, generator=gen).bfloat16() for _ in range(2)] + [w0.cos()]

    def build(tensors):
        params = [torch.nn.Parameter(t.clone()) for t in tensors]
        groups = [
            {"params": [params[0], params[2]]},
            {"params": [params[1]], "stochastic_rounding_seed": 99},
        ]
        opt = make(name, groups, lr=1e-2, stochastic_rounding=True, **path)
        return params, opt, constant_gradient_closure(params, grads)

    params, opt, closure = build([*x0, w0])
    for _ in range(6):
        opt.step(closure)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    saved = [p.detach().clone() for p in params]
    for _ in range(6):
        opt.step(closure)

    resumed, restored, closure = build(saved)
    buffer.seek(0)
    restored.load_state_dict(torch.load(buffer))
    for _ in range(6):
        restored.step(closure)
    for a, b in zip(params, resumed, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    fresh, unrestored, closure = build(saved)  # negative control: without the stream's state
    state = copy.deepcopy(opt.state_dict())
    for group in state["param_groups"]:
        group[RNG_KEY] = {}
    unrestored.load_state_dict(state)
    for _ in range(6):
        unrestored.step(closure)
    assert not torch.equal(fresh[0].detach(), params[0].detach())


@pytest.mark.parametrize("name", NAMES)
def test_deepcopy_and_pickle_continue_the_stream(name):
    """Copies made by ``copy.deepcopy`` and ``pickle`` carry the stream's state (a group
    entry): they continue with the same bits; later param groups of a copy get the option."""
    gen = torch.Generator().manual_seed(6)
    x0 = (1 + torch.rand(500, generator=gen)).bfloat16()
    grad = torch.randn(500, generator=gen).bfloat16()
    for clone_of in (copy.deepcopy, lambda opt: pickle.loads(pickle.dumps(opt))):
        _, opt = run(name, x0, grad, 3, lr=1e-2, stochastic_rounding=True)
        clone = clone_of(opt)
        x, y = opt.param_groups[0]["params"][0], clone.param_groups[0]["params"][0]
        assert y is not x and torch.equal(y, x)
        start = x.detach().clone()
        for _ in range(3):
            opt.step(constant_gradient_closure([x], [grad]))
            clone.step(constant_gradient_closure([y], [grad]))
        assert torch.equal(x, y) and not torch.equal(x, start)
        clone.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))]})
        assert clone.param_groups[-1]["stochastic_rounding"] is True


def test_state_dict_saved_earlier_keeps_its_stream_state():
    """The stream's state is replaced, never updated in place: a state dict taken before
    more steps still holds the state of its time (torch's tensors in state are shared)."""
    x = torch.nn.Parameter(torch.ones(100, dtype=torch.bfloat16))
    opt = SignSGD([x], lr=1e-3, stochastic_rounding=True)
    closure = constant_gradient_closure([x], [torch.ones_like(x)])
    opt.step(closure)
    early = opt.state_dict()["param_groups"][0][RNG_KEY]["cpu"].clone()
    snapshot = opt.state_dict()
    opt.step(closure)
    assert torch.equal(snapshot["param_groups"][0][RNG_KEY]["cpu"], early)
    assert not torch.equal(opt.param_groups[0][RNG_KEY]["cpu"], early)


def test_state_dict_without_rounding_entries_loads():
    """A checkpoint of an earlier version (no rounding entries): the loading optimizer keeps
    its own switch and seed, and its stream starts from the seed."""
    x = torch.nn.Parameter(torch.ones(10, dtype=torch.bfloat16))
    old = SignSGD([x], lr=1e-3)
    x.grad = torch.ones_like(x)
    old.step()
    state = old.state_dict()
    for group in state["param_groups"]:
        for key in ("stochastic_rounding", SEED_KEY, RNG_KEY):
            del group[key]
    new = SignSGD([x], lr=1e-3, stochastic_rounding=True, stochastic_rounding_seed=5)
    new.load_state_dict(state)
    group = new.param_groups[0]
    assert group["stochastic_rounding"] is True and group[SEED_KEY] == 5 and group[RNG_KEY] == {}
    new.step()
    assert list(group[RNG_KEY]) == ["cpu"]


# -- the option on every optimizer, and its errors ---------------------------------------------


def test_every_optimizer_has_the_option():
    assert sorted(OPTIMIZERS) == NAMES  # the table and the baselines are the registry
    for name in NAMES:
        assert {"stochastic_rounding", "stochastic_rounding_seed"} <= set(hyperparameters(name))


def test_torch_optimizers_without_the_option_are_torch_exactly():
    """Option off: the registry's torch optimizers give torch's bits, and their step hooks
    run once per step (also with the option on)."""
    x0 = torch.randn(20, generator=torch.Generator().manual_seed(5)).bfloat16()
    for name, cls in (("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)):
        ours, theirs = torch.nn.Parameter(x0.clone()), torch.nn.Parameter(x0.clone())
        opts = [make(name, [ours], lr=1e-2), cls([theirs], lr=1e-2)]
        calls: list[int] = []
        opts[0].register_step_post_hook(lambda *args, calls=calls: calls.append(1))
        for _ in range(3):
            for p, opt in zip((ours, theirs), opts, strict=True):
                p.grad = x0.cos()
                opt.step()
        assert torch.equal(ours, theirs) and len(calls) == 3
        rounded = make(name, [ours], lr=1e-2, stochastic_rounding=True)
        rounded.register_step_post_hook(lambda *args, calls=calls: calls.append(1))
        ours.grad = x0.cos()
        rounded.step()
        assert len(calls) == 4 and ours.dtype == ours.grad.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "hp,message",
    [
        ({"stochastic_rounding": 1}, "Invalid stochastic_rounding"),
        ({"stochastic_rounding_seed": -1}, "Invalid stochastic_rounding_seed"),
        ({"stochastic_rounding_seed": 2.0}, "Invalid stochastic_rounding_seed"),
        ({"stochastic_rounding_seed": 1 << 63}, "Invalid stochastic_rounding_seed"),
    ],
)
@pytest.mark.parametrize("name", ["gsignsgd", "sgdol", "adam"])
def test_invalid_options_name_the_argument(name, hp, message):
    with pytest.raises(ValueError, match=message):
        create_optimizer(name, [torch.nn.Parameter(torch.ones(1))], **hp)


@pytest.mark.parametrize("name", names(fused))
def test_capturable_with_stochastic_rounding_is_refused(name):
    """A CUDA graph would replay the same random bits: a clear error."""
    with pytest.raises(ValueError, match="Invalid stochastic_rounding: not capturable"):
        OPTIMIZERS[name](
            [torch.nn.Parameter(torch.ones(1, dtype=torch.bfloat16))],
            capturable=True,
            stochastic_rounding=True,
        )


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    """A 1-process gloo mesh on CPU (as tests/optim/test_tensor_subclass.py)."""
    dist = pytest.importorskip("torch.distributed")
    from torch.distributed.device_mesh import init_device_mesh

    store = dist.FileStore(str(tmp_path_factory.mktemp("store") / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield init_device_mesh("cpu", (1,))
    dist.destroy_process_group()


@pytest.mark.parametrize("name", ["signsgd", "sgd_clip_momentum"])
def test_dtensor_parameters_are_rounded_shard_by_shard(mesh, name):
    """A bf16 DTensor (one shard: the whole tensor) gets the bits of the plain tensor with
    the same seed; torch's optimizers refuse subclasses with the option on."""
    from torch.distributed.tensor import Shard, distribute_tensor

    x0 = (1 + torch.rand(8, 50, generator=torch.Generator().manual_seed(7))).bfloat16()
    grad = torch.randn(8, 50, generator=torch.Generator().manual_seed(8)).bfloat16()
    plain, _ = run(name, x0, grad, 5, lr=1e-3, stochastic_rounding=True)
    sharded = torch.nn.Parameter(distribute_tensor(x0.clone(), mesh, [Shard(0)]))
    opt = make(name, [sharded], lr=1e-3, stochastic_rounding=True)
    for _ in range(5):
        sharded.grad = distribute_tensor(grad.clone(), mesh, [Shard(0)])
        opt.step()
    assert not torch.equal(plain, x0)
    assert torch.equal(sharded.detach().to_local(), plain)
    adam = make("adam", [sharded], lr=1e-3, stochastic_rounding=True)
    with pytest.raises(TypeError, match="needs plain tensors, not a DTensor"):
        adam.step()
