import gzip
import hashlib
import os
from pathlib import Path

import pytest

from adaptopt.data import DatasetCorruptError, DatasetNotFoundError, find_files
from adaptopt.data.locate import read_bytes, read_lines

from .formats import write

NAMES = ["a.txt", "b.txt"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_search_order_data_dir_then_env_then_subfolders(tmp_path, monkeypatch):
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    for root in (first, second / "toy", third):
        for name in NAMES:
            write(root / name, root.name.encode())
    monkeypatch.setenv("ADAPTOPT_DATA", os.pathsep.join([str(second), str(third)]))
    assert find_files("toy", NAMES, data_dir=first)["a.txt"] == first / "a.txt"
    # without data_dir: the first env entry wins, through its dataset subfolder "toy"
    assert find_files("toy", NAMES)["b.txt"] == second / "toy" / "b.txt"
    assert find_files("toy", NAMES, subdirs=())["b.txt"] == third / "b.txt"


def test_gz_variant_and_checksum_of_decompressed_content(tmp_path):
    content = b"hello\n"
    write(tmp_path / "a.txt", content, gz=True)
    write(tmp_path / "b.txt", b"plain")
    found = find_files("toy", NAMES, tmp_path, checksums={"a.txt": sha256(content)})
    assert found == {"a.txt": tmp_path / "a.txt.gz", "b.txt": tmp_path / "b.txt"}
    assert read_bytes(found["a.txt"]) == content
    # a digest under the .gz name is over the compressed bytes themselves
    raw = (tmp_path / "a.txt.gz").read_bytes()
    find_files("toy", NAMES, tmp_path, checksums={"a.txt.gz": hashlib.md5(raw).hexdigest()})


def test_all_files_from_one_folder_and_partial_copy_reported(tmp_path, monkeypatch):
    monkeypatch.delenv("ADAPTOPT_DATA", raising=False)
    write(tmp_path / "x" / "a.txt", b"1")
    write(tmp_path / "a.txt", b"1")
    with pytest.raises(DatasetNotFoundError) as info:
        find_files("toy", NAMES, tmp_path, subdirs=("x",))
    message = str(info.value)
    assert f"Incomplete copy in {tmp_path}: missing b.txt" in message
    assert f"Incomplete copy in {tmp_path / 'x'}: missing b.txt" in message


def test_missing_error_names_dataset_places_files_checksums_and_source(tmp_path, monkeypatch):
    env_dir = tmp_path / "env"
    monkeypatch.setenv("ADAPTOPT_DATA", str(env_dir))
    digest = "0" * 64
    with pytest.raises(DatasetNotFoundError) as info:
        find_files(
            "ptb", ["ptb.train.txt"], tmp_path / "given", checksums={"ptb.train.txt": digest}
        )
    err = info.value
    assert isinstance(err, FileNotFoundError)
    message = str(err)
    assert message.startswith("dataset 'ptb' not found.")
    assert f"ptb.train.txt  sha256 {digest}" in message
    for folder in (tmp_path / "given", tmp_path / "given" / "ptb", env_dir, env_dir / "ptb"):
        assert f"  {folder}  (" in message
    assert "/usr/share/datasets" in message and str(Path.home() / ".cache" / "adaptopt") in message
    assert "simple-examples" in message  # how to obtain
    assert "--data-dir" in message and "ADAPTOPT_DATA" in message
    searched = [folder for folder, _ in err.searched]
    assert searched.index(tmp_path / "given") < searched.index(env_dir)


def test_checksum_mismatch_names_file_expected_and_actual(tmp_path):
    path = write(tmp_path / "a.txt", b"tampered")
    write(tmp_path / "b.txt", b"")
    expected = sha256(b"original")
    with pytest.raises(DatasetCorruptError) as info:
        find_files("toy", NAMES, tmp_path, checksums={"a.txt": expected})
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert str(path) in message and expected in message and sha256(b"tampered") in message
    # md5 digests are recognised by their length
    with pytest.raises(DatasetCorruptError, match="md5"):
        find_files("toy", NAMES, tmp_path, checksums={"a.txt": "f" * 32})
    # verify=False skips the check
    assert find_files("toy", NAMES, tmp_path, checksums={"a.txt": expected}, verify=False)


def test_verification_is_cached_per_file_version(tmp_path):
    write(tmp_path / "a.txt", b"one")
    write(tmp_path / "b.txt", b"")
    checksums = {"a.txt": sha256(b"one")}
    find_files("toy", NAMES, tmp_path, checksums=checksums)
    write(tmp_path / "a.txt", b"two!")  # new size -> verified again
    with pytest.raises(DatasetCorruptError):
        find_files("toy", NAMES, tmp_path, checksums=checksums)


def test_bad_digest_and_empty_request_rejected(tmp_path):
    write(tmp_path / "a.txt", b"")
    with pytest.raises(ValueError, match="neither MD5"):
        find_files("toy", ["a.txt"], tmp_path, checksums={"a.txt": "abc"})
    with pytest.raises(ValueError, match="at least one"):
        find_files("toy", [], tmp_path)


def test_corrupt_gzip_and_text_reading(tmp_path):
    broken = write(tmp_path / "broken.gz", gzip.compress(b"some text")[:-6])
    with pytest.raises(DatasetCorruptError, match="not a valid gzip"):
        read_bytes(broken)
    # lines split on "\n" only (as `open` iterates), never on U+2028 inside a line
    text = write(tmp_path / "t.txt", " a\u2028b \r\n c \n".encode(), gz=True)
    assert read_lines(text) == [" a\u2028b ", " c "]
    latin = write(tmp_path / "latin.txt", "é".encode("latin-1"))
    with pytest.raises(DatasetCorruptError, match="not UTF-8"):
        read_lines(latin)
