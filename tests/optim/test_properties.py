"""Invariances, state handling and errors shared by every optimizer of the registry."""

from __future__ import annotations

import copy
import inspect
import io
import pickle
import pydoc

import pytest
import torch
from infos import INFOS, OPTIMIZER_INFOS, TORCH_BASELINES, OptimizerInfo, names

from adaptopt.optim import (
    OPTIMIZERS,
    SGDOL,
    AdamProx,
    available_optimizers,
    create_optimizer,
    hyperparameters,
)

OURS = names()


def make(name, params, **overrides):
    if name in INFOS:
        return INFOS[name].make(params, **overrides)
    return create_optimizer(name, params, **{"lr": 1e-2, **overrides})


def quadratic_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    h = a @ a.T / 6 + torch.eye(6, dtype=torch.float64)
    x0 = torch.randn(6, generator=g, dtype=torch.float64)
    return h, x0


def noisy_quadratic_closure(opt, x, h, noise):
    """Closure of ½xᵀHx + ξ·Σx with ξ ~ N(0,1) drawn from ``noise`` at each call."""

    def closure():
        opt.zero_grad()
        loss = 0.5 * x @ h @ x + x.sum() * torch.randn((), generator=noise, dtype=x.dtype)
        loss.backward()
        return loss

    return closure


# -- scale-freeness (SPEC.md §3) ------------------------------------------------------------


def run_scaled(cls, scale, steps=60, **hp):
    """Iterates of ``cls`` when every gradient is multiplied coordinate-wise by ``scale``."""
    h, x0 = quadratic_problem(seed=1)
    x = torch.nn.Parameter(x0.clone())
    opt = cls([x], **hp)
    trajectory = []
    for _ in range(steps):
        opt.zero_grad()
        x.grad = scale * (h @ x.detach() + 1.0)
        opt.step()
        trajectory.append(x.detach().clone())
    return torch.stack(trajectory)


SCALE = torch.logspace(-3, 3, 6, dtype=torch.float64)


SCALE_FREE = [
    pytest.param(info.cls, hp, id=f"{info.name}-{i}")
    for info in OPTIMIZER_INFOS
    for i, hp in enumerate(info.scale_free)
]


@pytest.mark.parametrize("cls,hp", SCALE_FREE)
def test_scale_free_methods_ignore_coordinate_scaling(cls, hp):
    plain = run_scaled(cls, torch.ones(6, dtype=torch.float64), **hp)
    scaled = run_scaled(cls, SCALE, **hp)
    torch.testing.assert_close(scaled, plain, rtol=1e-10, atol=1e-12)


def test_adam_with_coupled_l2_is_not_scale_free():
    hp = dict(lr=1e-2, eps=0.0, weight_decay=0.1, weight_decay_mode="l2")
    plain = run_scaled(AdamProx, torch.ones(6, dtype=torch.float64), **hp)
    scaled = run_scaled(AdamProx, SCALE, **hp)
    assert (scaled - plain).abs().max() > 1e-3


# -- weight decay modes ----------------------------------------------------------------------


@pytest.mark.parametrize("name", names(lambda info: info.lr_is_step_size))
def test_proximal_decay_never_flips_or_grows_weights(name):
    x0 = torch.tensor([3.0, -2.0, 0.5, -1e-3], dtype=torch.float64)
    for mode, expect_shrink in (("proximal", True), ("decoupled", False)):
        x = torch.nn.Parameter(x0.clone())
        opt = make(name, [x], lr=1.0, weight_decay=100.0, weight_decay_mode=mode)
        for _ in range(5):
            previous = x.detach().clone()
            x.grad = torch.zeros_like(x)
            opt.step()
            same_sign = bool((torch.sign(x) == torch.sign(previous)).all())
            not_grown = bool((x.abs() <= previous.abs()).all())
            if expect_shrink:
                assert same_sign and not_grown
                torch.testing.assert_close(x.detach(), previous / 101)
        if not expect_shrink:  # AdamW-style decay with λη = 100 flips and grows the weights
            assert not bool((torch.sign(x) == torch.sign(x0)).all())


