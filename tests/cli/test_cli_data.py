"""``adaptopt data list | where | fetch`` on hermetic folders and a local ``file://`` mirror."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import pytest

from adaptopt.cli.data import LAYOUTS
from adaptopt.cli.main import main
from adaptopt.data.download import SOURCES
from adaptopt.data.lm import PTB_FILES

REPO = Path(__file__).resolve().parents[2]
# where the real PTB files may be staged: $ADAPTOPT_DATA (read before the tests change it), the
# checkout's .data and the shared data folder beside it
_CANDIDATES = [Path(e) for e in os.environ.get("ADAPTOPT_DATA", "").split(os.pathsep) if e]
_CANDIDATES += [REPO / ".data", REPO.parent / "shared" / "data"]
STAGED_PTB = next(
    (d / "ptb" for d in _CANDIDATES if (d / "ptb" / "ptb.train.txt.gz").is_file()), None
)


@pytest.fixture(autouse=True)
def _hermetic(tmp_path, monkeypatch):
    """Only tmp_path/data is searched (plus an empty HOME and the absent standard folder)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ADAPTOPT_DATA", str(tmp_path / "data"))


def ptb_texts() -> dict[str, bytes]:
    """The real PTB files (their sha256 is what the loaders check), or skip."""
    if STAGED_PTB is None:
        pytest.skip("staged PTB files are not present")
    return {n: gzip.decompress((STAGED_PTB / f"{n}.gz").read_bytes()) for n in PTB_FILES}


def test_list_reports_found_missing_and_corrupt(tmp_path, capsys):
    for name, text in ptb_texts().items():
        (tmp_path / "data" / "ptb").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "ptb" / name).write_bytes(text)
    (tmp_path / "data" / "wikitext-2").mkdir()
    for split in ("train", "valid", "test"):
        (tmp_path / "data" / "wikitext-2" / f"wiki.{split}.tokens").write_text("not wikitext\n")
    assert main(["data", "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert list(lines) == list(LAYOUTS)
    found = ["found", str(tmp_path / "data" / "ptb"), "(checksums", "ok)"]
    assert lines["ptb"].split()[1:] == found
    assert "CORRUPT" in lines["wikitext-2"] and WIKI_TRAIN_SHA256 in lines["wikitext-2"]
    assert lines["mnist"].split()[1] == "missing"


WIKI_TRAIN_SHA256 = hashlib.sha256(b"not wikitext\n").hexdigest()


def test_where_lists_search_order_and_checksums(tmp_path, capsys):
    assert main(["data", "where", "cifar-10", "--data-dir", str(tmp_path / "mine")]) == 1
    out = capsys.readouterr().out
    searched = out[out.index("Searched") :].splitlines()[1:5]
    assert [line.split()[0] for line in searched] == [
        str(tmp_path / "mine"),
        str(tmp_path / "data"),
        "/usr/share/datasets",
        str(tmp_path / "home" / ".cache" / "adaptopt"),
    ]
    assert "data_batch_1                 md5 c99cafc152244af753f735de768cd75f" in out
    assert "cifar-10-python.tar.gz       md5 c58f30108f718f92721af3b95e74349a" in out
    assert "Not found. Download with: adaptopt data fetch cifar-10" in out


def serve(monkeypatch, dataset: str, remote: Path) -> None:
    _, files, checksums = SOURCES[dataset]
    monkeypatch.setitem(SOURCES, dataset, (remote.as_uri() + "/", files, checksums))


def test_fetch_from_a_mirror_verifies_and_is_found(tmp_path, capsys, monkeypatch):
    remote = tmp_path / "mirror"
    remote.mkdir()
    for name, text in ptb_texts().items():
        (remote / name).write_bytes(text)
    serve(monkeypatch, "ptb", remote)
    assert main(["data", "fetch", "ptb"]) == 0  # default destination: ~/.cache/adaptopt/ptb
    folder = tmp_path / "home" / ".cache" / "adaptopt" / "ptb"
    assert capsys.readouterr().out == f"ptb: downloaded and verified into {folder}\n"
    for name, text in ptb_texts().items():
        assert (folder / name).read_bytes() == text
    assert main(["data", "where", "ptb"]) == 0
    assert f"Found: {folder} (checksums ok)" in capsys.readouterr().out


def test_fetch_rejects_a_corrupt_mirror_and_an_unreachable_one(tmp_path, capsys, monkeypatch):
    remote = tmp_path / "mirror"
    remote.mkdir()
    for name in PTB_FILES:
        (remote / name).write_bytes(b"tampered\n")
    serve(monkeypatch, "ptb", remote)
    dest = tmp_path / "dest"
    assert main(["data", "fetch", "ptb", "--dest", str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("adaptopt: error: dataset 'ptb': sha256 of ")
    assert PTB_FILES["ptb.train.txt"] in err and "Traceback" not in err
    assert list(dest.iterdir()) == []  # nothing unverified is kept
    serve(monkeypatch, "ptb", tmp_path / "no-such-mirror")
    assert main(["data", "fetch", "ptb", "--dest", str(dest)]) == 2
    assert "adaptopt: error: could not download 'ptb' from file://" in capsys.readouterr().err


def test_unknown_dataset(capsys):
    assert main(["data", "fetch", "imagenet"]) == 2
    assert "unknown dataset 'imagenet'; downloadable: ptb," in capsys.readouterr().err
    assert main(["data", "where", "imagenet"]) == 2
    assert "unknown dataset 'imagenet'; known: ptb," in capsys.readouterr().err
