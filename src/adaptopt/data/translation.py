"""Multi30k German->English (WMT'16 multimodal task 1) for the paper's Transformer (§5.2).

Tokenization uses `sacremoses <https://github.com/hplt-project/sacremoses>`_, the maintained
Python port of the Moses scripts, in the exact pipeline with which the Multi30k authors made
their ``*.lc.norm.tok.*`` files::

    lowercase -> MosesPunctNormalizer(lang).normalize -> MosesTokenizer(lang).tokenize

which reproduces their published token counts (e.g. train: en 377,534 / de 360,706). Tokens
are not XML-escaped (``&`` stays ``&``). Use the same pipeline on new text with
``tokenize(text, lang)``.

Vocabulary as in the authors' Transformer set-up (attention-is-all-you-need-pytorch with
``-share_vocab``): a word enters if it occurs at least ``min_freq`` times in the German or in
the English training text (lowercased); one table serves source and target; specials
``<pad>`` = 0, ``<unk>`` = 1, ``<bos>`` = 2, ``<eos>`` = 3, then words by decreasing training
frequency (ties alphabetical).
"""

from __future__ import annotations

import functools
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from adaptopt._optional import require
from adaptopt.data.locate import DatasetCorruptError, find_files, read_lines

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
MULTI30K_FILES = {  # sha256 of the decompressed text (multi30k/dataset, data/task1/raw)
    "train.de": "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72",
    "train.en": "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6",
    "val.de": "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660",
    "val.en": "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227",
    "test_2016_flickr.de": "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16",
    "test_2016_flickr.en": "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182",
}

Pair = tuple[torch.Tensor, torch.Tensor]
Sentences = tuple[tuple[str, ...], ...]


@functools.cache
def _moses(lang: str) -> tuple[Any, Any]:
    """sacremoses' (MosesPunctNormalizer, MosesTokenizer) for ``lang``."""
    moses = require("sacremoses", feature="Multi30k tokenization")
    return moses.MosesPunctNormalizer(lang), moses.MosesTokenizer(lang)


def tokenize(text: str, lang: str) -> list[str]:
    """Lowercase, normalize punctuation and Moses-tokenize one sentence of language ``lang``."""
    normalizer, tokenizer = _moses(lang)
    return tokenizer.tokenize(normalizer.normalize(text.lower()), escape=False)


def tokenize_file(path: Path, lang: str) -> Sentences:
    """``tokenize`` of every line of a text file; cached per file version within the process
    (tokenizing Multi30k takes seconds)."""
    stat = path.stat()
    return _tokenize_file(path.resolve(), lang, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=12)
def _tokenize_file(path: Path, lang: str, size: int, mtime_ns: int) -> Sentences:
    return tuple(tuple(map(sys.intern, tokenize(line, lang))) for line in read_lines(path))


@dataclass
class TranslationData:
    """Sentence pairs ``(src de, tgt en)`` as id tensors wrapped in ``<bos>``/``<eos>``."""

    train: list[Pair]
    valid: list[Pair]
    test: list[Pair]
    vocab: list[str]
    word2idx: dict[str, int]

    def encode(self, tokens: Sequence[str]) -> torch.Tensor:
        """``<bos> tokens <eos>`` as ids (unknown words -> ``<unk>``)."""
        ids = [BOS, *(self.word2idx.get(t, UNK) for t in tokens), EOS]
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """Space-joined tokens up to the first ``<eos>``, skipping ``<bos>`` and ``<pad>``."""
        words = []
        for i in torch.as_tensor(ids).tolist():
            if i == EOS:
                break
            if i not in (BOS, PAD):
                words.append(self.vocab[i])
        return " ".join(words)


def load_multi30k(
    data_dir: str | os.PathLike[str] | None = None, min_freq: int = 3, verify: bool = True
) -> TranslationData:
    """Multi30k task 1 de->en: train 29,000, valid 1,014, test (2016 Flickr) 1,000 pairs.

    ``min_freq`` defaults to 3, the authors' Transformer preprocessing.
    """
    if min_freq < 1:
        raise ValueError(f"min_freq must be >= 1, got {min_freq}")
    paths = find_files(
        "multi30k", list(MULTI30K_FILES), data_dir, checksums=MULTI30K_FILES, verify=verify
    )
    tokens: dict[str, tuple[Sentences, Sentences]] = {}
    for split, stem in SPLITS.items():
        de, en = (tokenize_file(paths[f"{stem}.{lang}"], lang) for lang in ("de", "en"))
        if len(de) != len(en):
            raise DatasetCorruptError(
                f"multi30k {stem}: {len(de)} German lines but {len(en)} English lines"
            )
        tokens[split] = (de, en)
    counts = [Counter(w for sentence in side for w in sentence) for side in tokens["train"]]
    total = counts[0] + counts[1]
    kept = sorted(
        (w for w in total if max(c[w] for c in counts) >= min_freq),
        key=lambda w: (-total[w], w),
    )
    vocab = [*SPECIALS, *kept]
    data = TranslationData([], [], [], vocab, {w: i for i, w in enumerate(vocab)})
    for split, (de, en) in tokens.items():
        getattr(data, split).extend(
            (data.encode(s), data.encode(t)) for s, t in zip(de, en, strict=True)
        )
    return data


def pad_batch(pairs: Sequence[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad with ``<pad>`` = 0 into ``(src[B, S], tgt[B, T])``."""
    src, tgt = zip(*pairs, strict=True)
    return (
        pad_sequence(list(src), batch_first=True, padding_value=PAD),
        pad_sequence(list(tgt), batch_first=True, padding_value=PAD),
    )


def translation_batches(
    pairs: Sequence[Pair],
    batch_size: int,
    generator: torch.Generator | None = None,
    pool: int = 100,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Padded batches of ``pairs``.

    With a ``generator``: shuffle, sort each pool of ``pool * batch_size`` pairs by length
    (little padding, as torchtext's ``BucketIterator``), cut into batches and shuffle their
    order. Without one: the pairs in their given order (evaluation, decoding).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if generator is None:
        batches = [
            list(range(i, min(i + batch_size, len(pairs))))
            for i in range(0, len(pairs), batch_size)
        ]
    else:
        order = torch.randperm(len(pairs), generator=generator).tolist()
        chunk = pool * batch_size
        batches = []
        for start in range(0, len(order), chunk):
            by_length = sorted(
                order[start : start + chunk], key=lambda i: (len(pairs[i][0]), len(pairs[i][1]))
            )
            batches += [by_length[i : i + batch_size] for i in range(0, len(by_length), batch_size)]
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    for batch in batches:
        yield pad_batch([pairs[i] for i in batch])
