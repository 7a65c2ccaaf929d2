"""Errors a user can fix by changing the input: the command line prints their message and exits
with status 2 (like a usage error), without a traceback unless ``--debug`` is given.

Anything else that escapes a command is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of the errors caused by the user's input (names, values, files, folders)."""


class ConfigError(UserError, ValueError):
    """An unknown name, a bad hyperparameter or option, or a malformed configuration file."""


class RunExistsError(ConfigError):
    """A run directory already holds a run, and the run was not asked to resume."""
