"""Paper Fig. 1a / Fig. 3 on a short run: (L0,L1)-smoothness of the 2-layer Transformer LM on
WikiText-2 (PyTorch tutorial settings: SGD lr 5, gradient norm clipped at 0.5, batch 20 × 35).

    python scripts/smoothness_wikitext2.py [--preset default|paper] [--steps 300] [--every 3]
        [--probe-batches N] [--out docs]

``--preset paper`` is the paper's estimator (train mode with common dropout masks, F on 10% of
the training data = 298 batches of 20 × 35 tokens): 7 forward/backward passes over those 298
batches per probed step, about 2,000 training steps' worth (measured: 4-13 s per pass on two
shared CPU cores, i.e. 2-7 hours per probed step); run it on an accelerator.
``--preset default`` evaluates F in eval mode on ``--probe-batches`` training batches
(default 1: a modified default preset, said so on the figures). The figures' titles name the
preset, the probe set and the run length. The committed ``docs/smoothness_wikitext2*.png`` are
the 300-step run with the defaults (``--preset default``, 1 probe batch, every 3 steps):
probe preset "default (modified)".

Writes ``smoothness.jsonl`` to ``--run-dir`` and ``smoothness_wikitext2.png`` (global, Fig. 1a)
and ``smoothness_wikitext2_coord.png`` (sampled coordinates per layer, Fig. 3) to ``--out``,
and prints the fitted (L0, L1) and the time spent probing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from adaptopt import tasks
from adaptopt.smoothness import (
    GLOBAL,
    PRESETS,
    SmoothnessProbe,
    fit_records,
    plot_records,
    read_records,
)
from adaptopt.smoothness.probe import MODIFIED

FULL_STEPS = 300  # the length of the figures' reference run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--steps", type=int, default=FULL_STEPS)
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument(
        "--probe-batches",
        type=int,
        default=None,
        help="probe set size in training batches (default: 1, or all of the paper's 10%%)",
    )
    parser.add_argument("--coords-per-layer", type=int, default=4)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/smoothness_wikitext2"))
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    task = tasks.get("wikitext2-transformer")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    model = task.build_model().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=task.hparams["sgd"]["lr"])
    preset = PRESETS[args.preset]
    gen = torch.Generator().manual_seed(args.seed + 1)
    probe_set = list(task.probe_batches(gen, device, preset.fraction))
    n_probe = args.probe_batches or (len(probe_set) if args.preset == "paper" else 1)
    records = args.run_dir / "smoothness.jsonl"
    records.unlink(missing_ok=True)
    probe = SmoothnessProbe(
        task.loss,
        probe_set[:n_probe],
        preset=args.preset,
        every=args.every,
        coords_per_layer=args.coords_per_layer,
        seed=args.seed,
        path=records,
    )
    if n_probe != (preset.max_batches or len(probe_set)) and not probe.label.endswith(MODIFIED):
        probe.label += MODIFIED  # the probe set is not the preset's

    data = task.train_batches(0, torch.Generator().manual_seed(args.seed), device)
    model.train()
    probing = 0.0
    start = time.perf_counter()
    for step, batch in zip(range(args.steps), data, strict=False):
        optimizer.zero_grad()
        loss = task.loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        t = time.perf_counter()
        probe.before_step(model, step)
        probing += time.perf_counter() - t
        optimizer.step()
        t = time.perf_counter()
        probe.after_step(model)
        probing += time.perf_counter() - t
        if step % 10 == 0:
            print(f"step {step:4d}  loss {loss.item():.3f}  {time.perf_counter() - start:.0f} s",
                  flush=True)  # fmt: skip
    total = time.perf_counter() - start
    print(f"{args.steps} steps in {total:.0f} s, of which probing {probing:.0f} s "
          f"({probing / (total - probing):.0%} of training)")  # fmt: skip

    rows = read_records(records)
    note = (
        f"{probe.mode} mode, γ ∈ {{1/6,…,5/6}}, F on {n_probe} of {len(probe_set)} probe "
        f"batches (20×35 tokens); SGD lr 5, clip 0.5; {args.steps} steps, probed every "
        f"{args.every}"
    )
    if args.steps < FULL_STEPS:
        note += f" (reduced from {FULL_STEPS} to fit the run time)"
    args.out.mkdir(parents=True, exist_ok=True)
    plot_records(rows, note=note, path=args.out / "smoothness_wikitext2.png")
    plot_records(
        rows, quantity="coord", note=note, path=args.out / "smoothness_wikitext2_coord.png"
    )
    for coverage in (1.0, 0.95):
        fit = fit_records(rows, coverage=coverage)[GLOBAL]
        print(f"global fit, coverage {coverage:.0%}: L0 = {fit.L0:.4g}, L1 = {fit.L1:.4g} "
              f"({fit.covered:.1%} of {fit.n} points covered)")  # fmt: skip


if __name__ == "__main__":
    main()
