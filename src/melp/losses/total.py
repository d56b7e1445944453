"""Total MELP objective: weighted sum of the CLIP, caption and beat terms (spec §4.4)."""

from __future__ import annotations

import torch
from torch import nn

from melp.losses.beat import beat_loss
from melp.losses.caption import caption_loss
from melp.losses.clip import clip_loss


class MELPLoss(nn.Module):
    """``L = clip * L_clip + caption * L_cap + beat * L_beat`` (README-run weights by default).

    Called with the model's output dict: ``MELPLoss()(**model(...))``. Returns
    ``{"clip", "caption", "beat", "total"}``, each term already multiplied by its weight.
    A weight of 0 switches a term off: it is not computed and reported as a zero tensor.

    Args:
        clip, caption, beat: term weights (lambda_clip, lambda_cap, lambda_beat).
        tau1, tau2, tau3: beat-loss temperatures.
        gather: gather latents across ranks for the CLIP term (no-op single-process).
        soft_duplicates: use the model's ``text_ids`` so that identical reports in a batch are not
            negatives of each other in the CLIP and beat terms (a deviation from the paper, whose
            one-hot targets treat them as negatives: the default). Without ``text_ids`` in the
            outputs, plain one-hot targets are used.
    """

    def __init__(
        self,
        clip: float = 1.0,
        caption: float = 2.0,
        beat: float = 0.2,
        *,
        tau1: float = 4.0,
        tau2: float = 5.0,
        tau3: float = 10.0,
        gather: bool = True,
        soft_duplicates: bool = False,
    ):
        super().__init__()
        for name, w in (("clip", clip), ("caption", caption), ("beat", beat)):
            if w < 0:
                raise ValueError(f"MELPLoss: weight {name}={w} must be >= 0")
        self.weights = {"clip": float(clip), "caption": float(caption), "beat": float(beat)}
        self.taus = (tau1, tau2, tau3)
        self.gather = gather
        self.soft_duplicates = soft_duplicates

    def forward(
        self,
        ecg_latent: torch.Tensor,
        text_latent: torch.Tensor,
        logit_scale: torch.Tensor,
        beats: torch.Tensor,
        sentences: torch.Tensor,
        sentence_mask: torch.Tensor,
        caption_logits: torch.Tensor | None,
        caption_targets: torch.Tensor | None,
        pad_id: int,
        text_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Weighted loss terms and their sum (all scalars, fp32)."""
        zero = ecg_latent.new_zeros((), dtype=torch.float32)
        w = self.weights
        if w["caption"] and caption_logits is None:
            raise ValueError(
                "the caption loss needs a causal text tower (text.causal=true); with a bidirectional text "
                "tower set the caption weight to 0 (loss.caption=0)"
            )
        ids = text_ids if self.soft_duplicates else None
        out = {
            "clip": w["clip"]
            * clip_loss(ecg_latent, text_latent, logit_scale, gather=self.gather, text_ids=ids)
            if w["clip"]
            else zero,
            "caption": w["caption"] * caption_loss(caption_logits, caption_targets, pad_id)
            if w["caption"]
            else zero,
            "beat": w["beat"] * beat_loss(beats, sentences, sentence_mask, *self.taus, text_ids=ids)
            if w["beat"]
            else zero,
        }
        out["total"] = out["clip"] + out["caption"] + out["beat"]
        return out
