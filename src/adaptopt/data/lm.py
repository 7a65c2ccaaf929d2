"""Word-level language-modelling corpora (PTB, WikiText-2) and their batching.

Preprocessing is the one of pytorch/examples ``word_language_model`` and AWD-LSTM's
``data.py`` (Merity et al. 2018): split each line on whitespace and append ``<eos>``; word ids
in order of first appearance over train, valid, test. Both corpora are closed-vocabulary, so
the vocabulary is that of the training split (PTB: 10,000 words; WikiText-2: 33,278).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch

from adaptopt.data.locate import find_files, read_lines

EOS = "<eos>"

PTB_FILES = {  # sha256 of the decompressed text
    "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}
WIKITEXT2_FILES = {
    "wiki.train.tokens": "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
    "wiki.valid.tokens": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
    "wiki.test.tokens": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
}


@dataclass
class Corpus:
    """Token-id streams of the three splits and the vocabulary (id -> word)."""

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    vocab: list[str]
    word2idx: dict[str, int]


def load_corpus(
    dataset: str,
    files: dict[str, str],
    data_dir: str | os.PathLike[str] | None = None,
    verify: bool = True,
) -> Corpus:
    """Read the (train, valid, test) files named by ``files`` (in that order) into a ``Corpus``."""
    paths = find_files(dataset, list(files), data_dir, checksums=files, verify=verify)
    word2idx: dict[str, int] = {}
    splits = []
    for path in paths.values():
        ids = [
            word2idx.setdefault(word, len(word2idx))
            for line in read_lines(path)
            for word in [*line.split(), EOS]
        ]
        splits.append(torch.tensor(ids, dtype=torch.long))
    train, valid, test = splits
    return Corpus(train, valid, test, vocab=list(word2idx), word2idx=word2idx)


def load_ptb(data_dir: str | os.PathLike[str] | None = None, verify: bool = True) -> Corpus:
    """Penn Treebank, Mikolov's LM split (train 929,589 tokens with ``<eos>``, 10k words)."""
    return load_corpus("ptb", PTB_FILES, data_dir, verify)


def load_wikitext2(data_dir: str | os.PathLike[str] | None = None, verify: bool = True) -> Corpus:
    """WikiText-2 v1, tokenized (train 2,088,628 tokens with ``<eos>``, 33,278 words)."""
    return load_corpus("wikitext-2", WIKITEXT2_FILES, data_dir, verify)


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a 1-d id stream into ``batch_size`` contiguous columns: ``[T, batch_size]``.

    The tail that does not fill a whole row is dropped, as in word_language_model.
    """
    if ids.dim() != 1:
        raise ValueError(f"ids must be 1-d, got shape {tuple(ids.shape)}")
    if not 1 <= batch_size <= ids.numel():
        raise ValueError(f"batch_size must be in [1, {ids.numel()}], got {batch_size}")
    steps = ids.numel() // batch_size
    return ids[: steps * batch_size].view(batch_size, steps).t().contiguous()


class LMWindow(NamedTuple):
    """A BPTT window: inputs ``x`` [T, B], next tokens ``y`` [T, B] and the drawn length.

    ``seq_len`` is the length drawn for the window before it is cut to the end of the data, so
    it exceeds ``len(x)`` for a truncated last window (AWD-LSTM scales the step by it).
    """

    x: torch.Tensor
    y: torch.Tensor
    seq_len: int


def lm_windows(
    data: torch.Tensor,
    bptt: int,
    generator: torch.Generator | None = None,
    random_length: bool = False,
) -> Iterator[LMWindow]:
    """Consecutive windows of ``data[T, B]``, ``y`` being ``x`` shifted by one step.

    Fixed length (``random_length=False``): windows of ``bptt`` rows starting at 0, bptt, ...
    while a target row remains (``i < T − 1``), the last one cut to the data — the evaluation
    loop of word_language_model and AWD-LSTM.

    ``random_length``: AWD-LSTM's training loop (Merity et al. 2018, §4.1; ``main.py`` there and
    in the Generalized SignSGD authors' ``penntreebank/main_lstm.py``): the mean is ``bptt``
    with probability 0.95, else ``bptt / 2``; the drawn length is ``max(5, int(N(mean, 5)))``,
    from ``generator``; the window is that length cut to the data, and a window starts only
    while at least two target rows remain (``i < T − 2``, so no final window of length 1).
    """
    if bptt < 1:
        raise ValueError(f"bptt must be >= 1, got {bptt}")
    i, end = 0, data.size(0) - 1
    stop = end - 1 if random_length else end
    while i < stop:
        seq_len = bptt
        if random_length:
            mean = bptt if torch.rand((), generator=generator).item() < 0.95 else bptt / 2
            seq_len = max(5, int(mean + 5 * torch.randn((), generator=generator).item()))
        n = min(seq_len, end - i)
        yield LMWindow(data[i : i + n], data[i + 1 : i + 1 + n], seq_len)
        i += seq_len


def lm_batches(
    data: torch.Tensor,
    bptt: int,
    generator: torch.Generator | None = None,
    random_length: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The ``(x, y)`` pairs of :func:`lm_windows` (same arguments, same windows)."""
    for x, y, _ in lm_windows(data, bptt, generator, random_length):
        yield x, y
