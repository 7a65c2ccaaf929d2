"""Writers of tiny files in the datasets' true formats, and access to real staged copies."""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adaptopt.data import DatasetNotFoundError

REPO = Path(__file__).resolve().parents[2]
# Where `make` points ADAPTOPT_DATA; tried after the environment's own setting.
REAL_DATA_DIRS = (None, REPO / ".data", REPO.parent / "shared" / "data")


def load_real(loader: Callable[..., Any], **kwargs: Any) -> Any:
    """``loader`` on the real files where present (checksums verified), else skip."""
    for data_dir in REAL_DATA_DIRS:
        try:
            return loader(data_dir=data_dir, **kwargs)
        except DatasetNotFoundError:
            continue
    pytest.skip(f"{loader.__name__}: real dataset files are not present")


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0000 08 ndim, big-endian int32 dims, data."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dataset(folder: Path, rng: np.random.Generator, gz: bool = True) -> dict:
    """MNIST-layout files with ``n_train=12``, ``n_test=5`` random 28x28 images."""
    arrays = {}
    for prefix, n in (("train", 12), ("t10k", 5)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        write(folder / f"{prefix}-images-idx3-ubyte", idx_bytes(x), gz)
        write(folder / f"{prefix}-labels-idx1-ubyte", idx_bytes(y), gz)
        arrays[prefix] = (x, y)
    return arrays


def cifar_batch_bytes(x: np.ndarray, labels: list[int], label_key: bytes) -> bytes:
    """A CIFAR python batch: pickled dict of bytes keys, ``b'data'`` uint8[N, 3072]."""
    batch = {
        b"batch_label": b"testing batch",
        label_key: labels,
        b"data": x.reshape(len(x), -1),
        b"filenames": [b"img_%d.png" % i for i in range(len(x))],
    }
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [lab // 5 for lab in labels]
    # protocol 2 and numpy 1.x module names, as in the original (Python 2) files
    return pickle.dumps(batch, protocol=2).replace(b"cnumpy._core.", b"cnumpy.core.")
