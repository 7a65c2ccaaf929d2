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
    """The authors' model: bias-free attention projections, biased feed-forward layers."""
    v, d, f, n = 9521, 512, 2048, 6
    norm = 2 * d
    attention = 4 * d * d + norm
    feed_forward = 2 * d * f + f + d + norm
    encoder, decoder = attention + feed_forward, 2 * attention + feed_forward
    expected = v * d + 2 * norm + n * (encoder + decoder)
    with torch.device("meta"):
        assert n_params(Seq2SeqTransformer(v)) == expected


def test_every_projection_is_xavier_initialised_on_its_own():
    torch.manual_seed(0)
    model = Seq2SeqTransformer(1000, d_model=64, nhead=4, num_layers=1, dim_feedforward=128)
    bound = (6 / (64 + 64)) ** 0.5  # fused [3d, d] q/k/v would give (6 / 256) ** 0.5
    for name in ("w_q", "w_k", "w_v", "w_o"):
        w = getattr(model.encoder[0].self_attn, name).weight
        assert w.abs().max() <= bound and w.abs().max() > 0.97 * bound
        assert getattr(model.encoder[0].self_attn, name).bias is None
    emb = model.embedding.weight
    assert emb[PAD].abs().sum() > 0  # the authors' init overwrites the zero padding row
    assert emb.abs().max() <= (6 / 1064) ** 0.5 and emb.abs().max() > 0.97 * (6 / 1064) ** 0.5
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 + 2 + 3 and all(m.eps == 1e-6 for m in norms)


def _reference_forward(model: Seq2SeqTransformer, src: torch.Tensor, tgt: torch.Tensor):
    """The authors' Transformer written out with their masks (-1e9 fill, target padding
    masked too) from ``model``'s weights, in eval mode."""
    d, emb = model.d_model, model.embedding.weight

    def positions(n):
        pos = torch.arange(n, dtype=torch.float64)[:, None]
        j = torch.arange(d)
        angle = pos / torch.pow(10000.0, 2 * (j // 2) / d)
        return torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))

    def layer_norm(x, ln):
        mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-6) * ln.weight + ln.bias

    def attention(att, q_in, kv_in, mask):
        h = att.nhead
        split = lambda x: x.view(x.size(0), x.size(1), h, -1).transpose(1, 2)  # noqa: E731
        q, k, v = (
            split(q_in @ att.w_q.weight.T),
            split(kv_in @ att.w_k.weight.T),
            split(kv_in @ att.w_v.weight.T),
        )
        scores = (q / (q.size(-1) ** 0.5)) @ k.transpose(2, 3)
        scores = scores.masked_fill(mask[:, None] == 0, -1e9)
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(q_in.shape)
        return layer_norm(out @ att.w_o.weight.T + q_in, att.norm)

    def ffn(ff, x):
        hidden = torch.relu(x @ ff.w_1.weight.T + ff.w_1.bias)
        return layer_norm(hidden @ ff.w_2.weight.T + ff.w_2.bias + x, ff.norm)

    src_mask = (src != model.pad_id)[:, None, :]
    t = tgt.size(1)
    tgt_mask = (tgt != model.pad_id)[:, None, :] & torch.ones(t, t).tril().bool()[None]
    x = layer_norm(emb[src] + positions(src.size(1)), model.src_norm)
    for layer in model.encoder:
        x = ffn(layer.feed_forward, attention(layer.self_attn, x, x, src_mask))
    y = layer_norm(emb[tgt] + positions(t), model.tgt_norm)
    for layer in model.decoder:
        y = attention(layer.self_attn, y, y, tgt_mask)
        y = ffn(layer.feed_forward, attention(layer.cross_attn, y, x, src_mask))
    return (y @ emb.T) * d**-0.5


def test_forward_equals_the_authors_architecture_written_out():
    torch.manual_seed(0)
    model = Seq2SeqTransformer(23, d_model=16, nhead=2, num_layers=2, dim_feedforward=32)
    model = model.double().eval()
    src, tgt = torch.randint(4, 23, (3, 7)), torch.randint(4, 23, (3, 5))
    src[1, 5:], tgt[2, 3:] = PAD, PAD
    logits, reference = model(src, tgt), _reference_forward(model, src, tgt)
    real = tgt != PAD  # outputs at padded target positions are never used
    # the position table is computed in float32: agreement to ~1e-8
    torch.testing.assert_close(logits[real], reference[real], rtol=1e-6, atol=1e-6)
    # negative control: the same weights with the embedding scaled by sqrt(d) differ
    with torch.no_grad():
        model.embedding.weight.mul_(4.0)
    assert not torch.allclose(model(src, tgt)[real], reference[real], atol=1e-3)


def test_seq2seq_shapes_and_shared_embedding():
    model = tiny_seq2seq()
    src, tgt = torch.randint(3, 23, (3, 7)), torch.randint(3, 23, (3, 5))
    logits = model(src, tgt)
    assert logits.shape == (3, 5, 23)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert [n for n, p in model.named_parameters() if p.shape == (23, 16)] == ["embedding.weight"]
    assert (len(model.encoder), len(model.decoder)) == (2, 2)


def test_source_padding_and_future_targets_do_not_change_logits():
    model = tiny_seq2seq().eval()
    src, tgt = torch.randint(3, 23, (2, 6)), torch.randint(3, 23, (2, 5))
    logits = model(src, tgt)
    padded = torch.cat([src, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model(padded, tgt), logits)
    changed = tgt.clone()
    changed[:, 3:] = 4
    torch.testing.assert_close(model(src, changed)[:, :3], logits[:, :3])


def _smoothed_reference(logits, target, eps):
    """Per non-padding position, -sum_c q_c log p_c with q = 1 - eps on the target and
    eps / (V - 1) on every other class, padding included (the authors' cal_loss)."""
    losses = []
    for row, y in zip(
        logits.reshape(-1, logits.size(-1)).tolist(), target.flatten().tolist(), strict=True
    ):
        if y == PAD:
            continue
        log_z = math.log(sum(math.exp(z) for z in row))
        q = [1 - eps if c == y else eps / (len(row) - 1) for c in range(len(row))]
        losses.append(-sum(qc * (z - log_z) for qc, z in zip(q, row, strict=True)))
    return losses


def test_label_smoothed_nll_is_the_authors_formula():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 7, dtype=torch.float64) * 3
    target = torch.tensor([[3, 4, 5, PAD], [PAD, 6, 1, 3], [2, 3, PAD, PAD]])
    eps = 0.1
    losses = _smoothed_reference(logits, target, eps)
    assert len(losses) == 8
    total = label_smoothed_nll(logits, target, PAD, eps, reduction="sum").item()
    mean = label_smoothed_nll(logits, target, PAD, eps).item()
    assert total == pytest.approx(sum(losses), rel=1e-12)
    assert mean == pytest.approx(sum(losses) / 8, rel=1e-12)
    # negative control: torch's own smoothing eps / V on every class differs
    spread = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), target.flatten(), ignore_index=PAD, label_smoothing=eps
    ).item()
    assert abs(spread - mean) > 1e-4
    assert label_smoothed_nll(logits, target, PAD, 0.0).item() == pytest.approx(
        torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), target.flatten(), ignore_index=PAD
        ).item(),
        rel=1e-12,
    )
    with pytest.raises(ValueError, match="reduction"):
        label_smoothed_nll(logits, target, PAD, eps, reduction="none")
    with pytest.raises(ValueError, match="smoothing"):
        label_smoothed_nll(logits, target, PAD, 0.9)


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
