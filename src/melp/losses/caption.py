"""Token-level captioning loss (spec §4.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def caption_loss(caption_logits: torch.Tensor, caption_targets: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Mean token cross-entropy over the non-pad targets of the local batch.

    Args:
        caption_logits: (B, S', V) decoder logits (any float dtype; computed in fp32).
        caption_targets: (B, S') next-token ids.
        pad_id: the tokenizer's pad id (from the model outputs, never a literal; fix of D17).
    """
    v = caption_logits.shape[-1]
    # (B, S', V) -> (B*S', V); (B, S') -> (B*S',)
    return F.cross_entropy(
        caption_logits.reshape(-1, v).float(), caption_targets.reshape(-1), ignore_index=int(pad_id)
    )
