import gzip
import io
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import spacy
import torch

from adaptopt.data import (
    DatasetCorruptError,
    find_files,
    load_multi30k,
    pad_batch,
    tokenize,
    translation,
    translation_batches,
)
from adaptopt.data.translation import BOS, EOS, PAD, SPECIALS, UNK, tokenize_file

from .formats import load_real, write

# German: "hund" x2, "katze" x1, "." x3; English: "a" x3, "dog" x2, "." x3, "cat" x1
TRAIN_DE = ["Ein Hund läuft.", "Der Hund schläft.", "Eine Katze."]
TRAIN_EN = ["A dog runs.", "The dog sleeps.", "A cat, katze."]


def write_multi30k(folder, de=TRAIN_DE, en=TRAIN_EN, splits=("train", "val", "test_2016_flickr")):
    for stem in ("train", "val", "test_2016_flickr"):
        for lang, lines in (("de", de), ("en", en)):
            lines = lines if stem in splits else lines[:1]
            text = "".join(line + "\n" for line in lines)
            write(folder / f"{stem}.{lang}", text.encode(), gz=True)


def test_tokenizer_is_spacy_then_lowercase():
    assert tokenize("  Ein Mann's Hund, der „Rex“ heißt, z.B. im Park.\n", "de") == [
        "ein", "mann's", "hund", ",", "der", "„", "rex", "“", "heißt", ",", "z.b.", "im",
        "park", ".",
    ]  # fmt: skip
    # English splits clitics; abbreviations stay whole; an extra space is a token of its own
    assert tokenize("A man's dog doesn't sit, Mr. Smith.", "en") == [
        "a", "man", "'s", "dog", "does", "n't", "sit", ",", "mr.", "smith", ".",
    ]  # fmt: skip
    assert tokenize("Two  dogs.", "en") == ["two", " ", "dogs", "."]
    # tokenized before lowercasing: the rule for "can't" only matches these spellings
    assert tokenize("I can't", "en") == ["i", "ca", "n't"]
    assert tokenize("I CAN'T", "en") == ["i", "can't"]
    with pytest.raises(ValueError, match="no tokenizer for language 'xx1'"):
        tokenize("a", "xx1")


def _fresh_tokenize_file(path, lang):
    """``tokenize_file`` as a new process sees it: no tokenized file in memory."""
    translation._tokenize_file.cache_clear()
    return tokenize_file(path, lang)


