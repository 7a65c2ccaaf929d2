import pytest
import torch
from torch.nn import functional as F

from adaptopt.models import AWDLSTM
from adaptopt.models.awd_lstm import WeightDropLSTM, embedded_dropout, locked_dropout
from adaptopt.optim import NormalizedSGD


def small(**kwargs) -> AWDLSTM:
    return AWDLSTM(50, emb_size=6, hidden_size=8, num_layers=3, **kwargs)


LSTM_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
PLAIN_NAMES = {"embedding.weight", "decoder_bias"} | {
    f"rnns.{i}.lstm.{w}_l0" for i in range(3) for w in LSTM_WEIGHTS
}


def test_clean_weight_drop_registers_every_weight_once_and_no_dropped_copy():
    model = small(weight_drop_mode="clean")
    params = list(model.parameters())
    assert len(set(map(id, params))) == len(params)
    assert {name for name, _ in model.named_parameters()} == PLAIN_NAMES
    # a training forward pass substitutes the dropped matrix only temporarily
    hh = [r.lstm.weight_hh_l0 for r in model.rnns]
    before = [w.detach().clone() for w in hh]
    model.train()(torch.randint(0, 50, (5, 2)))
    assert [r.lstm.weight_hh_l0 for r in model.rnns] == hh
    assert all(torch.equal(w, b) for w, b in zip(hh, before, strict=True))
    assert list(model.parameters()) == params


def test_authors_weight_drop_registers_raw_weight_and_dropped_copy():
    torch.manual_seed(0)
    model = small()  # the default is the authors' mode
    names = [name for name, _ in model.named_parameters()]
    raw_names = {f"rnns.{i}.weight_hh_l0_raw" for i in range(3)}
    assert set(names) == PLAIN_NAMES | raw_names
    assert names.index("rnns.0.weight_hh_l0_raw") < names.index("rnns.0.lstm.weight_ih_l0")
    for rnn in model.rnns:  # both start from the LSTM's initialisation, in separate storage
        assert torch.equal(rnn.weight_hh_l0_raw, rnn.lstm.weight_hh_l0)
        assert rnn.weight_hh_l0_raw.data_ptr() != rnn.lstm.weight_hh_l0.data_ptr()
    raws = [r.weight_hh_l0_raw.detach().clone() for r in model.rnns]
    tokens = torch.randint(0, 50, (5, 2))
    model.train()(tokens)
    for rnn, raw in zip(model.rnns, raws, strict=True):
        assert torch.equal(rnn.weight_hh_l0_raw, raw)  # the raw weight is left alone
        copy = rnn.lstm.weight_hh_l0.detach()
        kept = (copy != 0).any(1)
        assert 0 < kept.sum() < len(kept)
        torch.testing.assert_close(copy[kept], 2 * raw[kept], rtol=0, atol=0)
    # eval mode uses the raw weight, whatever the copy holds
    model.eval()
    expected = model(tokens).logits
    for rnn in model.rnns:
        with torch.no_grad():
            rnn.lstm.weight_hh_l0.normal_()
    torch.testing.assert_close(model(tokens).logits, expected, rtol=0, atol=0)
    assert all(torch.equal(r.lstm.weight_hh_l0, r.weight_hh_l0_raw) for r in model.rnns)
    # without weight drop the authors' model does not wrap the LSTMs: nothing is duplicated
    assert {n for n, _ in small(weight_drop=0.0).named_parameters()} == PLAIN_NAMES


def test_weight_drop_validates_its_arguments():
    with pytest.raises(ValueError, match="weight_drop_mode"):
        small(weight_drop_mode="rows")
    with pytest.raises(ValueError, match="weight_drop must be in"):
        small(weight_drop=1.0)


@pytest.mark.parametrize("p", [0.5, 0.25])
def test_authors_mask_drops_whole_rows_and_rescales_the_rest(p):
    torch.manual_seed(0)
    authors = WeightDropLSTM(3, 200, p, "authors")
    mask = authors.draw_mask()
    values = torch.tensor([0.0, 1 / (1 - p)])  # float32, as the mask
    assert mask.shape == (800, 1)
    assert torch.equal(mask.unique(), values)
    assert abs((mask == 0).double().mean().item() - p) < 0.06  # 800 rows: ±4 std
    # in a training pass the LSTM runs with whole rows of W_hh dropped, the others rescaled
    authors.train()(torch.randn(4, 2, 3), (torch.zeros(1, 2, 200), torch.zeros(1, 2, 200)))
    used, raw = authors.lstm.weight_hh_l0.detach(), authors.weight_hh_l0_raw.detach()
    dropped = (used == 0).all(1)
    assert torch.equal(dropped, (used == 0).any(1))  # each row entirely kept or dropped
    torch.testing.assert_close(used[~dropped], raw[~dropped] / (1 - p), rtol=1e-6, atol=0)
    # negative control: the clean mask drops entries, so rows are mixed
    clean = WeightDropLSTM(3, 200, p, "clean").draw_mask()
    assert clean.shape == (800, 200)
    assert torch.equal(clean.unique(), values)
    mixed = (clean == 0).any(1) & (clean != 0).any(1)
    assert mixed.all()


