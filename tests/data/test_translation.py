import pytest
import torch

from adaptopt.data import (
    DatasetCorruptError,
    load_multi30k,
    pad_batch,
    tokenize,
    translation_batches,
)
from adaptopt.data.translation import BOS, EOS, PAD, SPECIALS, UNK

from .formats import load_real, write

# "hund" occurs twice in German only, "katze" once per language (twice in total).
TRAIN_DE = ["Ein Hund läuft.", "Der Hund schläft.", "Eine Katze."]
TRAIN_EN = ["A dog runs.", "The dog sleeps.", "A cat, katze."]


def write_multi30k(folder, de=TRAIN_DE, en=TRAIN_EN):
    for stem in ("train", "val", "test_2016_flickr"):
        for lang, lines in (("de", de), ("en", en)):
            text = "".join(line + "\n" for line in lines)
            write(folder / f"{stem}.{lang}", text.encode(), gz=True)


def test_tokenizer_is_the_lowercased_moses_pipeline():
    assert tokenize("Ein Mann's Hund, der „Rex“ heißt.", "de") == [
        "ein",
        "mann",
        "'",
        "s",
        "hund",
        ",",
        "der",
        '"',
        "rex",
        '"',
        "heißt",
        ".",
    ]
    # German splits every apostrophe, English keeps the clitic "'s"; quotes are normalized
    assert tokenize("A man's dog & a cat.", "en") == ["a", "man", "'s", "dog", "&", "a", "cat", "."]


def test_shared_vocabulary_uses_the_per_language_frequency_cut(tmp_path):
    write_multi30k(tmp_path / "multi30k")
    data = load_multi30k(tmp_path, min_freq=2, verify=False)
    assert tuple(data.vocab[:4]) == SPECIALS and (PAD, UNK, BOS, EOS) == (0, 1, 2, 3)
    # counts >= 2 within one language: "." (3+3), hund (2 de), a (3 en), dog (2 en)
    assert set(data.vocab[4:]) == {".", "hund", "a", "dog"}
    assert data.vocab[4] == "."  # most frequent first
    assert "katze" not in data.word2idx  # 1 + 1 occurrences: below the cut in each language
    src, tgt = data.train[0]
    assert src.tolist() == [BOS, UNK, data.word2idx["hund"], UNK, data.word2idx["."], EOS]
    assert data.decode(tgt) == "a dog <unk> ."
    assert data.decode([BOS, data.word2idx["dog"], EOS, data.word2idx["a"], PAD]) == "dog"
    assert len(data.train) == len(data.valid) == len(data.test) == 3
    assert len(load_multi30k(tmp_path, min_freq=1, verify=False).vocab) == 4 + 15
    with pytest.raises(ValueError, match="min_freq"):
        load_multi30k(tmp_path, min_freq=0, verify=False)


def test_misaligned_files_are_reported(tmp_path):
    write_multi30k(tmp_path, en=TRAIN_EN[:2])
    with pytest.raises(DatasetCorruptError, match="3 German lines but 2 English"):
        load_multi30k(tmp_path, verify=False)
    with pytest.raises(DatasetCorruptError, match="sha256"):
        load_multi30k(tmp_path)


def make_pairs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 30, (n, 2), generator=g).tolist()
    return [(torch.full((s,), i + 1), torch.full((t,), i + 1)) for i, (s, t) in enumerate(lengths)]


def test_pad_batch_right_pads_with_zero():
    src, tgt = pad_batch([(torch.tensor([5, 6, 7]), torch.tensor([8])), (torch.tensor([9]),) * 2])
    assert src.tolist() == [[5, 6, 7], [9, 0, 0]]
    assert tgt.tolist() == [[8], [9]]


def test_translation_batches_cover_every_pair_once_and_are_seeded():
    pairs = make_pairs(250)

    def epoch(seed):
        g = torch.Generator().manual_seed(seed)
        return list(translation_batches(pairs, 16, g, pool=4))

    batches = epoch(0)
    ids = sorted(int(src[k, 0]) - 1 for src, _ in batches for k in range(len(src)))
    assert ids == list(range(250))
    for src, tgt in batches:  # each row is one intact pair
        for row_src, row_tgt in zip(src, tgt, strict=True):
            i = int(row_src[0]) - 1
            assert torch.equal(row_src[row_src != PAD], pairs[i][0])
            assert torch.equal(row_tgt[row_tgt != PAD], pairs[i][1])
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, epoch(0), strict=True))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(batches, epoch(1), strict=False))
    # length bucketing pads less than the given order
    padded = sum(src.numel() for src, _ in batches)
    plain = list(translation_batches(pairs, 16))
    assert [int(s[k, 0]) - 1 for s, _ in plain for k in range(len(s))] == list(range(250))
    assert padded < 0.8 * sum(src.numel() for src, _ in plain)


def test_real_multi30k_reproduces_the_published_moses_token_counts():
    data = load_real(load_multi30k)
    assert (len(data.train), len(data.valid), len(data.test)) == (29_000, 1_014, 1_000)
    # word counts of the authors' data/task1/tok/*.lc.norm.tok.* files (multi30k/dataset README)
    expected = {"train": (360_706, 377_534), "valid": (12_828, 13_308), "test": (12_103, 12_968)}
    for split, (n_de, n_en) in expected.items():
        pairs = getattr(data, split)
        assert sum(len(s) - 2 for s, _ in pairs) == n_de
        assert sum(len(t) - 2 for _, t in pairs) == n_en
        assert all(s[0] == BOS and s[-1] == EOS and t[0] == BOS and t[-1] == EOS for s, t in pairs)
    assert len(data.vocab) == len(set(data.vocab))
    assert data.decode(data.train[0][1]) == "two young , white males are outside near many bushes ."
