"""Every optimizer against an independent float64 implementation of SPEC.md §1.

The references below are written from the formulas, one scalar formula per line, sharing no
code with ``adaptopt.optim``. They run over many steps with gradients spanning seven orders
of magnitude, two param groups with different hyperparameters, a 0-d parameter and gradients
that are absent on some steps.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from infos import INFOS, OptimizerInfo, Sample, samples

from adaptopt.optim import SGDOL, AdamProx

SHAPES = [(5, 3), (4,), (), (2, 2, 2)]
STEPS = 40


def gradient_sequence(seed: int, steps: int = STEPS) -> list[list[torch.Tensor | None]]:
    g = torch.Generator().manual_seed(seed)
    seq = []
    for _ in range(steps):
        row: list[torch.Tensor | None] = []
        for i, shape in enumerate(SHAPES):
            absent = i in (1, 3) and torch.rand((), generator=g).item() < 0.2
            scale = 10 ** (7 * torch.rand((), generator=g).item() - 4)
            grad = torch.randn(shape, generator=g, dtype=torch.float64) * scale
            row.append(None if absent else grad)
        seq.append(row)
    return seq


def initial_params(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES]


def run_library(cls, group_hparams, common, grads_seq, foreach=False):
    params = [p.clone().requires_grad_() for p in initial_params()]
    groups = [
        dict(params=params[:2], **group_hparams[0]),
        dict(params=params[2:], **group_hparams[1]),
    ]
    opt = cls(groups, foreach=foreach, **common)
    for row in grads_seq:
        for p, g in zip(params, row, strict=True):
            p.grad = None if g is None else g.clone()
        opt.step()
    return [p.detach() for p in params]


def decay_and_step(x, step, lr, wd, mode):
    """x_{t+1} from x_t and the step η·u_t (SPEC.md §1.3)."""
    if mode == "decoupled":
        return (1 - lr * wd) * x - step
    if mode == "proximal":
        return (x - step) / (1 + lr * wd)
    return x - step


def run_reference(direction, group_hparams, common, grads_seq, global_norms=None):
    """Generic float64 loop: ``direction(hp, x, d, state, norms) -> step (= η u)``, with
    d = ±g (``maximize``) + λx (coupled l2)."""
    xs = initial_params()
    states = [{} for _ in xs]
    hps = [{**common, **group_hparams[0]}] * 2 + [{**common, **group_hparams[1]}] * 2
    for row in grads_seq:
        ds = []
        for x, g, hp in zip(xs, row, hps, strict=True):
            if g is not None and hp.get("maximize"):
                g = -g
            if g is not None and hp["weight_decay_mode"] == "l2":
                g = g + hp["weight_decay"] * x
            ds.append(g)
        norms = global_norms(xs, ds, states, hps) if global_norms else None
        for i, (x, d, hp) in enumerate(zip(xs, ds, hps, strict=True)):
            if d is None:
                continue
            step = direction(hp, x, d, states[i], norms)
            xs[i] = decay_and_step(x, step, hp["lr"], hp["weight_decay"], hp["weight_decay_mode"])
    return xs


def _fill(info: OptimizerInfo, common):
    """Twin hyperparameters: the class defaults, then ``common``, then what the class fixes."""
    defaults = {
        k: v.default
        for k, v in inspect.signature(info.cls.__init__).parameters.items()
        if v.default is not inspect.Parameter.empty
    }
    return {**defaults, **common, **info.reference.fixed}


@pytest.mark.parametrize("info,sample", samples(lambda info: info.reference is not None))
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_float64_reference(info: OptimizerInfo, sample: Sample, foreach):
    seq = gradient_sequence(seed=sum(map(ord, sample.id)) % 1000)
    actual = run_library(info.cls, sample.groups, sample.common, seq, foreach=foreach)
    twin = info.reference
    expected = run_reference(
        twin.direction, sample.groups, _fill(info, sample.common), seq, twin.norms
    )
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_every_optimizer_but_sgdol_has_a_twin():
    """SGDOL's twin needs two gradient sequences: the sgdol_* tests below."""
    assert [name for name, info in INFOS.items() if info.reference is None] == ["sgdol"]


def test_adam_prox_l2_and_decoupled_equal_torch_adam_and_adamw():
    seq = gradient_sequence(seed=11)
    for mode, torch_cls in (("l2", torch.optim.Adam), ("decoupled", torch.optim.AdamW)):
        group = dict(lr=1e-2, weight_decay=0.05)
        ours = run_library(AdamProx, [group, group], dict(weight_decay_mode=mode), seq)
        theirs = run_library(torch_cls, [group, group], {}, seq)
        for a, e in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


SGDOL_GROUPS = [
    dict(smoothness=5.0, alpha=2.0),
    dict(smoothness=10.0, alpha=10.0, weight_decay=1e-2),
]