def test_tokenized_files_are_cached_on_disk(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ADAPTOPT_CACHE", str(cache))
    text = write(tmp_path / "train.de", "".join(line + "\n" for line in TRAIN_DE).encode(), gz=True)
    expected = tuple(tuple(tokenize(line, "de")) for line in TRAIN_DE)
    assert _fresh_tokenize_file(text, "de") == expected
    (entry,) = (cache / "tokens").iterdir()
    assert f"-de-spacy{spacy.__version__}-" in entry.name

    def no_spacy(lang):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(translation, "_tokenizer", no_spacy)
    assert _fresh_tokenize_file(text, "de") == expected  # read back without spaCy
    # a damaged entry is rebuilt, not trusted; negative control: spaCy is needed again
    entry.write_text('[["ein", "hund"', encoding="utf-8")
    with pytest.raises(AssertionError, match="tokenized again"):
        _fresh_tokenize_file(text, "de")
    monkeypatch.undo()
    monkeypatch.setenv("ADAPTOPT_CACHE", str(cache))
    assert _fresh_tokenize_file(text, "de") == expected
    assert _fresh_tokenize_file(text, "de") == expected
    # the key is the content: an edited file (same name) is tokenized afresh
    write(text, b"Die Katze schl\xc3\xa4ft.\n", gz=False)
    assert _fresh_tokenize_file(text, "de") == (("die", "katze", "schläft", "."),)
    assert len(list((cache / "tokens").iterdir())) == 2
    # the same text in the other language is another entry
    assert _fresh_tokenize_file(text, "en") == (tuple(tokenize("Die Katze schläft.", "en")),)
    assert len(list((cache / "tokens").iterdir())) == 3


def test_an_empty_cache_variable_turns_the_cache_off(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTOPT_CACHE", "")
    monkeypatch.chdir(tmp_path)
    text = write(tmp_path / "train.en", b"A dog.\n")
    assert _fresh_tokenize_file(text, "en") == (("a", "dog", "."),)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["train.en"]
    assert not (Path.home() / ".cache").exists()


def test_an_unwritable_cache_is_skipped(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ADAPTOPT_CACHE", str(blocker))
    text = write(tmp_path / "train.en", b"A dog.\n")
    assert _fresh_tokenize_file(text, "en") == (("a", "dog", "."),)
    assert blocker.read_text() == "not a folder"


def test_vocabulary_is_the_english_table_then_the_missing_german_words(tmp_path):
    write_multi30k(tmp_path / "multi30k")
    data = load_multi30k(tmp_path, min_freq=2, verify=False)
    assert tuple(data.vocab[:4]) == SPECIALS and (UNK, PAD, BOS, EOS) == (0, 1, 2, 3)
    # English >= 2: "." 3, "a" 3, "dog" 2 (count order, ties by code point);
    # German >= 2: "." 3, "hund" 2, of which "." is already in the table
    assert data.vocab[4:] == [".", "a", "dog", "hund"]
    assert "katze" not in data.word2idx  # once per language: below the cut in each
    src, tgt = data.train[0]
    assert src.tolist() == [BOS, UNK, data.word2idx["hund"], UNK, data.word2idx["."], EOS]
    assert data.decode(tgt) == "a dog <unk> ."
    assert data.decode([BOS, data.word2idx["dog"], EOS, data.word2idx["a"], PAD]) == "dog"
    assert len(data.train) == len(data.valid) == len(data.test) == 3
    english = {"a", "dog", "runs", "the", "sleeps", "cat", ",", "katze", "."}
    german = {"ein", "hund", "läuft", "der", "schläft", "eine", "katze", "."}
    assert len(load_multi30k(tmp_path, min_freq=1, verify=False).vocab) == 4 + len(english | german)
    with pytest.raises(ValueError, match="min_freq"):
        load_multi30k(tmp_path, min_freq=0, verify=False)
    with pytest.raises(ValueError, match="max_len"):
        load_multi30k(tmp_path, max_len=0, verify=False)


def test_long_and_empty_pairs_are_dropped_from_every_split(tmp_path):
    long_de = " ".join(["hund"] * 101)  # 101 tokens
    limit_en = " ".join(["dog"] * 100)  # 100 tokens: kept
    de = [*TRAIN_DE, long_de, "Ein Hund.", "  ", "Hund " * 100]
    en = [*TRAIN_EN, "A dog.", "", "A dog.", limit_en]
    write_multi30k(tmp_path / "multi30k", de, en)
    data = load_multi30k(tmp_path, min_freq=1, verify=False)
    for pairs in (data.train, data.valid, data.test):  # drops: long German, empty lines
        assert len(pairs) == 4
        assert [len(t) - 2 for _, t in pairs] == [4, 4, 5, 100]
    assert len(load_multi30k(tmp_path, min_freq=1, max_len=101, verify=False).train) == 5
    # words of dropped training pairs do not count: "hund" and "dog" 2 + 100 times in the
    # kept pairs (204 and 104 times with the dropped ones)
    assert load_multi30k(tmp_path, min_freq=103, verify=False).vocab == list(SPECIALS)
    assert load_multi30k(tmp_path, min_freq=102, verify=False).vocab == [*SPECIALS, "dog", "hund"]


def _write_wmt16(folder, val_de, val_en, test_de):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, lines in (("val.de", val_de), ("val.en", val_en)):
            text = "".join(line + "\n" for line in lines).encode()
            info = tarfile.TarInfo(name)
            info.size = len(text)
            archive.addfile(info, io.BytesIO(text))
    write(folder / "validation.tar.gz", buffer.getvalue())
    write(
        folder / "test2016.de.original-wmt16", "".join(f"{x}\n" for x in test_de).encode(), gz=True
    )


def test_wmt16_german_replaces_the_validation_and_test_sources(tmp_path):
    write_multi30k(tmp_path / "multi30k")
    old_val = ["Ein alter Hund.", "Der Hund.", "Eine Katze.", ""]  # with the WMT'16 empty line
    _write_wmt16(tmp_path / "multi30k" / "wmt16_torchtext", old_val, [*TRAIN_EN, ""], ["Hund."] * 3)
    new = load_multi30k(tmp_path, min_freq=1, verify=False)
    old = load_multi30k(tmp_path, min_freq=1, verify=False, german="wmt16")
    assert old.vocab == new.vocab and len(old.valid) == len(old.test) == 3
    assert all(torch.equal(a[0], b[0]) for a, b in zip(old.train, new.train, strict=True))
    assert [old.decode(s) for s, _ in old.valid] == [
        "ein <unk> hund .",
        "der hund .",
        "eine katze .",
    ]
    assert [old.decode(t) for _, t in old.valid] == [new.decode(t) for _, t in new.valid]
    assert [old.decode(s) for s, _ in old.test] == ["hund ."] * 3
    assert [old.decode(t) for _, t in old.test] == [new.decode(t) for _, t in new.test]
    with pytest.raises(ValueError, match="german"):
        load_multi30k(tmp_path, german="old", verify=False)
    with pytest.raises(DatasetCorruptError, match="sha256"):
        load_multi30k(tmp_path, german="wmt16")


def test_misaligned_files_are_reported(tmp_path):
    write_multi30k(tmp_path, en=TRAIN_EN[:2])
    with pytest.raises(DatasetCorruptError, match="3 German lines but 2 English"):
        load_multi30k(tmp_path, verify=False)
    with pytest.raises(DatasetCorruptError, match="sha256"):
        load_multi30k(tmp_path)


def make_pairs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 30, (n, 2), generator=g).tolist()
    return [(torch.full((s,), i + 4), torch.full((t,), i + 4)) for i, (s, t) in enumerate(lengths)]


def test_pad_batch_right_pads_with_the_padding_id():
    src, tgt = pad_batch([(torch.tensor([5, 6, 7]), torch.tensor([8])), (torch.tensor([9]),) * 2])
    assert src.tolist() == [[5, 6, 7], [9, PAD, PAD]]
    assert tgt.tolist() == [[8], [9]]


def test_translation_batches_cover_every_pair_once_and_are_seeded():
    pairs = make_pairs(250)

    def epoch(seed):
        g = torch.Generator().manual_seed(seed)
        return list(translation_batches(pairs, 16, g, pool=4))

    batches = epoch(0)
    assert [len(src) for src, _ in batches].count(16) == 15  # 250 = 15 x 16 + 10
    ids = sorted(int(src[k, 0]) - 4 for src, _ in batches for k in range(len(src)))
    assert ids == list(range(250))
    for src, tgt in batches:  # each row is one intact pair
        for row_src, row_tgt in zip(src, tgt, strict=True):
            i = int(row_src[0]) - 4
            assert torch.equal(row_src[row_src != PAD], pairs[i][0])
            assert torch.equal(row_tgt[row_tgt != PAD], pairs[i][1])
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, epoch(0), strict=True))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(batches, epoch(1), strict=False))
    # the partial batch stays in the last pool (4 x 16 pairs): among the last 250 - 192 pairs
    assert [len(src) for src, _ in batches].index(10) >= 12
    plain = list(translation_batches(pairs, 16))
    assert [int(s[k, 0]) - 4 for s, _ in plain for k in range(len(s))] == list(range(250))
    with pytest.raises(ValueError, match="batch_size"):
        next(translation_batches(pairs, 0))


