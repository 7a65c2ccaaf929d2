"""Transformers of paper §5.2 (Fig. 1, 3): a translation encoder-decoder and an encoder LM.

- :class:`Seq2SeqTransformer`: Vaswani et al. (2017) base model (6+6 post-LN layers, d = 512,
  8 heads of 64, d_ff = 2048, dropout 0.1) as in the authors' Multi30k runs (their fork of
  attention-is-all-you-need-pytorch with ``--embs-share-weight --proj-share-weight``): one
  embedding matrix shared by source, target and output projection (logits scaled by
  d^(-1/2), embeddings unscaled), sinusoidal positions, dropout, then LayerNorm; bias-free
  query/key/value/output projections, dropout on the attention weights, LayerNorm ε = 1e-6,
  no dropout inside the feed-forward block; Xavier-uniform initialisation of every matrix
  (each projection on its own). Trained with label-smoothed cross-entropy
  (:func:`label_smoothed_nll`) under the warm-up schedule :func:`noam_lambda`; decoded with
  :func:`greedy_decode` or :func:`beam_search`.
- :class:`TransformerLM`: the 2-layer Transformer encoder language model of PyTorch's
  word-language-model example / tutorial (emsize 200, nhid 200, 2 heads, dropout 0.2), built
  from ``nn.TransformerEncoderLayer``.

All modules are batch-first; attention runs in ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


class SinusoidalPositions(nn.Module):
    """Adds the fixed sin/cos position encoding of Vaswani et al. to ``x`` [B, T, d]."""

    pe: torch.Tensor  # [max_len, d_model], a non-persistent buffer

    def __init__(self, d_model: int, max_len: int = 5000) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, d_model, 2) * (-math.log(1e4) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * freq)
        pe[:, 1::2] = torch.cos(position * freq[: d_model // 2])
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(1) > self.pe.size(0):
            raise ValueError(f"sequence length {x.size(1)} exceeds max_len {self.pe.size(0)}")
        return x + self.pe[: x.size(1)].to(x.dtype)


def causal_mask(size: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean [size, size] mask, True where attention is not allowed (j > i); boolean, so
    that it suits any activation dtype (e.g. under bf16 autocast)."""
    return torch.ones(size, size, dtype=torch.bool, device=device).triu(1)


LAYER_NORM_EPS = 1e-6


class MultiHeadAttention(nn.Module):
    """Post-LN multi-head attention sublayer: ``LN(x + dropout(W_o · attention(x W_q,
    m W_k, m W_v)))`` with bias-free projections and dropout on the attention weights."""

    def __init__(self, d_model: int, nhead: int, dropout: float) -> None:
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"d_model {d_model} is not divisible by nhead {nhead}")
        self.nhead, self.dropout_p = nhead, dropout
        self.w_q, self.w_k, self.w_v, self.w_o = (
            nn.Linear(d_model, d_model, bias=False) for _ in range(4)
        )
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=LAYER_NORM_EPS)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.nhead, -1)).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        key_padding: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """Queries from ``x`` [B, T, d], keys/values from ``memory`` [B, S, d];
        ``key_padding`` [B, S] is True at keys to ignore; ``causal`` masks keys j > i."""
        mask = None if key_padding is None else ~key_padding[:, None, None, :]
        out = F.scaled_dot_product_attention(
            self._heads(self.w_q(x)),
            self._heads(self.w_k(memory)),
            self._heads(self.w_v(memory)),
            attn_mask=mask,
            dropout_p=self.dropout_p if self.training else 0.0,
            is_causal=causal,
        )
        return self.norm(x + self.dropout(self.w_o(out.transpose(1, 2).flatten(2))))


class FeedForward(nn.Module):
    """Post-LN position-wise sublayer ``LN(x + dropout(W_2 relu(W_1 x + b_1) + b_2))``."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.w_1 = nn.Linear(d_model, dim_feedforward)
        self.w_2 = nn.Linear(dim_feedforward, d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.w_2(F.relu(self.w_1(x)))))


class EncoderLayer(nn.Module):
    """Self-attention, then feed-forward."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, nhead, dropout)
        self.feed_forward = FeedForward(d_model, dim_feedforward, dropout)

    def forward(self, x: torch.Tensor, src_pad: torch.Tensor) -> torch.Tensor:
        return self.feed_forward(self.self_attn(x, x, src_pad))


