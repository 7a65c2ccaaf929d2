"""``adaptopt data``: which datasets exist, where they are looked for, and an opt-in download.

- ``list``: every dataset with where it was found (checksums verified) or that it is missing;
- ``where NAME``: the folders searched in order, the expected files with their checksums, and
  the folder found (exit status 1 when it is not found, like ``which``);
- ``fetch NAME``: download from the canonical source, verify, and store where loaders look
  (needs internet; see :mod:`adaptopt.data.download`).
"""

from __future__ import annotations

import argparse
import urllib.error
from pathlib import Path

from adaptopt.data.download import SOURCES, download
from adaptopt.data.images import (
    CIFAR10_ARCHIVE,
    CIFAR10_BATCHES,
    CIFAR100_ARCHIVE,
    CIFAR100_BATCHES,
    FASHION_MNIST_FILES,
    MNIST_FILES,
)
from adaptopt.data.lm import PTB_FILES, WIKITEXT2_FILES
from adaptopt.data.locate import (
    DATASETS,
    DatasetCorruptError,
    DatasetNotFoundError,
    find_files,
    search_roots,
)
from adaptopt.data.translation import MULTI30K_FILES
from adaptopt.errors import ConfigError, UserError

# dataset -> the file sets its loader accepts, each {file name: checksum}, tried in order
LAYOUTS: dict[str, tuple[dict[str, str], ...]] = {
    "ptb": (PTB_FILES,),
    "wikitext-2": (WIKITEXT2_FILES,),
    "multi30k": (MULTI30K_FILES,),
    "fashion-mnist": (FASHION_MNIST_FILES,),
    "mnist": (MNIST_FILES,),
    "cifar-10": (CIFAR10_BATCHES, CIFAR10_ARCHIVE),
    "cifar-100": (CIFAR100_BATCHES, CIFAR100_ARCHIVE),
}


class DownloadError(UserError):
    """The download source could not be reached."""


def locate(dataset: str, data_dir: str | None = None, verify: bool = True) -> Path:
    """The folder holding ``dataset`` (checksums verified with ``verify``).

    Raises:
        DatasetNotFoundError: in none of the searched folders.
        DatasetCorruptError: found, but a file does not match its checksum.
    """
    layouts = _layouts(dataset)
    error: DatasetNotFoundError | None = None
    for files in layouts:
        names = [name.removesuffix(".gz") for name in files]  # loaders accept f and f.gz
        try:
            paths = find_files(dataset, names, data_dir, checksums=files, verify=verify)
        except DatasetNotFoundError as err:
            error = error or err
            continue
        return next(iter(paths.values())).parent
    assert error is not None
    if len(layouts) > 1:
        alternatives = " or ".join(", ".join(files) for files in layouts)
        raise DatasetNotFoundError(
            dataset,
            error.searched,
            [name for files in layouts for name in files],
            {k: v for files in layouts for k, v in files.items()},
            note=f"Either {alternatives}.",
        )
    raise error


def _layouts(dataset: str) -> tuple[dict[str, str], ...]:
    if dataset not in LAYOUTS:
        raise ConfigError(f"unknown dataset {dataset!r}; known: {', '.join(LAYOUTS)}")
    return LAYOUTS[dataset]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="list, locate or download datasets",
        description="Datasets are read from local files only. `list` shows which are found, "
        "`where NAME` where NAME is looked for, `fetch NAME` downloads it (needs internet).",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    show = actions.add_parser("list", help="every dataset: found where, or missing")
    show.add_argument("--data-dir", help="look here first (as --data-dir of `train`)")
    show.add_argument("--no-verify", action="store_true", help="skip the checksums")
    where = actions.add_parser("where", help="folders searched for NAME and files expected")
    where.add_argument("name", help=f"one of: {', '.join(LAYOUTS)}")
    where.add_argument("--data-dir", help="look here first (as --data-dir of `train`)")
    fetch = actions.add_parser("fetch", help="download NAME and verify its checksums")
    fetch.add_argument("name", help=f"one of: {', '.join(SOURCES)}")
    fetch.add_argument("--dest", type=Path, help="target folder (default ~/.cache/adaptopt/NAME)")
    for sub in (show, where, fetch):
        sub.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _list(args.data_dir, verify=not args.no_verify)
    if args.action == "where":
        return _where(args.name, args.data_dir)
    return _fetch(args.name, args.dest)


def _list(data_dir: str | None, verify: bool) -> int:
    for dataset in LAYOUTS:
        try:
            state = f"found      {locate(dataset, data_dir, verify)}"
            state += "  (checksums ok)" if verify else ""
        except DatasetNotFoundError:
            state = "missing    (adaptopt data where " + dataset + ")"
        except DatasetCorruptError as err:
            state = f"CORRUPT    {err}"
        print(f"{dataset:14s} {state}")
    return 0


def _where(dataset: str, data_dir: str | None) -> int:
    layouts = _layouts(dataset)
    info = DATASETS[dataset]
    print(f"{dataset}: {info.obtain}")
    print("Expected files (each plain or .gz; digest of the decompressed file unless named .gz):")
    for i, files in enumerate(layouts):
        if i:
            print("  or")
        for name, digest in files.items():
            print(f"  {name:28s} {'md5' if len(digest) == 32 else 'sha256'} {digest}")
    print("Searched, in order (each root, then its subfolders " + ", ".join(info.subdirs) + "):")
    for root, origin in search_roots(data_dir):
        print(f"  {root}  ({origin}{'' if root.is_dir() else ', absent'})")
    try:
        print(f"Found: {locate(dataset, data_dir)} (checksums ok)")
    except DatasetNotFoundError:
        print(f"Not found. Download with: adaptopt data fetch {dataset}")
        return 1
    return 0


def _fetch(dataset: str, dest: Path | None) -> int:
    if dataset not in SOURCES:
        raise ConfigError(f"unknown dataset {dataset!r}; downloadable: {', '.join(SOURCES)}")
    try:
        folder = download(dataset, dest)
    except urllib.error.URLError as err:  # HTTPError included: no route, no file, no server
        raise DownloadError(
            f"could not download {dataset!r} from {SOURCES[dataset][0]}: {err.reason}"
        ) from err
    print(f"{dataset}: downloaded and verified into {folder}")
    return 0
