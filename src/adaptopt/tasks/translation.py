"""``multi30k-transformer``: paper §5.2 / Fig. 1b, 3 — the 6-layer Transformer on Multi30k de→en.

Authors' settings (their Multi30k ReadMe commands: ``preprocess.py -share_vocab`` then
``train.py --embs-share-weight --proj-share-weight --label-smoothing --batch-size 256
--n-warmup-steps 128000 --epoch 400 --test``, forked from attention-is-all-you-need-pytorch):

- batches of 256 sentence pairs drawn uniformly at random (no length bucketing);
- objective: the *sum* over the batch's non-padding target tokens of the label-smoothed
  cross-entropy (ε = 0.1 spread as ε/(V−1)), not the mean: their learning rates, weight decays
  and clipping thresholds were tuned at that scale (a batch holds ≈ 3,600 target tokens);
- learning rate ``lr`` × d^(-1/2)·min(s^(-1/2), s·w^(-3/2)) with w = 128,000 warm-up steps, so
  the whole run (400 epochs × 114 steps) stays in warm-up; ``lr`` is their ``lr_mul``;
- per optimizer the ``lr``, betas, ε, momentum, clipping threshold and (coupled) weight decay
  of their commands in ``hparams``.

The reported training loss of a batch is its label-smoothed loss per target token (their
``train.log`` loss, whose exp is their training "ppl"). ``evaluate`` reports, as their
per-epoch evaluation, the unsmoothed token-level cross-entropy (``loss``), its exp
(``perplexity``, the default metric) and the token accuracy of the teacher-forced argmax
(``accuracy``); with ``--test`` their per-epoch evaluation is on the 2016 test set. With
``bleu=True`` it also decodes and reports corpus BLEU (sacrebleu on the lowercased spaCy
tokens, ``tokenize="none"``): greedy for ``"train"``/``"valid"``, beam search (``beam_size``)
for ``"test"``; references are the decoded target ids, so out-of-vocabulary words read
``<unk>`` on both sides. The authors computed no BLEU (their ``translate.py`` only writes
beam-search translations).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from torch import nn
from torch.nn import functional as F

from adaptopt._optional import require
from adaptopt.data import TranslationData, load_multi30k, split_validation, translation_batches
from adaptopt.data.translation import BOS, EOS, PAD, Pair
from adaptopt.models.transformer import (
    Seq2SeqTransformer,
    beam_search,
    greedy_decode,
    label_smoothed_nll,
    noam_lambda,
)
from adaptopt.tasks._loading import limit, load_cached
from adaptopt.tasks.base import Budget, Task

# authors' Multi30k commands; lr is the multiplier of noam_lambda
MULTI30K_HPARAMS: dict[str, dict[str, Any]] = {
    "gsignsgd": {"lr": 10.0, "betas": (0.9, 0.98), "eps": 1e-9, "weight_decay": 0.1},
    "adam": {"lr": 10.0, "betas": (0.9, 0.98), "eps": 1e-9, "weight_decay": 0.1},
    "sgd": {"lr": 1.0, "momentum": 0.9, "weight_decay": 1.0},
    "sgd_clip_grad": {"lr": 10.0, "gamma": 1.0, "weight_decay": 1.0},
    "sgd_clip_momentum": {"lr": 1.0, "gamma": 1.0, "momentum": 0.9, "weight_decay": 1.0},
    "sgd_normalized": {"lr": 10000.0, "momentum": 0.9, "weight_decay": 1.0},
}


_LOADERS = {  # module-level objects, so that load_cached recognises them
    "corrected": load_multi30k,
    "wmt16": functools.partial(load_multi30k, german="wmt16"),
}


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU (0-100) of already tokenised sentences, one reference each."""
    sacrebleu = require("sacrebleu", feature="BLEU of the translation task")
    return sacrebleu.corpus_bleu(hypotheses, [references], tokenize="none").score


