import dataclasses
import math

import pytest
import torch

from adaptopt.data import DatasetNotFoundError
from adaptopt.models.transformer import noam_lambda
from adaptopt.optim import create_optimizer
from adaptopt.tasks import available, get
from adaptopt.tasks.translation import corpus_bleu

CPU = torch.device("cpu")
REQUIRED = [
    "cifar10-resnet20",
    "fmnist-resnet20",
    *(f"{d}-resnet{n}-nobn" for d in ("cifar10", "fmnist") for n in (20, 44, 56, 110, 218)),
    "cifar10-resnet20-nobn-fixup",
    "fmnist-resnet20-nobn-fixup",
    "ptb-awdlstm",
    "multi30k-transformer",
    "wikitext2-transformer",
    "wikitext2-gpt2",
    "mnist-cnn",
    "fmnist-cnn",
]


def test_registry_has_every_task():
    assert set(REQUIRED) <= set(available())
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        get("nope")


@pytest.mark.parametrize("name", REQUIRED)
def test_one_training_step_in_smoke_mode(name, build):
    task = build(name, smoke=True)
    assert task.name == name
    torch.manual_seed(0)
    model = task.build_model()
    params = [p for p in model.parameters() if p.requires_grad]
    for opt_name, hparams in task.hparams.items():  # the recorded settings are valid
        create_optimizer(opt_name, params, **hparams)
    opt_name, hparams = next(iter(task.hparams.items()), ("sgd", {"lr": 0.01}))
    optimizer = create_optimizer(opt_name, params, **hparams)
    task.start_epoch(model)
    batches = iter(task.train_batches(0, torch.Generator().manual_seed(0), CPU))
    losses = []

    def closure() -> torch.Tensor:  # SGDOL draws two minibatches per step
        optimizer.zero_grad()
        loss = task.loss(model, next(batches))
        loss.backward()
        losses.append(loss.item())
        return loss

    before = [p.detach().clone() for p in params]
    optimizer.step(closure)
    assert losses and all(math.isfinite(v) for v in losses)
    assert any(not torch.equal(b, p) for b, p in zip(before, params, strict=True))
    metrics = task.evaluate(model, "valid", CPU)
    assert {"loss", task.metric} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())
    assert model.training  # evaluate restores the mode


def test_image_validation_split_is_held_out_from_training(build):
    full = build("cifar10-resnet20", smoke=True)
    task = build("cifar10-resnet20", smoke=True, validation=True)
    (x_fit, _), (x_val, _) = task.splits["train"], task.splits["valid"]
    n = len(full.splits["train"][0])
    assert (len(x_fit), len(x_val)) == (n - round(0.1 * n), round(0.1 * n))
    rows = {tuple(r.flatten().tolist()) for r in full.splits["train"][0]}
    fit_rows = {tuple(r.flatten().tolist()) for r in x_fit}
    val_rows = {tuple(r.flatten().tolist()) for r in x_val}
    assert fit_rows | val_rows == rows and not fit_rows & val_rows
    assert full.splits["valid"] is full.splits["test"]


@pytest.mark.parametrize("name", ["ptb-awdlstm", "wikitext2-transformer"])
def test_lm_validation_is_the_tail_of_the_training_tokens(name, build):
    full = build(name, smoke=True).splits
    held = build(name, smoke=True, validation=True).splits
    assert torch.equal(torch.cat([held["train"], held["valid"]]), full["train"])
    assert len(held["valid"]) == round(0.1 * len(full["train"]))
    assert torch.equal(held["test"], full["test"])


def test_awdlstm_carries_state_across_segments_but_not_into_probes(build):
    task = build("ptb-awdlstm", smoke=True)
    torch.manual_seed(0)
    model = task.build_model().eval()  # no dropout: deterministic
    b1, b2 = list(task.train_batches(0, torch.Generator().manual_seed(0), CPU))

    def reference(batch, state):
        out = model(batch.x, state)
        ce = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), batch.y.flatten())
        return ce + task.alpha * out.ar + task.beta * out.tar, out.state

    ref1, state1 = reference(b1, None)
    ref2, _ = reference(b2, state1)
    task.start_epoch(model)
    torch.testing.assert_close(task.loss(model, b1), ref1)
    probes = task.probe_batches(torch.Generator().manual_seed(1), CPU)
    assert not any(p.carry for p in probes)
    task.loss(model, probes[0])
    torch.testing.assert_close(task.loss(model, b2), ref2)
    task.start_epoch(model)
    torch.testing.assert_close(task.loss(model, b1), ref1)
    assert task.batch_lr_scale(b1) == b1.x.size(0) / task.bptt == b1.seq_len / task.bptt
    assert task.bptt == 10 and task.random_length


