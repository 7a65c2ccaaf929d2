"""Named settings of the smoothness probe: ``"default"`` (cheap) and ``"paper"``.

``"paper"`` is the estimator of the paper's §5.2 (Figs. 1 and 3), which follows Zhang et al.
(ICLR 2020, App. H.3; code ``why-clipping-accelerates/main.py``, ``eval_smooth``/``eval_grad``):

- F is the training objective on a fixed ≈10% of the training data (Zhang et al. accumulate
  the gradient over the first tenth of the training stream);
- gradients are taken in TRAIN mode (their ``eval_grad`` calls ``model.train()``): dropout on,
  BatchNorm on batch statistics; the probe reseeds the random streams per probe batch so that
  x_t and every x_t + γd see the same dropout masks (common random numbers), fresh masks at
  each probed step;
- L̂_t = max over γ ∈ {1/6, …, 5/6} (the paper's grid);
- every training step is probed (Zhang et al.: ``--smooth-log-interval 1``).

``"default"`` evaluates F in eval mode (a deterministic function of x) on 4 training batches
every 200 steps, with the same γ grid: cheap enough to leave on in any run.

A preset fixes the estimator (mode, γ grid, probe-set size); explicit arguments override single
fields, and a probe whose estimator differs from its preset records ``"<name> (modified)"``.
The probing frequency (``every``) and the coordinate sample are not part of the estimator.
"""

from __future__ import annotations

from dataclasses import dataclass

PAPER_GAMMAS = (1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6)  # paper §5.2


@dataclass(frozen=True)
class ProbePreset:
    """One named probe setting.

    Attributes:
        name: ``"default"`` or ``"paper"``.
        mode: ``"eval"`` or ``"train"`` (see :class:`~adaptopt.smoothness.SmoothnessProbe`).
        gammas: the sample locations Γ of L̂_t.
        every: probe steps t with ``t % every == 0`` unless the caller says otherwise.
        fraction: probe set = this fraction of an epoch's training batches (callback).
        max_batches: at most this many of them (None: all of them).
        description: one line for figure titles.
    """

    name: str
    mode: str
    gammas: tuple[float, ...]
    every: int
    fraction: float
    max_batches: int | None
    description: str


PRESETS: dict[str, ProbePreset] = {
    "default": ProbePreset(
        "default",
        mode="eval",
        gammas=PAPER_GAMMAS,
        every=200,
        fraction=0.1,
        max_batches=4,
        description="eval mode, F on 4 training batches, γ ∈ {1/6,…,5/6}",
    ),
    "paper": ProbePreset(
        "paper",
        mode="train",
        gammas=PAPER_GAMMAS,
        every=1,
        fraction=0.1,
        max_batches=None,
        description="train mode, common dropout masks, F on 10% of the training data, "
        "γ ∈ {1/6,…,5/6}",
    ),
}
PRESET_NAMES = tuple(PRESETS)


def get_preset(name: str) -> ProbePreset:
    """The preset called ``name`` (a clear error otherwise)."""
    if name not in PRESETS:
        raise ValueError(f"unknown probe preset {name!r}; choose one of {PRESET_NAMES}")
    return PRESETS[name]


def describe(label: str) -> str:
    """Figure text for a recorded preset label: the name and, when the estimator is the
    preset's own, its description (a modified preset's figure says how in its ``note``)."""
    if label in PRESETS:
        return f"probe preset: {label} ({PRESETS[label].description})"
    return f"probe preset: {label}"