def test_training_batches_are_not_sorted_by_length():
    """Uniformly random batches: the source lengths inside a batch spread as in the whole set
    (sorting pools by length, torchtext's bucketing with a sort key, would give ~0)."""
    pairs = make_pairs(1600)
    batches = list(translation_batches(pairs, 32, torch.Generator().manual_seed(0)))
    overall = torch.tensor([len(s) for s, _ in pairs], dtype=torch.float).std()
    spread = torch.stack([(s != PAD).sum(1).float().std() for s, _ in batches])
    assert spread.mean() > 0.8 * overall


def _raw_lines(stem: str, lang: str) -> list[str]:
    name = f"{stem}.{lang}"
    path = load_real(lambda data_dir: find_files("multi30k", [name], data_dir))[name]
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\n") for line in f]


def test_real_multi30k_matches_counts_taken_from_the_raw_files():
    data = load_real(load_multi30k)
    nlp = {lang: spacy.blank(lang) for lang in ("de", "en")}
    raw = {}
    for split, stem in (("train", "train"), ("valid", "val"), ("test", "test_2016_flickr")):
        de, en = (
            [[t.text.lower() for t in doc] for doc in nlp[lang].tokenizer.pipe(
                line.strip() for line in _raw_lines(stem, lang))]
            for lang in ("de", "en")
        )  # fmt: skip
        aligned = zip(de, en, strict=True)
        raw[split] = [(s, t) for s, t in aligned if 0 < len(s) <= 100 and 0 < len(t) <= 100]
        pairs = getattr(data, split)
        assert len(pairs) == len(raw[split]) == len(de)  # no pair is too long or empty
        assert sum(len(s) - 2 for s, _ in pairs) == sum(len(s) for s, _ in raw[split])
        assert sum(len(t) - 2 for _, t in pairs) == sum(len(t) for _, t in raw[split])
        assert all(s[0] == BOS and s[-1] == EOS and t[0] == BOS and t[-1] == EOS for s, t in pairs)
    assert (len(data.train), len(data.valid), len(data.test)) == (29_000, 1_014, 1_000)
    counts = [Counter(w for pair in raw["train"] for w in pair[side]) for side in (0, 1)]
    de_words, en_words = ({w for w, c in side.items() if c >= 3} for side in counts)
    vocab = data.vocab
    assert len(vocab) == len(set(vocab)) == 4 + len(en_words | de_words)
    english, german = vocab[4 : 4 + len(en_words)], vocab[4 + len(en_words) :]
    assert set(english) == en_words and set(german) == de_words - en_words
    for words, count in ((english, counts[1]), (german, counts[0])):
        keys = [(-count[w], w) for w in words]
        assert keys == sorted(keys)
    for (src, tgt), (de, en) in zip(data.valid, raw["valid"], strict=True):
        assert [vocab[i] for i in src[1:-1]] == [w if w in data.word2idx else "<unk>" for w in de]
        assert data.decode(tgt) == " ".join(w if w in data.word2idx else "<unk>" for w in en)
    assert data.decode(data.train[0][1]) == "two young , white males are outside near many bushes ."


def test_real_wmt16_german_differs_where_the_raw_files_differ():
    data = load_real(load_multi30k, german="wmt16")
    path = load_real(
        lambda data_dir: find_files(
            "multi30k", ["validation.tar.gz"], data_dir, subdirs=["multi30k/wmt16_torchtext"]
        )
    )["validation.tar.gz"]
    with tarfile.open(path) as archive:
        old = archive.extractfile("val.de").read().decode().split("\n")
    new = _raw_lines("val", "de")
    assert old[len(new) :] == ["", ""]  # one empty last line, dropped as an empty pair
    nlp = spacy.blank("de")
    for line, (src, _) in zip(old, data.valid, strict=False):
        expected = [t.text.lower() for t in nlp(line.strip())]
        assert data.decode(src) == " ".join(w if w in data.word2idx else "<unk>" for w in expected)
    assert sum(a != b for a, b in zip(old, new, strict=False)) == 61
    assert len(data.valid) == 1_014 and len(data.test) == 1_000
