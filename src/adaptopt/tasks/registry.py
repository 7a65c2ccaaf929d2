"""Registry of named tasks."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adaptopt.errors import ConfigError
from adaptopt.tasks.base import Task
from adaptopt.tasks.image import cnn_task, resnet_task
from adaptopt.tasks.language import ptb_awdlstm, wikitext2_gpt2, wikitext2_transformer
from adaptopt.tasks.synthetic import synthetic
from adaptopt.tasks.translation import multi30k_transformer

NOBN_DEPTHS = (20, 44, 56, 110, 218)  # talk §3: AdamW vs Adam-L2 without BatchNorm

# name -> constructor(validation: bool, smoke: bool, **kwargs) -> Task
_TASKS: dict[str, Callable[..., Task]] = {
    "synthetic": synthetic,
    "cifar10-resnet20": functools.partial(resnet_task, "cifar10", 20, True),
    "fmnist-resnet20": functools.partial(resnet_task, "fmnist", 20, True),
    **{
        f"{dataset}-resnet{depth}-nobn": functools.partial(resnet_task, dataset, depth, False)
        for dataset in ("cifar10", "fmnist")
        for depth in NOBN_DEPTHS
    },
    **{  # our Fixup-initialised variant of the same networks (not the authors')
        f"{dataset}-resnet{depth}-nobn-fixup": functools.partial(
            resnet_task, dataset, depth, False, init="fixup"
        )
        for dataset in ("cifar10", "fmnist")
        for depth in NOBN_DEPTHS
    },
    "ptb-awdlstm": ptb_awdlstm,
    "multi30k-transformer": multi30k_transformer,
    "wikitext2-transformer": wikitext2_transformer,
    "wikitext2-gpt2": wikitext2_gpt2,
    "mnist-cnn": functools.partial(cnn_task, "mnist"),
    "fmnist-cnn": functools.partial(cnn_task, "fmnist"),
}


def available() -> list[str]:
    """Sorted names of all registered tasks."""
    return sorted(_TASKS)


def get(
    name: str,
    *,
    validation: bool = False,
    smoke: bool = False,
    data_dir: str | Path | None = None,
    **kwargs: Any,
) -> Task:
    """Build task ``name``.

    Args:
        validation: hold out a seeded validation split from the training data (grid search).
        smoke: shrink the task (subset, smaller model, fewer steps) for a seconds-scale run.
        data_dir: where to look for data first (then ``$ADAPTOPT_DATA``, then standard places).
    """
    if name not in _TASKS:
        raise ConfigError(f"unknown task {name!r}; available: {', '.join(available())}")
    if data_dir is not None:
        kwargs["data_dir"] = data_dir
    return _TASKS[name](validation=validation, smoke=smoke, **kwargs)
