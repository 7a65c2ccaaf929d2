"""adaptopt: optimizers, smoothness probes and experiments for (L0,L1)-smooth deep learning."""

from adaptopt.optim import create_optimizer

__version__ = "0.1.0"
__all__ = ["__version__", "create_optimizer"]
