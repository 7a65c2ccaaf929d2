"""Finding dataset files on local disk, verifying them, and reading them (plain or gzipped).

Search order for every dataset (first folder holding *all* requested files wins):

1. ``data_dir`` (the CLI's ``--data-dir``),
2. each entry of ``$ADAPTOPT_DATA`` (``os.pathsep``-separated),
3. the standard locations ``/usr/share/datasets`` and ``~/.cache/adaptopt``;

inside each root the root itself and its dataset subfolders (``ptb/``, ``fashion-mnist/``, ...)
are tried. A requested name ``f`` is also accepted as ``f.gz``.

Checksums map a file name to a hex digest (32 hex digits: MD5, 64: SHA-256). The digest under
the plain name ``f`` is the hash of the *decompressed content*, so it holds for ``f`` and for any
``f.gz``; a digest under ``f.gz`` is the hash of that exact compressed file. Each file is verified
once per process (keyed by path, size and modification time).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from adaptopt.errors import UserError

ENV_VAR = "ADAPTOPT_DATA"


@dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset's files usually live and how a user obtains them."""

    subdirs: tuple[str, ...]
    obtain: str


DATASETS: dict[str, DatasetInfo] = {
    "ptb": DatasetInfo(
        ("ptb", "penn", "PennTreebank"),
        "the Mikolov split ptb.{train,valid,test}.txt from Mikolov's RNNLM 'simple-examples' "
        "archive (also in the pytorch/examples word_language_model and AWD-LSTM repositories)",
    ),
    "wikitext-2": DatasetInfo(
        ("wikitext-2", "wikitext-2-v1", "WikiText2"),
        "wiki.{train,valid,test}.tokens from wikitext-2-v1.zip (Merity et al. 2016, "
        "'Pointer Sentinel Mixture Models'), the tokenized version, not '-raw'",
    ),
    "multi30k": DatasetInfo(
        ("multi30k", "Multi30k", "multi30k/data/task1/raw"),
        "the GitHub repository multi30k/dataset, folder data/task1/raw "
        "({train,val,test_2016_flickr}.{de,en}.gz)",
    ),
    "fashion-mnist": DatasetInfo(
        ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw"),
        "Debian/Ubuntu: 'apt-get install dataset-fashion-mnist' (installs to "
        "/usr/share/datasets/fashion-mnist), or without root 'apt-get download "
        "dataset-fashion-mnist && dpkg -x dataset-fashion-mnist_*.deb DIR'; or the IDX files of "
        "github.com/zalandoresearch/fashion-mnist",
    ),
    "mnist": DatasetInfo(
        ("mnist", "MNIST/raw"),
        "the four IDX files *-ubyte.gz of the MNIST database (LeCun, Cortes, Burges)",
    ),
    "cifar-10": DatasetInfo(
        ("cifar-10-batches-py", "cifar-10", "cifar10"),
        "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
        "(the archive itself, or its extracted folder cifar-10-batches-py/)",
    ),
    "cifar-100": DatasetInfo(
        ("cifar-100-python", "cifar-100", "cifar100"),
        "cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
        "(the archive itself, or its extracted folder cifar-100-python/)",
    ),
}


class DatasetNotFoundError(UserError, FileNotFoundError):
    """Some file of a dataset is in none of the searched folders."""

    def __init__(
        self,
        dataset: str,
        searched: Sequence[tuple[Path, str]],
        expected: Sequence[str],
        checksums: Mapping[str, str] | None = None,
        partial: Mapping[Path, Sequence[str]] | None = None,
        note: str | None = None,
    ) -> None:
        self.dataset = dataset
        self.searched = list(searched)
        self.expected = list(expected)
        checksums = checksums or {}
        lines = [f"dataset {dataset!r} not found.", "Expected files (each plain or .gz):"]
        for name in expected:
            line = f"  {name}"
            if name in checksums:
                line += f"  {_algorithm(checksums[name])} {checksums[name]}"
            elif name + ".gz" in checksums:
                digest = checksums[name + ".gz"]
                line += f"  ({name}.gz: {_algorithm(digest)} {digest})"
            lines.append(line)
        if note:
            lines.append(note)
        lines.append("Searched:")
        lines += [f"  {folder}  ({origin})" for folder, origin in self.searched]
        for folder, missing in (partial or {}).items():
            lines.append(f"Incomplete copy in {folder}: missing {', '.join(missing)}")
        info = DATASETS.get(dataset)
        if info is not None:
            lines.append(f"How to obtain: {info.obtain}.")
            lines.append(
                'With internet access: python -c "from adaptopt.data.download import download; '
                f"download('{dataset}')\" (checksum-verified, into ~/.cache/adaptopt)."
            )
        lines.append(
            f"Put the files into one of the folders above, pass --data-dir DIR (data_dir=...) "
            f"or add DIR to ${ENV_VAR} (entries separated by {os.pathsep!r})."
        )
        super().__init__("\n".join(lines))


