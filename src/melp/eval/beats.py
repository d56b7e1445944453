"""What the beat level looks at: attention maps of one ECG and its report.

``attention_maps`` gives, for one record, each beat query's attention over the ECG frames and each
report sentence's attention over the beat queries (the beta of the beat-level loss).
"""

from __future__ import annotations

from typing import Any

import torch

from melp.losses.beat import beat_attention

__all__ = ["attention_maps"]


@torch.no_grad()
def attention_maps(model: Any, ecg: torch.Tensor, report: str, length: int | None = None) -> dict:
    """Attention maps of one ECG (L, T) or (1, L, T) (``length`` valid samples, None = all) and its report.

    Returns ``beat_time`` (Q, N) head-averaged attention of each beat query over the ECG tokens (0 on
    padded frames), ``sentence_beat`` (n_s, Q) the beat-loss attention beta of each sentence over the
    beats, ``sentences`` (n_s decoded sentences), ``frame_rate`` (tokens per second).
    """
    x = ecg if ecg.ndim == 3 else ecg[None]
    lengths = None if length is None else torch.tensor([int(length)], device=model.device)
    tokens, mask = model.ecg_tokens(x[:1], lengths)
    beat_time = model.beat_pooler.attention_weights(tokens, mask)[0]  # (Q, N)
    _, beats = model.beat_embeddings(tokens, mask)
    sentences, texts = model.sentence_embeddings(report)
    return {
        "beat_time": beat_time,
        "sentence_beat": beat_attention(beats[0], sentences),
        "sentences": texts,
        "frame_rate": model.frame_rate,
    }
