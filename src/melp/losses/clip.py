"""Rhythm-level contrastive loss (symmetric InfoNCE, spec §4.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from melp.losses.gather import all_gather_no_grad, all_gather_with_grad, world_info


def duplicate_targets(row_ids: torch.Tensor, col_ids: torch.Tensor) -> torch.Tensor:
    """Soft targets (R, C) for contrastive CE: row r spreads its probability evenly over every
    column whose report id equals its own (its own pair included). With unique ids this is the
    one-hot identity target of plain CLIP."""
    same = (row_ids[:, None] == col_ids[None, :]).to(torch.float32)  # (R, C)
    return same / same.sum(dim=1, keepdim=True)


def clip_loss(
    ecg_latent: torch.Tensor,
    text_latent: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    gather: bool = True,
    text_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric cross-entropy over cosine logits, local rows against the global batch.

    Args:
        ecg_latent: z_e (B, D), unit norm.
        text_latent: z_t (B, D), unit norm.
        logit_scale: the multiplier s = exp(l) (scalar tensor).
        gather: gather the other ranks' latents (no-op without a process group).
        text_ids: optional (B,) integer id of each report's text (``model(...)["text_ids"]``).
            Pairs whose reports are identical are then not treated as negatives of each other:
            the target of a row is uniform over all columns with the same report (a fix for
            corpora of machine statements, where e.g. "sinus rhythm. normal ecg." repeats many
            times per batch; plain CLIP asks the model to tell identical texts apart).

    Returns:
        Scalar 0.5 * [CE(s z_e Z_t^T, y) + CE(s z_t Z_e^T, y)] with y_k = k + rank * B
        (or the soft duplicate-aware targets).
    """
    with torch.autocast(ecg_latent.device.type, enabled=False):  # logits in fp32 even under autocast
        return _clip_loss(ecg_latent, text_latent, logit_scale, gather, text_ids)


def _clip_loss(ecg_latent, text_latent, logit_scale, gather, text_ids=None):
    dtype = torch.promote_types(ecg_latent.dtype, torch.float32)  # fp32 at least (fp64 kept)
    ze, zt = ecg_latent.to(dtype), text_latent.to(dtype)
    rank, world = world_info()
    gather = gather and world > 1
    if gather:
        all_e, all_t = all_gather_with_grad(ze), all_gather_with_grad(zt)  # (G*B, D)
    else:
        all_e, all_t, rank = ze, zt, 0
    s = logit_scale.to(dtype)
    logits_e = s * ze @ all_t.T  # (B, G*B)
    logits_t = s * zt @ all_e.T  # (B, G*B)
    if text_ids is not None:
        all_ids = all_gather_no_grad(text_ids) if gather else text_ids  # (G*B,)
        target = duplicate_targets(text_ids, all_ids).to(dtype)  # (B, G*B)
    else:
        target = torch.arange(ze.shape[0], device=ze.device) + rank * ze.shape[0]
    return 0.5 * (F.cross_entropy(logits_e, target) + F.cross_entropy(logits_t, target))
