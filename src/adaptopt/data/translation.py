"""Multi30k German->English (WMT'16 multimodal task 1) for the paper's Transformer (§5.2).

Preprocessing of the authors' Multi30k runs (their ``preprocess.py -share_vocab``, torchtext's
``Field``/``TranslationDataset``/``Vocab``):

- tokens: spaCy's rule-based tokenizer of the language (``spacy.blank(lang)``: no trained
  pipeline is needed, the tokenizer is rule-based) on each stripped line, every token then
  lowercased (``tokenize(text, lang)``);
- pairs: a pair is dropped when either side is an empty line or has more than ``max_len`` = 100
  tokens, in every split;
- vocabulary: per language, the training words with at least ``min_freq`` = 3 occurrences, by
  decreasing count (ties in code-point order) after the specials ``<unk>`` = 0, ``<blank>``
  (padding) = 1, ``<s>`` = 2, ``</s>`` = 3; the shared table is the English one followed by the
  German words it lacks, in German order.

Each sentence becomes ``<s> tokens </s>``.

Text versions: the training text is the same in every release. The corrected German
validation and test sentences of multi30k/dataset (61 of 1,014 and 150 of 1,000 lines differ)
are the default; ``german="wmt16"`` reads the original WMT'16 ones, which the authors' torchtext
``Multi30k`` downloaded (``wmt16_torchtext/validation.tar.gz`` and
``wmt16_torchtext/test2016.de.original-wmt16.gz`` beside the main files).

Tokenized files are cached on disk (JSON, keyed by the file's SHA-256, the language and the
spaCy version) in ``$ADAPTOPT_CACHE/tokens``, by default ``~/.cache/adaptopt/tokens``; an
empty ``ADAPTOPT_CACHE`` turns the cache off. Tokenizing the corpus takes about 12 s on one
core, paid otherwise by every new process (each run of a study).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
import tarfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch.nn.utils.rnn import pad_sequence

from adaptopt._optional import require
from adaptopt.data.locate import DatasetCorruptError, find_files, read_bytes, read_lines

UNK, PAD, BOS, EOS = 0, 1, 2, 3
SPECIALS = ("<unk>", "<blank>", "<s>", "</s>")
MAX_LEN = 100
SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
MULTI30K_FILES = {  # sha256 of the decompressed text (multi30k/dataset, data/task1/raw)
    "train.de": "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72",
    "train.en": "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6",
    "val.de": "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660",
    "val.en": "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227",
    "test_2016_flickr.de": "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16",
    "test_2016_flickr.en": "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182",
}

WMT16_FILES = {  # the original WMT'16 release, as torchtext's Multi30k downloaded it
    "validation.tar.gz": "a7aa20e9ebd5ba5adce7909498b94410996040857154dab029851af3a866da8c",
    "test2016.de.original-wmt16": (
        "c1d2f544471a7387e37d15f1adf075ff7d6fe57a30840bb969281ae102d24cb1"
    ),
}
WMT16_SUBDIRS = ("wmt16_torchtext", "multi30k/wmt16_torchtext", "Multi30k/wmt16_torchtext")

Pair = tuple[torch.Tensor, torch.Tensor]
Sentences = tuple[tuple[str, ...], ...]


class _Token(Protocol):
    """What ``tokenize`` reads of a spaCy token."""

    @property
    def text(self) -> str: ...


@functools.cache
def _tokenizer(lang: str) -> Callable[[str], Iterable[_Token]]:
    # imported on first use: loading spaCy takes about a second
    spacy = require("spacy", feature="Multi30k tokenization")
    try:
        return spacy.blank(lang).tokenizer
    except ImportError as err:  # spaCy's error for an unknown language code
        raise ValueError(f"spaCy has no tokenizer for language {lang!r}") from err


def tokenize(text: str, lang: str) -> list[str]:
    """Tokens of one line of language ``lang``: spaCy's rule-based tokenizer on the stripped
    line, each token then lowercased (torchtext ``Field(tokenize=..., lower=True)``)."""
    return [token.text.lower() for token in _tokenizer(lang)(text.strip())]


def tokenize_file(path: Path, lang: str) -> Sentences:
    """``tokenize`` of every line of a text file; cached per file version within the process
    (tokenizing Multi30k's training set takes several seconds)."""
    stat = path.stat()
    return _tokenize_file(path.resolve(), lang, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=12)
def _tokenize_file(path: Path, lang: str, size: int, mtime_ns: int) -> Sentences:
    cache = _token_cache_path(path, lang)
    sentences = _read_token_cache(cache) if cache is not None else None
    if sentences is None:
        sentences = [tokenize(line, lang) for line in read_lines(path)]
        if cache is not None:
            _write_token_cache(cache, sentences)
    return tuple(tuple(map(sys.intern, tokens)) for tokens in sentences)


CACHE_ENV_VAR = "ADAPTOPT_CACHE"
_TOKEN_CACHE_FORMAT = 1


def token_cache_dir() -> Path | None:
    """Folder of the tokenization cache; ``None`` when ``$ADAPTOPT_CACHE`` is set empty."""
    root = os.environ.get(CACHE_ENV_VAR)
    if root is None:
        return Path.home() / ".cache" / "adaptopt" / "tokens"
    return Path(root) / "tokens" if root else None


def _token_cache_path(path: Path, lang: str) -> Path | None:
    folder = token_cache_dir()
    if folder is None:
        return None
    spacy = require("spacy", feature="Multi30k tokenization")
    digest = hashlib.sha256(read_bytes(path)).hexdigest()[:32]
    return folder / f"{digest}-{lang}-spacy{spacy.__version__}-v{_TOKEN_CACHE_FORMAT}.json"


def _read_token_cache(cache: Path) -> list[list[str]] | None:
    """The cached sentences, or ``None`` when the file is missing or unreadable (rebuilt)."""
    try:
        sentences = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(sentences, list) or not all(
        isinstance(s, list) and all(isinstance(t, str) for t in s) for s in sentences
    ):
        return None
    return sentences


def _write_token_cache(cache: Path, sentences: list[list[str]]) -> None:
    """Atomic write (a finished file or none); an unwritable cache is skipped."""
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(sentences, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, cache)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _tar_lines(path: Path, member: str) -> list[str]:
    try:
        with tarfile.open(path) as archive:
            file = archive.extractfile(member)
            if file is None:
                raise DatasetCorruptError(f"{path}: cannot read {member}: not a regular file")
            data = file.read()
    except (tarfile.TarError, KeyError) as err:
        raise DatasetCorruptError(f"{path}: cannot read {member}: {err}") from err
    lines = data.decode("utf-8").split("\n")  # as read_lines: newlines only, no final ""
    return lines[:-1] if lines[-1] == "" else lines


def _wmt16_sentences(
    data_dir: str | os.PathLike[str] | None, test_en: Sentences, verify: bool
) -> dict[str, tuple[Sentences, Sentences]]:
    """The ``"valid"`` and ``"test"`` splits of the original WMT'16 release."""
    paths = find_files(
        "multi30k",
        list(WMT16_FILES),
        data_dir,
        subdirs=WMT16_SUBDIRS,
        checksums=WMT16_FILES,
        verify=verify,
    )
    valid = [
        tuple(tuple(tokenize(line, lang)) for line in _tar_lines(paths["validation.tar.gz"], name))
        for lang, name in (("de", "val.de"), ("en", "val.en"))
    ]
    test_de = tokenize_file(paths["test2016.de.original-wmt16"], "de")
    return {"valid": (valid[0], valid[1]), "test": (test_de, test_en)}


def frequent_words(sentences: Iterable[Sequence[str]], min_freq: int) -> list[str]:
    """Words with at least ``min_freq`` occurrences, by decreasing count, ties in code-point
    order, without the specials (torchtext ``Vocab`` order)."""
    counts = Counter(w for sentence in sentences for w in sentence)
    words = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [w for w, c in words if c >= min_freq and w not in SPECIALS]


@dataclass
class TranslationData:
    """Sentence pairs ``(src de, tgt en)`` as id tensors wrapped in ``<s>``/``</s>``."""

    train: list[Pair]
    valid: list[Pair]
    test: list[Pair]
    vocab: list[str]
    word2idx: dict[str, int]

    def encode(self, tokens: Sequence[str]) -> torch.Tensor:
        """``<s> tokens </s>`` as ids (unknown words -> ``<unk>``)."""
        ids = [BOS, *(self.word2idx.get(t, UNK) for t in tokens), EOS]
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """Space-joined tokens up to the first ``</s>``, skipping ``<s>`` and padding."""
        words = []
        for i in torch.as_tensor(ids).tolist():
            if i == EOS:
                break
            if i not in (BOS, PAD):
                words.append(self.vocab[i])
        return " ".join(words)


def load_multi30k(
    data_dir: str | os.PathLike[str] | None = None,
    min_freq: int = 3,
    max_len: int = MAX_LEN,
    verify: bool = True,
    german: str = "corrected",
) -> TranslationData:
    """Multi30k task 1 de->en: train 29,000, valid 1,014, test (2016 Flickr) 1,000 pairs
    (none is longer than 100 tokens), preprocessed as the authors' ``preprocess.py``.

    ``min_freq``: the per-language vocabulary cut; ``max_len``: pairs with a longer side are
    dropped from every split; ``german``: ``"corrected"`` or ``"wmt16"`` validation and test
    sources (see the module doc).
    """
    if german not in ("corrected", "wmt16"):
        raise ValueError(f"german must be 'corrected' or 'wmt16', got {german!r}")
    if min_freq < 1:
        raise ValueError(f"min_freq must be >= 1, got {min_freq}")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    paths = find_files(
        "multi30k", list(MULTI30K_FILES), data_dir, checksums=MULTI30K_FILES, verify=verify
    )
    sentences = {
        split: tuple(tokenize_file(paths[f"{stem}.{lang}"], lang) for lang in ("de", "en"))
        for split, stem in SPLITS.items()
    }
    if german == "wmt16":
        sentences |= _wmt16_sentences(data_dir, sentences["test"][1], verify)
    tokens: dict[str, list[tuple[tuple[str, ...], tuple[str, ...]]]] = {}
    for split, (de, en) in sentences.items():
        if len(de) != len(en):
            raise DatasetCorruptError(
                f"multi30k {split}: {len(de)} German lines but {len(en)} English lines"
            )
        tokens[split] = [
            (s, t)
            for s, t in zip(de, en, strict=True)
            if 0 < len(s) <= max_len and 0 < len(t) <= max_len
        ]
    de_words = frequent_words((s for s, _ in tokens["train"]), min_freq)
    en_words = frequent_words((t for _, t in tokens["train"]), min_freq)
    english = set(en_words)
    vocab = [*SPECIALS, *en_words, *(w for w in de_words if w not in english)]
    data = TranslationData([], [], [], vocab, {w: i for i, w in enumerate(vocab)})
    for split, pairs in tokens.items():
        getattr(data, split).extend((data.encode(s), data.encode(t)) for s, t in pairs)
    return data


def pad_batch(pairs: Sequence[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad with ``<blank>`` (``PAD``) into ``(src[B, S], tgt[B, T])``."""
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
    """Padded batches of ``batch_size`` sentence pairs (the last one may be smaller).

    With a ``generator``, as torchtext's ``BucketIterator(train=True)`` over a dataset without a
    sort key (the authors' loader): shuffle the pairs, cut each run of ``pool * batch_size`` of
    them into consecutive batches and shuffle the order of those batches. No length sorting:
    batches are uniformly random, so their token counts (the scale of a summed loss) vary
    little. Without one: the pairs in their given order (evaluation, decoding).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if pool < 1:
        raise ValueError(f"pool must be >= 1, got {pool}")
    if generator is None:
        order = list(range(len(pairs)))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    else:
        order = torch.randperm(len(pairs), generator=generator).tolist()
        chunk = pool * batch_size
        batches = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            cut = [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
            batches += [cut[i] for i in torch.randperm(len(cut), generator=generator).tolist()]
    for batch in batches:
        yield pad_batch([pairs[i] for i in batch])
