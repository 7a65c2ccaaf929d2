"""GPT-2-style decoder-only language model (Radford et al. 2019), paper §5.3 / Fig. 2.

Pre-LayerNorm blocks (causal self-attention via ``F.scaled_dot_product_attention``, GELU MLP),
learned position embeddings, a final LayerNorm and an output projection tied to the token
embedding. GPT-2 initialisation: N(0, 0.02) weights, residual output projections scaled by
1/sqrt(2·n_layer). The paper's model (:meth:`GPTConfig.paper`) has 16 layers, d = 410,
10 heads, d_ff = 2100 and context 256; with its 28,996-token vocabulary that is 50,397,180
parameters, 201.59 MB in float32 (paper: "201.58 MB").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    context_length: int = 256
    n_layer: int = 16
    n_head: int = 10
    d_model: int = 410
    d_ff: int = 2100
    dropout: float = 0.1

    @classmethod
    def paper(cls, vocab_size: int = 28996) -> GPTConfig:
        """The 16-layer model of paper §5.3 (the defaults)."""
        return cls(vocab_size=vocab_size)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        if cfg.d_model % cfg.n_head:
            raise ValueError(f"d_model={cfg.d_model} is not divisible by n_head={cfg.n_head}")
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (
            z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2)
            for z in self.qkv(x).split(d, dim=2)
        )
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model)
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.mlp(self.ln2(x)))


class GPT(nn.Module):
    """Decoder-only LM: ``tokens`` [B, T] (T <= context_length) → logits [B, T, V]."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.context_length, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        residual_out = ("attn.proj.weight", "mlp.2.weight")
        for name, p in self.named_parameters():
            if p.dim() > 1:
                scaled = name.endswith(residual_out)
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer) if scaled else 0.02)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.size(1)
        if t > self.cfg.context_length:
            raise ValueError(f"sequence length {t} > context_length {self.cfg.context_length}")
        pos = torch.arange(t, device=tokens.device)
        x = self.drop(self.wte(tokens) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)
