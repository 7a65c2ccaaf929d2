"""AWD-LSTM language model (Merity, Keskar & Socher, ICLR 2018), paper §5.1 (PTB).

A stack of one-layer LSTMs with the regularisers of Merity et al.:

- embedding dropout: whole rows of the embedding matrix (words) dropped, rest rescaled;
- locked (variational) dropout: one mask per sequence, shared over time, on the embedded
  input (``dropout_input``), between layers (``dropout_hidden``) and on the output (``dropout``);
- weight drop (DropConnect) on every hidden-to-hidden matrix, in one of two modes (below);
- tied input/output embeddings (the last LSTM layer has ``emb_size`` units);
- AR/TAR: the forward pass returns the unweighted activation regularisation
  mean(dropped_h²) and temporal activation regularisation mean((h_t − h_{t−1})²) of the last
  layer; the task weights them (α = 2, β = 1) into the training loss.

Weight drop modes (``weight_drop_mode``):

- ``"authors"`` — what the paper's public PTB code (``penntreebank/model/dropout.py``) does:
  one Bernoulli mask per *row* of W_hh (shape ``4H × 1``: a dropped row cuts every recurrent
  input of one gate unit), kept rows rescaled by 1/(1−p); and W_hh is registered *twice*:
  the raw weight ``weight_hh_l0_raw`` (the one that is trained) and the LSTM's own
  ``weight_hh_l0``, which each training forward pass overwrites with the dropped matrix
  mask ⊙ raw (with raw in eval mode). Both are parameters with gradients: the dropped copy gets
  G = ∂L/∂(mask ⊙ raw) and the raw weight mask ⊙ G. The copy's own update is discarded by the
  next overwrite, but its gradient (plus λ·copy under coupled weight decay, and its momentum
  buffer) enters every global norm — those of the clipped and normalized SGDs among them.
- ``"clean"`` — DropConnect of the AWD-LSTM paper: one Bernoulli mask per *entry* of W_hh,
  rescaled by 1/(1−p); W_hh is registered once (the LSTM's ``weight_hh_l0`` is the raw weight,
  the dropped matrix only lives inside the forward pass).
"""

from __future__ import annotations

from typing import Literal, NamedTuple, cast

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

State = list[tuple[torch.Tensor, torch.Tensor]]  # (h, c) per layer, each [1, B, H]
WeightDropMode = Literal["authors", "clean"]
WEIGHT_DROP_MODES: tuple[str, ...] = ("authors", "clean")


class LMOutput(NamedTuple):
    logits: torch.Tensor  # [T, B, V]
    state: State  # final (h, c) per layer, to carry into the next segment (detached by caller)
    ar: torch.Tensor  # mean squared dropped output of the last layer
    tar: torch.Tensor  # mean squared time difference of the last layer's (undropped) output


def embedded_dropout(embed: nn.Embedding, words: torch.Tensor, p: float) -> torch.Tensor:
    """Embed ``words`` with whole embedding rows dropped with probability ``p`` (rescaled)."""
    weight = embed.weight
    if p > 0:
        keep = torch.empty_like(weight[:, :1]).bernoulli_(1 - p)
        weight = weight * keep / (1 - p)
    return F.embedding(words, weight)


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout on ``x`` [T, B, H] with one mask per sequence, shared over time."""
    if not training or p == 0:
        return x
    mask = torch.empty_like(x[:1]).bernoulli_(1 - p) / (1 - p)
    return x * mask


def _weight_hh(lstm: nn.LSTM) -> nn.Parameter:
    """``lstm.weight_hh_l0``: nn.LSTM registers its weights by name at run time, out of the
    type checker's sight."""
    return cast(nn.Parameter, lstm.weight_hh_l0)


