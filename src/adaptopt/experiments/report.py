"""Markdown + HTML reports built from run directories only; nothing is rerun (SPEC.md §4).

- **Table 1** (paper layout): per task, the final training loss and the final test metric of each
  retrained setting (runs with ``validation=False``), as mean ± half-width of the 95%
  t-interval over seeds (:func:`t_interval`).
- **Curves** (paper Figures 4/5): training loss per step and per epoch, and the test metric per
  epoch, mean over seeds with the 95% t-interval shaded.
- **Sweeps** (runs with ``validation=True``): the best setting per optimizer by the rule of
  :mod:`adaptopt.experiments.sweep`, and the learning-rate × weight-decay heatmap of the
  validation metric where both were swept.
- **Smoothness**: the probe's scatter plots (paper Figures 1/3) for runs with probe records.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import markdown
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy import stats

from adaptopt.experiments.rundir import Run, find_runs
from adaptopt.experiments.selection import Setting, group_settings, rank_settings

# Registry names → the paper's Table 1 names, in its row order.
TABLE1_NAMES = {
    "sgd": "SGD Momentum",
    "sgd_normalized": "SGD Momentum Normalized",
    "sgd_clip_grad": "SGDClipGrad",
    "sgd_clip_momentum": "SGDClipMomentum",
    "adam": "Adam",
    "gsignsgd": "Generalized SignSGD",
}


def t_interval(values: Any, confidence: float = 0.95) -> tuple[Any, Any]:
    """Mean and half-width of the two-sided Student-t confidence interval of the mean.

    half-width = t_{(1+c)/2, n-1} · s / √n with s the sample standard deviation over the n
    values (axis 0: an array [n, k] gives k intervals); NaN for n < 2.
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.shape[0]
    if n < 2:
        nan = np.full(x.shape[1:], math.nan)
        return (x[0] if n else nan)[()], nan[()]
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * x.std(0, ddof=1) / math.sqrt(n)
    return x.mean(0)[()], half[()]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]  # cells may use **bold**
    caption: str = ""


@dataclass
class Image:
    path: str  # relative to the report
    caption: str


Block = str | Table | Image  # a str is Markdown (a heading, a paragraph, a whole section)


def make_report(
    paths: Iterable[str | Path],
    out_dir: str | Path,
    *,
    title: str = "adaptopt report",
    intro: Sequence[Block] = (),
    extra: Sequence[Block] = (),
) -> Path:
    """Write ``report.md``, ``report.html`` and PNGs for the runs under ``paths``.

    ``intro`` blocks follow the title, ``extra`` ones (e.g. the theory demos' tables and
    figures) close the report. Returns the path of ``report.md``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = list(find_runs(paths))
    if not runs:
        raise ValueError(f"no run directories (with config.json) under {list(map(str, paths))}")
    finals = [r for r in runs if not r.config.get("validation")]
    sweeps = [r for r in runs if r.config.get("validation")]
    counts = {s: sum(r.status == s for r in runs) for s in ("finished", "diverged", "running")}
    blocks: list[Block] = [
        f"# {title}",
        *intro,
        f"{len(runs)} runs: "
        + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        + _times(runs),
    ]
    if finals:
        blocks += table1(finals) + curves(finals, out_dir)
    if sweeps:
        blocks += sweep_section(sweeps, out_dir)
    blocks += smoothness_section(runs, out_dir)
    blocks += list(extra)
    (out_dir / "report.md").write_text(to_markdown(blocks))
    (out_dir / "report.html").write_text(to_html(blocks, title))
    return out_dir / "report.md"


def _times(runs: Sequence[Run]) -> str:
    times = [r.meta["wall_time_s"] for r in runs if "wall_time_s" in r.meta]
    return f"; wall time per run {min(times):.0f}–{max(times):.0f} s." if times else "."


def _label(setting: Setting, settings: Sequence[Setting]) -> str:
    """Table 1 name, plus what differs between the settings of one optimizer and task."""
    optimizer, task = setting.config["optimizer"], setting.config["task"]
    name = TABLE1_NAMES.get(optimizer, optimizer)
    same = [
        _flat(s.config)
        for s in settings
        if s.config["optimizer"] == optimizer and s.config["task"] == task
    ]
    mine = _flat(setting.config)
    keys = sorted({k for flat in same for k in flat if any(o.get(k) != flat[k] for o in same)})
    return f"{name} ({', '.join(f'{k}={mine.get(k)}' for k in keys)})" if keys else name


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters and the other settings of a config in one flat dict."""
    rest = {k: v for k, v in config.items() if k not in ("hparams", "task", "optimizer")}
    return {**config["hparams"], **rest}