@dataclass
class TranslationTask(Task):
    """Sequence-to-sequence training with teacher forcing on (source, target) id pairs; the
    objective sums the label-smoothed token losses of a batch."""

    loss_reduction: ClassVar[str] = "sum"

    data: TranslationData | None = None
    splits: dict[str, list[Pair]] = field(default_factory=dict)
    model_factory: Callable[[], nn.Module] | None = None
    d_model: int = 512
    warmup_steps: int = 128_000
    label_smoothing: float = 0.1
    bleu: bool = True
    beam_size: int = 5
    max_extra_len: int = 50  # decode at most source length + this many tokens
    eval_batch_size: int = 128

    def build_model(self) -> nn.Module:
        if self.model_factory is None:
            raise ValueError(f"task {self.name!r} has no model_factory")
        return self.model_factory()

    def train_batches(
        self, epoch: int, generator: torch.Generator, device: torch.device
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = translation_batches(self.splits["train"], self.budget.batch_size, generator)
        return limit(((s.to(device), t.to(device)) for s, t in batches), self.budget)

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Sum of the label-smoothed cross-entropies of the batch's non-padding target tokens."""
        src, tgt = batch
        return label_smoothed_nll(
            model(src, tgt[:, :-1]), tgt[:, 1:], PAD, self.label_smoothing, reduction="sum"
        )

    def loss_terms(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The summed objective and, as reported, its mean per non-padding target token."""
        objective = self.loss(model, batch)
        tokens = (batch[1][:, 1:] != PAD).sum()
        return objective, objective.detach() / tokens

    def lr_lambda(self, steps_per_epoch: int) -> Callable[[int], float]:
        return noam_lambda(self.d_model, self.warmup_steps)

    def _translate(self, model: nn.Module, src: torch.Tensor, split: str) -> torch.Tensor:
        seq2seq = cast(Seq2SeqTransformer, model)  # what model_factory builds
        max_len = src.size(1) + self.max_extra_len
        if split == "test" and self.beam_size > 1:
            return beam_search(
                seq2seq, src, bos=BOS, eos=EOS, beam_size=self.beam_size, max_len=max_len
            )
        return greedy_decode(seq2seq, src, bos=BOS, eos=EOS, max_len=max_len)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        if self.bleu and self.data is None:
            raise ValueError(f"task {self.name!r} computes BLEU but has no data to decode with")
        decoder = self.data if self.bleu else None  # ids -> text for BLEU
        was_training = model.training
        model.eval()
        total, correct, count = torch.zeros((), device=device), 0, 0
        hypotheses: list[str] = []
        references: list[str] = []
        for src, tgt in translation_batches(self.splits[split], self.eval_batch_size):
            src, tgt = src.to(device), tgt.to(device)
            logits = model(src, tgt[:, :-1]).float()
            gold = tgt[:, 1:]
            total += F.cross_entropy(
                logits.flatten(0, 1), gold.flatten(), ignore_index=PAD, reduction="sum"
            )
            real = gold != PAD
            count += int(real.sum())
            correct += int((logits.argmax(-1).eq(gold) & real).sum())
            if decoder is not None:
                hypotheses += [decoder.decode(row) for row in self._translate(model, src, split)]
                references += [decoder.decode(row) for row in tgt]
        model.train(was_training)
        loss = total.item() / count
        metrics = {
            "loss": loss,
            "perplexity": math.exp(min(loss, 100.0)),
            "accuracy": correct / count,
        }
        if self.bleu:
            metrics["bleu"] = corpus_bleu(hypotheses, references)
        return metrics


def multi30k_transformer(
    validation: bool = False,
    smoke: bool = False,
    data_dir: str | Path | None = None,
    verify: bool = True,
    bleu: bool = False,
    german: str = "corrected",
) -> TranslationTask:
    """Registry constructor for ``multi30k-transformer``; smoke: 2+2 layers, d = 32, 64 pairs.

    The metric is perplexity (the authors' per-epoch evaluation); ``bleu`` makes it BLEU of
    decoded translations (slow: every evaluation decodes the split). ``german="wmt16"``: the
    original WMT'16 German validation and test sentences, the authors' (see
    :func:`adaptopt.data.load_multi30k`); the training data are the same either way.

    With ``validation`` a seeded 10% of the training pairs is the ``"valid"`` split (the
    official validation set is not used then).
    """
    if german not in _LOADERS:
        raise ValueError(f"german must be one of {sorted(_LOADERS)}, got {german!r}")
    data = load_cached(_LOADERS[german], data_dir, verify)
    train, valid, test = data.train, data.valid, data.test
    if smoke:
        train, valid, test = train[:64], valid[:16], test[:16]
    if validation:
        fit, held_out = split_validation(len(train), 0.1, 0)
        train, valid = [train[i] for i in fit], [train[i] for i in held_out]
    size = dict(d_model=32, nhead=2, num_layers=2, dim_feedforward=64) if smoke else {}
    d_model = size.get("d_model", 512)
    return TranslationTask(
        name="multi30k-transformer",
        metric="bleu" if bleu else "perplexity",
        higher_is_better=bleu,
        budget=Budget(1, 16, max_steps_per_epoch=2) if smoke else Budget(400, 256),
        hparams={k: dict(v) for k, v in MULTI30K_HPARAMS.items()},
        validation=validation,
        data=data,
        splits={"train": train, "valid": valid, "test": test},
        model_factory=functools.partial(Seq2SeqTransformer, len(data.vocab), pad_id=PAD, **size),
        d_model=d_model,
        warmup_steps=4 if smoke else 128_000,
        bleu=bleu,
        max_extra_len=5 if smoke else 50,
    )
