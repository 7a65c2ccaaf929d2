"""Paper-style smoothness plots (paper Figs. 1 and 3): log-log scatter coloured by iteration,
with the fitted line L0 + L1·x, one panel per layer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from adaptopt._optional import require
from adaptopt.smoothness.fit import fit_l0_l1
from adaptopt.smoothness.presets import describe
from adaptopt.smoothness.records import GLOBAL, QUANTITIES, SmoothnessRecords

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_LABELS = {
    "norm": (r"$\|\nabla F(x_t)\|$", r"$\hat L_t$"),
    "coord": (
        r"$\min(|\partial_j F(x_t)|, |\partial_j F(x_{t+1})|)$",
        r"$|\partial_j F(x_{t+1}) - \partial_j F(x_t)| \,/\, |x_{t+1,j} - x_{t,j}|$",
    ),
}


def plot_records(
    records: SmoothnessRecords,
    *,
    quantity: str = "norm",
    layers: Sequence[str] | None = None,
    coverage: float = 1.0,
    max_panels: int = 12,
    note: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Scatter ``smoothness`` against ``grad`` per layer with the fitted (L0, L1) line.

    The figure's title names the probe preset(s) of the rows (``presets.py``), plus ``note``.

    Args:
        quantity: ``"norm"`` (Fig. 1; default layer ``"__global__"``) or ``"coord"`` (Fig. 3;
            default: every layer, thinned evenly to ``max_panels``).
        layers: layer names to draw, one panel each.
        coverage: fraction of points the fitted line must cover (see :func:`fit_l0_l1`).
        note: an extra title line (e.g. the run's length).
        path: if given, the figure is saved there (PNG, PDF, ... by suffix).

    Needs matplotlib (``pip install 'adaptopt[experiments]'``).
    """
    colors = require("matplotlib.colors", feature="plot_records")
    figure = require("matplotlib.figure", feature="plot_records")
    if quantity not in QUANTITIES:
        raise ValueError(f"quantity must be one of {QUANTITIES}, got {quantity!r}")
    rows = records.select(quantity=quantity)
    if layers is None:
        layers = [GLOBAL] if quantity == "norm" else [n for n in rows.layers() if n != GLOBAL]
        if len(layers) > max_panels:
            picks = np.linspace(0, len(layers) - 1, max_panels).round().astype(int)
            layers = [layers[i] for i in picks]
    missing = [n for n in layers if n not in set(rows.layer)]
    if not layers or missing:
        raise ValueError(
            f"no {quantity!r} rows for layers {missing or 'any'}; available: {rows.layers()}"
        )
    ncols = min(len(layers), 3)
    nrows = math.ceil(len(layers) / ncols)
    fig = figure.Figure(figsize=(4.2 * ncols + 1, 3.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    norm = colors.Normalize(vmin=rows.step.min(), vmax=rows.step.max())
    xlabel, ylabel = _LABELS[quantity]
    for ax, layer in zip(axes, layers, strict=False):
        sel = rows.select(layer=layer)
        fit = fit_l0_l1(sel.grad, sel.smoothness, coverage)
        shown = (sel.grad > 0) & (sel.smoothness > 0)  # log axes
        hidden = f", {np.sum(~shown)} at 0 not shown" if not shown.all() else ""
        scatter = ax.scatter(
            sel.grad[shown],
            sel.smoothness[shown],
            c=sel.step[shown],
            norm=norm,
            cmap="viridis",
            s=10,
            linewidths=0,
        )
        xs = (
            np.geomspace(sel.grad[shown].min(), sel.grad[shown].max(), 200)
            if shown.any()
            else np.empty(0)
        )
        ax.plot(
            xs,
            fit(xs),
            color="crimson",
            lw=1.5,
            label=f"$L_0$={fit.L0:.3g}, $L_1$={fit.L1:.3g} ({fit.covered:.0%} covered{hidden})",
        )
        ax.set(xscale="log", yscale="log", title="global" if layer == GLOBAL else layer)
        ax.tick_params(which="both", labelsize="x-small")
        ax.title.set_fontsize("small")
        ax.legend(fontsize="small")
    for ax in axes[len(layers) :]:
        ax.set_visible(False)
    title = "; ".join(describe(label) for label in rows.presets())
    fig.suptitle(title if note is None else f"{title}\n{note}", fontsize="small")
    fig.supxlabel(xlabel)
    fig.supylabel(ylabel)
    fig.colorbar(scatter, ax=axes[: len(layers)].tolist(), label="iteration", aspect=20 * nrows)
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig
