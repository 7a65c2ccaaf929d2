import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from adaptopt.data import (
    DatasetCorruptError,
    DatasetNotFoundError,
    channel_stats,
    load_cifar10,
    load_cifar100,
    load_fashion_mnist,
    load_mnist,
    parse_idx,
)

from .formats import cifar_batch_bytes, idx_bytes, load_real, write, write_idx_dataset


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loaders_read_the_true_format(tmp_path, gz):
    arrays = write_idx_dataset(tmp_path / "fashion-mnist", np.random.default_rng(0), gz=gz)
    data = load_fashion_mnist(tmp_path, verify=False)
    assert data.train_x.dtype == torch.uint8 and data.train_x.shape == (12, 1, 28, 28)
    assert np.array_equal(data.train_x[:, 0].numpy(), arrays["train"][0])
    assert np.array_equal(data.test_x[:, 0].numpy(), arrays["t10k"][0])
    assert data.train_y.dtype == torch.int64
    assert data.train_y.tolist() == arrays["train"][1].tolist()
    assert data.test_y.tolist() == arrays["t10k"][1].tolist()
    assert data.classes == 10


def test_mnist_gz_files_are_checked_against_the_canonical_md5(tmp_path):
    write_idx_dataset(tmp_path / "mnist", np.random.default_rng(1))
    assert load_mnist(tmp_path, verify=False).train_x.shape == (12, 1, 28, 28)
    with pytest.raises(DatasetCorruptError, match="f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        load_mnist(tmp_path)


def test_bad_idx_files_are_reported():
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    assert parse_idx(idx_bytes(image)).shape == (2, 3, 3)
    with pytest.raises(DatasetCorruptError, match="not an unsigned-byte IDX"):
        parse_idx(b"\x00\x00\x0d\x01" + bytes(8), "f")  # float IDX
    with pytest.raises(DatasetCorruptError, match=r"shape \(2, 3, 3\) \(18 bytes\) but 17"):
        parse_idx(idx_bytes(image)[:-1], "f")


def cifar_arrays(n_per_batch, n_batches, classes, seed):
    rng = np.random.default_rng(seed)
    xs = [rng.integers(0, 256, (n_per_batch, 3, 32, 32), dtype=np.uint8) for _ in range(n_batches)]
    ys = [rng.integers(0, classes, n_per_batch).tolist() for _ in range(n_batches)]
    return xs, ys


def check_cifar(data, xs, ys, classes):
    assert data.train_x.dtype == torch.uint8 and data.train_x.shape == (
        4 * (len(xs) - 1),
        3,
        32,
        32,
    )
    assert np.array_equal(data.train_x.numpy(), np.concatenate(xs[:-1]))
    assert data.train_y.tolist() == [label for y in ys[:-1] for label in y]
    assert np.array_equal(data.test_x.numpy(), xs[-1]) and data.test_y.tolist() == ys[-1]
    assert data.train_y.dtype == torch.int64 and data.classes == classes


def test_cifar10_from_extracted_batches_and_from_the_archive(tmp_path):
    xs, ys = cifar_arrays(4, 6, 10, seed=2)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {n: cifar_batch_bytes(x, y, b"labels") for n, x, y in zip(names, xs, ys, strict=True)}
    for name, data in batches.items():
        write(tmp_path / "folder" / "cifar-10-batches-py" / name, data)
    check_cifar(load_cifar10(tmp_path / "folder", verify=False), xs, ys, 10)

    archive = tmp_path / "archive" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    check_cifar(load_cifar10(archive.parent, verify=False), xs, ys, 10)
    with pytest.raises(DatasetCorruptError, match="c58f30108f718f92721af3b95e74349a"):
        load_cifar10(archive.parent)


def test_cifar100_uses_fine_labels(tmp_path):
    xs, ys = cifar_arrays(4, 2, 100, seed=3)
    for name, x, y in zip(("train", "test"), xs, ys, strict=True):
        write(tmp_path / "cifar-100-python" / name, cifar_batch_bytes(x, y, b"fine_labels"))
    check_cifar(load_cifar100(tmp_path, verify=False), xs, ys, 100)


def test_cifar_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("ADAPTOPT_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError) as info:
        load_cifar10(tmp_path)
    message = str(info.value)
    assert "data_batch_1  md5 c99cafc152244af753f735de768cd75f" in message
    assert "cifar-10-python.tar.gz  md5 c58f30108f718f92721af3b95e74349a" in message
    assert "(extracted) or cifar-10-python.tar.gz" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message
    assert str(tmp_path / "cifar-10-batches-py") in message

    # a pickle that would run code is refused
    write(tmp_path / "evil" / "train", pickle.dumps(os.system))
    write(tmp_path / "evil" / "test", b"")
    with pytest.raises(DatasetCorruptError, match="refusing to load"):
        load_cifar100(tmp_path / "evil", verify=False)
    # a CIFAR-10 batch has no fine labels
    (x,), (y,) = cifar_arrays(2, 1, 10, seed=4)
    write(tmp_path / "wrong" / "train", cifar_batch_bytes(x, y, b"labels"))
    write(tmp_path / "wrong" / "test", cifar_batch_bytes(x, y, b"labels"))
    with pytest.raises(DatasetCorruptError, match="b'fine_labels'"):
        load_cifar100(tmp_path / "wrong", verify=False)


def test_channel_stats_equal_a_float64_reference():
    x = torch.randint(
        0, 256, (7, 3, 5, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    mean, std = channel_stats(x)
    ref = x.double().div(255).transpose(0, 1).reshape(3, -1)
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), ref.mean(1), rtol=0, atol=1e-12)
    assert torch.allclose(
        torch.tensor(std, dtype=torch.float64), ref.std(1, correction=0), rtol=0, atol=1e-12
    )
    with pytest.raises(ValueError, match="uint8"):
        channel_stats(x.float())


def test_real_fashion_mnist():
    data = load_real(load_fashion_mnist)
    assert data.train_x.shape == (60_000, 1, 28, 28) and data.test_x.shape == (10_000, 1, 28, 28)
    assert data.train_y.bincount().tolist() == [6_000] * 10
    assert data.test_y.bincount().tolist() == [1_000] * 10
    # the well-known normalization constants of Fashion-MNIST
    assert data.mean[0] == pytest.approx(0.2860, abs=1e-4)
    assert data.std[0] == pytest.approx(0.3530, abs=1e-4)
