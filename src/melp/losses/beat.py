"""Beat-level sentence-to-beat alignment loss (GLoRIA-style, spec §4.3), fully vectorised.

For every ECG j (beats v_{j,q}, q < Q) and report i (sentences e_{i,s}, s < n_i):
  a_{qs} = v_{j,q} . e_{i,s};  a~ = softmax_s(a);  beta_{sq} = softmax_q(tau1 a~_{qs});
  c_s = sum_q beta_{sq} v_{j,q};  S_{ji} = tau3 * log sum_s exp(tau2 cos(e_{i,s}, c_s));
  L = 0.5 [CE(S, diag) + CE(S^T, diag)].

All (j, i, q, s) combinations are computed at once on padded sentences (B, M, D) with a mask.
The sentence context c_s is never materialised: e.c = sum_q beta a and |c|^2 = beta^T (V V^T) beta,
so memory is O(B^2 Q M) instead of O(B^2 M D).

Reports without any sentence: their row and column are removed from both cross-entropies (the
pair j = i is not scored and that report/ECG is not a negative for anyone else); the loss is the
mean over the remaining reports, and 0 (with a graph) if none remain. This keeps batch positions
aligned (fix of D13).

Dimensions: ``B`` batch, ``Q`` beat queries, ``M`` max sentences, ``D`` embedding width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _fill_min(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    # finite "minus infinity": an all-masked softmax stays finite (no NaN in forward or backward)
    return x.masked_fill(~keep, torch.finfo(x.dtype).min)


def beat_similarity(
    beats: torch.Tensor,
    sentences: torch.Tensor,
    sentence_mask: torch.Tensor,
    tau1: float = 4.0,
    tau2: float = 5.0,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Log-sum-exp sentence/beat similarity before the tau3 factor.

    Args:
        beats: (B, Q, D) beat embeddings of B ECGs.
        sentences: (B, M, D) sentence embeddings of B reports (padded).
        sentence_mask: (B, M) bool, True for real sentences.

    Returns:
        (B_ecg, B_report) log sum_s exp(tau2 cos(e_{i,s}, c_s)); entries of reports without
        sentences are finite but meaningless (mask them).
    """
    keep_s = sentence_mask[None, :, None, :]  # (1, B_i, 1, M)
    a = torch.einsum("jqd,imd->jiqm", beats, sentences)  # (B_j, B_i, Q, M)
    a_norm = _fill_min(a, keep_s).softmax(dim=-1)  # softmax over sentences
    beta = (tau1 * a_norm).transpose(-1, -2).softmax(dim=-1)  # (B_j, B_i, M, Q), softmax over beats
    e_dot_c = (beta * a.transpose(-1, -2)).sum(-1)  # (B_j, B_i, M)
    gram = beats @ beats.transpose(1, 2)  # (B_j, Q, Q)
    c_sq = (torch.einsum("jimq,jqr->jimr", beta, gram) * beta).sum(-1)  # (B_j, B_i, M) = |c_s|^2
    c_norm = c_sq.clamp_min(0).sqrt().clamp_min(eps)
    e_norm = sentences.norm(dim=-1).clamp_min(eps)[None]  # (1, B_i, M)
    cos = e_dot_c / (e_norm * c_norm)  # (B_j, B_i, M)
    return torch.logsumexp(_fill_min(tau2 * cos, sentence_mask[None]), dim=-1)  # (B_j, B_i)


