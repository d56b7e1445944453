"""MELP losses: contrastive (rhythm), caption (token), beat alignment (beat) and their sum."""

from melp.losses.beat import BeatLoss, beat_loss
from melp.losses.caption import CaptionLoss, caption_loss
from melp.losses.clip import ClipLoss, clip_loss
from melp.losses.gather import all_gather_with_grad
from melp.losses.total import MELPLoss

__all__ = [
    "BeatLoss",
    "CaptionLoss",
    "ClipLoss",
    "MELPLoss",
    "all_gather_with_grad",
    "beat_loss",
    "caption_loss",
    "clip_loss",
]
