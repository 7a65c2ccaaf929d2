import torch
from torch.nn import functional as F

from adaptopt.models import AWDLSTM
from adaptopt.models.awd_lstm import embedded_dropout, locked_dropout


def small(**kwargs) -> AWDLSTM:
    return AWDLSTM(50, emb_size=6, hidden_size=8, num_layers=3, **kwargs)


def test_parameters_registered_once_and_none_is_a_dropped_copy():
    model = small()
    params = list(model.parameters())
    assert len(set(map(id, params))) == len(params)
    lstm_weights = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    expected = {"embedding.weight", "decoder_bias"} | {
        f"rnns.{i}.lstm.{w}_l0" for i in range(3) for w in lstm_weights
    }
    assert {name for name, _ in model.named_parameters()} == expected
    # a training forward pass substitutes the dropped matrix only temporarily
    hh = [r.lstm.weight_hh_l0 for r in model.rnns]
    before = [w.detach().clone() for w in hh]
    model.train()(torch.randint(0, 50, (5, 2)))
    assert [r.lstm.weight_hh_l0 for r in model.rnns] == hh
    assert all(torch.equal(w, b) for w, b in zip(hh, before, strict=True))
    assert list(model.parameters()) == params


def test_ptb_model_parameter_count():
    v, e, h = 10_000, 400, 1150
    lstm = sum(4 * o * (i + o) + 8 * o for i, o in ((e, h), (h, h), (h, e)))
    with torch.device("meta"):
        model = AWDLSTM(v)
    assert sum(p.numel() for p in model.parameters()) == v * e + v + lstm == 24_221_600


def test_shapes_and_state():
    model = small()
    out = model(torch.randint(0, 50, (7, 3)))
    assert out.logits.shape == (7, 3, 50)
    assert [tuple(h.shape) for h, _ in out.state] == [(1, 3, 8), (1, 3, 8), (1, 3, 6)]
    loss = F.cross_entropy(out.logits.flatten(0, 1), torch.randint(0, 50, (21,)))
    (loss + out.ar + out.tar).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_eval_forward_equals_plain_lstm_stack_with_tied_decoder_and_ar_tar():
    torch.manual_seed(0)
    model = small().double().eval()
    tokens = torch.randint(0, 50, (6, 2))
    state = model.init_state(2)
    state = [(torch.randn_like(h), torch.randn_like(c)) for h, c in state]
    out = model(tokens, state)
    x = model.embedding.weight[tokens]
    for rnn, s in zip(model.rnns, state, strict=True):
        x, _ = rnn.lstm(x, s)
    torch.testing.assert_close(out.logits, x @ model.embedding.weight.T + model.decoder_bias)
    torch.testing.assert_close(out.ar, x.pow(2).mean())
    torch.testing.assert_close(out.tar, (x[1:] - x[:-1]).pow(2).mean())


def test_weight_drop_masks_hidden_to_hidden_entries_in_training_only():
    torch.manual_seed(0)
    model = AWDLSTM(20, emb_size=6, hidden_size=16, num_layers=2, weight_drop=0.5)
    tokens = torch.randint(0, 20, (8, 4))
    for training in (True, False):
        model.zero_grad()
        model.train(training)
        model(tokens).logits.sum().backward()
        grad = model.rnns[0].lstm.weight_hh_l0.grad
        zero_fraction = (grad == 0).float().mean().item()
        if training:  # DropConnect: dropped entries get exactly zero gradient
            assert 0.4 < zero_fraction < 0.6
        else:
            assert zero_fraction == 0.0


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