# -- state -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*OURS, "adam"])
def test_state_dict_round_trip_continues_bitwise(name):
    h, x0 = quadratic_problem()
    x = torch.nn.Parameter(x0.clone())
    opt = make(name, [x])
    noise = torch.Generator().manual_seed(0)
    closure = noisy_quadratic_closure(opt, x, h, noise)
    for _ in range(10):
        opt.step(closure)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    x_saved, noise_saved = x.detach().clone(), noise.get_state()
    for _ in range(10):
        opt.step(closure)

    y = torch.nn.Parameter(x_saved)
    restored = make(name, [y])
    buffer.seek(0)
    restored.load_state_dict(torch.load(buffer))
    noise_restored = torch.Generator()
    noise_restored.set_state(noise_saved)
    closure = noisy_quadratic_closure(restored, y, h, noise_restored)
    for _ in range(10):
        restored.step(closure)
    assert torch.equal(x.detach(), y.detach())


@pytest.mark.parametrize("name", OURS)
def test_deepcopy_and_pickle_continue_identically(name):
    h, x0 = quadratic_problem()
    x = torch.nn.Parameter(x0.clone())
    opt = make(name, [x])
    closure = noisy_quadratic_closure(opt, x, h, torch.Generator().manual_seed(1))
    for _ in range(5):
        opt.step(closure)
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        y = clone.param_groups[0]["params"][0]
        assert y is not x and torch.equal(y, x)
        a = noisy_quadratic_closure(opt, x, h, torch.Generator().manual_seed(2))
        b = noisy_quadratic_closure(clone, y, h, torch.Generator().manual_seed(2))
        x_before = x.detach().clone()
        state_before = copy.deepcopy(opt.state_dict())
        for _ in range(5):
            opt.step(a)
            clone.step(b)
        assert torch.equal(x, y)
        with torch.no_grad():
            x.copy_(x_before)
        opt.load_state_dict(state_before)


def test_state_dict_is_deterministic():
    a = [make("gsignsgd", [torch.nn.Parameter(torch.ones(3))]) for _ in range(2)]
    for opt in a:
        opt.param_groups[0]["params"][0].grad = torch.full((3,), 0.5)
        opt.step()
    buffers = []
    for opt in a:
        buffer = io.BytesIO()
        torch.save(opt.state_dict(), buffer)
        buffers.append(buffer.getvalue())
    assert buffers[0] == buffers[1]


# -- step semantics --------------------------------------------------------------------------


@pytest.mark.parametrize("name", OURS)
def test_maximize_equals_minimizing_the_negation(name):
    results = []
    for maximize in (False, True):
        x = torch.nn.Parameter(torch.linspace(-1, 1, 5, dtype=torch.float64))
        opt = make(name, [x], maximize=maximize)
        sign = -1.0 if maximize else 1.0
        for k in range(8):

            def closure(k=k, opt=opt, x=x, sign=sign):
                opt.zero_grad()
                loss = sign * ((x - 0.3) ** 2 * (k + 1)).sum()
                loss.backward()
                return loss

            opt.step(closure)
        results.append(x.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


def constant_gradient_closure(opt, x, value=0.7):
    """A closure whose gradient is ``value`` everywhere, whatever x (SGDOL calls it twice)."""

    def closure():
        opt.zero_grad()
        loss = value * x.sum()
        loss.backward()
        return loss

    return closure


@pytest.mark.parametrize("name", OURS)
def test_lr_scheduler_controls_the_step(name):
    x = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = make(name, [x], weight_decay=0.1, weight_decay_mode="decoupled")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.0 if step >= 2 else 1.0)
    closure = constant_gradient_closure(opt, x)
    for step in range(4):
        before = x.detach().clone()
        opt.step(closure)
        sched.step()
        assert torch.equal(x, before) == (step >= 2)


