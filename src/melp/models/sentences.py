"""Sentence embeddings from token features (spec §2.4), vectorised with segment ids.

A sentence ends at (and includes) each ``.`` token; the id of ``.`` comes from the tokenizer.
Special tokens and padding are excluded; spans left empty are skipped (sentence indices stay
contiguous); a trailing span without ``.`` that still has ordinary tokens counts as a sentence
(fix of D13: the reference discards it). Sentences beyond ``max_sentences`` are dropped.
No Python loop and no host-device synchronisation.

Dimensions: ``B`` batch, ``S`` token positions, ``H`` feature width, ``M`` sentence slots.
"""

from __future__ import annotations

import torch


def sentence_index(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, special: torch.Tensor, dot_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sentence number of each token.

    Args:
        input_ids: (B, S) token ids; attention_mask: (B, S) 1 = real token.
        special: (V,) bool lookup table of special ids; dot_id: id of ``.``.

    Returns:
        ``(index (B, S) long, keep (B, S) bool)``: ``index`` is the 0-based sentence of each token
        (counting only non-empty spans) and ``keep`` marks tokens that enter a sentence average.
    """
    is_dot = (input_ids == dot_id).long()
    seg = torch.cumsum(is_dot, dim=1) - is_dot  # (B, S) span id; a '.' belongs to its own sentence
    keep = attention_mask.bool() & ~special[input_ids]
    span_size = torch.zeros(
        input_ids.shape[0], input_ids.shape[1] + 1, device=input_ids.device, dtype=torch.long
    )
    span_size.scatter_add_(1, seg, keep.long())  # (B, S+1) kept tokens per span
    rank = torch.cumsum((span_size > 0).long(), dim=1) - 1  # (B, S+1) sentence number of each span
    return torch.gather(rank, 1, seg), keep


def pool_sentences(
    features: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special: torch.Tensor,
    dot_id: int,
    max_sentences: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean token feature of each sentence.

    Args:
        features: (B, S, H) token features aligned with ``input_ids`` (B, S).
        attention_mask: (B, S); special: (V,) bool table; dot_id: id of ``.``;
        max_sentences: M, number of output slots.

    Returns:
        ``(sentences (B, M, H), mask (B, M) bool)``; unused slots are zero and False.
    """
    b, s, h = features.shape
    idx, keep = sentence_index(input_ids, attention_mask, special, dot_id)
    keep = keep & (idx < max_sentences)
    slot = torch.where(keep, idx, torch.full_like(idx, max_sentences))  # (B, S); slot M = discard
    sums = features.new_zeros(b, max_sentences + 1, h)
    sums.scatter_add_(1, slot[..., None].expand(b, s, h), features * keep[..., None].to(features.dtype))
    counts = features.new_zeros(b, max_sentences + 1)
    counts.scatter_add_(1, slot, keep.to(features.dtype))
    counts = counts[:, :max_sentences]  # (B, M)
    mask = counts > 0
    return sums[:, :max_sentences] / counts.clamp_min(1)[..., None], mask
