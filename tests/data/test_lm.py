import pytest
import torch

from adaptopt.data import (
    DatasetCorruptError,
    batchify,
    lm_batches,
    lm_windows,
    load_ptb,
    load_wikitext2,
)

from .formats import load_real, write

PTB_TEXT = {  # the PTB format: a leading space per line, trailing "\n"
    "train": " the cat sat \n the <unk> sat on N mats \n",
    "valid": " the cat \n",
    "test": " on the mats sat \n",
}


@pytest.fixture
def tiny_ptb(tmp_path):
    for split, text in PTB_TEXT.items():
        write(tmp_path / "ptb" / f"ptb.{split}.txt", text.encode(), gz=split == "train")
    return tmp_path


def test_tiny_ptb_ids_follow_word_language_model(tiny_ptb):
    corpus = load_ptb(tiny_ptb, verify=False)
    # independent reference: pytorch/examples word_language_model's Dictionary
    vocab: list[str] = []
    expected = {}
    for split, text in PTB_TEXT.items():
        words = [w for line in text.split("\n")[:-1] for w in [*line.split(), "<eos>"]]
        for w in words:
            if w not in vocab:
                vocab.append(w)
        expected[split] = [vocab.index(w) for w in words]
    assert corpus.vocab == vocab
    assert corpus.word2idx == {w: i for i, w in enumerate(vocab)}
    for split in PTB_TEXT:
        ids = getattr(corpus, split)
        assert ids.dtype == torch.long and ids.tolist() == expected[split]


def test_tiny_ptb_fails_the_real_checksums(tiny_ptb):
    with pytest.raises(DatasetCorruptError, match="fcea919f6cf83f35"):
        load_ptb(tiny_ptb)


def test_batchify_columns_are_contiguous_streams():
    ids = torch.arange(23)
    data = batchify(ids, 4)
    assert data.shape == (5, 4)
    for j in range(4):
        assert data[:, j].tolist() == list(range(5 * j, 5 * j + 5))
    with pytest.raises(ValueError, match="batch_size"):
        batchify(ids, 24)
    with pytest.raises(ValueError, match="1-d"):
        batchify(data, 2)


def test_fixed_length_windows_cover_the_stream_with_shifted_targets():
    data = batchify(torch.arange(100), 2)  # [50, 2]
    windows = list(lm_batches(data, bptt=7))
    assert [len(x) for x, _ in windows] == [7] * 7
    assert torch.equal(torch.cat([x for x, _ in windows]), data[:-1])
    assert torch.equal(torch.cat([y for _, y in windows]), data[1:])
    with pytest.raises(ValueError, match="bptt"):
        next(lm_batches(data, 0))


def test_random_lengths_follow_awd_lstm_and_are_seeded():
    data = batchify(torch.arange(400_000), 4)
    bptt = 70

    def windows(seed):
        return list(lm_windows(data, bptt, torch.Generator().manual_seed(seed), True))

    first = windows(0)
    drawn = torch.tensor([w.seq_len for w in first], dtype=torch.float64)
    # consecutive windows: each starts where the previous drawn length ends
    start = 0
    for w in first:
        n = min(w.seq_len, len(data) - 1 - start)
        assert torch.equal(w.x, data[start : start + n])
        assert torch.equal(w.y, data[start + 1 : start + 1 + n])
        start += w.seq_len
    assert [w.seq_len for w in windows(0)] == drawn.tolist()
    assert not torch.equal(drawn[:50], torch.tensor([w.seq_len for w in windows(1)[:50]]))
    assert drawn.min() >= 5
    # mixture: 95% N(70, 5), 5% N(35, 5) (truncated to int): mean ~ 68.0, short mode ~ 5%
    assert abs(drawn.mean().item() - (0.95 * 69.5 + 0.05 * 34.5)) < 1.0
    assert 0.03 < (drawn < 52).double().mean().item() < 0.07
    pairs = list(lm_batches(data, bptt, torch.Generator().manual_seed(0), random_length=True))
    assert all(
        torch.equal(x, w.x) and torch.equal(y, w.y) for (x, y), w in zip(pairs, first, strict=True)
    )


def test_random_length_windows_stop_as_awd_lstm_training_does():
    """Windows start while i < T − 2; the last is cut to the data but keeps its drawn length.

    The drawn lengths do not depend on the data, so a stream cut to T rows replays the same
    windows: T = s_k + 2 puts window k's start at T − 2 (not yielded), T = s_k + 3 at T − 3
    (yielded, two rows long)."""
    data = batchify(torch.arange(4_000), 4)
    full = list(lm_windows(data, 20, torch.Generator().manual_seed(0), True))
    starts = torch.tensor([0] + [w.seq_len for w in full]).cumsum(0).tolist()
    k = 4
    for rows, count, last_len in ((starts[k] + 2, k, None), (starts[k] + 3, k + 1, 2)):
        cut = list(lm_windows(data[:rows], 20, torch.Generator().manual_seed(0), True))
        assert len(cut) == count
        assert [w.seq_len for w in cut] == [w.seq_len for w in full[:count]]
        if last_len is not None:
            assert len(cut[-1].x) == last_len < cut[-1].seq_len
            assert torch.equal(cut[-1].y, data[rows - 2 : rows])
    # negative control: fixed-length (evaluation) windows run while a target row remains
    assert [len(x) for x, _ in lm_batches(data[:15], 7)] == [7, 7]
    assert [len(x) for x, _ in lm_batches(data[:16], 7)] == [7, 7, 1]
    assert [w.seq_len for w in lm_windows(data[:16], 7)] == [7, 7, 7]


def test_real_ptb_counts_match_the_readme():
    corpus = load_real(load_ptb)
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (929_589, 73_760, 82_430)
    assert len(corpus.vocab) == 10_000
    assert {"<unk>", "N", "<eos>"} <= corpus.word2idx.keys()
    assert int(corpus.train.max()) == 9_999  # closed vocabulary: train holds every word


def test_real_wikitext2_counts_match_the_readme():
    corpus = load_real(load_wikitext2)
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (
        2_088_628,
        217_646,
        245_569,
    )
    assert len(corpus.vocab) == 33_278
    assert int((corpus.train == corpus.word2idx["<unk>"]).sum()) == 54_625