class DecoderLayer(nn.Module):
    """Causal self-attention, attention over the encoder memory, then feed-forward."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, nhead, dropout)
        self.cross_attn = MultiHeadAttention(d_model, nhead, dropout)
        self.feed_forward = FeedForward(d_model, dim_feedforward, dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, src_pad: torch.Tensor) -> torch.Tensor:
        x = self.self_attn(x, x, causal=True)
        return self.feed_forward(self.cross_attn(x, memory, src_pad))


class Seq2SeqTransformer(nn.Module):
    """Encoder-decoder Transformer over one shared (source + target) vocabulary."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 512,
        nhead: int = 8,
        num_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        *,
        pad_id: int = 0,
        max_len: int = 512,
    ) -> None:
        super().__init__()
        self.pad_id, self.d_model = pad_id, d_model
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.positions = SinusoidalPositions(d_model, max_len)
        self.dropout = nn.Dropout(dropout)
        self.src_norm = nn.LayerNorm(d_model, eps=LAYER_NORM_EPS)
        self.tgt_norm = nn.LayerNorm(d_model, eps=LAYER_NORM_EPS)
        size = (d_model, nhead, dim_feedforward, dropout)
        self.encoder = nn.ModuleList(EncoderLayer(*size) for _ in range(num_layers))
        self.decoder = nn.ModuleList(DecoderLayer(*size) for _ in range(num_layers))
        for p in self.parameters():  # overwrites the zero padding row too, as the authors'
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def _embed(self, ids: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        return norm(self.dropout(self.positions(self.embedding(ids))))

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``src`` [B, S] → memory [B, S, d] and its padding mask [B, S] (True at padding)."""
        src_pad = src == self.pad_id
        x = self._embed(src, self.src_norm)
        for layer in self.encoder:
            x = layer(x, src_pad)
        return x, src_pad

    def decode(
        self, tgt: torch.Tensor, memory: torch.Tensor, src_pad: torch.Tensor
    ) -> torch.Tensor:
        """Decoder input ``tgt`` [B, T] (starting with ``<bos>``) → hidden states [B, T, d].

        Causal self-attention only: with right padding, no real position sees a padded one.
        """
        x = self._embed(tgt, self.tgt_norm)
        for layer in self.decoder:
            x = layer(x, memory, src_pad)
        return x

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Output projection (the shared embedding, scaled by d^(-1/2)) → logits [..., V]."""
        return F.linear(h, self.embedding.weight) * self.d_model**-0.5

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: next-token logits [B, T, V] for decoder input ``tgt`` [B, T]."""
        return self.logits(self.decode(tgt, *self.encode(src)))


def label_smoothed_nll(
    logits: torch.Tensor,
    target: torch.Tensor,
    pad_id: int,
    smoothing: float = 0.1,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy against (1−ε)·onehot(y) + ε/(V−1)·(1 − onehot(y)) over the non-padding
    targets, summed (``reduction="sum"``, the authors' training objective) or averaged.

    As the authors' ``cal_loss``: every class other than the target, padding included,
    receives ε/(V−1); padding positions are left out. Computed exactly by torch's smoothing
    ε' = εV/(V−1), whose target ε'/V spreads over all V classes.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    vocab = logits.size(-1)
    if vocab < 2 or not 0.0 <= smoothing <= (vocab - 1) / vocab:
        raise ValueError(f"need 0 <= smoothing <= (V-1)/V with V >= 2, got {smoothing}, V={vocab}")
    return F.cross_entropy(
        logits.flatten(0, -2),
        target.flatten(),
        ignore_index=pad_id,
        label_smoothing=smoothing * vocab / (vocab - 1),
        reduction=reduction,
    )


def noam_lambda(d_model: int, warmup_steps: int) -> Callable[[int], float]:
    """Learning-rate multiplier d^(-1/2)·min(s^(-1/2), s·w^(-3/2)) at optimizer step s = step+1
    (Vaswani et al. 2017, eq. 3); the base learning rate plays the role of the authors' lr_mul."""
    if warmup_steps < 1:
        raise ValueError(f"warmup_steps must be >= 1, got {warmup_steps}")

    def multiplier(step: int) -> float:
        s = step + 1
        return d_model**-0.5 * min(s**-0.5, s * warmup_steps**-1.5)

    return multiplier


def _next_log_probs(
    model: Seq2SeqTransformer,
    seqs: torch.Tensor,
    memory: torch.Tensor,
    src_pad: torch.Tensor,
    finished: torch.Tensor,
    bos: int,
) -> torch.Tensor:
    """Log-probabilities [N, V] of the next token; finished rows can only continue with
    padding (at no cost), live rows never emit padding or ``<bos>``."""
    logp = model.logits(model.decode(seqs, memory, src_pad)[:, -1]).float().log_softmax(-1)
    logp[:, [model.pad_id, bos]] = -math.inf
    logp[finished] = -math.inf
    logp[finished, model.pad_id] = 0.0
    return logp


@torch.no_grad()
def greedy_decode(
    model: Seq2SeqTransformer, src: torch.Tensor, *, bos: int, eos: int, max_len: int | None = None
) -> torch.Tensor:
    """Greedy translations [B, 1 + L]: ``<bos>``, tokens, ``<eos>``, then padding."""
    memory, src_pad = model.encode(src)
    seqs = src.new_full((src.size(0), 1), bos)
    finished = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
    for _ in range(max_len or src.size(1) + 50):
        token = _next_log_probs(model, seqs, memory, src_pad, finished, bos).argmax(-1)
        seqs = torch.cat([seqs, token[:, None]], dim=1)
        finished |= token == eos
        if finished.all():
            break
    return seqs


@torch.no_grad()
def beam_search(
    model: Seq2SeqTransformer,
    src: torch.Tensor,
    *,
    bos: int,
    eos: int,
    beam_size: int = 5,
    max_len: int | None = None,
    length_penalty: float = 0.7,
) -> torch.Tensor:
    """Beam-search translations [B, 1 + L], laid out as :func:`greedy_decode`'s.

    Keeps the ``beam_size`` best partial hypotheses per sentence by summed log-probability;
    returns the best finished one by score / length^``length_penalty``.
    """
    batch, k = src.size(0), beam_size
    memory, src_pad = model.encode(src)
    memory, src_pad = memory.repeat_interleave(k, 0), src_pad.repeat_interleave(k, 0)
    seqs = src.new_full((batch * k, 1), bos)
    finished = torch.zeros(batch * k, dtype=torch.bool, device=src.device)
    scores = torch.full((batch, k), -math.inf, device=src.device)
    scores[:, 0] = 0.0  # one live hypothesis at the start, so no duplicates
    offset = torch.arange(batch, device=src.device)[:, None] * k
    for _ in range(max_len or src.size(1) + 50):
        logp = _next_log_probs(model, seqs, memory, src_pad, finished, bos)
        vocab = logp.size(-1)
        scores, index = (scores.view(-1, 1) + logp).view(batch, k * vocab).topk(k, dim=1)
        rows = (index // vocab + offset).flatten()
        token = (index % vocab).flatten()
        seqs = torch.cat([seqs[rows], token[:, None]], dim=1)
        finished = finished[rows] | (token == eos)
        if finished.all():
            break
    lengths = (seqs[:, 1:] != model.pad_id).sum(1).clamp(min=1)
    best = (scores.flatten() / lengths**length_penalty).view(batch, k).argmax(1)
    return seqs.view(batch, k, -1)[torch.arange(batch, device=src.device), best]


class TransformerLM(nn.Module):
    """Transformer-encoder LM of PyTorch's word-language-model example (causal, untied)."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 200,
        nhead: int = 2,
        dim_feedforward: int = 200,
        num_layers: int = 2,
        dropout: float = 0.2,
        max_len: int = 5000,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.positions = SinusoidalPositions(d_model, max_len)
        self.dropout = nn.Dropout(dropout)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, batch_first=True),
            num_layers,
            enable_nested_tensor=False,
        )
        self.decoder = nn.Linear(d_model, vocab_size)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` [B, T] → next-token logits [B, T, V]."""
        x = self.dropout(self.positions(self.embedding(tokens) * math.sqrt(self.d_model)))
        mask = causal_mask(tokens.size(1), tokens.device)
        return self.decoder(self.encoder(x, mask=mask, is_causal=True))