def _order(setting: Setting) -> tuple[int, str]:
    optimizer = setting.config["optimizer"]
    order = list(TABLE1_NAMES)
    return (order.index(optimizer) if optimizer in order else len(order), optimizer)


def _cell(runs: list[Run], key: str) -> tuple[str, float]:
    """ "mean ± half-width" of the final ``key`` over seeds; the mean (for bolding)."""
    diverged = sum(r.status == "diverged" for r in runs)
    if diverged:
        return f"diverged ({diverged}/{len(runs)})", math.nan
    mean, half = t_interval([r.final.get(key, math.nan) for r in runs])
    if math.isnan(mean):
        return "—", math.nan
    return (f"{mean:.4f}" if math.isnan(half) else f"{mean:.4f} ± {half:.4f}"), mean


def table1(runs: Sequence[Run]) -> list[Block]:
    """The paper's Table 1 for retrained settings: a column pair per task."""
    settings = sorted(group_settings(runs), key=_order)
    tasks = sorted({s.config["task"] for s in settings})
    header, columns = ["Method"], []
    for task in tasks:
        metric = next(s.metric for s in settings if s.config["task"] == task)
        higher = next(s.higher_is_better for s in settings if s.config["task"] == task)
        header += [f"{task}: training loss", f"{task}: {metric.replace('_', ' ')}"]
        columns += [(task, "train_loss", False), (task, metric, higher)]
    labels: dict[str, dict[str, Setting]] = {}  # label -> task -> setting
    for s in settings:
        labels.setdefault(_label(s, settings), {})[s.config["task"]] = s
    rows = [[label] for label in labels]
    for task, key, higher in columns:
        cells = [
            _cell(by_task[task].runs, key) if task in by_task else ("", math.nan)
            for by_task in labels.values()
        ]
        means = [m for _, m in cells if not math.isnan(m)]
        best = (max if higher else min)(means) if means else None
        for row, (text, mean) in zip(rows, cells, strict=True):
            row.append(f"**{text}**" if mean == best else text)
    seeds = sorted({len(s.runs) for s in settings})
    caption = (
        f"Final training loss and test metric, mean ± 95% t-interval over "
        f"{'/'.join(map(str, seeds))} seeds (best mean in bold)."
    )
    used = Table(
        ["Method", "task", "hyperparameters", "budget (epochs × steps, batch)"],
        [[_label(s, settings), s.config["task"], _hparams(s), _budget(s)] for s in settings],
    )
    return ["## Table 1: final training loss and test metric", Table(header, rows, caption), used]


def _budget(setting: Setting) -> str:
    c = setting.config
    steps = c["max_steps_per_epoch"] or "all"
    return f"{c['epochs']} × {steps}, {c['batch_size']}" + (" (smoke)" if c["smoke"] else "")


