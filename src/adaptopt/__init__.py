"""adaptopt: optimizers, smoothness probes and experiments for (L0,L1)-smooth deep learning.

``pip install adaptopt`` (torch and numpy only) gives :mod:`adaptopt.optim`,
:mod:`adaptopt.smoothness` and :mod:`adaptopt.theory`; the experiment pipeline, reports and plots
need ``pip install 'adaptopt[experiments]'``.

Importing ``adaptopt`` itself imports nothing else: ``adaptopt.create_optimizer`` loads
:mod:`adaptopt.optim` (and torch) on first use, so torch-free parts (run records, reports)
stay torch-free.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"  # the package version (pyproject.toml reads it from here)
__all__ = ["__version__", "create_optimizer"]


def __getattr__(name: str) -> Any:
    if name == "create_optimizer":
        from adaptopt.optim import create_optimizer

        return create_optimizer
    raise AttributeError(f"module 'adaptopt' has no attribute {name!r}")
