"""Imports of packages that only an extra installs, with an error that names the extra.

The core install (``pip install adaptopt``) brings torch and numpy only: the optimizers, the
smoothness probe and fit, and the theory calculators. Plots, reports, the experiment pipeline
and the translation task need ``pip install 'adaptopt[experiments]'``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from adaptopt.errors import UserError


class MissingExtraError(UserError, ModuleNotFoundError):
    """A feature needs a package that the named extra of adaptopt installs."""

    def __init__(self, module: str, extra: str, feature: str) -> None:
        self.module, self.extra, self.feature = module, extra, feature
        super().__init__(
            f"{feature} needs the package {module.split('.')[0]!r}, which is not installed; "
            f"install it with: pip install 'adaptopt[{extra}]'",
            name=module,
        )

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:  # picklable across processes
        return type(self), (self.module, self.extra, self.feature)


def require(module: str, extra: str = "experiments", feature: str = "this feature") -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``extra``."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is not None and module.split(".")[0] != err.name.split(".")[0]:
            raise  # the package is there but something it imports is broken: a real bug
        raise MissingExtraError(module, extra, feature) from err
