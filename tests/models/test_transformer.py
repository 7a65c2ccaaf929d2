import math

import pytest
import torch

from adaptopt.models import Seq2SeqTransformer, TransformerLM
from adaptopt.models.transformer import (
    beam_search,
    greedy_decode,
    label_smoothed_nll,
    noam_lambda,
)

PAD, BOS, EOS = 0, 1, 2


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tiny_seq2seq(vocab: int = 23) -> Seq2SeqTransformer:
    torch.manual_seed(0)
    return Seq2SeqTransformer(vocab, d_model=16, nhead=2, num_layers=2, dim_feedforward=32)


def test_base_model_parameter_count():
    v, d, f, n = 9529, 512, 2048, 6
    attention = 4 * d * d + 4 * d
    feed_forward = 2 * d * f + f + d
    norm = 2 * d
    expected = (
        v * d
        + 2 * norm
        + n * (attention + feed_forward + 2 * norm)
        + n * (2 * attention + feed_forward + 3 * norm)
    )
    with torch.device("meta"):
        assert n_params(Seq2SeqTransformer(v)) == expected


def test_seq2seq_shapes_and_shared_embedding():
    model = tiny_seq2seq()
    src, tgt = torch.randint(3, 23, (3, 7)), torch.randint(3, 23, (3, 5))
    logits = model(src, tgt)
    assert logits.shape == (3, 5, 23)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert [n for n, p in model.named_parameters() if p.shape == (23, 16)] == ["embedding.weight"]


def test_source_padding_and_future_targets_do_not_change_logits():
    model = tiny_seq2seq().eval()
    src, tgt = torch.randint(3, 23, (2, 6)), torch.randint(3, 23, (2, 5))
    logits = model(src, tgt)
    padded = torch.cat([src, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model(padded, tgt), logits)
    changed = tgt.clone()
    changed[:, 3:] = 4
    torch.testing.assert_close(model(src, changed)[:, :3], logits[:, :3])


def test_label_smoothed_nll_equals_hand_computation():
    logits = torch.tensor([[[1.0, 2.0, 0.5, -1.0], [0.0, 0.0, 3.0, 1.0], [2.0, 1.0, 1.0, 1.0]]])
    target = torch.tensor([[1, 2, PAD]])
    eps, v = 0.1, 4
    expected = 0.0
    for row, y in ((logits[0, 0].tolist(), 1), (logits[0, 1].tolist(), 2)):
        log_z = math.log(sum(math.exp(z) for z in row))
        log_p = [z - log_z for z in row]
        expected += -(1 - eps) * log_p[y] - eps / v * sum(log_p)
    expected /= 2  # mean over the two non-padding targets
    assert label_smoothed_nll(logits, target, PAD, eps).item() == pytest.approx(expected, rel=1e-6)


def test_noam_schedule_peaks_at_warmup():
    d, w = 512, 100
    f = noam_lambda(d, w)
    values = [f(step) for step in range(300)]
    assert values[0] == pytest.approx(d**-0.5 * w**-1.5)
    assert max(range(300), key=values.__getitem__) == w - 1  # optimizer step s = w
    assert values[w - 1] == pytest.approx(d**-0.5 * w**-0.5)
    assert values[299] == pytest.approx(d**-0.5 * 300**-0.5)
    with pytest.raises(ValueError, match="warmup_steps"):
        noam_lambda(d, 0)


def test_beam_of_one_equals_greedy():
    model = tiny_seq2seq().eval()
    src = torch.randint(3, 23, (5, 6))
    src[1, 4:] = PAD
    greedy = greedy_decode(model, src, bos=BOS, eos=EOS, max_len=12)
    beam = beam_search(model, src, bos=BOS, eos=EOS, beam_size=1, max_len=12)
    assert torch.equal(beam, greedy)


def test_decoding_output_layout():
    model = tiny_seq2seq().eval()
    src = torch.randint(3, 23, (4, 5))
    for out in (
        greedy_decode(model, src, bos=BOS, eos=EOS, max_len=9),
        beam_search(model, src, bos=BOS, eos=EOS, beam_size=3, max_len=9),
    ):
        assert out.size(0) == 4 and out.size(1) <= 10
        assert (out[:, 0] == BOS).all() and (out[:, 1:] != BOS).all()
        for row in out[:, 1:].tolist():
            end = row.index(EOS) + 1 if EOS in row else len(row)
            assert PAD not in row[:end] and set(row[end:]) <= {PAD}


def test_beam_search_finds_the_better_of_two_paths():
    """A model where greedy's first choice leads to low-probability continuations."""

    class Toy(torch.nn.Module):
        pad_id = PAD

        def encode(self, src):
            return src.new_zeros(src.size(0), 1, 1, dtype=torch.float32), src == PAD

        def decode(self, tgt, memory, src_pad):
            return tgt.float()[..., None]

        def logits(self, h):
            last = h[..., 0].long()
            out = torch.full((*last.shape, 5), -30.0)
            out[last == BOS] = torch.tensor([-30.0, -30.0, -30.0, 0.0, -0.2])  # 3 > 4 by a hair
            out[last == 3] = torch.log(torch.tensor([1e-9, 1e-9, 0.3, 0.35, 0.35]))
            out[last == 4] = torch.log(torch.tensor([1e-9, 1e-9, 0.98, 0.01, 0.01]))
            return out

    src = torch.ones(1, 1, dtype=torch.long)
    greedy = greedy_decode(Toy(), src, bos=BOS, eos=EOS, max_len=2)
    beam = beam_search(Toy(), src, bos=BOS, eos=EOS, beam_size=2, max_len=2)
    assert greedy[0, 1].item() == 3
    assert beam[0].tolist() == [BOS, 4, EOS]


def test_transformer_lm_tutorial_size_and_causality():
    v, d = 33_278, 200
    layer = (4 * d * d + 4 * d) + (2 * d * 200 + 200 + d) + 4 * d
    with torch.device("meta"):
        assert n_params(TransformerLM(v)) == 2 * v * d + v + 2 * layer
    torch.manual_seed(0)
    model = TransformerLM(30, d_model=16, nhead=2, dim_feedforward=16).eval()
    tokens = torch.randint(0, 30, (2, 8))
    logits = model(tokens)
    assert logits.shape == (2, 8, 30)
    changed = tokens.clone()
    changed[:, 5:] = 0
    torch.testing.assert_close(model(changed)[:, :5], logits[:, :5])
