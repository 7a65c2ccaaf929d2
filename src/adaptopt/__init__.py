"""adaptopt: optimizers, smoothness probes and experiments for (L0,L1)-smooth deep learning.

``pip install adaptopt`` (torch and numpy only) gives :mod:`adaptopt.optim`,
:mod:`adaptopt.smoothness` and :mod:`adaptopt.theory`; the experiment pipeline, reports and plots
need ``pip install 'adaptopt[experiments]'``.
"""

from adaptopt.optim import create_optimizer

__version__ = "0.1.0"  # the package version (pyproject.toml reads it from here)
__all__ = ["__version__", "create_optimizer"]