def beat_loss(
    beats: torch.Tensor,
    sentences: torch.Tensor,
    sentence_mask: torch.Tensor,
    tau1: float = 4.0,
    tau2: float = 5.0,
    tau3: float = 10.0,
    text_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sentence-beat alignment loss (scalar), see the module docstring.

    Args:
        beats: (B, Q, D); sentences: (B, M, D); sentence_mask: (B, M) bool.
        text_ids: optional (B,) report ids; identical reports are then not negatives of each
            other (soft targets, as in :func:`melp.losses.clip.clip_loss`).
        Computed in at least float32 (float64 stays float64).
    """
    with torch.autocast(beats.device.type, enabled=False):  # never bf16, even inside autocast (D22)
        return _beat_loss(beats, sentences, sentence_mask, tau1, tau2, tau3, text_ids)


def _beat_loss(beats, sentences, sentence_mask, tau1, tau2, tau3, text_ids=None):
    dtype = torch.promote_types(beats.dtype, torch.float32)
    beats, sentences = beats.to(dtype), sentences.to(dtype)
    mask = sentence_mask.bool()
    valid = mask.any(dim=-1)  # (B,) reports with >= 1 sentence
    sim = tau3 * beat_similarity(beats, sentences, mask, tau1, tau2)  # (B_j, B_i)
    pair_ok = valid[:, None] & valid[None, :]
    sim = _fill_min(sim, pair_ok)
    if text_ids is not None:  # uniform over the valid columns with the same report
        same = (text_ids[:, None] == text_ids[None, :]) & pair_ok  # (B, B), symmetric
        same = same | torch.eye(len(same), dtype=torch.bool, device=same.device)  # rows w/o sentences
        target = same.to(dtype) / same.sum(1, keepdim=True).to(dtype)
    else:
        target = torch.arange(sim.shape[0], device=sim.device)
    ce_rows = F.cross_entropy(sim, target, reduction="none")  # ECG j -> which report
    ce_cols = F.cross_entropy(sim.T, target, reduction="none")  # report i -> which ECG
    w = valid.to(dtype)
    return 0.5 * ((ce_rows * w).sum() + (ce_cols * w).sum()) / w.sum().clamp_min(1.0)


def pad_ragged(flat: torch.Tensor, counts: torch.Tensor, max_len: int | None = None):
    """Pack sample-after-sample rows (sum(counts), D) into (B, M, D) with a (B, M) mask.

    Differentiable w.r.t. ``flat``. ``max_len`` defaults to max(counts) (one host sync; helper for
    tests and data conversion, not for the training forward).
    """
    counts = counts.to(torch.long)
    m = int(counts.max()) if max_len is None else max_len
    starts = torch.cumsum(counts, 0) - counts  # (B,)
    pos = torch.arange(m, device=flat.device)
    mask = pos[None, :] < counts[:, None]  # (B, M)
    idx = (starts[:, None] + pos[None, :]).clamp_max(max(flat.shape[0] - 1, 0))  # (B, M)
    out = flat[idx] * mask[..., None].to(flat.dtype)  # (B, M, D)
    return out, mask


def beat_attention(beats: torch.Tensor, sentences: torch.Tensor, tau1: float = 4.0) -> torch.Tensor:
    """Attention beta (n_s, Q) of each sentence over the beats for one ECG/report pair.

    Args:
        beats: (Q, D) beats of one ECG; sentences: (n_s, D) sentences of one report.
    """
    a = beats @ sentences.T  # (Q, n_s)
    return (tau1 * a.softmax(dim=-1)).T.softmax(dim=-1)  # (n_s, Q)


def beat_diversity(beats: torch.Tensor) -> torch.Tensor:
    """Mean squared cosine between different beat embeddings of the same ECG (scalar, 0 = mutually
    orthogonal, 1 = all alike): a regulariser that keeps the Q beat slots from collapsing onto one
    vector (then every sentence attends uniformly to them). beats: (B, Q, D)."""
    v = F.normalize(beats.to(torch.promote_types(beats.dtype, torch.float32)), dim=-1)  # fp32 or wider
    gram = v @ v.transpose(1, 2)  # (B, Q, Q)
    q = gram.shape[-1]
    if q < 2:
        return gram.new_zeros(())
    off = gram.pow(2).sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).pow(2).sum(-1)  # (B,)
    return (off / (q * (q - 1))).mean()
