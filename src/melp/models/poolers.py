"""Attentional pooler (spec §3.3): learned queries cross-attend to the ECG tokens.

AP(d, c, h, n): queries Phi (n, d) ~ N(0, 1); keys/values = LayerNorm_c(X); queries = LayerNorm_d(Phi);
h-head cross-attention with k/v projected c -> d; output projection d -> d. No residual, no MLP.
"""

from __future__ import annotations

import torch
from torch import nn

from melp.models.attention import MultiHeadAttention


class AttentionalPooler(nn.Module):
    """Pool ECG tokens (B, N, c) into n query slots (B, n, d)."""

    def __init__(self, dim: int, context_dim: int, heads: int, n_queries: int):
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, dim))
        self.attn = MultiHeadAttention(dim, heads, kv_dim=context_dim)
        self.attn.reset_torch_mha()
        self.ln_q = nn.LayerNorm(dim)
        self.ln_k = nn.LayerNorm(context_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, c) -> (B, n, d); ``mask`` (B, N) bool: True = a valid token (padding ignored)."""
        kv = self.ln_k(x)
        q = self.ln_q(self.query).unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, n, d)
        return self.attn(q, kv, attn_mask=None if mask is None else mask[:, None, None, :])

    def attention_weights(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Head-averaged attention of each query over the tokens: (B, n, N) (0 on masked tokens)."""
        kv = self.ln_k(x)
        q = self.ln_q(self.query).unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.attn.attention_weights(q, kv, None if mask is None else mask[:, None, None, :])
