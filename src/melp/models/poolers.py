"""Attentional pooler (spec §3.3): learned queries cross-attend to the ECG tokens.

AP(d, c, h, n): queries Phi (n, d) ~ N(0, 1); keys/values = LayerNorm_c(X); queries = LayerNorm_d(Phi);
h-head cross-attention with k/v projected c -> d; output projection d -> d. No residual, no MLP.

Two options (off by default, i.e. the paper's pooler):

* ``query_init="orthogonal"``: the n queries start as orthogonal rows of norm sqrt(d) (the expected
  norm of the N(0, 1) draw) instead of independent normal draws;
* ``time_prior=sigma``: query k's attention logits get a fixed Gaussian bias
  ``-(t - c_k)^2 / (2 sigma^2)`` over the record's valid duration rescaled to [0, 1), centred at
  ``c_k = (k + 1/2) / n``: each query starts out looking at its own stretch of the record.
"""

from __future__ import annotations

import torch
from torch import nn

from melp.models.attention import MultiHeadAttention


class AttentionalPooler(nn.Module):
    """Pool ECG tokens (B, N, c) into n query slots (B, n, d)."""

    def __init__(
        self,
        dim: int,
        context_dim: int,
        heads: int,
        n_queries: int,
        *,
        query_init: str = "normal",
        time_prior: float | None = None,
    ):
        super().__init__()
        if query_init not in ("normal", "orthogonal"):
            raise ValueError(f"query_init must be 'normal' or 'orthogonal', got {query_init!r}")
        if time_prior is not None and not time_prior > 0:
            raise ValueError(
                f"time_prior must be a positive width (fraction of the record), got {time_prior}"
            )
        self.query = nn.Parameter(torch.randn(n_queries, dim))
        if query_init == "orthogonal":
            with torch.no_grad():
                nn.init.orthogonal_(self.query)  # orthonormal rows (n <= d) ...
                self.query.mul_(dim**0.5)  # ... of the norm a N(0, 1) row has
        self.time_prior = time_prior
        self.attn = MultiHeadAttention(dim, heads, kv_dim=context_dim)
        self.attn.reset_torch_mha()
        self.ln_q = nn.LayerNorm(dim)
        self.ln_k = nn.LayerNorm(context_dim)

    def _attn_mask(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
        """Boolean key mask (B, 1, 1, N), or with a time prior the additive bias (B, 1, n, N)."""
        if self.time_prior is None:
            return None if mask is None else mask[:, None, None, :]
        b, n_tok = x.shape[:2]
        valid = torch.ones(b, n_tok, dtype=torch.bool, device=x.device) if mask is None else mask
        n_valid = valid.sum(1, keepdim=True).clamp_min(1).to(x.dtype)  # (B, 1)
        t = (torch.arange(n_tok, device=x.device, dtype=x.dtype) + 0.5)[None, :] / n_valid  # (B, N) in (0, 1]
        k = self.query.shape[0]
        centres = (torch.arange(k, device=x.device, dtype=x.dtype) + 0.5) / k  # (n,)
        bias = -((t[:, None, :] - centres[None, :, None]) ** 2) / (2 * self.time_prior**2)  # (B, n, N)
        bias = bias.masked_fill(~valid[:, None, :], torch.finfo(x.dtype).min)
        return bias[:, None]  # (B, 1, n, N)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, c) -> (B, n, d); ``mask`` (B, N) bool: True = a valid token (padding ignored)."""
        kv = self.ln_k(x)
        q = self.ln_q(self.query).unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, n, d)
        return self.attn(q, kv, attn_mask=self._attn_mask(x, mask))

    def attention_weights(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Head-averaged attention of each query over the tokens: (B, n, N) (0 on masked tokens)."""
        kv = self.ln_k(x)
        q = self.ln_q(self.query).unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.attn.attention_weights(q, kv, self._attn_mask(x, mask))