class WeightDropLSTM(nn.Module):
    """A one-layer LSTM whose hidden-to-hidden matrix gets DropConnect in training.

    ``mode="authors"`` masks whole rows and registers W_hh twice; ``"clean"`` masks entries and
    registers it once (see the module docstring).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        weight_drop: float,
        mode: WeightDropMode = "authors",
    ) -> None:
        super().__init__()
        if mode not in WEIGHT_DROP_MODES:
            raise ValueError(f"weight_drop_mode must be one of {WEIGHT_DROP_MODES}, got {mode!r}")
        if not 0.0 <= weight_drop < 1.0:
            raise ValueError(f"weight_drop must be in [0, 1), got {weight_drop}")
        # the authors' model wraps a layer (registering W_hh twice) only when p > 0
        self.mode = mode if weight_drop > 0 else "clean"
        self.weight_drop = weight_drop
        lstm = nn.LSTM(input_size, hidden_size)
        if self.mode == "authors":  # the trained weight; lstm.weight_hh_l0 is its dropped copy
            # both start from the LSTM's default initialisation (registered first, as theirs)
            self.weight_hh_l0_raw = nn.Parameter(_weight_hh(lstm).detach().clone())
        self.lstm = lstm

    @property
    def raw_weight_hh(self) -> nn.Parameter:
        """The hidden-to-hidden weight that is trained (and used in eval mode)."""
        return self.weight_hh_l0_raw if self.mode == "authors" else _weight_hh(self.lstm)

    def draw_mask(self) -> torch.Tensor:
        """A fresh DropConnect mask with entries 0 or 1/(1−p): ``[4H, 1]`` (one per row) in
        ``"authors"`` mode, ``[4H, H]`` (one per entry) in ``"clean"`` mode."""
        raw = self.raw_weight_hh
        shape = (raw.size(0), 1) if self.mode == "authors" else raw.shape
        return F.dropout(raw.new_ones(shape), self.weight_drop, training=True)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        drop = self.training and self.weight_drop > 0
        raw = self.raw_weight_hh
        if self.mode == "clean":
            if not drop:
                return self.lstm(x, state)
            dropped = raw * self.draw_mask()
            return functional_call(self.lstm, {"weight_hh_l0": dropped}, (x, state))
        dropped = raw * self.draw_mask() if drop else raw
        copy = _weight_hh(self.lstm)
        with torch.no_grad():  # the copy holds the matrix in use, as the optimizer will see it
            copy.copy_(dropped)
        # value: the dropped matrix; gradient G to the copy and mask ⊙ G to the raw weight
        weight = dropped + (copy - copy.detach())
        return functional_call(self.lstm, {"weight_hh_l0": weight}, (x, state))


class AWDLSTM(nn.Module):
    """3-layer AWD-LSTM; defaults are the PTB model of Merity et al. as run in paper §5.1
    (the authors' ``penntreebank/model/awdlstm.py``: uniform(±0.1) embedding, zero decoder bias,
    PyTorch's default LSTM initialisation, authors' weight drop)."""

    def __init__(
        self,
        vocab_size: int,
        emb_size: int = 400,
        hidden_size: int = 1150,
        num_layers: int = 3,
        *,
        dropout: float = 0.4,
        dropout_hidden: float = 0.25,
        dropout_input: float = 0.4,
        dropout_embedding: float = 0.1,
        weight_drop: float = 0.5,
        weight_drop_mode: WeightDropMode = "authors",
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_size)
        sizes = [emb_size] + [hidden_size] * (num_layers - 1) + [emb_size]
        self.rnns = nn.ModuleList(
            WeightDropLSTM(sizes[i], sizes[i + 1], weight_drop, weight_drop_mode)
            for i in range(num_layers)
        )
        self.decoder_bias = nn.Parameter(torch.zeros(vocab_size))  # weight tied to embedding
        self.dropout, self.dropout_hidden = dropout, dropout_hidden
        self.dropout_input, self.dropout_embedding = dropout_input, dropout_embedding
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)

    def init_state(self, batch_size: int) -> State:
        """All-zero (h, c) for every layer."""
        zeros = self.embedding.weight.new_zeros
        sizes = [cast(WeightDropLSTM, r).lstm.hidden_size for r in self.rnns]
        return [(zeros(1, batch_size, h), zeros(1, batch_size, h)) for h in sizes]

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> LMOutput:
        """``tokens`` [T, B] → next-token logits [T, B, V], final state, AR and TAR terms."""
        if state is None:
            state = self.init_state(tokens.size(1))
        p_emb = self.dropout_embedding if self.training else 0.0
        x = embedded_dropout(self.embedding, tokens, p_emb)
        x = locked_dropout(x, self.dropout_input, self.training)
        new_state = []
        for i, rnn in enumerate(self.rnns):
            raw, layer_state = rnn(x, state[i])
            new_state.append(layer_state)
            last = i == len(self.rnns) - 1
            x = locked_dropout(raw, self.dropout if last else self.dropout_hidden, self.training)
        logits = F.linear(x, self.embedding.weight, self.decoder_bias)
        ar = x.pow(2).mean()
        tar = (raw[1:] - raw[:-1]).pow(2).mean()
        return LMOutput(logits, new_state, ar, tar)
