"""Fixtures for task tests: real staged data where present, tiny true-format files otherwise."""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from adaptopt.data import DatasetNotFoundError
from adaptopt.tasks import Task, get

REPO = Path(__file__).resolve().parents[2]
REAL_DATA_DIRS = (None, REPO / ".data", REPO.parent / "shared" / "data")


def _write_cifar10(folder: Path, rng: np.random.Generator) -> None:
    """``data_batch_1..5`` and ``test_batch``: pickled dicts with b'data' uint8[N, 3072]."""
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, 20).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def _idx(array: np.ndarray) -> bytes:
    """IDX: magic 00 00 08 ndim, big-endian int32 shape, uint8 data."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_mnist(folder: Path, rng: np.random.Generator) -> None:
    """The four MNIST IDX files."""
    folder.mkdir(parents=True)
    for prefix, n in (("train", 100), ("t10k", 40)):
        images, labels = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(images))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(labels))


@pytest.fixture(scope="session")
def fake_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CIFAR-10 and MNIST in their true formats (random pixels), for ``verify=False``."""
    root = tmp_path_factory.mktemp("fake-data")
    rng = np.random.default_rng(0)
    _write_cifar10(root / "cifar-10-batches-py", rng)
    _write_mnist(root / "mnist", rng)
    return root


FAKE_DATA = ("cifar10-", "mnist-")  # registry prefixes of datasets not staged on this machine


@pytest.fixture
def build(fake_data_dir: Path) -> Callable[..., Task]:
    """``build(name, **kwargs)``: the task on real data (skip when absent) or on fake files."""

    def _build(name: str, **kwargs) -> Task:
        if name.startswith(FAKE_DATA):
            return get(name, data_dir=fake_data_dir, verify=False, **kwargs)
        for data_dir in REAL_DATA_DIRS:
            try:
                return get(name, data_dir=data_dir, **kwargs)
            except DatasetNotFoundError:
                continue
        pytest.skip(f"{name}: dataset files are not present")

    return _build