class DatasetCorruptError(UserError, ValueError):
    """A dataset file exists but its checksum or format is wrong."""


def search_roots(data_dir: str | os.PathLike[str] | None = None) -> list[tuple[Path, str]]:
    """The root folders searched, in order, each with where it came from."""
    roots: list[tuple[Path, str]] = []
    if data_dir is not None:
        roots.append((Path(data_dir).expanduser(), "data_dir / --data-dir"))
    for entry in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if entry:
            roots.append((Path(entry).expanduser(), f"${ENV_VAR}"))
    roots.append((Path("/usr/share/datasets"), "standard location"))
    roots.append((Path.home() / ".cache" / "adaptopt", "standard location"))
    return roots


def find_files(
    dataset: str,
    filenames: Sequence[str],
    data_dir: str | os.PathLike[str] | None = None,
    subdirs: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    verify: bool = True,
) -> dict[str, Path]:
    """Locate all of ``filenames`` in one folder; returns ``{requested name: path found}``.

    ``subdirs`` defaults to the known subfolders of ``dataset`` (see ``DATASETS``). With
    ``verify`` and ``checksums``, every found file is checked (once per process).

    Raises:
        DatasetNotFoundError: no searched folder holds every file.
        DatasetCorruptError: a found file does not match its checksum.
    """
    if not filenames:
        raise ValueError("filenames must name at least one file")
    if subdirs is None:
        subdirs = DATASETS[dataset].subdirs if dataset in DATASETS else (dataset,)
    searched: list[tuple[Path, str]] = []
    partial: dict[Path, list[str]] = {}
    for root, origin in search_roots(data_dir):
        for folder in (root, *(root / sub for sub in subdirs)):
            if folder in (f for f, _ in searched):
                continue
            searched.append((folder, origin))
            found = {name: _existing(folder, name) for name in filenames}
            missing = [name for name, path in found.items() if path is None]
            if not missing:
                paths = {name: path for name, path in found.items() if path is not None}
                if verify and checksums:
                    for name, path in paths.items():
                        verify_file(dataset, name, path, checksums)
                return paths
            if len(missing) < len(filenames):
                partial[folder] = missing
    raise DatasetNotFoundError(dataset, searched, filenames, checksums, partial)


def _existing(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


_VERIFIED: set[tuple[str, int, int, str]] = set()


def verify_file(dataset: str, name: str, path: Path, checksums: Mapping[str, str]) -> None:
    """Check ``path`` (found for requested ``name``) against ``checksums``; see module doc."""
    compressed = path.name == name + ".gz"
    if name in checksums:
        expected, content = checksums[name], compressed  # digest of the decompressed bytes
    elif path.name in checksums:
        expected, content = checksums[path.name], False
    else:
        return
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, expected)
    if key in _VERIFIED:
        return
    algorithm = _algorithm(expected)
    data = read_bytes(path) if content else path.read_bytes()
    actual = hashlib.new(algorithm, data).hexdigest()
    if actual != expected.lower():
        what = "decompressed content of " if content else ""
        raise DatasetCorruptError(
            f"dataset {dataset!r}: {algorithm} of the {what}{path} is {actual}, expected "
            f"{expected}. The file is damaged or a different version; replace it with {name} "
            f"from: {DATASETS[dataset].obtain if dataset in DATASETS else 'the original source'}."
        )
    _VERIFIED.add(key)


def _algorithm(digest: str) -> str:
    algorithms = {32: "md5", 64: "sha256"}
    if len(digest) not in algorithms:
        raise ValueError(f"checksum {digest!r} is neither MD5 (32 hex) nor SHA-256 (64 hex)")
    return algorithms[len(digest)]


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it is gzipped (detected by its magic number)."""
    data = path.read_bytes()
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetCorruptError(f"{path} is not a valid gzip file: {err}") from err


def read_lines(path: Path) -> list[str]:
    """UTF-8 text lines of a plain or gzipped file, split on newlines only (as ``open`` does).

    ``str.splitlines`` would also split on characters such as U+2028 inside WikiText lines.
    """
    try:
        text = read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as err:
        raise DatasetCorruptError(f"{path} is not UTF-8 text: {err}") from err
    lines = text.replace("\r\n", "\n").split("\n")
    return lines[:-1] if lines[-1] == "" else lines