def test_awdlstm_reports_cross_entropy_without_ar_tar(build):
    task = build("ptb-awdlstm", smoke=True)
    torch.manual_seed(0)
    model = task.build_model().eval()  # no dropout: deterministic
    batch = next(iter(task.train_batches(0, torch.Generator().manual_seed(0), CPU)))
    out = model(batch.x)
    ce = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), batch.y.flatten())
    penalties = 2.0 * out.ar + 1.0 * out.tar  # the authors' α = 2, β = 1
    assert penalties > 1e-3 * ce  # negative control: the two losses differ
    task.start_epoch(model)
    objective, reported = task.loss_terms(model, batch)
    torch.testing.assert_close(objective, ce + penalties)
    torch.testing.assert_close(reported, ce)
    assert objective.requires_grad and not reported.requires_grad
    task.start_epoch(model)
    torch.testing.assert_close(task.loss(model, batch), ce + penalties)


def test_awdlstm_scales_the_step_by_the_drawn_length_also_for_the_cut_last_segment(build):
    task = build("ptb-awdlstm", smoke=True)
    task.budget = dataclasses.replace(task.budget, max_steps_per_epoch=None)
    segments = list(task.train_batches(0, torch.Generator().manual_seed(0), CPU))
    last = segments[-1]
    data_rows = len(task.splits["train"]) // task.budget.batch_size
    start = sum(s.seq_len for s in segments[:-1])
    assert start < data_rows - 2 <= start + last.seq_len  # the loop's stop rule
    assert len(last.x) == min(last.seq_len, data_rows - 1 - start)
    assert all(task.batch_lr_scale(s) == s.seq_len / task.bptt for s in segments)
    cut = last._replace(x=last.x[:2], y=last.y[:2], seq_len=13)  # a window cut to the data
    assert task.batch_lr_scale(cut) == 13 / task.bptt
    assert task.batch_lr_scale(cut._replace(seq_len=None)) == 2 / task.bptt


def test_ptb_task_defaults_follow_the_authors_script(build):
    task = build("ptb-awdlstm", smoke=True)
    assert task.iterate_averaging == 5  # nonmono
    assert task.eval_batch_size["valid"] == 10 and task.eval_batch_size["test"] == 2
    assert (task.alpha, task.beta) == (2.0, 1.0)
    assert task.clip_grad_norm is None  # their PTB script clips only inside the clipped SGDs
    names = {n for n, _ in task.build_model().named_parameters()}
    assert {f"rnns.{i}.weight_hh_l0_raw" for i in range(3)} <= names
    clean = build("ptb-awdlstm", smoke=True, weight_drop="clean").build_model()
    assert not any(n.endswith("_raw") for n, _ in clean.named_parameters())
    with pytest.raises(ValueError, match="weight_drop must be one of"):
        build("ptb-awdlstm", smoke=True, weight_drop="rows")


def test_ptb_hparams_are_the_authors_commands(build):
    hp = build("ptb-awdlstm", smoke=True).hparams
    adaptive = {"betas": (0.9, 0.999), "eps": 1e-8}
    assert hp == {  # penntreebank/ReadMe.md of the authors' code
        "gsignsgd": {"lr": 1e-3, "weight_decay": 1.2e-6, "bias_correction": True, **adaptive},
        "adam": {"lr": 2e-3, "weight_decay": 5e-6, **adaptive},
        "sgd": {"lr": 1.0, "momentum": 0.9, "weight_decay": 1e-5},
        "sgd_clip_grad": {"lr": 50.0, "gamma": 10.0, "weight_decay": 1.2e-6},
        "sgd_clip_momentum": {"lr": 20.0, "gamma": 2.5, "momentum": 0.9, "weight_decay": 1.2e-6},
        "sgd_normalized": {"lr": 2.0, "momentum": 0.9, "weight_decay": 5e-6},
    }
    implicit = {  # the defaults left implicit are theirs too (coupled L2 weight decay)
        "gsignsgd": {"weight_decay_mode": "l2"},
        "adam": {"amsgrad": False, "decoupled_weight_decay": False},
        "sgd": {"nesterov": False, "dampening": 0},
        "sgd_clip_grad": {"momentum": 0.0, "nu": 0.0, "weight_decay_mode": "l2"},
        "sgd_clip_momentum": {"nu": 1.0, "nesterov": False, "weight_decay_mode": "l2"},
        "sgd_normalized": {"nesterov": False, "eps": 1e-10, "weight_decay_mode": "l2"},
    }
    model = torch.nn.Linear(2, 2)
    for name, options in hp.items():
        group = create_optimizer(name, model.parameters(), **options).param_groups[0]
        assert {k: group[k] for k in implicit[name]} == implicit[name]


