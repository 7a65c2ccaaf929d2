"""Datasets of the paper's experiments, read from local files, and fast input pipelines.

Nothing is downloaded: see ``adaptopt.data.locate`` for where files are looked for.
"""

from adaptopt.data.images import (
    ImageData,
    channel_stats,
    load_cifar10,
    load_cifar100,
    load_fashion_mnist,
    load_mnist,
    parse_cifar_batch,
    parse_idx,
)
from adaptopt.data.lm import (
    Corpus,
    LMWindow,
    batchify,
    lm_batches,
    lm_windows,
    load_corpus,
    load_ptb,
    load_wikitext2,
)
from adaptopt.data.locate import (
    DATASETS,
    DatasetCorruptError,
    DatasetNotFoundError,
    find_files,
    search_roots,
)
from adaptopt.data.pipeline import DeviceImageLoader, crop_flip, split_validation
from adaptopt.data.translation import (
    TranslationData,
    load_multi30k,
    pad_batch,
    tokenize,
    translation_batches,
)

__all__ = [
    "DATASETS",
    "Corpus",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "DeviceImageLoader",
    "ImageData",
    "LMWindow",
    "TranslationData",
    "batchify",
    "channel_stats",
    "crop_flip",
    "find_files",
    "lm_batches",
    "lm_windows",
    "load_cifar10",
    "load_cifar100",
    "load_corpus",
    "load_fashion_mnist",
    "load_mnist",
    "load_multi30k",
    "load_ptb",
    "load_wikitext2",
    "pad_batch",
    "parse_cifar_batch",
    "parse_idx",
    "search_roots",
    "split_validation",
    "tokenize",
    "translation_batches",
]
