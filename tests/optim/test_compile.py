"""``torch.compile(opt.step)`` on the ``foreach`` path: whole graphs, no recompilation when a
scheduler changes a tensor ``lr`` every step, and the same numbers as the eager step.

Graph breaks and guards are Dynamo's (the backend only turns graphs into kernels), so most
checks use ``backend="eager"``; one test runs Inductor end to end. ``dynamic=False`` makes any
Python float that changes between calls a recompilation, which the negative control shows.
SGDOL is the documented exception: its step calls the closure (forward and backward) twice,
which Dynamo runs outside the graph.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from infos import names
from torch._dynamo.utils import counters

from adaptopt.optim import create_optimizer, hyperparameters

pytestmark = [
    pytest.mark.compile,
    # the compiled step is the optimizer's own, not the scheduler's wrapper that counts calls
    pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before"),
]
COMPILABLE = names(lambda info: info.one_graph)
SHAPES = [(3,), (2, 2)]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    yield
    torch._dynamo.reset()  # no compiled code or counters leak into other tests
    counters.clear()


def build(name: str, lr, **hp):
    torch.manual_seed(0)
    params = [torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    kwargs = {"foreach": True, **hp}
    if "fused" in hyperparameters(name):
        kwargs["fused"] = False
    if lr is not None:
        kwargs["lr"] = lr
    opt = create_optimizer(name, params, **kwargs)
    return params, opt


def grads(step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(*s, generator=g, dtype=torch.float64) for s in SHAPES]


def run(name: str, steps: int, compiled: bool, tensor_lr=True, backend="eager", **hp):
    """Params after ``steps`` scheduled steps; Dynamo graph counts after step 2 and at the end."""
    torch._dynamo.reset()
    counters.clear()
    params, opt = build(name, torch.tensor(0.01) if tensor_lr else 0.01, **hp)
    # compiled before the scheduler exists, which wraps opt.step in bookkeeping that Dynamo
    # does not trace; fullgraph=True raises at any graph break inside the optimizer's step
    step = torch.compile(opt.step, backend=backend, dynamic=False, fullgraph=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + t))
    graphs = []
    for t in range(steps):
        for p, g in zip(params, grads(t), strict=True):
            p.grad = g
        (step if compiled else opt.step)()
        sched.step()
        graphs.append(counters["stats"]["unique_graphs"])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 / (1 + steps))
    return [p.detach().clone() for p in params], graphs


@pytest.mark.parametrize("name", COMPILABLE)
def test_compiled_step_is_one_graph_and_matches_eager(name):
    eager, _ = run(name, 6, compiled=False)
    compiled, graphs = run(name, 6, compiled=True)
    assert not counters["graph_break"]
    # the first call sees empty state, the second initialized state; then no recompilation
    # although the scheduler wrote a new lr into the tensor before every call
    assert graphs[1] == graphs[-1] and graphs[-1] <= 2, graphs
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    start, _ = run(name, 0, compiled=False)
    assert all(
        not torch.equal(a, b) for a, b in zip(eager, start, strict=True)
    )  # the steps did move


def test_bias_corrected_gsignsgd_compiles_without_host_sync():
    eager, _ = run("gsignsgd", 5, compiled=False, bias_correction=True)
    compiled, graphs = run("gsignsgd", 5, compiled=True, bias_correction=True)
    assert not counters["graph_break"] and graphs[1] == graphs[-1]
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_float_lr_recompiles_negative_control():
    """The counter does see recompilations: a float lr is a constant of the graph."""
    _, graphs = run("lion", 5, compiled=True, tensor_lr=False)
    assert graphs == [1, 2, 3, 4, 5]


def test_sgdol_runs_compiled_with_documented_graph_breaks():
    def sgdol(compiled: bool) -> list[torch.Tensor]:
        torch._dynamo.reset()
        counters.clear()
        params, opt = build("sgdol", None)
        target = [torch.ones(*s, dtype=torch.float64) for s in SHAPES]

        def closure():
            opt.zero_grad()
            loss = sum(((p - t) ** 2).sum() for p, t in zip(params, target, strict=True))
            loss.backward()
            return loss

        step = torch.compile(opt.step, backend="eager", dynamic=False) if compiled else opt.step
        for _ in range(3):
            step(closure)
        return [p.detach().clone() for p in params]

    eager = sgdol(False)
    compiled = sgdol(True)
    assert sum(counters["graph_break"].values()) > 0  # the closure's backward leaves the graph
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_inductor_end_to_end():
    eager, _ = run("gsignsgd", 3, compiled=False)
    compiled, graphs = run("gsignsgd", 3, compiled=True, backend="inductor")
    assert graphs[1] == graphs[-1] and not counters["graph_break"]
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
