"""The opt-in download, exercised on local ``file://`` URLs (nothing leaves the machine)."""

import gzip
from pathlib import Path

import pytest

from adaptopt.data import DatasetCorruptError, find_files, load_ptb
from adaptopt.data.download import SOURCES, download
from adaptopt.data.lm import PTB_FILES

from .formats import REAL_DATA_DIRS, write


def serve(monkeypatch, dataset, remote_dir):
    _, files, checksums = SOURCES[dataset]
    monkeypatch.setitem(SOURCES, dataset, (remote_dir.as_uri() + "/", files, checksums))


def test_download_verifies_and_keeps_nothing_corrupt(tmp_path, monkeypatch):
    remote = tmp_path / "remote"
    for name in PTB_FILES:
        write(remote / name, b" not the real corpus \n")
    serve(monkeypatch, "ptb", remote)
    with pytest.raises(DatasetCorruptError, match="fcea919f6cf83f35"):
        download("ptb", tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        download("imagenet")


def test_download_of_the_real_ptb_files_loads(tmp_path, monkeypatch):
    staged = next(
        (d / "ptb" for d in REAL_DATA_DIRS[1:] if (d / "ptb" / "ptb.train.txt.gz").is_file()), None
    )
    if staged is None:
        pytest.skip("staged PTB files are not present")
    remote = tmp_path / "remote"
    for name in PTB_FILES:
        write(remote / name, gzip.decompress((staged / f"{name}.gz").read_bytes()))
    serve(monkeypatch, "ptb", remote)
    monkeypatch.delenv("ADAPTOPT_DATA", raising=False)
    folder = download("ptb")  # default destination (HOME is a temporary folder here)
    assert folder == Path.home() / ".cache" / "adaptopt" / "ptb"
    assert sorted(p.name for p in folder.iterdir()) == sorted(PTB_FILES)
    assert find_files("ptb", list(PTB_FILES))["ptb.train.txt"] == folder / "ptb.train.txt"
    assert len(load_ptb().train) == 929_589
    (remote / "ptb.test.txt").unlink()
    download("ptb")  # valid files already there are not fetched again
