"""Multi-head attention on top of ``torch.nn.functional.scaled_dot_product_attention``.

Dimensions: ``B`` batch, ``Lq`` query positions, ``Lk`` key positions, ``H`` heads, ``Dh`` head dim.
One module serves self-attention (ECG transformer, decoder) and cross-attention (poolers, decoder),
with an optional key/value cache for incremental decoding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate q/k/v projections (``dim`` queries, ``kv_dim`` keys/values).

    Args:
        dim: query (and output) width d.
        heads: number of heads (must divide ``dim``).
        kv_dim: key/value input width c (defaults to ``dim``); projected to ``dim``.
        dropout: attention-probability dropout (training only).
        bias: use biases in the four projections.
    """

    def __init__(
        self, dim: int, heads: int, kv_dim: int | None = None, dropout: float = 0.0, bias: bool = True
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        kv_dim = dim if kv_dim is None else kv_dim
        self.dim, self.heads, self.head_dim, self.dropout = dim, heads, dim // heads, dropout
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(kv_dim, dim, bias=bias)
        self.v_proj = nn.Linear(kv_dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def reset_torch_mha(self) -> None:
        """Init like ``nn.MultiheadAttention``: Xavier-uniform q/k/v, zero biases, default out weight."""
        for lin in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(lin.weight)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        if self.out_proj.bias is not None:
            nn.init.zeros_(self.out_proj.bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        # (B, L, dim) -> (B, H, L, Dh)
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def project_kv(self, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, Lk, Dh) for a key/value input (B, Lk, kv_dim)."""
        return self._split(self.k_proj(kv)), self._split(self.v_proj(kv))

    def forward(
        self,
        query: torch.Tensor,
        kv: torch.Tensor | None = None,
        *,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        cache: dict | None = None,
        static_kv: bool = False,
    ) -> torch.Tensor:
        """Attend ``query`` (B, Lq, dim) to ``kv`` (B, Lk, kv_dim; default: ``query``).

        Args:
            attn_mask: boolean (True = attend) or additive mask broadcastable to (B, H, Lq, Lk).
            is_causal: apply a causal mask (self-attention without cache only).
            cache: dict updated in place. Self-attention (``static_kv=False``) appends the new keys
                and values to ``cache["k"], cache["v"]``; cross-attention (``static_kv=True``)
                computes them once from ``kv`` and reuses them.
        Returns:
            (B, Lq, dim).
        """
        kv = query if kv is None else kv
        q = self._split(self.q_proj(query))  # (B, H, Lq, Dh)
        if cache is not None and static_kv:
            if "k" not in cache:
                cache["k"], cache["v"] = self.project_kv(kv)
            k, v = cache["k"], cache["v"]
        else:
            k, v = self.project_kv(kv)  # (B, H, Lk, Dh)
            if cache is not None:
                if "k" in cache:
                    k = torch.cat([cache["k"], k], dim=2)
                    v = torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
        )  # (B, H, Lq, Dh)
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.dim))  # (B, Lq, dim)

    def attention_weights(
        self, query: torch.Tensor, kv: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Head-averaged attention probabilities (B, Lq, Lk) without dropout (for visualisation);
        ``attn_mask`` boolean (True = attend), broadcastable to (B, H, Lq, Lk)."""
        q = self._split(self.q_proj(query))
        k, _ = self.project_kv(kv)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, H, Lq, Lk)
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        return scores.softmax(-1).mean(1)
