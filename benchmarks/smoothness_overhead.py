"""Overhead of the smoothness probe: training time with / without ``SmoothnessCallback``.

    python benchmarks/smoothness_overhead.py [--task fmnist-cnn] [--steps 1000] [--repeats 3]

Trains ``--steps`` SGD steps of a registry task plainly and with the probe at its default
settings (probe every 200 steps on 4 training batches, Γ = {1/6, …, 5/6}, 4 coordinates per
layer), alternating the two for ``--repeats`` rounds so that machine load affects both alike,
and prints the median times, the end-to-end overhead, the time spent inside the probe relative
to the training time of the same runs (robust to load changes between runs), and the cost
model's prediction n_evals · P · n_probes / steps (``adaptopt.smoothness.probe``; P in training
batches). Building the probe set (once per run) is timed separately.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time
from collections.abc import Iterator

import torch

from adaptopt import tasks
from adaptopt.experiments.callbacks import RunContext, SmoothnessCallback
from adaptopt.tasks.base import Batch, Task


def batches(task: Task, device: torch.device) -> Iterator[Batch]:
    gen = torch.Generator().manual_seed(0)
    for epoch in itertools.count():
        yield from task.train_batches(epoch, gen, device)


def run(task: Task, steps: int, device: torch.device, probe: SmoothnessCallback | None):
    """Seconds spent training and probing over ``steps`` steps, and building the probe set."""
    torch.manual_seed(0)
    model = task.build_model().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    ctx = RunContext(task, model, opt, device, None, lambda row: None)
    setup = time.perf_counter()
    if probe is not None:
        probe.on_train_begin(ctx)
    setup = time.perf_counter() - setup
    model.train()
    data = batches(task, device)
    training = probing = 0.0
    for batch in itertools.islice(data, steps):
        t0 = time.perf_counter()
        if probe is not None:
            probe.before_step(ctx)
        t1 = time.perf_counter()
        opt.zero_grad()
        task.loss(model, batch).backward()
        opt.step()
        ctx.step += 1
        _sync(device)
        t2 = time.perf_counter()
        if probe is not None:
            probe.after_step(ctx)
            _sync(device)
        t3 = time.perf_counter()
        training += t2 - t1
        probing += (t1 - t0) + (t3 - t2)
    return training, probing, setup


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="fmnist-cnn")
    parser.add_argument("--smoke", action="store_true", help="the task's seconds-scale version")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--every", type=int, default=None, help="default: the callback's")
    parser.add_argument("--max-batches", type=int, default=None, help="default: the callback's")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    task = tasks.get(args.task, smoke=args.smoke)

    options = {"every": args.every, "max_batches": args.max_batches}
    options = {k: v for k, v in options.items() if v is not None}
    plain, probed = [], []
    for _ in range(args.repeats):
        plain.append(run(task, args.steps, device, None))
        callback = SmoothnessCallback(**options)
        probed.append(run(task, args.steps, device, callback))
    probe = callback.probe
    n_evals = 1 + len(probe.gammas) + (probe.coords_per_layer > 0 and 1 not in probe.gammas)
    n_probes = math.ceil(args.steps / probe.every)
    predicted = n_evals * len(probe.batches) * n_probes / args.steps
    t_plain = statistics.median(train for train, _, _ in plain)
    t_probed = statistics.median(train + probing for train, probing, _ in probed)
    in_run = sum(p for _, p, _ in probed) / sum(t for t, _, _ in probed)
    name = f"{args.task}{' (smoke)' if args.smoke else ''}"
    print(f"task {name}, {args.steps} steps on {device}, threads {torch.get_num_threads()}, "
          f"median of {args.repeats} alternating runs")  # fmt: skip
    print(f"probe: every {probe.every} steps, {len(probe.batches)} probe batches, {n_evals} "
          f"gradient evaluations per probe, {len(probe.rows)} rows per run")  # fmt: skip
    print(f"plain   {t_plain:8.2f} s  ({', '.join(f'{t:.2f}' for t, _, _ in plain)})")
    print(f"probed  {t_probed:8.2f} s  ({', '.join(f'{t + p:.2f}' for t, p, _ in probed)})")
    print(f"probe-set setup {statistics.median(s for _, _, s in probed):.2f} s (once, excluded)")
    print(f"ratio {t_probed / t_plain:.3f} (overhead {t_probed / t_plain - 1:.1%}); "
          f"time in the probe / training time of the same runs {in_run:.1%}; "
          f"cost model {predicted:.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