def sgdol_gradients(correlation=1.0):
    """Two gradient sequences (g, g'): g' = c·g + independent noise of g's size, present
    exactly when g is; E⟨g, g'⟩/‖g‖² = c, so η drifts from 1/M towards c/M."""
    first = gradient_sequence(seed=21)
    noise = torch.Generator().manual_seed(22)
    second = [
        [
            None
            if g is None
            else correlation * g + g.abs().max() * torch.randn(g.shape, generator=noise).double()
            for g in r
        ]
        for r in first
    ]
    return first, second


def run_sgdol(groups, first, second, schedule=None):
    """The library's SGDOL over the sequences, under ``LambdaLR(schedule)`` if given."""
    params = [p.clone().requires_grad_() for p in initial_params()]
    opt = SGDOL([dict(params=params[:2], **groups[0]), dict(params=params[2:], **groups[1])])
    scheduler = None if schedule is None else torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    for r1, r2 in zip(first, second, strict=True):
        calls = iter((r1, r2))

        def closure(calls=calls):
            row = next(calls)
            for p, g in zip(params, row, strict=True):
                p.grad = None if g is None else g.clone()
            return torch.zeros(())

        opt.step(closure)
        if scheduler is not None:
            scheduler.step()
    return [p.detach() for p in params], opt


def sgdol_reference(groups, first, second, step_size):
    """SPEC.md §1.4 in float64 scalars: per group, η_t = clip(S_ip/(M S_g), 0, 2/M) is played
    before the sums see step t, as the step size ``step_size(k, t, η_t)`` of group k (the
    multiplier times η_t). Returns the parameters and each group's η after the last step."""
    xs = initial_params()
    blocks = [(range(0, 2), h) for h in groups[:1]] + [(range(2, 4), h) for h in groups[1:]]
    sums = [[h["alpha"], h["alpha"]] for _, h in blocks]
    etas = [1 / h["smoothness"] for _, h in blocks]
    for t, (r1, r2) in enumerate(zip(first, second, strict=True)):
        for k, (idx, h) in enumerate(blocks):
            wd, mode = h.get("weight_decay", 0.0), h.get("weight_decay_mode", "l2")
            big_m = h["smoothness"]
            eta = min(max(sums[k][0] / (big_m * sums[k][1]), 0.0), 2.0 / big_m)
            size = step_size(k, t, eta)
            for i in idx:
                if r1[i] is None:
                    continue
                coupled = wd if mode == "l2" else 0.0
                g, g2 = r1[i] + coupled * xs[i], r2[i] + coupled * xs[i]
                sums[k][0] += float((g * g2).sum())
                sums[k][1] += float((g * g).sum())
                xs[i] = decay_and_step(xs[i], size * g, size, wd, mode)
            etas[k] = min(max(sums[k][0] / (big_m * sums[k][1]), 0.0), 2.0 / big_m)
    return xs, etas


def test_sgdol_matches_reference():
    """η_t played before the sums see step t (SPEC.md §1.4); lr = 1 by default."""
    first, second = sgdol_gradients()
    params, opt = run_sgdol(SGDOL_GROUPS, first, second)
    xs, etas = sgdol_reference(SGDOL_GROUPS, first, second, lambda k, t, eta: eta)
    for a, e in zip(params, xs, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)
    for group, eta in zip(opt.param_groups, etas, strict=True):
        assert group["lr"] == 1.0
        assert group["learned_lr"] == pytest.approx(eta, rel=1e-12)


def test_sgdol_under_lambda_lr_steps_lr_times_learned_eta():
    """Under LambdaLR the step is lr_t × η_t: lr_t = lr0·λ(t) from the scheduler (per group
    lr0), η_t from the FTRL rule, which the schedule does not touch. Negative controls: the
    schedule ignored (step η_t) and the scheduled lr used as the step size (plain SGD with
    η = lr0·λ(t)/M, what a scheduler overwriting the learned step size gives) both fail."""
    groups = [
        dict(SGDOL_GROUPS[0], lr=1.0),
        dict(SGDOL_GROUPS[1], lr=0.5, weight_decay=0.2, weight_decay_mode="decoupled"),
    ]
    lr0 = [g["lr"] for g in groups]

    def schedule(t):
        return 0.9**t * (1.0, 0.25, 2.0)[t % 3]

    first, second = sgdol_gradients(correlation=0.3)
    params, opt = run_sgdol(groups, first, second, schedule)
    xs, etas = sgdol_reference(groups, first, second, lambda k, t, eta: lr0[k] * schedule(t) * eta)
    for a, e in zip(params, xs, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)
    for group, eta, lr in zip(opt.param_groups, etas, lr0, strict=True):
        assert group["learned_lr"] == pytest.approx(eta, rel=1e-12)
        assert group["lr"] == pytest.approx(lr * schedule(len(first)), rel=1e-15)
    for eta, group in zip(etas, groups, strict=True):  # η moved away from η_1 = 1/M
        assert abs(eta * group["smoothness"] - 1) > 0.2

    big_m = [g["smoothness"] for g in groups]
    wrong = {
        "schedule ignored": lambda k, t, eta: eta,
        "plain SGD at the scheduled lr": lambda k, t, eta: schedule(t) * lr0[k] / big_m[k],
    }
    for name, step_size in wrong.items():
        control, _ = sgdol_reference(groups, first, second, step_size)
        mismatch = any(
            not torch.allclose(a, e, rtol=1e-12, atol=1e-12)
            for a, e in zip(params, control, strict=True)
        )
        assert mismatch, name


