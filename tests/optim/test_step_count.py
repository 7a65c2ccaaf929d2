"""Step counters count exactly past 2^24 steps on every path, and bias correction uses them.

A float32 counter stops at 2^24 = 16,777,216 (2^24 + 1 rounds back to 2^24); ours are
float64 (exact to 2^53). With β = 1 − 2^-24 the bias correction 1 − β^t still changes by a
relative 3.5e-8 from t = 2^24 to 2^24 + 1, far above float64 rounding: the update after one
step from t = 2^24 tells which count was used.
"""

from __future__ import annotations

import io
from inspect import signature

import pytest
import torch
from infos import OPTIMIZER_INFOS, adam_twin

from adaptopt.optim import GeneralizedSignSGD, _fused, hyperparameters
from adaptopt.optim._fused import native

T = 2**24
BETA_SLOW = 1 - 2**-24  # β^t ≈ e^-1 at t = 2^24: 1 − β^t depends on t at the 1e-8 level
PATHS = {
    "single_tensor": dict(foreach=False, fused=False),
    "foreach": dict(foreach=True, fused=False),
    "fused_native": dict(fused=True),
    "fused_compiled": dict(fused=True),
}
# (optimizer, betas, square_gradient): the table's Adam-family optimizers with both betas
CASES = {
    f"{info.name}_slow_beta{i + 1}": (
        info.cls,
        (BETA_SLOW, 0.99) if i == 0 else (0.9, BETA_SLOW),
        info.reference.direction is adam_twin,
    )
    for info in OPTIMIZER_INFOS
    if info.family == "adam" and "betas" in hyperparameters(info.name)
    for i in range(2)
}
X0 = torch.zeros(5, dtype=torch.float64)  # x_{t+1} = −η u_t: the update itself
M0 = torch.tensor([0.3, -1.0, 2.0, 1e-3, -0.5], dtype=torch.float64)
V0 = torch.tensor([0.2, 1.5, 0.7, 1e-4, 0.01], dtype=torch.float64)
G = torch.tensor([1.0, -0.25, 3.0, -2e-3, 0.1], dtype=torch.float64)
LR, EPS = 0.1, 1e-8


@pytest.fixture(params=list(PATHS))
def path(request, monkeypatch):
    """The optimizer options of one path; the fused ones choose the CPU backend."""
    name = request.param
    if name == "fused_native":
        if not native.available():
            pytest.skip("no C++ compiler for native kernels")
        monkeypatch.setattr(_fused, "CPU_BACKEND", "native")
    if name == "fused_compiled":
        monkeypatch.setattr(_fused, "CPU_BACKEND", "compiled")
    return PATHS[name]


def expected_update(betas, square_gradient, t):
    """x_{t+1} = −η m̂/(√v̂ + ε) from (m0, v0, g) in float64, bias-corrected at count t."""
    beta1, beta2 = betas
    m = beta1 * M0 + (1 - beta1) * G
    squared = G if square_gradient else m
    v = beta2 * V0 + (1 - beta2) * squared * squared
    m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
    return -LR * m_hat / (v_hat.sqrt() + EPS)


def optimizer_at_step(cls, betas, options, step):
    """An optimizer whose state is (step, m0, v0), on parameter x0, with gradient G."""
    x = torch.nn.Parameter(X0.clone())
    extra = dict(bias_correction=True) if "bias_correction" in signature(cls).parameters else {}
    opt = cls([x], lr=LR, betas=betas, eps=EPS, weight_decay=0.0, **extra, **options)
    x.grad = torch.zeros_like(x)
    opt.step()  # creates the state
    state = opt.state[x]
    state["step"].fill_(step)
    state["exp_avg"].copy_(M0)
    state["exp_avg_sq"].copy_(V0)
    with torch.no_grad():
        x.copy_(X0)
    x.grad = G.clone()
    return x, opt


@pytest.mark.parametrize("case", list(CASES))
def test_one_step_from_2_pow_24_counts_and_bias_corrects_exactly(case, path):
    cls, betas, square_gradient = CASES[case]
    x, opt = optimizer_at_step(cls, betas, path, T)
    opt.step()
    step = opt.state[x]["step"]
    assert step.dtype == torch.float64 and step.device == x.device
    assert step.item() == T + 1
    exact = expected_update(betas, square_gradient, T + 1)
    torch.testing.assert_close(x.detach(), exact, rtol=1e-12, atol=0)
    # Negative control: a float32 counter stays at 2^24, and the update it would give (bias
    # correction at t = 2^24) is outside the tolerance that the check above uses.
    stuck = torch.tensor(float(T), dtype=torch.float32)
    stuck += 1
    assert stuck.item() == T
    at_stuck_count = expected_update(betas, square_gradient, T)
    assert not torch.allclose(x.detach(), at_stuck_count, rtol=1e-12, atol=0)
    assert ((at_stuck_count - exact) / exact).abs().max() > 1e-8


@pytest.mark.parametrize("fused_after", [False, True])
@pytest.mark.parametrize("fused_before", [False, True])
def test_state_dicts_keep_exact_counts_and_convert_float32_ones(fused_before, fused_after):
    """Counts above 2^24 survive save/load between paths (torch would cast a fused group's
    counter to float32, i.e. 2^24 + 1 → 2^24), and float32 counters of older state dicts
    load as float64 and then count exactly."""
    betas = (BETA_SLOW, 0.99)
    x, opt = optimizer_at_step(GeneralizedSignSGD, betas, dict(fused=fused_before), T)
    opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    old = opt.state_dict()
    # the older layout (a fresh inner dict: state_dict() shares the optimizer's own)
    old["state"][0] = dict(old["state"][0], step=torch.tensor(float(T - 1)))

    live = opt.state_dict()  # its tensors are the optimizer's own state
    for saved, count in ((None, T + 1), (old, T - 1), (live, T + 1)):
        if saved is None:
            buffer.seek(0)
            saved = torch.load(buffer)
        y = torch.nn.Parameter(x.detach().clone())
        restored = GeneralizedSignSGD(
            [y], lr=LR, betas=betas, eps=EPS, bias_correction=True, fused=fused_after
        )
        restored.load_state_dict(saved)
        step = restored.state[y]["step"]
        assert step.dtype == torch.float64 and step.item() == count
        for _ in range(2):
            y.grad = G.clone()
            restored.step()
        assert restored.state[y]["step"].item() == count + 2
    # the loaded counters are copies: the optimizer that saved them still counts its own steps
    assert opt.state[x]["step"].item() == T + 1
    assert old["state"][0]["step"].item() == T - 1
