"""Run directories: the only artifact shared by train, sweep, seeds and report.

One run writes (ARCHITECTURE.md, "data flow")::

    <run_dir>/config.json     the resolved TrainConfig
    <run_dir>/meta.json       status (running | finished | diverged), git commit, versions,
                              device, wall time, final metrics
    <run_dir>/metrics.jsonl   one JSON object per row: step rows {"step", "epoch", "loss", "lr"}
                              and epoch rows {"kind": "epoch", "train_loss", "<split>_<metric>"...}
    <run_dir>/checkpoint.pt   latest checkpoint (model, optimizer, scheduler, RNG, data position)

A run is *done* when its status is ``finished`` or ``diverged``; anything else (``running``
left behind by a killed process, or no meta at all) is resumed from its checkpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG, META, METRICS, CHECKPOINT = "config.json", "meta.json", "metrics.jsonl", "checkpoint.pt"
DONE = ("finished", "diverged")


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (a killed writer never leaves half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All rows of a ``metrics.jsonl`` (a torn last line of a killed writer is ignored)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


@dataclass
class Run:
    """A run directory as read back from disk."""

    path: Path
    config: dict[str, Any]
    meta: dict[str, Any]
    rows: list[dict[str, Any]] = field(repr=False)

    @property
    def status(self) -> str:
        return self.meta.get("status", "missing")

    @property
    def final(self) -> dict[str, float]:
        """Metrics of the last epoch row (empty for runs that ended before one)."""
        return self.meta.get("final") or {}

    @property
    def epochs(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("kind") == "epoch"]


def status(run_dir: Path) -> str:
    """``"finished"``, ``"diverged"``, ``"running"`` or ``"missing"`` (no meta.json yet)."""
    meta = run_dir / META
    return read_json(meta).get("status", "missing") if meta.exists() else "missing"


def load_run(run_dir: Path) -> Run:
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise ValueError(f"{run_dir} is not a run directory (no {CONFIG})")
    meta = read_json(run_dir / META) if (run_dir / META).exists() else {}
    return Run(run_dir, read_json(run_dir / CONFIG), meta, read_metrics(run_dir / METRICS))


def find_runs(paths: Iterable[str | Path]) -> Iterator[Run]:
    """Every run directory at or below ``paths``, in sorted order."""
    for root in map(Path, paths):
        if not root.exists():
            raise ValueError(f"no such run directory or folder: {root}")
        configs = [root / CONFIG] if (root / CONFIG).exists() else sorted(root.rglob(CONFIG))
        for config in configs:
            yield load_run(config.parent)