def test_sgdol_constant_multiplier_one_is_the_unscheduled_step_bitwise():
    """LambdaLR(λ ≡ 1) over the default lr = 1: every step is exactly 1·η_t, the step SGDOL
    takes without a scheduler (and without a multiplier: x − η_t g_t, test above)."""
    first, second = sgdol_gradients()
    plain, plain_opt = run_sgdol(SGDOL_GROUPS, first, second)
    scheduled, scheduled_opt = run_sgdol(SGDOL_GROUPS, first, second, lambda t: 1.0)
    for a, b in zip(plain, scheduled, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(plain_opt.param_groups, scheduled_opt.param_groups, strict=True):
        assert a["learned_lr"] == b["learned_lr"] and b["lr"] == 1.0


def test_sgdol_loads_a_state_dict_that_kept_eta_in_lr():
    """State dicts saved when ``lr`` held η_{t+1} (no ``learned_lr``) load as learned_lr = η,
    lr = 1, and continue exactly like the optimizer that saved them."""
    first, second = sgdol_gradients()
    half = len(first) // 2
    params, opt = run_sgdol(SGDOL_GROUPS, first[:half], second[:half])
    saved = opt.state_dict()
    for group in saved["param_groups"]:
        group["lr"] = group.pop("learned_lr")
    restored_params = [p.clone().requires_grad_() for p in params]
    restored = SGDOL(
        [
            dict(params=restored_params[:2], **SGDOL_GROUPS[0]),
            dict(params=restored_params[2:], **SGDOL_GROUPS[1]),
        ]
    )
    restored.load_state_dict(saved)
    for a, b in zip(restored.param_groups, opt.param_groups, strict=True):
        assert a["learned_lr"] == b["learned_lr"] and a["lr"] == 1.0
        assert a["sum_inner_product"] == b["sum_inner_product"]
    for o in (opt, restored):
        ps = [p for group in o.param_groups for p in group["params"]]
        for r1, r2 in zip(first[half:], second[half:], strict=True):
            calls = iter((r1, r2))

            def closure(calls=calls, ps=ps):
                for p, g in zip(ps, next(calls), strict=True):
                    p.grad = None if g is None else g.clone()
                return torch.zeros(())

            o.step(closure)
    for a, b in zip(params, restored_params, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("info,sample", samples())
def test_foreach_equals_single_tensor(info: OptimizerInfo, sample: Sample):
    seq = gradient_sequence(seed=5)
    single = run_library(info.cls, sample.groups, sample.common, seq, foreach=False)
    multi = run_library(info.cls, sample.groups, sample.common, seq, foreach=True)
    for a, b in zip(single, multi, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("n_terms", [1, 2, 3])
def test_weighted_step_sums_every_term_on_both_paths(n_terms):
    """Phase 2 of the momentum family, u = Σ w·term, for more terms than today's optimizers
    use (they have one or two): both implementations against the formula in float64."""
    from adaptopt.optim._momentum import _multi_tensor_weighted_step, _single_tensor_weighted_step

    g = torch.Generator().manual_seed(3)
    names = [f"t{i}" for i in range(n_terms)]
    terms = {n: [torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES] for n in names}
    weights = {n: torch.tensor(0.5 + i, dtype=torch.float64) for i, n in enumerate(names)}
    lr = 0.1
    expected = [
        p - lr * sum(float(weights[n]) * terms[n][i] for n in names)
        for i, p in enumerate(initial_params())
    ]
    options = dict(
        lr=lr, momentum=0.0, nesterov=False, weight_decay=0.0, weight_decay_mode="decoupled",
        maximize=False,
    )  # fmt: skip

    def matches(actual: list[torch.Tensor]) -> bool:
        return all(
            torch.allclose(a, b, rtol=1e-14, atol=1e-14)
            for a, b in zip(actual, expected, strict=True)
        )

    for step in (_single_tensor_weighted_step, _multi_tensor_weighted_step):
        params = initial_params()
        step(params, [torch.zeros_like(p) for p in params], None, terms, weights, **options)
        assert matches(params), step.__name__
    # negative controls: no step, and the step without its last term, fail the same check
    last = names[-1]
    short = [e + lr * float(weights[last]) * t for e, t in zip(expected, terms[last], strict=True)]
    assert not matches(initial_params()) and not matches(short)
