"""Smoothness records: one JSONL row per measurement, read back as columns.

Row schema (SPEC.md §2; paper §5.2)::

    {"step": t, "layer": "__global__" | parameter name, "quantity": "norm" | "coord",
     "grad": x, "smoothness": y, "update": u, "preset": "default" | "paper" | ...[, "index": j]}

- ``quantity="norm"`` (paper Fig. 1, and its per-layer restriction): ``grad`` = ‖∇F(x_t)‖,
  ``smoothness`` = L̂_t, ``update`` = ‖x_{t+1} − x_t‖ (over the layer's block for a layer).
- ``quantity="coord"`` (paper Fig. 3): coordinate ``index`` (flat index into the parameter);
  ``grad`` = min(|∂_jF(x_t)|, |∂_jF(x_{t+1})|), ``smoothness`` = |∂_jF(x_{t+1}) − ∂_jF(x_t)| /
  |x_{t+1,j} − x_{t,j}|, ``update`` = |x_{t+1,j} − x_{t,j}|.
- ``preset``: the probe setting that measured the row (``presets.py``; ``" (modified)"``
  appended when the estimator was changed); rows written before presets existed read as
  ``"unrecorded"``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

GLOBAL = "__global__"
QUANTITIES = ("norm", "coord")
RECORDS_FILE = "smoothness.jsonl"
UNRECORDED = "unrecorded"  # preset of rows that do not name one


@dataclass(frozen=True)
class SmoothnessRecords:
    """Columns of a set of smoothness rows (all arrays have one entry per row)."""

    step: np.ndarray  # int64
    layer: np.ndarray  # str
    quantity: np.ndarray  # str
    index: np.ndarray  # int64, -1 for "norm" rows
    grad: np.ndarray  # float64
    smoothness: np.ndarray  # float64
    update: np.ndarray  # float64
    preset: np.ndarray  # str

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> SmoothnessRecords:
        rows = list(rows)
        for i, row in enumerate(rows):
            missing = [
                k for k in ("step", "layer", "quantity", "grad", "smoothness") if k not in row
            ]
            if missing:
                raise ValueError(f"record row {i} is missing field {missing[0]!r}: {dict(row)}")
        return cls(
            step=np.array([r["step"] for r in rows], dtype=np.int64),
            layer=np.array([r["layer"] for r in rows], dtype=str),
            quantity=np.array([r["quantity"] for r in rows], dtype=str),
            index=np.array([r.get("index", -1) for r in rows], dtype=np.int64),
            grad=np.array([r["grad"] for r in rows], dtype=np.float64),
            smoothness=np.array([r["smoothness"] for r in rows], dtype=np.float64),
            update=np.array([r.get("update", np.nan) for r in rows], dtype=np.float64),
            preset=np.array([r.get("preset", UNRECORDED) for r in rows], dtype=str),
        )

    def __len__(self) -> int:
        return len(self.step)

    def select(self, quantity: str | None = None, layer: str | None = None) -> SmoothnessRecords:
        """The rows of one ``quantity`` and/or one ``layer``."""
        if quantity is not None and quantity not in QUANTITIES:
            raise ValueError(f"quantity must be one of {QUANTITIES}, got {quantity!r}")
        keep = np.ones(len(self), dtype=bool)
        if quantity is not None:
            keep &= self.quantity == quantity
        if layer is not None:
            keep &= self.layer == layer
        return SmoothnessRecords(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})

    def presets(self) -> list[str]:
        """Preset labels in order of first appearance."""
        names, first = np.unique(self.preset, return_index=True)
        return [str(names[i]) for i in np.argsort(first)]

    def layers(self) -> list[str]:
        """Layer names in order of first appearance."""
        names, first = np.unique(self.layer, return_index=True)
        return [str(names[i]) for i in np.argsort(first)]

    def to_csv(self, path: str | Path) -> None:
        """Write the rows as CSV with one column per field."""
        names = [f.name for f in fields(self)]
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(names)
            writer.writerows(zip(*(getattr(self, n).tolist() for n in names), strict=True))


def append_rows(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append rows to a JSONL record file (created with its parent folders if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.writelines(json.dumps(dict(row)) + "\n" for row in rows)


def read_records(path: str | Path) -> SmoothnessRecords:
    """Read a JSONL record file, or ``smoothness.jsonl`` inside a run directory."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORDS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no smoothness records at {path}: pass a {RECORDS_FILE} file or a run directory "
            "containing one"
        )
    rows = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not a JSON row ({e.msg})") from None
    return SmoothnessRecords.from_rows(rows)