def _band(series: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """x common to all seeds, mean, and the 95% t-interval half-width pointwise."""
    xs = sorted(set.intersection(*(set(x.tolist()) for x, _ in series)))
    ys = np.array([[dict(zip(x.tolist(), y, strict=True))[v] for v in xs] for x, y in series])
    return np.array(xs), *t_interval(ys)


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (window shrinks at the start)."""
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    return (c[idx] - c[np.maximum(idx - window, 0)]) / np.minimum(idx, window)


def _series(run: Run, key: str, per: str) -> tuple[np.ndarray, np.ndarray]:
    rows = run.epochs if per == "epoch" else [r for r in run.rows if r.get("kind") != "epoch"]
    pairs = [(r[per], r[key]) for r in rows if key in r]
    x, y = (
        (np.array(v, dtype=np.float64) for v in zip(*pairs, strict=True))
        if pairs
        else (np.empty(0),) * 2
    )
    return x, y


def curves(runs: Sequence[Run], out_dir: Path) -> list[Block]:
    """Per task: training loss per step, training loss and test metric per epoch (mean ± CI)."""
    blocks: list[Block] = ["## Training curves"]
    settings = sorted(group_settings(runs), key=_order)
    for task in sorted({s.config["task"] for s in settings}):
        mine = [s for s in settings if s.config["task"] == task]
        metric = mine[0].metric
        # (metric key, x axis, y label) -> lines (label, x, mean, CI half-width)
        panels: dict[tuple[str, str, str], list[tuple[Any, ...]]] = {
            ("loss", "step", "training loss (per step, smoothed)"): [],
            ("train_loss", "epoch", "training loss (epoch mean)"): [],
            (metric, "epoch", metric.replace("_", " ")): [],
        }
        for (key, per, _), lines in panels.items():
            for s in mine:
                series = [_series(r, key, per) for r in s.runs if r.status == "finished"]
                series = [(x, y) for x, y in series if len(x)]
                if series and per == "step":
                    window = max(1, len(series[0][1]) // 10)
                    series = [(x, _smooth(y, window)) for x, y in series]
                if series:
                    lines.append((_label(s, mine), *_band(series)))
        # a panel needs a curve: at least two points (single final values are in Table 1)
        panels = {k: v for k, v in panels.items() if any(len(x) > 1 for _, x, *_ in v)}
        if not panels:
            continue
        fig = Figure(figsize=(5 * len(panels), 4), layout="constrained")
        for ax, ((key, per, ylabel), lines) in zip(
            fig.subplots(1, len(panels), squeeze=False)[0], panels.items(), strict=True
        ):
            log_scale = key != metric or not mine[0].higher_is_better  # losses, perplexity
            for label, x, mean, half in lines:
                (line,) = ax.plot(x, mean, label=label, marker="o" if len(x) < 12 else None)
                low = np.maximum(mean - half, mean / 10) if log_scale else mean - half
                ax.fill_between(x, low, mean + half, color=line.get_color(), alpha=0.2)
            ax.set(xlabel=per, ylabel=ylabel, yscale="log" if log_scale else "linear")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        fig.axes[0].legend(fontsize=8)
        name = f"curves_{_slug(task)}.png"
        fig.savefig(out_dir / name, dpi=110)
        caption = "mean over seeds; shaded: 95% t-interval (on log axes cut at a tenth of the mean)"
        blocks.append(Image(name, f"{task}: {caption}."))
    return blocks


def sweep_section(runs: Sequence[Run], out_dir: Path) -> list[Block]:
    """Best setting per optimizer, and lr × weight-decay heatmaps where both were swept."""
    rows, blocks = [], []
    for (task, optimizer), ranked in rank_settings(runs).items():
        best = ranked[0]
        value = "diverged" if best.diverged else f"{best.value:.4f}"
        n_div = sum(s.diverged for s in ranked)
        rows.append(
            [
                task,
                TABLE1_NAMES.get(optimizer, optimizer),
                _hparams(best),
                value,
                f"{best.loss:.4f}",
                f"{len(ranked)} ({n_div} diverged)",
            ]
        )
        image = _heatmap(task, optimizer, ranked, out_dir)
        if image is not None:
            blocks.append(image)
    header = [
        "task",
        "optimizer",
        "best setting",
        "validation metric",
        "validation loss",
        "settings",
    ]
    caption = (
        "Best: highest (or lowest, by the task's direction) mean final validation metric, "
        "ties to the lower validation loss, settings with a diverged seed last."
    )
    return ["## Hyperparameter sweeps", Table(header, rows, caption), *blocks]


def _hparams(setting: Setting) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(setting.config["hparams"].items()))


def _heatmap(task: str, optimizer: str, ranked: list[Setting], out_dir: Path) -> Image | None:
    """Validation metric over lr × weight_decay (best over any other swept hyperparameter)."""
    lrs = sorted({s.config["hparams"].get("lr") for s in ranked} - {None})
    wds = sorted({s.config["hparams"].get("weight_decay") for s in ranked} - {None})
    if len(lrs) < 2 or len(wds) < 2:
        return None
    grid = np.full((len(wds), len(lrs)), np.nan)
    for s in reversed(ranked):  # best last, so it wins the cell
        i, j = wds.index(s.config["hparams"]["weight_decay"]), lrs.index(s.config["hparams"]["lr"])
        grid[i, j] = np.nan if s.diverged else s.value
    fig = Figure(figsize=(1.1 * len(lrs) + 2.5, 0.8 * len(wds) + 1.8), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(
        np.ma.masked_invalid(grid),
        cmap="viridis" if ranked[0].higher_is_better else "viridis_r",
        aspect="auto",
        origin="lower",
    )
    for (i, j), v in np.ndenumerate(grid):
        dark = (
            not np.isnan(v) and float(np.asarray(image.norm(v))) < 0.5
        )  # viridis: white text on the dark half
        text = "div." if np.isnan(v) else f"{v:.3g}"
        color = "red" if np.isnan(v) else ("white" if dark else "black")
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(len(lrs)), [f"{v:g}" for v in lrs])
    ax.set_yticks(range(len(wds)), [f"{v:g}" for v in wds])
    ax.set(xlabel="learning rate", ylabel="weight decay", title=f"{task}, {optimizer}")
    fig.colorbar(image, label=ranked[0].metric.replace("_", " "))
    name = f"heatmap_{_slug(task)}_{_slug(optimizer)}.png"
    fig.savefig(out_dir / name, dpi=110)
    return Image(name, f"{ranked[0].metric} of the {optimizer} sweep on {task} (mean over seeds).")


def smoothness_section(runs: Sequence[Run], out_dir: Path, max_runs: int = 6) -> list[Block]:
    """The smoothness probe's plots (paper Figures 1/3) for runs that recorded them."""
    from adaptopt.smoothness import plot_records, read_records
    from adaptopt.smoothness.records import RECORDS_FILE

    probed = [r for r in runs if (r.path / RECORDS_FILE).exists()][:max_runs]
    blocks: list[Block] = ["## Smoothness"] if probed else []
    for run in probed:
        records = read_records(run.path / RECORDS_FILE)
        for quantity in sorted(set(records.quantity.tolist())):
            name = f"smoothness_{run.path.name}_{quantity}.png"
            plot_records(records, quantity=quantity, path=out_dir / name)
            what = "global estimate L̂_t vs ‖∇F‖" if quantity == "norm" else "coordinate-wise"
            blocks.append(
                Image(
                    name,
                    f"{run.config['task']}, {run.config['optimizer']} "
                    f"(run {run.path.name}): {what}.",
                )
            )
    return blocks


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)


def to_markdown(blocks: Sequence[Block]) -> str:
    out = []
    for block in blocks:
        if isinstance(block, Table):
            lines = ["| " + " | ".join(block.header) + " |", "|" + "---|" * len(block.header)]
            lines += ["| " + " | ".join(row) + " |" for row in block.rows]
            out.append("\n".join(lines) + (f"\n\n{block.caption}" if block.caption else ""))
        elif isinstance(block, Image):
            out.append(f"![{block.caption}]({block.path})\n\n{block.caption}")
        else:
            out.append(block)
    return "\n\n".join(out) + "\n"


def to_html(blocks: Sequence[Block], title: str) -> str:
    """The Markdown report as a standalone HTML page (Python-Markdown with tables)."""
    body = markdown.markdown(to_markdown(blocks), extensions=["tables"])
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        "img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>\n{body}\n</body></html>\n"
    )
