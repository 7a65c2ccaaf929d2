"""Image classification datasets read from their original files: MNIST and Fashion-MNIST (IDX),
CIFAR-10/100 (the python pickle batches, extracted or inside the ``.tar.gz``).

Images are kept as ``uint8[N, C, H, W]``; ``mean``/``std`` are per-channel statistics of the
training images on the [0, 1] scale, used for normalization (paper §5.1: "normalized per
channel using the means and standard deviations computed from all training images").
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptopt.data.locate import (
    DatasetCorruptError,
    DatasetNotFoundError,
    find_files,
    read_bytes,
)

FASHION_MNIST_FILES = {  # sha256 of the decompressed IDX files (zalandoresearch originals)
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
MNIST_FILES = {  # md5 of the canonical .gz downloads
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
CIFAR10_ARCHIVE = {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"}
CIFAR10_BATCHES = {  # md5 of the extracted pickles
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR100_ARCHIVE = {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"}
CIFAR100_BATCHES = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
}


@dataclass
class ImageData:
    """Train/test images ``uint8[N, C, H, W]`` with ``int64`` labels and channel statistics."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: int
    mean: tuple[float, ...] = field(init=False)
    std: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.mean, self.std = channel_stats(self.train_x)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of ``uint8[N, C, H, W]`` on the [0, 1] scale."""
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"x must be uint8[N, C, H, W], got {x.dtype} {tuple(x.shape)}")
    values = np.arange(256, dtype=np.float64) / 255
    means, stds = [], []
    for c in range(x.size(1)):
        hist = np.bincount(x[:, c].numpy().ravel(), minlength=256).astype(np.float64)
        hist /= hist.sum()
        mean = hist @ values
        means.append(float(mean))
        stds.append(float(np.sqrt(hist @ (values - mean) ** 2)))
    return tuple(means), tuple(stds)


# ---------------------------------------------------------------------------- IDX (MNIST family)


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Parse an IDX file (LeCun's MNIST format): magic ``00 00 08 ndim``, big-endian int32
    dimensions, then unsigned bytes."""
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise DatasetCorruptError(f"{name}: not an unsigned-byte IDX file (magic {data[:4]!r})")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data[4:header], dtype=">i4"))
    if len(shape) != ndim or len(data) - header != int(np.prod(shape)):
        raise DatasetCorruptError(
            f"{name}: header says shape {shape} ({int(np.prod(shape))} bytes) but "
            f"{len(data) - header} data bytes follow"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _load_idx(dataset: str, files: dict[str, str], data_dir: Any, verify: bool) -> ImageData:
    names = [name.removesuffix(".gz") for name in files]
    paths = find_files(dataset, names, data_dir, checksums=files, verify=verify)
    arrays = {name: parse_idx(read_bytes(path), str(path)) for name, path in paths.items()}
    split = {}
    for prefix in ("train", "t10k"):
        x = arrays[f"{prefix}-images-idx3-ubyte"]
        y = arrays[f"{prefix}-labels-idx1-ubyte"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DatasetCorruptError(
                f"{dataset} {prefix}: images {x.shape} and labels {y.shape} do not match"
            )
        split[prefix] = (
            torch.from_numpy(x.copy()).unsqueeze(1),
            torch.from_numpy(y.astype(np.int64)),
        )
    return ImageData(*split["train"], *split["t10k"], classes=10)


def load_fashion_mnist(
    data_dir: str | os.PathLike[str] | None = None, verify: bool = True
) -> ImageData:
    """Fashion-MNIST (Xiao et al. 2017): 60,000 train / 10,000 test 1x28x28 images, 10 classes."""
    return _load_idx("fashion-mnist", FASHION_MNIST_FILES, data_dir, verify)


def load_mnist(data_dir: str | os.PathLike[str] | None = None, verify: bool = True) -> ImageData:
    """MNIST: 60,000 train / 10,000 test 1x28x28 digit images."""
    return _load_idx("mnist", MNIST_FILES, data_dir, verify)


# ---------------------------------------------------------------------------- CIFAR pickles


_PICKLE_GLOBALS = frozenset(
    {
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }
)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a data file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def parse_cifar_batch(data: bytes, label_key: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch: a pickled dict with ``b'data'`` (uint8[N, 3072], CHW row-major)
    and ``label_key`` (``b'labels'`` for CIFAR-10, ``b'fine_labels'`` for CIFAR-100)."""
    try:
        batch = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
        x = np.asarray(batch[b"data"], dtype=np.uint8)
        y = np.asarray(batch[label_key], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as err:
        raise DatasetCorruptError(
            f"{name}: not a CIFAR python batch with b'data' and {label_key!r} ({err!r})"
        ) from err
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(x) != len(y):
        raise DatasetCorruptError(
            f"{name}: data {x.shape} / labels {y.shape}, expected [N, 3072] / [N]"
        )
    return x.reshape(-1, 3, 32, 32), y


def _cifar_members(
    dataset: str,
    archive: dict[str, str],
    batches: dict[str, str],
    data_dir: Any,
    verify: bool,
) -> dict[str, tuple[bytes, str]]:
    """``{batch name: (bytes, where)}`` from an extracted folder or, failing that, the archive."""
    try:
        paths = find_files(dataset, list(batches), data_dir, checksums=batches, verify=verify)
        return {name: (read_bytes(path), str(path)) for name, path in paths.items()}
    except DatasetNotFoundError as folder_error:
        try:
            (path,) = find_files(
                dataset, list(archive), data_dir, checksums=archive, verify=verify
            ).values()
        except DatasetNotFoundError:
            raise DatasetNotFoundError(
                dataset,
                folder_error.searched,
                [*batches, *archive],
                {**batches, **archive},
                note=f"Either all of {', '.join(batches)} (extracted) or {', '.join(archive)}.",
            ) from None
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            missing = [name for name in batches if name not in members]
            if missing:
                raise DatasetCorruptError(f"{path} lacks {', '.join(missing)}")

            def read(member: tarfile.TarInfo) -> bytes:
                file = tar.extractfile(member)
                assert file is not None  # a regular file: members holds no others
                return file.read()

            return {name: (read(members[name]), f"{path}:{members[name].name}") for name in batches}
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DatasetCorruptError(f"{path} is not a readable .tar.gz archive: {err}") from err


def _load_cifar(
    dataset: str,
    archive: dict[str, str],
    batches: dict[str, str],
    label_key: bytes,
    classes: int,
    data_dir: Any,
    verify: bool,
) -> ImageData:
    members = _cifar_members(dataset, archive, batches, data_dir, verify)
    parsed = [parse_cifar_batch(data, label_key, where) for data, where in members.values()]
    train, test = parsed[:-1], parsed[-1]  # the test batch comes last in each table
    return ImageData(
        torch.from_numpy(np.concatenate([x for x, _ in train])),
        torch.from_numpy(np.concatenate([y for _, y in train])),
        torch.from_numpy(test[0].copy()),
        torch.from_numpy(test[1]),
        classes=classes,
    )


def load_cifar10(data_dir: str | os.PathLike[str] | None = None, verify: bool = True) -> ImageData:
    """CIFAR-10 (Krizhevsky 2009): 50,000 train / 10,000 test 3x32x32 images, 10 classes."""
    return _load_cifar(
        "cifar-10", CIFAR10_ARCHIVE, CIFAR10_BATCHES, b"labels", 10, data_dir, verify
    )


def load_cifar100(data_dir: str | os.PathLike[str] | None = None, verify: bool = True) -> ImageData:
    """CIFAR-100 with its 100 fine labels: 50,000 train / 10,000 test 3x32x32 images."""
    return _load_cifar(
        "cifar-100", CIFAR100_ARCHIVE, CIFAR100_BATCHES, b"fine_labels", 100, data_dir, verify
    )
