"""Word-level language-modelling tasks; the metric is perplexity exp(mean token loss).

- ``ptb-awdlstm``: paper §5.1 and the authors' ``penntreebank/main_lstm.py`` — 3-layer
  AWD-LSTM (400/1150, tied) on PTB, batch 40, BPTT 70 with AWD-LSTM's random lengths (lr and
  clipping threshold γ scaled by drawn length / 70 for the step), 750 epochs, AR α = 2 /
  TAR β = 1 (last layer), dropout 0.4 (output), 0.25 (between layers), 0.4 (input),
  0.1 (embedding), weight drop 0.5 (``weight_drop="authors"``: their row mask and doubly
  registered W_hh, see ``adaptopt.models.awd_lstm``; ``"clean"``: DropConnect per entry,
  registered once); end-of-epoch iterate averaging with nonmono 5 (``iterate_averaging``).
  ``hparams`` are the authors' PTB commands (SPEC.md §4). The hidden state is carried from one
  training segment to the next (detached) and reset by :meth:`Task.start_epoch`; evaluation
  carries it over the whole split from zero, BPTT 70, batch 10 (valid) and 2 (test). The
  reported training loss is the cross-entropy without AR/TAR (:meth:`AWDLSTMTask.loss_terms`).
- ``wikitext2-transformer``: paper §5.2 / Fig. 1a — the 2-layer Transformer encoder LM of
  PyTorch's tutorial: batch 20, BPTT 35, SGD lr 5 decayed ×0.95 per epoch, 5 epochs, the
  global gradient norm clipped at 0.5 (``clip_grad_norm``).
- ``wikitext2-gpt2``: paper §5.3 / Fig. 2 — the 16-layer GPT-2 model (context 256, batch 256)
  with Adam 2.5e-4, linear warm-up over 250 steps then cosine decay to zero over the budget;
  the paper trains on WikiText-103 (not available here) and compares clipping the global
  gradient norm at 0.25 (the default ``clip_grad_norm``) with no clipping (``0``).

With ``validation`` the last 10% of the training tokens play the ``"valid"`` split.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from adaptopt.data import Corpus, batchify, lm_batches, lm_windows, load_ptb, load_wikitext2
from adaptopt.models import AWDLSTM, GPT, GPTConfig, TransformerLM
from adaptopt.models.awd_lstm import WEIGHT_DROP_MODES, State, WeightDropMode
from adaptopt.tasks._loading import limit, load_cached
from adaptopt.tasks.base import Budget, Task

VALID_FRACTION = 0.1


class Segment(NamedTuple):
    """A BPTT window: ``x`` [T, B] and next tokens ``y`` [T, B] (time-major)."""

    x: torch.Tensor
    y: torch.Tensor
    carry: bool = False  # stateful models: continue from the previous carried segment's state
    seq_len: int | None = None  # drawn length (≥ len(x) for a last window cut to the data)


@dataclass
class LanguageModelTask(Task):
    """Next-token cross-entropy on a token stream cut into ``budget.batch_size`` columns.

    The model maps batch-first tokens [B, T] to logits [B, T, V] (Transformer LM, GPT).
    """

    batch_dim: ClassVar[int] = 1  # segments are time-major [T, B]
    splits: dict[str, torch.Tensor] = field(default_factory=dict)  # 1-d token ids
    model_factory: Callable[[], nn.Module] | None = None
    bptt: int = 35
    random_length: bool = False
    eval_batch_size: dict[str, int] = field(default_factory=dict)  # per split, default 10
    _batched: dict[tuple[str, int, torch.device], torch.Tensor] = field(
        init=False, repr=False, default_factory=dict
    )

    def build_model(self) -> nn.Module:
        if self.model_factory is None:
            raise ValueError(f"task {self.name!r} has no model_factory")
        return self.model_factory()

    def _data(self, split: str, batch_size: int, device: torch.device) -> torch.Tensor:
        key = (split, batch_size, torch.device(device))
        if key not in self._batched:
            self._batched[key] = batchify(self.splits[split], batch_size).to(device)
        return self._batched[key]

    def train_batches(
        self, epoch: int, generator: torch.Generator, device: torch.device
    ) -> Iterator[Segment]:
        data = self._data("train", self.budget.batch_size, device)
        windows = lm_windows(data, self.bptt, generator, self.random_length)
        segments = (Segment(x, y, carry=True, seq_len=n) for x, y, n in windows)
        return limit(segments, self.budget)

    def predict(
        self, model: nn.Module, x: torch.Tensor, state: State | None
    ) -> tuple[torch.Tensor, State | None, torch.Tensor]:
        """Logits [T, B, V] for ``x`` [T, B], the state to carry on, and the regulariser."""
        return model(x.t()).transpose(0, 1), None, x.new_zeros((), dtype=torch.float32)

    def loss(self, model: nn.Module, batch: Segment) -> torch.Tensor:
        logits, _, reg = self.predict(model, batch.x, None)
        return F.cross_entropy(logits.flatten(0, 1), batch.y.flatten()) + reg

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        was_training = model.training
        model.eval()
        data = self._data(split, self.eval_batch_size.get(split, 10), device)
        total, count, state = torch.zeros((), device=device), 0, None
        for x, y in lm_batches(data, self.bptt):
            logits, state, _ = self.predict(model, x, state)
            total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
            count += y.numel()
        model.train(was_training)
        loss = total.item() / count
        return {"loss": loss, "perplexity": math.exp(min(loss, 100.0))}


@dataclass
class AWDLSTMTask(LanguageModelTask):
    """AWD-LSTM: stateful across segments, AR/TAR added to the training objective.

    Evaluation averages the cross-entropy over the split's tokens; the authors' ``evaluate``
    divides the same sum by B·T instead of B·(T − 1) (T rows of the batchified split), a loss
    (T − 1)/T as large: −0.014% on PTB valid (T = 7,376), −0.0024% on test (T = 41,215).
    """

    alpha: float = 2.0  # AR
    beta: float = 1.0  # TAR
    _state: State | None = field(init=False, repr=False, default=None)

    def predict(
        self, model: nn.Module, x: torch.Tensor, state: State | None
    ) -> tuple[torch.Tensor, State | None, torch.Tensor]:
        out = model(x, state)
        carried = [(h.detach(), c.detach()) for h, c in out.state]
        return out.logits, carried, self.alpha * out.ar + self.beta * out.tar

    def _cross_entropy_and_regulariser(
        self, model: nn.Module, batch: Segment
    ) -> tuple[torch.Tensor, torch.Tensor]:
        state = self._state if batch.carry else None
        if state is not None and state[0][0].size(1) != batch.x.size(1):
            state = None
        logits, new_state, reg = self.predict(model, batch.x, state)
        if batch.carry:
            self._state = new_state
        return F.cross_entropy(logits.flatten(0, 1), batch.y.flatten()), reg

    def loss(self, model: nn.Module, batch: Segment) -> torch.Tensor:
        """Mean cross-entropy + α·AR + β·TAR (the authors' ``loss``)."""
        ce, reg = self._cross_entropy_and_regulariser(model, batch)
        return ce + reg

    def loss_terms(self, model: nn.Module, batch: Segment) -> tuple[torch.Tensor, torch.Tensor]:
        """(CE + α·AR + β·TAR, CE): the authors report the running mean of the raw
        cross-entropy (``raw_loss``) as the training loss, without the AR/TAR penalties."""
        ce, reg = self._cross_entropy_and_regulariser(model, batch)
        return ce + reg, ce.detach()

    def start_epoch(self, model: nn.Module) -> None:
        self._state = None

    def probe_batches(
        self, generator: torch.Generator, device: torch.device, fraction: float = 0.1
    ) -> Iterable[Segment]:
        """As the default, but each probe segment starts from a zero state and leaves the
        carried training state untouched."""
        return [s._replace(carry=False) for s in super().probe_batches(generator, device, fraction)]

    def batch_lr_scale(self, batch: Segment) -> float:
        """seq_len / bptt: AWD-LSTM scales the step's learning rate (and the authors also the
        clipping threshold γ) by the *drawn* segment length over BPTT, also for the last
        segment, which is cut shorter to the data."""
        seq_len = batch.seq_len if batch.seq_len is not None else batch.x.size(0)
        return seq_len / self.bptt


@dataclass
class StepDecayLMTask(LanguageModelTask):
    """Learning rate ×``gamma`` after every epoch (the tutorial's ``StepLR(1.0, 0.95)``)."""

    gamma: float = 0.95

    def lr_lambda(self, steps_per_epoch: int) -> Callable[[int], float]:
        return lambda step: self.gamma ** (step // steps_per_epoch)


@dataclass
class GPTTask(LanguageModelTask):
    """Linear warm-up then cosine decay to zero at the end of the budget."""

    warmup_steps: int = 250

    def lr_lambda(self, steps_per_epoch: int) -> Callable[[int], float]:
        total = max(self.budget.epochs * steps_per_epoch, self.warmup_steps + 1)

        def multiplier(step: int) -> float:
            if step < self.warmup_steps:
                return (step + 1) / self.warmup_steps
            progress = (step - self.warmup_steps) / (total - self.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

        return multiplier


def _splits(corpus: Corpus, validation: bool, smoke: bool) -> dict[str, torch.Tensor]:
    train, valid, test = corpus.train, corpus.valid, corpus.test
    if smoke:
        train, valid, test = train[:6000], valid[:1500], test[:1500]
    if validation:
        cut = len(train) - round(VALID_FRACTION * len(train))
        train, valid = train[:cut], train[cut:]
    return {"train": train, "valid": valid, "test": test}


# SPEC.md §4 and the authors' PTB commands (β1 = 0.9 everywhere)
PTB_HPARAMS: dict[str, dict[str, Any]] = {
    "gsignsgd": {
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 1.2e-6,
        "bias_correction": True,
    },
    "adam": {"lr": 2e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 5e-6},
    "sgd": {"lr": 1.0, "momentum": 0.9, "weight_decay": 1e-5},
    "sgd_clip_grad": {"lr": 50.0, "gamma": 10.0, "weight_decay": 1.2e-6},
    "sgd_clip_momentum": {"lr": 20.0, "gamma": 2.5, "momentum": 0.9, "weight_decay": 1.2e-6},
    "sgd_normalized": {"lr": 2.0, "momentum": 0.9, "weight_decay": 5e-6},
}


def ptb_awdlstm(
    validation: bool = False,
    smoke: bool = False,
    data_dir: str | Path | None = None,
    verify: bool = True,
    weight_drop: WeightDropMode = "authors",
) -> AWDLSTMTask:
    """Registry constructor for ``ptb-awdlstm``; smoke: 16/32-unit LSTMs, BPTT 10, batch 4.

    Args:
        weight_drop: ``"authors"`` (default; their public code: one DropConnect mask per row
            of W_hh, and W_hh registered twice — raw and dropped copy — so the copy's gradient
            counts in the global norms of the clipped and normalized SGDs) or ``"clean"``
            (one mask per entry, W_hh registered once). See ``adaptopt.models.awd_lstm``.
    """
    if weight_drop not in WEIGHT_DROP_MODES:
        raise ValueError(f"weight_drop must be one of {WEIGHT_DROP_MODES}, got {weight_drop!r}")
    corpus = load_cached(load_ptb, data_dir, verify)
    sizes = {"emb_size": 16, "hidden_size": 32} if smoke else {}
    return AWDLSTMTask(
        name="ptb-awdlstm",
        metric="perplexity",
        higher_is_better=False,
        budget=Budget(1, 4, max_steps_per_epoch=2) if smoke else Budget(750, 40),
        hparams={k: dict(v) for k, v in PTB_HPARAMS.items()},
        validation=validation,
        splits=_splits(corpus, validation, smoke),
        model_factory=functools.partial(
            AWDLSTM, len(corpus.vocab), weight_drop_mode=weight_drop, **sizes
        ),
        bptt=10 if smoke else 70,
        random_length=True,
        eval_batch_size={"train": 10, "valid": 10, "test": 2},
        iterate_averaging=5,  # the authors' nonmono
    )


def wikitext2_transformer(
    validation: bool = False,
    smoke: bool = False,
    data_dir: str | Path | None = None,
    verify: bool = True,
) -> LanguageModelTask:
    """Registry constructor for ``wikitext2-transformer``; smoke: width 16, BPTT 8, batch 4."""
    corpus = load_cached(load_wikitext2, data_dir, verify)
    sizes = {"d_model": 16, "dim_feedforward": 16} if smoke else {}
    return StepDecayLMTask(
        name="wikitext2-transformer",
        metric="perplexity",
        higher_is_better=False,
        budget=Budget(1, 4, max_steps_per_epoch=2) if smoke else Budget(5, 20),
        hparams={"sgd": {"lr": 5.0}},
        validation=validation,
        splits=_splits(corpus, validation, smoke),
        model_factory=functools.partial(TransformerLM, len(corpus.vocab), **sizes),
        bptt=8 if smoke else 35,
        eval_batch_size={"train": 10, "valid": 10, "test": 10},
        clip_grad_norm=0.5,  # the tutorial's clip_grad_norm_(model.parameters(), 0.5)
    )


def wikitext2_gpt2(
    validation: bool = False,
    smoke: bool = False,
    data_dir: str | Path | None = None,
    verify: bool = True,
) -> GPTTask:
    """Registry constructor for ``wikitext2-gpt2``; smoke: 2 layers, d = 32, context 16."""
    corpus = load_cached(load_wikitext2, data_dir, verify)
    vocab = len(corpus.vocab)
    if smoke:
        cfg = GPTConfig(vocab, context_length=16, n_layer=2, n_head=2, d_model=32, d_ff=64)
    else:
        cfg = GPTConfig.paper(vocab)
    return GPTTask(
        name="wikitext2-gpt2",
        metric="perplexity",
        higher_is_better=False,
        budget=Budget(1, 4, max_steps_per_epoch=2) if smoke else Budget(200, 256),
        hparams={"adam": {"lr": 2.5e-4}},
        validation=validation,
        splits=_splits(corpus, validation, smoke),
        model_factory=functools.partial(GPT, cfg),
        bptt=cfg.context_length,
        eval_batch_size={"train": 16, "valid": 16, "test": 16},
        warmup_steps=2 if smoke else 250,
        clip_grad_norm=0.25,  # paper §5.3: "max_norm 0.25 for the entire model"; 0 turns it off
    )