@pytest.mark.parametrize("name", OURS)
def test_lr_scheduler_factor_equals_a_scaled_lr(name):
    """A scheduler's multiplier c acts as the lr c·lr0 given at construction (step after step,
    bitwise), and it changes the trajectory: an optimizer that overwrote or ignored the
    scheduled lr (SGDOL once kept its learned step size in ``lr``) fails this."""
    lr0 = INFOS[name].hparams.get("lr", 1e-2)
    options = dict(weight_decay=0.1, weight_decay_mode="decoupled")
    h, x0 = quadratic_problem(seed=2)
    trajectories = []
    for scheduled in (True, False, None):  # scheduler ×0.5; lr0/2 given; lr0, no scheduler
        x = torch.nn.Parameter(x0.clone())
        opt = make(name, [x], lr=lr0 * (1.0 if scheduled in (True, None) else 0.5), **options)
        if scheduled:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
        closure = noisy_quadratic_closure(opt, x, h, torch.Generator().manual_seed(3))
        trajectory = []
        for _ in range(6):
            opt.step(closure)
            if scheduled:
                sched.step()
            trajectory.append(x.detach().clone())
        trajectories.append(torch.stack(trajectory))
    assert torch.equal(trajectories[0], trajectories[1])
    assert not torch.allclose(trajectories[0], trajectories[2], rtol=1e-3, atol=0)


@pytest.mark.parametrize("name", OURS)
def test_zero_and_absent_gradients_never_produce_nan(name):
    extra = {"eps": 0.0} if "eps" in hyperparameters(name) else {}
    x = torch.nn.Parameter(torch.ones(3))
    skipped = torch.nn.Parameter(torch.ones(2))
    scalar = torch.nn.Parameter(torch.tensor(2.0))
    opt = make(name, [x, skipped, scalar], **extra)

    def closure():
        opt.zero_grad()
        loss = (x * 0).sum() + scalar * 0
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    assert torch.equal(x, torch.ones(3)) and torch.equal(scalar, torch.tensor(2.0))
    assert skipped.grad is None and torch.equal(skipped, torch.ones(2))
    assert skipped not in opt.state or not opt.state[skipped]


