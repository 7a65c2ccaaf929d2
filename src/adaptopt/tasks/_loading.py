"""Dataset caching and batch limiting shared by the dataset-backed tasks."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from adaptopt.tasks.base import Budget

T = TypeVar("T")


@functools.lru_cache(maxsize=4)
def load_cached(loader: Callable[..., Any], data_dir: str | Path | None, verify: bool) -> Any:
    """``loader(data_dir, verify=verify)``, memoised: a sweep builds the same task many times
    in one process, and parsing a dataset (tokenising Multi30k) takes seconds."""
    return loader(data_dir, verify=verify)


def limit(batches: Iterable[T], budget: Budget) -> Iterator[T]:
    """At most ``budget.max_steps_per_epoch`` of ``batches`` (all when it is None)."""
    return itertools.islice(batches, budget.max_steps_per_epoch)
