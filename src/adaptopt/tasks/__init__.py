"""Named training tasks: ``adaptopt.tasks.get(name)`` (SPEC.md §4)."""

from adaptopt.tasks.base import Budget, Task
from adaptopt.tasks.registry import available, get

__all__ = ["Budget", "Task", "available", "get"]
