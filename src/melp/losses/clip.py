"""Rhythm-level contrastive loss (symmetric InfoNCE, spec §4.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from melp.losses.gather import all_gather_with_grad, world_info


def clip_loss(
    ecg_latent: torch.Tensor,
    text_latent: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    gather: bool = True,
) -> torch.Tensor:
    """Symmetric cross-entropy over cosine logits, local rows against the global batch.

    Args:
        ecg_latent: z_e (B, D), unit norm.
        text_latent: z_t (B, D), unit norm.
        logit_scale: the multiplier s = exp(l) (scalar tensor).
        gather: gather the other ranks' latents (no-op without a process group).

    Returns:
        Scalar 0.5 * [CE(s z_e Z_t^T, y) + CE(s z_t Z_e^T, y)] with y_k = k + rank * B.
    """
    with torch.autocast(ecg_latent.device.type, enabled=False):  # logits in fp32 even under autocast
        return _clip_loss(ecg_latent, text_latent, logit_scale, gather)


def _clip_loss(ecg_latent, text_latent, logit_scale, gather):
    dtype = torch.promote_types(ecg_latent.dtype, torch.float32)  # fp32 at least (fp64 kept)
    ze, zt = ecg_latent.to(dtype), text_latent.to(dtype)
    rank, world = world_info()
    if gather and world > 1:
        all_e, all_t = all_gather_with_grad(ze), all_gather_with_grad(zt)  # (G*B, D)
    else:
        all_e, all_t, rank = ze, zt, 0
    s = logit_scale.to(dtype)
    logits_e = s * ze @ all_t.T  # (B, G*B)
    logits_t = s * zt @ all_e.T  # (B, G*B)
    target = torch.arange(ze.shape[0], device=ze.device) + rank * ze.shape[0]
    return 0.5 * (F.cross_entropy(logits_e, target) + F.cross_entropy(logits_t, target))


class ClipLoss(nn.Module):
    """Module wrapper of :func:`clip_loss` (stateless; no label cache needed, D25)."""

    def __init__(self, gather: bool = True):
        super().__init__()
        self.gather = gather

    def forward(
        self, ecg_latent: torch.Tensor, text_latent: torch.Tensor, logit_scale: torch.Tensor
    ) -> torch.Tensor:
        return clip_loss(ecg_latent, text_latent, logit_scale, gather=self.gather)
