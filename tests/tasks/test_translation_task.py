"""multi30k-transformer: the authors' summed objective, reported loss and evaluation."""

import math

import pytest
import torch

from adaptopt.data import pad_batch
from adaptopt.data.translation import PAD
from adaptopt.models.transformer import label_smoothed_nll

CPU = torch.device("cpu")


def _grads(model: torch.nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def test_objective_is_the_sum_over_target_tokens(build):
    """Gradient of the training objective = (non-padding target tokens) × gradient of the
    mean label-smoothed loss, on a real batch; the reported loss is the per-token mean."""
    task = build("multi30k-transformer", smoke=True)
    assert task.loss_reduction == "sum"
    torch.manual_seed(0)
    model = task.build_model().double().eval()  # eval: the same function in both passes
    src, tgt = next(iter(task.train_batches(0, torch.Generator().manual_seed(0), CPU)))
    tokens = int((tgt[:, 1:] != PAD).sum())
    assert tokens > 10 * len(tgt)  # about 13 target tokens per sentence
    objective, reported = task.loss_terms(model, (src, tgt))
    summed = _grads(model, objective)
    mean_loss = label_smoothed_nll(model(src, tgt[:, :-1]), tgt[:, 1:], PAD, 0.1)
    mean = _grads(model, mean_loss)
    for g_sum, g_mean in zip(summed, mean, strict=True):
        torch.testing.assert_close(g_sum, tokens * g_mean, rtol=1e-10, atol=1e-12)
    assert reported.item() == pytest.approx(mean_loss.item(), rel=1e-12)
    assert objective.item() == pytest.approx(tokens * mean_loss.item(), rel=1e-12)
    assert not reported.requires_grad
    assert torch.equal(task.loss(model, (src, tgt)), objective)


def test_evaluation_reports_perplexity_and_token_accuracy(build):
    task = build("multi30k-transformer", smoke=True)
    assert (task.metric, task.higher_is_better) == ("perplexity", False)
    torch.manual_seed(0)
    model = task.build_model()
    metrics = task.evaluate(model, "valid", CPU)
    assert set(metrics) == {"loss", "perplexity", "accuracy"}
    # independent: unsmoothed cross-entropy and argmax accuracy over every valid token
    src, tgt = pad_batch(task.splits["valid"])
    with torch.no_grad():
        logits = model.eval()(src, tgt[:, :-1])
    gold = tgt[:, 1:]
    real = gold != PAD
    nll = -logits.log_softmax(-1).gather(-1, gold[..., None])[..., 0]
    assert metrics["loss"] == pytest.approx(nll[real].mean().item(), rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]), rel=1e-12)
    accuracy = (logits.argmax(-1) == gold)[real].float().mean().item()
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    bleu_task = build("multi30k-transformer", smoke=True, bleu=True)
    assert (bleu_task.metric, bleu_task.higher_is_better) == ("bleu", True)
    assert 0.0 <= bleu_task.evaluate(model, "test", CPU)["bleu"] <= 100.0


def test_hparams_and_budget_are_the_authors_commands(build):
    task = build("multi30k-transformer")
    assert (task.budget.epochs, task.budget.batch_size) == (400, 256)
    assert (task.warmup_steps, task.d_model, task.label_smoothing) == (128_000, 512, 0.1)
    assert task.hparams == {  # ReadMe: --lr-mul, --momentum, --beta2, --epsilon, ...
        "gsignsgd": {"lr": 10.0, "betas": (0.9, 0.98), "eps": 1e-9, "weight_decay": 0.1},
        "adam": {"lr": 10.0, "betas": (0.9, 0.98), "eps": 1e-9, "weight_decay": 0.1},
        "sgd": {"lr": 1.0, "momentum": 0.9, "weight_decay": 1.0},
        "sgd_clip_grad": {"lr": 10.0, "gamma": 1.0, "weight_decay": 1.0},
        "sgd_clip_momentum": {"lr": 1.0, "gamma": 1.0, "momentum": 0.9, "weight_decay": 1.0},
        "sgd_normalized": {"lr": 10000.0, "momentum": 0.9, "weight_decay": 1.0},
    }
    sizes = [len(s) for s, _ in task.train_batches(0, torch.Generator().manual_seed(0), CPU)]
    assert len(sizes) == 114 and sizes.count(256) == 113  # 29,000 = 113 × 256 + 72