def test_learning_rate_schedules(build):
    gpt = build("wikitext2-gpt2", smoke=True)
    f, steps = gpt.lr_lambda(10), gpt.budget.epochs * 10
    w = gpt.warmup_steps
    assert [f(s) for s in range(w)] == pytest.approx([(s + 1) / w for s in range(w)])
    assert f(w) == pytest.approx(1.0) and f(steps) == pytest.approx(0.0, abs=1e-12)
    assert all(f(s) >= f(s + 1) for s in range(w, steps))

    decay = build("wikitext2-transformer", smoke=True).lr_lambda(7)
    assert [decay(s) for s in (0, 6, 7, 20)] == pytest.approx([1, 1, 0.95, 0.95**2])

    m30k = build("multi30k-transformer", smoke=True)
    noam = noam_lambda(32, m30k.warmup_steps)
    assert [m30k.lr_lambda(5)(s) for s in range(9)] == [noam(s) for s in range(9)]
    assert build("fmnist-cnn", smoke=True).lr_lambda(5) is None


FULL_SIZE = {  # SPEC.md §4 budgets and the models' parameter counts (see tests/models)
    "cifar10-resnet20": (164, 128, 269_722),
    "fmnist-resnet20": (164, 128, 269_722 - 2 * 9 * 16),  # 1 input channel instead of 3
    "cifar10-resnet218-nobn": (300, 128, 3_461_690),  # bias-free convolutions, no BatchNorm
    "cifar10-resnet218-nobn-fixup": (300, 128, 3_461_690 + 8_080),  # + one bias per channel
    "ptb-awdlstm": (750, 40, 24_221_600 + 11_220_000),  # + the authors' dropped W_hh copies
    "wikitext2-transformer": (5, 20, 13_828_478),
    "wikitext2-gpt2": (200, 256, 50_397_180 + (33_278 - 28_996) * 410),  # WikiText-2 vocabulary
    "multi30k-transformer": (400, 256, None),
    "mnist-cnn": (30, 100, 3_274_634),
}


@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_tasks(name, build):
    task = build(name)
    epochs, batch_size, n_params = FULL_SIZE[name]
    assert (task.budget.epochs, task.budget.batch_size) == (epochs, batch_size)
    assert task.budget.max_steps_per_epoch is None
    with torch.device("meta"):
        model = task.build_model()
    if n_params is not None:
        assert sum(p.numel() for p in model.parameters()) == n_params
    else:  # vocabulary size depends on the tokenisation: check the wiring instead
        assert model.embedding.num_embeddings == len(task.data.vocab)
        assert (len(model.encoder), len(model.decoder), model.d_model) == (6, 6, 512)


def test_cifar10_hparams_are_the_authors(build):
    hp = build("cifar10-resnet20", smoke=True).hparams
    assert {k: v["lr"] for k, v in hp.items()} == {
        "gsignsgd": 2e-4,
        "adam": 9e-4,
        "sgd": 0.07,
        "sgd_clip_grad": 0.5,
        "sgd_clip_momentum": 10.0,
        "sgd_normalized": 0.1,
    }
    assert hp["sgd_clip_grad"]["gamma"] == 1.0 and hp["sgd_clip_momentum"]["gamma"] == 0.1
    assert all(v["weight_decay"] == 1e-4 for v in hp.values())
    assert build("fmnist-resnet20-nobn", smoke=True).hparams == {}


def test_missing_mnist_points_to_fmnist(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("ADAPTOPT_DATA", raising=False)
    try:
        get("mnist-cnn", data_dir=tmp_path, smoke=True)
    except DatasetNotFoundError as err:
        assert "'fmnist-cnn'" in str(err) and "train-images-idx3-ubyte" in str(err)
    else:
        pytest.skip("MNIST is installed in a standard location")


def test_corpus_bleu():
    assert corpus_bleu(["a b c d e"], ["a b c d e"]) == pytest.approx(100.0)
    # precisions 4/5, 3/4, 2/3, 1/2 and no brevity penalty
    expected = 100 * (0.8 * 0.75 * (2 / 3) * 0.5) ** 0.25
    assert corpus_bleu(["a b c d e"], ["a b c d f"]) == pytest.approx(expected)


@pytest.mark.parametrize("name", ["cifar10-resnet20", "ptb-awdlstm", "multi30k-transformer"])
def test_probe_batches_are_a_fixed_seeded_subset(name, build):
    task = build(name, smoke=True)

    def probe(seed: int) -> list[torch.Tensor]:
        batches = task.probe_batches(torch.Generator().manual_seed(seed), CPU)
        return [t for batch in batches for t in batch if isinstance(t, torch.Tensor)]

    first, again = probe(3), probe(3)
    assert first and len(first) == len(again)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
