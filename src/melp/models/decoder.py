"""Multimodal caption decoder (spec §4.2).

No token or positional embedding: the input is the causal text tower's token features (B, S, D).
Each layer = a pre-LN causal self-attention block and a pre-LN cross-attention block over the
caption tokens C (B, n, D), each followed by an MLP. Logits = LN_final(x) W_out (no bias),
W_out ~ N(0, D^-1/2) (fix of D3).

Dimensions: ``B`` batch, ``S`` text positions, ``n`` caption tokens, ``D`` width, ``V`` vocab.
"""

from __future__ import annotations

import torch
from torch import nn

from melp.models.attention import MultiHeadAttention


class _Mlp(nn.Sequential):
    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class DecoderLayer(nn.Module):
    """Causal self-attention block followed by a cross-attention block (both pre-LN, with MLPs)."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int):
        super().__init__()
        self.ln_self = nn.LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, heads)
        self.ln_self_mlp = nn.LayerNorm(dim)
        self.self_mlp = _Mlp(dim, mlp_hidden)
        self.ln_cross = nn.LayerNorm(dim)
        self.ln_ctx = nn.LayerNorm(dim)
        self.cross_attn = MultiHeadAttention(dim, heads)
        self.ln_cross_mlp = nn.LayerNorm(dim)
        self.cross_mlp = _Mlp(dim, mlp_hidden)
        self.self_attn.reset_torch_mha()
        self.cross_attn.reset_torch_mha()

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        """x (B, S, D), ctx (B, n, D) -> (B, S, D). With ``cache``, x holds only the new positions."""
        self_cache = None if cache is None else cache.setdefault("self", {})
        cross_cache = None if cache is None else cache.setdefault("cross", {})
        causal = cache is None or "k" not in self_cache
        if not causal and x.shape[1] > 1:
            raise ValueError("incremental decoding feeds one new position at a time")
        h = self.ln_self(x)
        # is_causal does not depend on the length: a causal mask over one position (one key) is no
        # mask, and a shape test would be symbolic under torch.compile's dynamic shapes, which
        # scaled_dot_product_attention does not accept
        x = x + self.self_attn(h, is_causal=causal, cache=self_cache)
        x = x + self.self_mlp(self.ln_self_mlp(x))
        kv = None if cross_cache is not None and "k" in cross_cache else self.ln_ctx(ctx)
        x = x + self.cross_attn(
            self.ln_cross(x), kv if kv is not None else ctx, cache=cross_cache, static_kv=True
        )
        return x + self.cross_mlp(self.ln_cross_mlp(x))


class CaptionDecoder(nn.Module):
    """Stack of :class:`DecoderLayer` + final LayerNorm + output projection to the vocabulary."""

    def __init__(
        self,
        dim: int,
        layers: int,
        heads: int,
        mlp_ratio: float,
        vocab_size: int,
        vocab_ids: list[int] | None = None,
    ):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, int(dim * mlp_ratio)) for _ in range(layers))
        self.ln_final = nn.LayerNorm(dim)
        self.vocab_size = vocab_size
        self.set_vocab(vocab_ids)

    def set_vocab(self, vocab_ids: list[int] | None) -> None:
        """(Re)create the output projection: over the full vocabulary (``None``) or over the K
        given token ids plus one "any other token" class (compact; K+1 outputs). Re-initialises
        the projection, so call it before training."""
        dim = self.ln_final.normalized_shape[0]
        if vocab_ids is None:
            self.register_buffer("vocab_ids", None)
            self.register_buffer("vocab_lookup", None)
            self.out_proj = nn.Parameter(torch.randn(dim, self.vocab_size) * dim**-0.5)  # (D, V)
            return
        ids = torch.tensor(sorted(set(vocab_ids)), dtype=torch.long)  # (K,)
        if ids.numel() == 0 or ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(f"caption_vocab ids must lie in [0, {self.vocab_size}); got {len(ids)} ids")
        lookup = torch.full((self.vocab_size,), len(ids), dtype=torch.long)  # other tokens -> K
        lookup[ids] = torch.arange(len(ids))
        self.register_buffer("vocab_ids", ids)
        self.register_buffer("vocab_lookup", lookup)
        self.out_proj = nn.Parameter(torch.randn(dim, len(ids) + 1) * dim**-0.5)  # (D, K+1)

    def map_targets(self, targets: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, int]:
        """Token ids -> indices into :meth:`project`'s outputs, and the index the loss ignores."""
        if self.vocab_lookup is None:
            return targets, pad_id
        return self.vocab_lookup[targets].masked_fill(targets == pad_id, -100), -100

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, caches: list[dict] | None = None) -> torch.Tensor:
        """Token features x (B, S, D) and caption tokens ctx (B, n, D) -> logits (B, S, V) over the
        full vocabulary (with a compact caption vocabulary, ids outside it get -inf).

        ``caches`` (one dict per layer, start with empty dicts) turns on incremental decoding:
        x then holds only the new positions and the dicts are updated in place.
        """
        logits = self.project(self.hidden(x, ctx, caches))
        if self.vocab_ids is None:
            return logits
        full = logits.new_full((*logits.shape[:-1], self.vocab_size), float("-inf"))  # (B, S, V)
        full[..., self.vocab_ids] = logits[..., :-1]
        return full

    def hidden(self, x: torch.Tensor, ctx: torch.Tensor, caches: list[dict] | None = None) -> torch.Tensor:
        """The final-LayerNorm hidden states (B, S, D) that :meth:`project` maps to logits."""
        for i, layer in enumerate(self.layers):
            x = layer(x, ctx, None if caches is None else caches[i])
        return self.ln_final(x)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., D) -> training logits (..., V), or (..., K+1) with a compact caption vocabulary."""
        return hidden @ self.out_proj