def test_ptb_model_parameter_count():
    v, e, h = 10_000, 400, 1150
    lstm = sum(4 * o * (i + o) + 8 * o for i, o in ((e, h), (h, h), (h, e)))
    copies = sum(4 * o * o for o in (h, h, e))  # the authors' dropped copies of W_hh
    with torch.device("meta"):
        clean = AWDLSTM(v, weight_drop_mode="clean")
        authors = AWDLSTM(v)
    assert sum(p.numel() for p in clean.parameters()) == v * e + v + lstm == 24_221_600
    assert sum(p.numel() for p in authors.parameters()) == 24_221_600 + copies == 35_441_600


@pytest.mark.parametrize("mode", ["authors", "clean"])
def test_shapes_and_state(mode):
    model = small(weight_drop_mode=mode)
    out = model(torch.randint(0, 50, (7, 3)))
    assert out.logits.shape == (7, 3, 50)
    assert [tuple(h.shape) for h, _ in out.state] == [(1, 3, 8), (1, 3, 8), (1, 3, 6)]
    loss = F.cross_entropy(out.logits.flatten(0, 1), torch.randint(0, 50, (21,)))
    (loss + out.ar + out.tar).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("mode", ["authors", "clean"])
def test_eval_forward_equals_plain_lstm_stack_with_tied_decoder_and_ar_tar(mode):
    torch.manual_seed(0)
    model = small(weight_drop_mode=mode).double().eval()
    tokens = torch.randint(0, 50, (6, 2))
    state = model.init_state(2)
    state = [(torch.randn_like(h), torch.randn_like(c)) for h, c in state]
    out = model(tokens, state)
    x = model.embedding.weight[tokens]
    for rnn, s in zip(model.rnns, state, strict=True):
        x, _ = lstm_reference(x, rnn.lstm.weight_ih_l0, rnn.raw_weight_hh, rnn.lstm, s)
    torch.testing.assert_close(out.logits, x @ model.embedding.weight.T + model.decoder_bias)
    torch.testing.assert_close(out.ar, x.pow(2).mean())
    torch.testing.assert_close(out.tar, (x[1:] - x[:-1]).pow(2).mean())


def lstm_reference(x, w_ih, w_hh, lstm, state=None):
    """One LSTM layer written out (gate order i, f, g, o as in torch.nn.LSTM)."""
    h, c = (s[0] for s in state) if state is not None else (None, None)
    if h is None:
        h = c = x.new_zeros(x.size(1), w_hh.size(1))
    outs = []
    for x_t in x:
        gates = x_t @ w_ih.T + lstm.bias_ih_l0 + h @ w_hh.T + lstm.bias_hh_l0
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs), (h, c)