@pytest.mark.parametrize("name", OURS)
def test_step_returns_closure_loss(name):
    x = torch.nn.Parameter(torch.ones(2))
    opt = make(name, [x])

    def closure():
        opt.zero_grad()
        loss = (x**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 2.0


@pytest.mark.parametrize("name", OURS)
def test_sparse_gradients_raise(name):
    emb = torch.nn.Embedding(5, 2, sparse=True)
    opt = make(name, emb.parameters())

    def closure():
        opt.zero_grad()
        loss = emb(torch.tensor([1, 2])).sum()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step(closure)


def test_sgdol_requires_a_closure():
    opt = SGDOL([torch.nn.Parameter(torch.ones(2))])
    with pytest.raises(RuntimeError, match="needs a closure"):
        opt.step()


def test_sgdol_first_step_size_is_one_over_m():
    opt = SGDOL([torch.nn.Parameter(torch.ones(2))], smoothness=4.0, alpha=3.0)
    assert opt.param_groups[0]["learned_lr"] == 0.25
    assert opt.param_groups[0]["lr"] == 1.0  # the multiplier that schedulers change


# -- errors ----------------------------------------------------------------------------------

INVALID = [
    pytest.param(info.name, hp, message, id=f"{info.name}-{message}")
    for info in OPTIMIZER_INFOS
    for hp, message in info.error_inputs
]


@pytest.mark.parametrize("name,hp,message", INVALID)
def test_invalid_hyperparameters_name_the_argument(name, hp, message):
    with pytest.raises(ValueError, match=message):
        make(name, [torch.nn.Parameter(torch.ones(1))], **hp)


def test_invalid_per_group_hyperparameters_are_rejected():
    x, y = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
    with pytest.raises(ValueError, match="Invalid gamma"):
        create_optimizer("sgd_clip", [{"params": [x]}, {"params": [y], "gamma": -2.0}])


def test_create_optimizer_errors_list_the_valid_choices():
    params = [torch.nn.Parameter(torch.ones(1))]
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamax'.*gsignsgd.*lion"):
        create_optimizer("adamax", params)
    with pytest.raises(ValueError, match=r"unknown hyperparameter.*momentum.*valid: lr, betas"):
        create_optimizer("gsignsgd", params, momentum=0.9)


def test_registry_builds_every_name():
    for name, cls in OPTIMIZERS.items():
        assert isinstance(make(name, [torch.nn.Parameter(torch.ones(1))]), cls)


def test_the_table_covers_the_registry():
    """Every optimizer of the library has its entry in tests/optim/infos.py, with the class
    the registry builds and the fused flag the class has."""
    assert sorted([*INFOS, *TORCH_BASELINES]) == available_optimizers()
    for name, info in INFOS.items():
        assert OPTIMIZERS[name] is info.cls
        assert info.supports_fused == info.cls.supports_fused


# -- complex numbers -------------------------------------------------------------------------

COMPLEX_MESSAGE = r"complex (parameter|gradient)s are unsupported.*complex64.*torch\.view_as_real"
PATHS = {
    "single_tensor": dict(foreach=False, fused=False),
    "foreach": dict(foreach=True, fused=False),
    "fused": dict(fused=True),
}


def paths_of(info: OptimizerInfo) -> list[str]:
    return [p for p in PATHS if p != "fused" or info.supports_fused]


def path_options(info: OptimizerInfo, path: str) -> dict:
    return {k: v for k, v in PATHS[path].items() if k in hyperparameters(info.name)}


@pytest.mark.parametrize("name", OURS)
def test_complex_parameters_are_refused_at_construction(name):
    real, z = (
        torch.nn.Parameter(torch.ones(2)),
        torch.nn.Parameter(torch.ones(2, dtype=torch.cfloat)),
    )
    with pytest.raises(ValueError, match=COMPLEX_MESSAGE):
        make(name, [real, z])
    opt = make(name, [real])
    with pytest.raises(ValueError, match=COMPLEX_MESSAGE):
        opt.add_param_group({"params": [z]})
    assert len(opt.param_groups) == 1  # the refused group was not added


def complex_gradient(p: torch.Tensor) -> None:
    """Give the real ``p`` a complex gradient (autograd never does; ``.data`` can)."""
    p.grad = torch.zeros_like(p)
    p.grad.data = torch.ones(p.shape, dtype=torch.cfloat)


def snapshot(opt) -> tuple:
    params = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
    state = [
        {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
        for s in opt.state.values()
    ]
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    return params, state, groups


def assert_same(before: tuple, after: tuple) -> None:
    (p0, s0, g0), (p1, s1, g1) = before, after
    assert all(torch.equal(a, b) for a, b in zip(p0, p1, strict=True))
    assert len(s0) == len(s1)
    for a, b in zip(s0, s1, strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)
    assert g0 == g1


@pytest.mark.parametrize(
    "info,path",
    [pytest.param(i, p, id=f"{i.name}-{p}") for i in OPTIMIZER_INFOS for p in paths_of(i)],
)
def test_complex_gradients_and_parameters_are_refused_before_any_change(info, path):
    """One real parameter per group (two groups) after two ordinary steps; then a step where
    the second group's parameter has a complex gradient, and one where that group holds a
    complex parameter: ValueError, and no parameter, state entry or group entry changed (the
    first group is not updated either). SGDOL: also when only its second gradient is
    complex. Negative control: the same step with a real gradient does change them."""
    x, y = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.full((2,), 2.0))
    opt = info.make([{"params": [x]}, {"params": [y]}], **path_options(info, path))
    real_grads = {x: torch.full((3,), 0.5), y: torch.full((2,), -0.25)}

    def closure(complex_on_call=None):
        calls = iter(range(info.closure_calls))

        def set_grads():
            call = next(calls)
            for p, g in real_grads.items():
                p.grad = g.clone()
            if call == complex_on_call:
                complex_gradient(y)
            return torch.zeros(())

        return set_grads

    for _ in range(2):
        opt.step(closure())
    before = snapshot(opt)
    for call in range(info.closure_calls):  # SGDOL: a complex first, then second gradient
        with pytest.raises(ValueError, match=COMPLEX_MESSAGE):
            opt.step(closure(complex_on_call=call))
        assert_same(before, snapshot(opt))
    z = torch.nn.Parameter(torch.ones(2, dtype=torch.cfloat))
    z.grad = torch.ones_like(z)
    opt.param_groups[1]["params"] = [z]
    with pytest.raises(ValueError, match=COMPLEX_MESSAGE):
        opt.step(closure())
    opt.param_groups[1]["params"] = [y]
    assert_same(before, snapshot(opt))
    # negative control: the snapshot does see a step
    for p in (x, y):
        p.grad = None
    opt.step(closure())
    with pytest.raises(AssertionError):
        assert_same(before, snapshot(opt))


# -- presets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", names(lambda info: hasattr(info.cls, "preset_of")))
def test_presets_show_their_parameters_and_equal_their_parent(name):
    """A preset (``_base.preset``) shows the parent's parameters minus the fixed ones, with
    its own defaults, in ``inspect.signature`` / ``help`` / ``hyperparameters``; it refuses
    the fixed ones; and it takes the parent's steps with them. Negative control: the parent
    with a doubled lr steps elsewhere."""
    info = INFOS[name]
    cls, parent, fixed = info.cls, info.cls.preset_of, info.cls.preset_fixed
    shown = inspect.signature(cls)
    assert not set(fixed) & set(shown.parameters)
    assert hyperparameters(name) == list(shown.parameters)[1:]
    parent_params = set(inspect.signature(parent).parameters)
    own = set(shown.parameters) - parent_params
    assert own <= {"momentum"}  # Signum's momentum replaces GeneralizedSignSGD's betas
    text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    assert all(p in text for p in shown.parameters)
    with pytest.raises(TypeError):
        cls([torch.nn.Parameter(torch.ones(1))], **{next(iter(fixed)): 0.5})
    group = cls([torch.nn.Parameter(torch.ones(1))]).param_groups[0]
    assert {k: group[k] for k in fixed} == fixed
    if own:  # parent equivalent of the preset's own parameter
        return
    h, x0 = quadratic_problem(seed=4)
    lr = shown.parameters["lr"].default
    trajectories = []
    # what the preset fixes, as arguments of its parent (a preset of a preset: the parent
    # itself fixes the rest)
    as_parent = {k: v for k, v in fixed.items() if k in parent_params}
    for build in (
        lambda p: cls([p]),
        lambda p: parent([p], lr=lr, **as_parent),
        lambda p: parent([p], lr=2 * lr, **as_parent),
    ):
        x = torch.nn.Parameter(x0.clone())
        opt = build(x)
        closure = noisy_quadratic_closure(opt, x, h, torch.Generator().manual_seed(5))
        for _ in range(5):
            opt.step(closure)
        trajectories.append(x.detach().clone())
    assert torch.equal(trajectories[0], trajectories[1])
    assert not torch.equal(trajectories[0], trajectories[2])


def test_signum_preset_keeps_its_own_momentum_per_group():
    """Signum's ``momentum`` is a group hyperparameter (no ``betas`` entry); SignSGD fixes it
    to 0 and Signum(momentum=0) is SignSGD."""
    from adaptopt.optim import SignSGD, Signum

    x = torch.nn.Parameter(torch.ones(2))
    group = Signum([{"params": [x], "momentum": 0.3}]).param_groups[0]
    assert group["momentum"] == 0.3 and "betas" not in group
    assert group["eps"] == 0.0 and group["bias_correction"] is False
    assert SignSGD([x]).param_groups[0]["momentum"] == 0.0
    assert list(inspect.signature(Signum).parameters)[:3] == ["params", "lr", "momentum"]