@pytest.mark.parametrize("mode", ["authors", "clean"])
def test_global_gradient_norm_the_optimizer_sees(mode):
    """Hand-computed from a float64 reference: the authors' mode counts W_hh twice."""
    torch.manual_seed(0)
    vocab, lam = 30, 0.1
    only_weight_drop = {"weight_drop": 0.5, "weight_drop_mode": mode, "dropout": 0.0}
    only_weight_drop |= {"dropout_hidden": 0.0, "dropout_input": 0.0, "dropout_embedding": 0.0}
    model = AWDLSTM(vocab, emb_size=4, hidden_size=6, num_layers=2, **only_weight_drop)
    model = model.double().train()
    g = torch.Generator().manual_seed(1)
    masks = []
    for rnn in model.rnns:  # fixed masks with kept and dropped rows / entries
        rows, cols = rnn.raw_weight_hh.shape
        shape = (rows, 1) if mode == "authors" else (rows, cols)
        mask = 2.0 * torch.bernoulli(torch.full(shape, 0.5, dtype=torch.float64), generator=g)
        assert 0 < mask.count_nonzero() < mask.numel()
        masks.append(mask)
        rnn.draw_mask = lambda mask=mask: mask
    tokens, targets = torch.randint(0, vocab, (5, 3)), torch.randint(0, vocab, (5, 3))
    out = model(tokens)
    loss = F.cross_entropy(out.logits.flatten(0, 1), targets.flatten()) + 2 * out.ar + out.tar
    loss.backward()

    # independent float64 reference with the dropped matrices W' = mask ⊙ raw as leaves
    emb = model.embedding.weight.detach().clone().requires_grad_()
    bias = model.decoder_bias.detach().clone().requires_grad_()
    raws = [r.raw_weight_hh.detach().clone() for r in model.rnns]
    used = [(m * w).requires_grad_() for m, w in zip(masks, raws, strict=True)]
    x = emb[tokens]
    for rnn, w in zip(model.rnns, used, strict=True):
        x, _ = lstm_reference(x, rnn.lstm.weight_ih_l0, w, rnn.lstm)
    ref_loss = (
        F.cross_entropy((x @ emb.T + bias).flatten(0, 1), targets.flatten())
        + 2 * x.pow(2).mean()
        + (x[1:] - x[:-1]).pow(2).mean()
    )
    g_emb, g_bias, *g_used = torch.autograd.grad(ref_loss, [emb, bias, *used])
    torch.testing.assert_close(loss, ref_loss)

    def sq(grad, value):  # squared norm of the coupled-weight-decay direction g + λx
        return (grad + lam * value).pow(2).sum()

    named = dict(model.named_parameters())
    torch.testing.assert_close(named["embedding.weight"].grad, g_emb)
    torch.testing.assert_close(named["decoder_bias"].grad, g_bias)
    expected = sq(g_emb, emb) + sq(g_bias, bias)
    once = expected.clone()
    for i, (rnn, m, w, gw) in enumerate(zip(model.rnns, masks, raws, g_used, strict=True)):
        for name in ("weight_ih_l0", "bias_ih_l0", "bias_hh_l0"):
            param = getattr(rnn.lstm, name)
            expected = expected + sq(param.grad, param.detach())
            once = once + sq(param.grad, param.detach())
        torch.testing.assert_close(rnn.raw_weight_hh.grad, m * gw)  # chain rule through mask
        expected = expected + sq(m * gw, w)
        once = once + sq(m * gw, w)
        if mode == "authors":  # the dropped copy: gradient G at value mask ⊙ raw
            copy = named[f"rnns.{i}.lstm.weight_hh_l0"]
            torch.testing.assert_close(copy.grad, gw)
            torch.testing.assert_close(copy.detach(), m * w, rtol=0, atol=0)
            expected = expected + sq(gw, m * w)
    n_params = 2 + 4 * 2 + (2 if mode == "authors" else 0)
    assert len(list(model.parameters())) == n_params

    # the normalized SGD step reveals the norm it divides by: Δb = −η (g_b + λb) / ‖d‖
    optimizer = NormalizedSGD(model.parameters(), lr=1.0, momentum=0.0, weight_decay=lam)
    b0 = model.decoder_bias.detach().clone()
    optimizer.step()
    seen = (g_bias + lam * b0).norm() / (model.decoder_bias.detach() - b0).norm() - 1e-10
    torch.testing.assert_close(seen, expected.sqrt(), rtol=1e-9, atol=0)
    if mode == "authors":  # negative control: counting W_hh once gives a clearly smaller norm
        assert seen > 1.05 * once.sqrt()
    else:
        torch.testing.assert_close(expected, once)


def test_locked_dropout_shares_one_mask_over_time():
    torch.manual_seed(0)
    out = locked_dropout(torch.ones(5, 3, 40), 0.5, training=True)
    assert torch.equal(out, out[:1].expand_as(out))
    assert set(out.unique().tolist()) == {0.0, 2.0}
    x = torch.randn(5, 3, 4)
    assert locked_dropout(x, 0.5, training=False) is x


def test_embedding_dropout_drops_whole_words():
    torch.manual_seed(0)
    embed = torch.nn.Embedding(30, 5)
    words = torch.arange(30).repeat(2)
    out = embedded_dropout(embed, words, 0.5)
    dropped = (out == 0).all(1)
    assert 0 < dropped.sum() < 60
    assert torch.equal(dropped[:30], dropped[30:])  # same word, same decision
    kept = ~dropped
    torch.testing.assert_close(out[kept], 2 * embed.weight[words[kept]])
